"""Pattern 1 on real Spark: dynamic partition overwrite, pruned range reads, per-partition and
per-key processing."""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from featurelake.partitioning import (
    apply_per_key,
    date_partition_exists,
    date_range,
    existing_date_partitions,
    process_by_partition,
    read_partition_range,
    write_partitioned,
)

pytestmark = pytest.mark.integration

DAYS = date_range(date(2026, 3, 1), date(2026, 3, 10))


def _events(spark, days, *, value: int = 1):
    rows = [(day, f"k{k}", value * (k + 1)) for day in days for k in range(5)]
    return spark.createDataFrame(rows, "date date, key string, value int")


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*.parquet"))
    }


def test_dynamic_overwrite_replaces_only_its_partitions(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "events")
    write_partitioned(_events(spark, DAYS), path, ["date"])
    before = _digest(tmp_path / "events")

    write_partitioned(_events(spark, [DAYS[3]], value=100), path, ["date"])

    after = _digest(tmp_path / "events")
    rerun = "date=2026-03-04"
    untouched = {k: v for k, v in before.items() if not k.startswith(rerun)}
    assert untouched == {k: v for k, v in after.items() if not k.startswith(rerun)}
    assert {k for k in after if k.startswith(rerun)} != {k for k in before if k.startswith(rerun)}
    result = spark.read.parquet(path)
    assert result.count() == 5 * len(DAYS)
    assert result.where(F.col("date") == DAYS[3]).agg(F.sum("value")).first()[0] == 100 * 15


def test_replace_empties_listed_dates_the_new_data_lacks(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "events")
    write_partitioned(_events(spark, DAYS), path, ["date"])
    before = _digest(tmp_path / "events")

    # New data for 2026-03-04 only, while 03-04 and 03-05 are both being replaced.
    write_partitioned(_events(spark, [DAYS[3]], value=100), path, ["date"], replace=[DAYS[3], DAYS[4]])

    after = _digest(tmp_path / "events")
    replaced = ("date=2026-03-04", "date=2026-03-05")
    assert {k: v for k, v in before.items() if not k.startswith(replaced)} == {
        k: v for k, v in after.items() if not k.startswith(replaced)
    }
    assert not [k for k in after if k.startswith("date=2026-03-05")]
    assert sorted(existing_date_partitions(spark, path)) == [d for d in DAYS if d != DAYS[4]]
    assert date_partition_exists(spark, path, DAYS[3])
    assert not date_partition_exists(spark, path, DAYS[4])
    result = spark.read.parquet(path)
    assert result.where(F.col("date") == DAYS[3]).agg(F.sum("value")).first()[0] == 100 * 15
    # Neither a write in progress nor a partition with no Parquet file of its own counts.
    in_progress = tmp_path / "events" / "_temporary" / "0" / "date=2026-03-20"
    in_progress.mkdir(parents=True)
    (in_progress / "part-0.parquet").write_bytes(b"")
    (tmp_path / "events" / "date=2026-03-21" / "nested").mkdir(parents=True)
    (tmp_path / "events" / "date=2026-03-21" / "_SUCCESS").write_bytes(b"")
    (tmp_path / "events" / "date=2026-03-21" / "nested" / "part-0.parquet").write_bytes(b"")
    assert sorted(existing_date_partitions(spark, path)) == [d for d in DAYS if d != DAYS[4]]


def test_staged_replace_leaves_the_partitions_alone_when_the_write_fails(spark, tmp_path: Path) -> None:
    path, staging = str(tmp_path / "events"), str(tmp_path / "_staging" / "events")
    write_partitioned(_events(spark, DAYS), path, ["date"])
    before = _digest(tmp_path / "events")

    failing = _events(spark, [DAYS[3]]).withColumn(
        "value", F.assert_true(F.col("value") < 0, "boom").cast("int")
    )
    with pytest.raises(Exception, match="boom"):
        write_partitioned(failing, path, ["date"], replace=[DAYS[3], DAYS[4]], staging=staging)
    assert _digest(tmp_path / "events") == before

    # Succeeding: 03-04 is swapped in, 03-05 (no new rows) is emptied but marked, the rest untouched.
    write_partitioned(
        _events(spark, [DAYS[3]], value=100),
        path,
        ["date"],
        replace=[DAYS[3], DAYS[4]],
        staging=staging,
        marker="_BUILT",
    )
    after = _digest(tmp_path / "events")
    replaced = ("date=2026-03-04", "date=2026-03-05")
    assert {k: v for k, v in before.items() if not k.startswith(replaced)} == {
        k: v for k, v in after.items() if not k.startswith(replaced)
    }
    assert spark.read.parquet(path).where(F.col("date") == DAYS[3]).agg(F.sum("value")).first()[0] == 100 * 15
    assert not list((tmp_path / "events" / "date=2026-03-05").glob("*.parquet"))
    assert (tmp_path / "events" / "date=2026-03-05" / "_BUILT").is_file()
    assert existing_date_partitions(spark, path) == set(DAYS) - {DAYS[4]}
    assert existing_date_partitions(spark, path, marker="_BUILT") == set(DAYS)
    assert not (tmp_path / "_staging" / "events").exists()
    assert spark.read.parquet(path).count() == 5 * (len(DAYS) - 1)


def test_hidden_files_are_not_data(spark, tmp_path: Path) -> None:
    """Writers' temporary files and uploads in flight (names starting with . or _) are not data."""
    path = tmp_path / "events"
    write_partitioned(_events(spark, DAYS[:1]), str(path), ["date"])
    for name in (".part-00000.parquet.inprogress.parquet", "_tmp-part-00000.parquet"):
        in_flight = path / "date=2026-03-02" / name
        in_flight.parent.mkdir(parents=True, exist_ok=True)
        in_flight.write_bytes(b"")
    assert existing_date_partitions(spark, str(path)) == {DAYS[0]}
    assert not date_partition_exists(spark, str(path), DAYS[1])


def test_a_stray_partition_directory_is_named(spark, tmp_path: Path) -> None:
    path = tmp_path / "events"
    write_partitioned(_events(spark, DAYS[:2]), str(path), ["date"])
    (path / "date=2026-03-02").rename(path / "date=2026-03-02.bak")
    with pytest.raises(
        ValueError, match=r"date=2026-03-02\.bak is not a partition of .*events.*date=YYYY-MM-DD"
    ):
        existing_date_partitions(spark, str(path))


def test_replace_needs_a_single_partition_column(spark, tmp_path: Path) -> None:
    df = _events(spark, DAYS[:1])
    with pytest.raises(ValueError, match="exactly one"):
        write_partitioned(df, str(tmp_path / "x"), ["date", "key"], replace=DAYS[:1])


def _assert_prunes_to(df, start: str, end: str) -> None:
    """The scan's PartitionFilters hold both bounds of the range (a filter on `date` alone, such as
    `isnotnull(date)`, would prune nothing)."""
    plan = df._jdf.queryExecution().executedPlan().toString()
    filters = re.search(r"PartitionFilters: \[([^\]]*)\]", plan)
    assert filters, plan
    assert re.search(rf"date#\d+ >= {start}", filters.group(1)), filters.group(1)
    assert re.search(rf"date#\d+ <= {end}", filters.group(1)), filters.group(1)


def test_range_read_prunes_partitions_and_never_opens_other_files(spark, tmp_path: Path) -> None:
    path = tmp_path / "events"
    write_partitioned(_events(spark, DAYS), str(path), ["date"])
    # A file outside the range that is not Parquet at all: reading it would fail the query.
    (path / "date=2026-03-09" / "part-corrupt.parquet").write_bytes(b"not parquet")

    df = read_partition_range(spark, str(path), date(2026, 3, 2), date(2026, 3, 4))

    _assert_prunes_to(df, "2026-03-02", "2026-03-04")
    assert sorted({r["date"] for r in df.select("date").collect()}) == DAYS[1:4]
    assert df.count() == 15


def test_range_read_rejects_reversed_range(spark, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="before start"):
        read_partition_range(spark, str(tmp_path), date(2026, 3, 5), date(2026, 3, 1))


def test_process_by_partition_is_idempotent(spark, tmp_path: Path) -> None:
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    write_partitioned(_events(spark, DAYS), source, ["date"])

    def totals(df, day):
        return df.groupBy("key").agg(F.sum("value").alias("total")).withColumn("day_of_month", F.lit(day.day))

    wanted = [DAYS[0], DAYS[5], date(2026, 4, 1)]  # the last one has no input partition
    done = process_by_partition(spark, input_path=source, output_path=target, dates=wanted, transform=totals)
    first = spark.read.parquet(target).orderBy("date", "key").collect()
    again = process_by_partition(spark, input_path=source, output_path=target, dates=wanted, transform=totals)
    second = spark.read.parquet(target).orderBy("date", "key").collect()

    assert done == again == [DAYS[0], DAYS[5]]
    assert first == second
    assert len(first) == 10
    assert existing_date_partitions(spark, target) == {DAYS[0], DAYS[5]}


def test_process_by_partition_empties_a_date_whose_result_is_now_empty(spark, tmp_path: Path) -> None:
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    write_partitioned(_events(spark, DAYS[:2]), source, ["date"])

    def keep_all(df, day):
        return df

    def keep_none(df, day):
        return df.where(F.lit(False))

    process_by_partition(spark, input_path=source, output_path=target, dates=DAYS[:2], transform=keep_all)
    assert spark.read.parquet(target).count() == 10
    untouched = _digest(tmp_path / "out" / f"date={DAYS[1].isoformat()}")

    # A rerun of the first date whose transform now keeps nothing: no stale rows remain there.
    process_by_partition(spark, input_path=source, output_path=target, dates=[DAYS[0]], transform=keep_none)

    assert spark.read.parquet(target).where(F.col("date") == F.lit(DAYS[0])).count() == 0
    assert spark.read.parquet(target).count() == 5
    assert _digest(tmp_path / "out" / f"date={DAYS[1].isoformat()}") == untouched


def test_process_by_partition_removes_the_output_of_a_date_whose_input_is_gone(spark, tmp_path: Path) -> None:
    source, target = tmp_path / "in", str(tmp_path / "out")
    write_partitioned(_events(spark, DAYS[:2]), str(source), ["date"])
    process_by_partition(
        spark, input_path=str(source), output_path=target, dates=DAYS[:2], transform=lambda d, _: d
    )
    untouched = _digest(tmp_path / "out" / f"date={DAYS[1].isoformat()}")

    # The producer reran the first date and it now holds no data file.
    for data_file in (source / f"date={DAYS[0].isoformat()}").glob("*.parquet"):
        data_file.unlink()
    done = process_by_partition(
        spark, input_path=str(source), output_path=target, dates=[DAYS[0]], transform=lambda d, _: d
    )

    assert done == []
    assert existing_date_partitions(spark, target) == {DAYS[1]}
    assert not (tmp_path / "out" / f"date={DAYS[0].isoformat()}").exists()
    assert _digest(tmp_path / "out" / f"date={DAYS[1].isoformat()}") == untouched


def test_apply_per_key_sees_each_key_whole(spark) -> None:
    rows = [(f"u{u}", float(v)) for u in range(20) for v in range(u + 1)]
    df = spark.createDataFrame(rows, "user_id string, amount double")

    def summarise(group: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {"user_id": [group["user_id"].iloc[0]], "n": [len(group)], "spread": [group["amount"].max()]}
        )

    result = apply_per_key(
        df, key="user_id", fn=summarise, schema="user_id string, n long, spread double", num_partitions=4
    )
    got = {r["user_id"]: (r["n"], r["spread"]) for r in result.collect()}
    assert got == {f"u{u}": (u + 1, float(u)) for u in range(20)}


def test_apply_per_key_names_a_missing_key(spark) -> None:
    df = spark.createDataFrame([(1,)], "x int")
    with pytest.raises(ValueError, match="key column 'user_id'"):
        apply_per_key(df, key="user_id", fn=lambda g: g, schema="x int")


def test_range_read_without_a_schema_never_opens_a_file_outside_the_range(spark, tmp_path: Path) -> None:
    path = tmp_path / "events"
    write_partitioned(_events(spark, DAYS), str(path), ["date"])
    # Named to sort first in every partition outside the range, the earliest one included: inferring
    # the schema from the whole dataset would open one of them.
    outside = [d for d in DAYS if not date(2026, 3, 2) <= d <= date(2026, 3, 4)]
    for day in outside:
        (path / f"date={day.isoformat()}" / "a-corrupt.parquet").write_bytes(b"not parquet")

    df = read_partition_range(spark, str(path), date(2026, 3, 2), date(2026, 3, 4))

    _assert_prunes_to(df, "2026-03-02", "2026-03-04")
    assert sorted({r["date"] for r in df.select("date").collect()}) == DAYS[1:4]
    assert df.count() == 15
    assert read_partition_range(spark, f"file://{path}", DAYS[1], DAYS[1]).count() == 5


def test_range_read_of_a_range_with_no_partition(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "events")
    write_partitioned(_events(spark, DAYS[:2]), path, ["date"])
    schema = "key string, value int, date date"
    empty = read_partition_range(spark, path, date(2026, 4, 1), date(2026, 4, 3), schema=schema)
    assert empty.count() == 0
    assert empty.columns == ["key", "value", "date"]
    with pytest.raises(ValueError, match=r"no date= partition in \[2026-04-01, 2026-04-03\].*pass schema="):
        read_partition_range(spark, path, date(2026, 4, 1), date(2026, 4, 3))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(datetime(2026, 3, 2, 12, 0), date(2026, 3, 4), id="datetime-start-at-noon"),
        pytest.param(date(2026, 3, 2), pd.Timestamp("2026-03-04", tz="UTC"), id="timestamp-end"),
        pytest.param("2026-03-02", date(2026, 3, 4), id="string-start"),
    ],
)
def test_range_read_refuses_bounds_that_are_not_dates(spark, tmp_path: Path, start, end) -> None:
    # A datetime start at noon compared with the partition's midnight and dropped its own day.
    path = str(tmp_path / "events")
    write_partitioned(_events(spark, DAYS[:5]), path, ["date"])
    with pytest.raises(TypeError, match=r"must be a datetime\.date, got .*pass"):
        read_partition_range(spark, path, start, end)


def test_partition_dates_that_are_not_dates_are_refused(spark, tmp_path: Path) -> None:
    # A datetime was looked up as `date=2026-03-02T00:00:00`: skipped as "no data", or a stale
    # partition kept; a string failed on `.isoformat()`.
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    write_partitioned(_events(spark, DAYS[:2]), source, ["date"])
    for day in (datetime(2026, 3, 2), "2026-03-02"):
        with pytest.raises(TypeError, match=r"a date of dates must be a datetime\.date"):
            process_by_partition(
                spark, input_path=source, output_path=target, dates=[day], transform=lambda d, _: d
            )
    with pytest.raises(TypeError, match=r"a replace date must be a datetime\.date, got the datetime"):
        write_partitioned(_events(spark, DAYS[:1]), source, ["date"], replace=[datetime(2026, 3, 2)])
    assert not (tmp_path / "out").exists()
    assert existing_date_partitions(spark, source) == set(DAYS[:2])


def test_process_by_partition_keeps_a_dates_output_when_its_rerun_fails(spark, tmp_path: Path) -> None:
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    write_partitioned(_events(spark, DAYS[:2]), source, ["date"])
    process_by_partition(
        spark, input_path=source, output_path=target, dates=DAYS[:2], transform=lambda d, _: d
    )
    before = _digest(tmp_path / "out")

    def failing(df, day):
        return df.withColumn("value", F.assert_true(F.col("value") < 0, "boom").cast("int"))

    with pytest.raises(Exception, match="boom"):
        process_by_partition(spark, input_path=source, output_path=target, dates=DAYS[:2], transform=failing)

    assert _digest(tmp_path / "out") == before
    assert spark.read.parquet(target).count() == 10
    # The retry succeeds and leaves no staging behind.
    process_by_partition(
        spark, input_path=source, output_path=target, dates=DAYS[:2], transform=lambda d, _: d
    )
    assert spark.read.parquet(target).count() == 10
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"date={d.isoformat()}" for d in DAYS[:2]]


@pytest.mark.parametrize("marker", [pytest.param(None, id="no-marker"), pytest.param("_BUILT", id="marker")])
def test_staged_write_with_null_dates_replaces_nothing_and_names_them(spark, tmp_path: Path, marker) -> None:
    # The null partition was swapped in as date=__HIVE_DEFAULT_PARTITION__, which every later listing
    # refuses; with a marker, the swap stopped half-way on an unclear isoformat error.
    path, staging = str(tmp_path / "events"), str(tmp_path / "_staging" / "events")
    write_partitioned(_events(spark, DAYS[:3]), path, ["date"])
    before = _digest(tmp_path / "events")
    rows = spark.createDataFrame([(DAYS[0], "k0", 100), (None, "k1", 1)], "date date, key string, value int")

    with pytest.raises(
        ValueError, match=r"have a date value that is not a date \(null, staged as .*drop or fix"
    ):
        write_partitioned(rows, path, ["date"], replace=[DAYS[0]], staging=staging, marker=marker)

    assert _digest(tmp_path / "events") == before
    assert existing_date_partitions(spark, path) == set(DAYS[:3])


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(
            lambda spark, path: write_partitioned(_events(spark, DAYS[:1]), path, "date"),
            r"partition_cols must be a list of names, got the single str 'date'; pass \['date'\]",
            id="partition-cols",
        ),
        pytest.param(
            lambda spark, path: write_partitioned(
                _events(spark, DAYS[:1]), path, ["date"], sort_within="key"
            ),
            r"sort_within must be a list of names, got the single str 'key'; pass \['key'\]",
            id="sort-within",
        ),
        pytest.param(
            lambda spark, path: write_partitioned(
                _events(spark, DAYS[:1]), path, ["date"], replace="2026-03-01"
            ),
            r"replace must be a list of dates, got the single str '2026-03-01'",
            id="replace",
        ),
        pytest.param(
            lambda spark, path: process_by_partition(
                spark,
                input_path=path,
                output_path=f"{path}-out",
                dates="2026-03-01",
                transform=lambda d, _: d,
            ),
            r"dates must be a list of dates, got the single str '2026-03-01'",
            id="dates",
        ),
    ],
)
def test_a_single_name_or_date_where_a_list_is_needed_is_named(spark, tmp_path: Path, call, error) -> None:
    # A string was taken character by character: partition columns ['d', 'a', 't', 'e'], a sort
    # by the unresolvable column `k`, a replace date '2'.
    path = str(tmp_path / "events")
    with pytest.raises(TypeError, match=error):
        call(spark, path)
    assert not (tmp_path / "events").exists()


@pytest.mark.parametrize(
    ("returned", "schema", "column"),
    [
        pytest.param({"n": [None]}, "user_id string, n long NOT NULL", "n", id="long-ddl"),
        pytest.param({"n": [float("nan")]}, "user_id string, n double NOT NULL", "n", id="nan-ddl"),
        pytest.param(
            {"n": [1]},
            StructType([StructField("user_id", StringType(), False), StructField("n", LongType())]),
            "user_id",
            id="key-struct",
        ),
    ],
)
def test_apply_per_key_names_a_null_in_a_column_the_schema_declares_not_null(
    spark, returned, schema, column
) -> None:
    # Spark trusts the declared nullability: the query failed with "Value at index is null" or a
    # NullPointerException, naming neither the column nor the key.
    df = spark.createDataFrame([("u1", 1.0), ("u2", 2.0)], "user_id string, amount double")

    def fn(group: pd.DataFrame) -> pd.DataFrame:
        key = group["user_id"].iloc[0]
        if key == "u2":
            return pd.DataFrame({"user_id": [None if column == "user_id" else key], **returned})
        return pd.DataFrame({"user_id": [key], "n": [1]})

    result = apply_per_key(df, key="user_id", fn=fn, schema=schema)
    with pytest.raises(Exception, match=rf"fn returned a null {column} for user_id 'u2'.*NOT NULL"):
        result.collect()


@pytest.mark.parametrize("key", ["user_id", "user.id", "user`id"])
@pytest.mark.parametrize("other", ["amount", "amount.usd"])
def test_apply_per_key_names_columns_whose_names_spark_would_parse(spark, key, other) -> None:
    # PySpark's applyInPandas failed on them with "`user`.`id` cannot be resolved" or a backtick
    # syntax error, naming no remedy.
    df = spark.createDataFrame([("u1", 1.0), ("u1", 2.0), ("u2", 3.0)], [key, other])

    def total(group: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"user": [group[key].iloc[0]], "total": [group[other].sum()]})

    if key == "user_id" and other == "amount":
        result = apply_per_key(df, key=key, fn=total, schema="user string, total double", num_partitions=2)
        assert sorted(tuple(row) for row in result.collect()) == [("u1", 3.0), ("u2", 3.0)]
        return
    parsed = [name for name in (key, other) if name not in ("user_id", "amount")]
    with pytest.raises(
        ValueError, match=rf"columns {re.escape(repr(parsed))} have names Spark parses.*rename them"
    ):
        apply_per_key(df, key=key, fn=total, schema="user string, total double", num_partitions=2)


def test_a_range_read_keeps_a_column_added_from_some_date_on(spark, tmp_path: Path) -> None:
    """Without `schema`, the read took one file's schema: a column added on the second day was
    dropped from that day's rows when the range began on the first."""
    path = str(tmp_path / "events")
    write_partitioned(_events(spark, DAYS[:1]), path, ["date"])
    write_partitioned(_events(spark, DAYS[1:2]).withColumn("added", F.col("value") * 10), path, ["date"])

    both = read_partition_range(spark, path, DAYS[0], DAYS[1])
    assert both.columns == ["key", "value", "added", "date"]
    rows = {(row["date"], row["key"]): row["added"] for row in both.collect()}
    assert rows == {
        **{(DAYS[0], f"k{k}"): None for k in range(5)},
        **{(DAYS[1], f"k{k}"): 10 * (k + 1) for k in range(5)},
    }
    assert read_partition_range(spark, path, DAYS[1], DAYS[1]).columns == ["key", "value", "added", "date"]


def test_a_range_read_names_the_partitions_of_a_column_whose_type_changed(spark, tmp_path: Path) -> None:
    """Without `schema`, partitions giving a column different types (a writer that moved from int
    to bigint or double) failed with Spark's CANNOT_MERGE_SCHEMAS, naming neither the column's
    partitions nor the fix; with a schema, they read as its type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "events"
    types = {DAYS[0]: pa.int32(), DAYS[1]: pa.int64(), DAYS[2]: pa.int64(), DAYS[3]: pa.float64()}
    for day, kind in types.items():
        (path / f"date={day}").mkdir(parents=True)
        table = pa.table({"key": ["k1"], "value": pa.array([7], kind)})
        pq.write_table(table, path / f"date={day}" / "part-0.parquet")

    with pytest.raises(ValueError) as raised:
        read_partition_range(spark, str(path), DAYS[0], DAYS[3])
    assert str(raised.value) == (
        f"the partitions of {path} in [{DAYS[0]}, {DAYS[3]}] give columns different types, which a read "
        f"without a schema cannot merge: value is int in date={DAYS[0]}, bigint in date={DAYS[1]} "
        f"date={DAYS[2]}, double in date={DAYS[3]}. Pass schema= with the type to read them as, or "
        "rewrite the partitions of the other type"
    )
    schema = StructType([StructField("key", StringType()), StructField("value", LongType())])
    rows = read_partition_range(spark, str(path), DAYS[0], DAYS[2], schema=schema).collect()
    assert sorted((row["date"], row["value"]) for row in rows) == [(day, 7) for day in DAYS[:3]]
