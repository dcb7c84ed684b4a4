"""The partitioning library on real Spark against independent oracles (pyarrow, pandas): random small
lakes with partitions written empty, holding only markers or hidden files, and ranges inside, across
and outside them; plus the edge cases those comparisons turned up."""

from __future__ import annotations

import hashlib
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from featurelake.partitioning import (
    apply_per_key,
    date_partition_exists,
    date_range,
    existing_date_partitions,
    listed_date_partitions,
    process_by_partition,
    read_partition_range,
    write_partitioned,
)

pytestmark = pytest.mark.integration

DAYS = date_range(date(2026, 3, 1), date(2026, 3, 8))
SCHEMA = "key string, value long"
SCHEMA_ROWS = "date date, key string, value long"
ARROW_SCHEMA = pa.schema([("key", pa.string()), ("value", pa.int64())])
HIVE_DATES = pads.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
# What a partition directory holds in a random lake.
KINDS = ("data", "data", "data", "empty", "success-only", "marker-only", "hidden-only")


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _random_lake(root: Path, rng: random.Random) -> tuple[pd.DataFrame, set[date]]:
    """A lake written with pyarrow (not Spark): each day absent or of a random kind. Returns the
    rows a reader must see and the dates with a data file (some hold no row)."""
    expected, with_files = [], set()
    for day in DAYS:
        kind = rng.choice((None, *KINDS))
        if kind is None:
            continue
        directory = root / f"date={day.isoformat()}"
        directory.mkdir(parents=True)
        if kind == "data":
            with_files.add(day)
            for part in range(rng.randint(1, 2)):
                n = rng.randint(0, 4)  # a data file may hold no row
                rows = pd.DataFrame(
                    {
                        "key": [f"k{rng.randint(0, 3)}" for _ in range(n)],
                        "value": pd.array([rng.randint(-5, 5) for _ in range(n)], dtype="int64"),
                    }
                )
                table = pa.Table.from_pandas(rows, schema=ARROW_SCHEMA, preserve_index=False)
                pq.write_table(table, directory / f"part-{part}.parquet")
                expected.append(rows.assign(date=day))
        elif kind == "success-only":
            (directory / "_SUCCESS").write_bytes(b"")
        elif kind == "marker-only":
            (directory / "_BUILT").write_text("built from nothing")
        if kind in ("data", "hidden-only"):
            # Writers' temporary files: not Parquet at all, so opening one fails the read.
            (directory / ".part-9.parquet.inprogress").write_bytes(b"not parquet")
            (directory / "_tmp-part-9.parquet").write_bytes(b"not parquet")
    columns = {
        "key": pd.Series(dtype=object),
        "value": pd.Series(dtype="int64"),
        "date": pd.Series(dtype=object),
    }
    return pd.concat([pd.DataFrame(columns), *expected], ignore_index=True), with_files


def _rows(df) -> list[tuple]:
    return sorted((r["key"], r["value"], r["date"]) for r in df.collect())


def _oracle_rows(expected: pd.DataFrame, start: date, end: date) -> list[tuple]:
    inside = expected[(expected["date"] >= start) & (expected["date"] <= end)]
    return sorted((k, int(v), d) for k, v, d in inside[["key", "value", "date"]].itertuples(index=False))


def test_random_lakes_read_and_list_as_a_pyarrow_oracle_does(spark, tmp_path: Path) -> None:
    rng = random.Random(20261205)
    for lake in range(6):
        root = tmp_path / f"lake{lake}"
        expected, with_data = _random_lake(root, rng)
        listed = {d for d in DAYS if (root / f"date={d.isoformat()}").is_dir()}

        assert set(listed_date_partitions(spark, str(root))) == listed
        assert existing_date_partitions(spark, str(root)) == with_data
        assert existing_date_partitions(spark, str(root), marker="_BUILT") == with_data | {
            d for d in listed if (root / f"date={d.isoformat()}" / "_BUILT").exists()
        }
        assert {d for d in DAYS if date_partition_exists(spark, str(root), d)} == with_data
        if with_data:  # the bookkeeping against pyarrow's own reading of the lake
            oracle = pq.read_table(root, partitioning=HIVE_DATES).to_pandas()
            assert _oracle_rows(oracle, DAYS[0], DAYS[-1]) == _oracle_rows(expected, DAYS[0], DAYS[-1])

        bounds = [(DAYS[0], DAYS[-1]), (DAYS[-1] + timedelta(days=1), DAYS[-1] + timedelta(days=9))]
        bounds += [(d, d) for d in rng.sample(DAYS, 3)]
        bounds += [tuple(sorted(rng.sample(DAYS, 2))) for _ in range(3)]
        for start, end in bounds:
            got = read_partition_range(spark, str(root), start, end, schema=SCHEMA)
            assert got.columns == ["key", "value", "date"], (lake, start, end)
            assert _rows(got) == _oracle_rows(expected, start, end), (lake, start, end)
            if with_data & set(date_range(start, end)):
                assert _rows(read_partition_range(spark, str(root), start, end)) == _oracle_rows(
                    expected, start, end
                )


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param("key string, value int", id="no-date-column"),
        pytest.param("date date, key string, value int", id="date-first"),
    ],
)
def test_range_read_of_partitions_written_empty_with_a_schema(spark, tmp_path: Path, schema) -> None:
    # Spark finds no partition column in directories without a data file: the filter on `date`
    # failed (UNRESOLVED_COLUMN), or the columns came in the schema's order, not the partition last.
    path, staging = str(tmp_path / "events"), str(tmp_path / "_staging")
    rows = spark.createDataFrame([(DAYS[0], "k", 1)], "date date, key string, value int")
    write_partitioned(rows, path, ["date"], replace=DAYS[:3], staging=staging, marker="_BUILT")
    assert existing_date_partitions(spark, path, marker="_BUILT") == set(DAYS[:3])

    empty = read_partition_range(spark, path, DAYS[1], DAYS[2], schema=schema)
    assert empty.columns == ["key", "value", "date"]
    assert dict(empty.dtypes)["date"] == "date"
    assert empty.count() == 0
    whole = read_partition_range(spark, path, DAYS[0], DAYS[2], schema=schema)
    assert whole.columns == ["key", "value", "date"]
    assert _rows(whole) == [("k", 1, DAYS[0])]


@pytest.mark.parametrize(
    "day",
    [
        pytest.param(datetime(2026, 3, 2), id="datetime"),
        pytest.param(pd.Timestamp("2026-03-02"), id="timestamp"),
        pytest.param("2026-03-02", id="string"),
    ],
)
def test_date_partition_exists_refuses_what_is_not_a_date(spark, tmp_path: Path, day) -> None:
    # A datetime was looked up as date=2026-03-02T00:00:00: False for a partition that holds data.
    path = str(tmp_path / "events")
    write_partitioned(spark.createDataFrame([(DAYS[1], 1)], "date date, value int"), path, ["date"])
    assert date_partition_exists(spark, path, DAYS[1])
    with pytest.raises(TypeError, match=r"day must be a datetime\.date, got .*pass"):
        date_partition_exists(spark, path, day)


@pytest.mark.parametrize(
    "staging_of",
    [
        pytest.param(lambda path: path, id="the-path"),
        pytest.param(lambda path: path + "/", id="the-path-with-a-slash"),
        pytest.param(lambda path: str(Path(path).parent), id="its-parent"),
    ],
)
def test_a_staging_directory_that_holds_the_dataset_is_refused(spark, tmp_path: Path, staging_of) -> None:
    # The staging directory is removed first, and at the end: the whole dataset (or lake) went with it.
    path = str(tmp_path / "lake" / "events")
    write_partitioned(
        spark.createDataFrame([(d, 1) for d in DAYS[:3]], "date date, value int"), path, ["date"]
    )
    before = _digest(tmp_path / "lake")
    rerun = spark.createDataFrame([(DAYS[1], 2)], "date date, value int")

    with pytest.raises(ValueError, match=r"staging .* would remove .*events.*pass a scratch directory"):
        write_partitioned(rerun, path, ["date"], staging=staging_of(path))

    assert _digest(tmp_path / "lake") == before


def test_date_bounds_do_not_depend_on_the_jvm_default_zone(spark, tmp_path: Path) -> None:
    # 2011-12-30 has no midnight in Pacific/Apia (the zone skipped the day). A Python date reached
    # Spark through java.sql.Date in the JVM's default zone and became 2011-12-31: the day read as
    # empty, and process_by_partition wrote its output as empty.
    days = date_range(date(2011, 12, 29), date(2011, 12, 31))
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    rows = spark.createDataFrame([(d, f"k{d.day}", d.day) for d in days], "date date, key string, value int")
    write_partitioned(rows, source, ["date"])
    zones = spark.sparkContext._jvm.java.util.TimeZone
    machine_zone = zones.getDefault()
    zones.setDefault(zones.getTimeZone("Pacific/Apia"))
    try:
        assert _rows(read_partition_range(spark, source, days[1], days[1])) == [("k30", 30, days[1])]
        done = process_by_partition(
            spark, input_path=source, output_path=target, dates=days, transform=lambda d, _: d
        )
    finally:
        zones.setDefault(machine_zone)
    assert done == days
    assert _rows(spark.read.parquet(target)) == [(f"k{d.day}", d.day, d) for d in days]


@pytest.mark.parametrize("name", ["lake[1]", "lake{a,b}", "lake?"])
def test_range_read_of_a_lake_whose_path_has_glob_characters(spark, tmp_path: Path, name) -> None:
    # The listing took the path as it is, Spark's read as a glob: PATH_NOT_FOUND, or another lake's
    # directories ("Wrong basePath").
    (tmp_path / "lake1" / "events" / "date=2026-03-01").mkdir(parents=True)
    path = str(tmp_path / name / "events")
    write_partitioned(spark.createDataFrame([(d, "k", d.day) for d in DAYS[:3]], SCHEMA_ROWS), path, ["date"])

    got = read_partition_range(spark, path, DAYS[0], DAYS[1])

    assert _rows(got) == [("k", 1, DAYS[0]), ("k", 2, DAYS[1])]
    done = process_by_partition(
        spark,
        input_path=path,
        output_path=str(tmp_path / name / "out"),
        dates=DAYS[:1],
        transform=lambda d, _: d,
    )
    assert done == DAYS[:1]


def test_apply_per_key_matches_a_pandas_groupby(spark) -> None:
    # Null keys form their own group, a skewed key is seen whole, and columns returned in another
    # order than the schema's are matched by name.
    rng = random.Random(7)
    keys = ["hot"] * 300 + [None] * 7 + [f"u{rng.randint(0, 40)}" for _ in range(200)]
    frame = pd.DataFrame({"user_id": keys, "amount": [float(rng.randint(0, 100)) for _ in keys]})
    df = spark.createDataFrame(frame, "user_id string, amount double")

    def summarise(group: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {"total": [group["amount"].sum()], "n": [len(group)], "user_id": [group["user_id"].iloc[0]]}
        )

    got = apply_per_key(
        df, key="user_id", fn=summarise, schema="user_id string, n long, total double", num_partitions=3
    )
    oracle = frame.groupby("user_id", dropna=False)["amount"].agg(["size", "sum"])
    assert got.columns == ["user_id", "n", "total"]
    assert sorted((r["user_id"] or "", r["n"], r["total"]) for r in got.collect()) == sorted(
        ("" if pd.isna(k) else k, int(n), float(s)) for k, (n, s) in oracle.iterrows()
    )


def test_rerun_with_an_empty_result_replaces_only_its_dates(spark, tmp_path: Path) -> None:
    # Against the oracle of what each date must hold: a zero-row rerun of two dates empties them
    # and leaves every other date's bytes as they were; repeating it changes nothing.
    path, staging = str(tmp_path / "events"), str(tmp_path / "_staging")
    rows = [(d, f"k{k}", d.day * k) for d in DAYS for k in range(3)]
    write_partitioned(spark.createDataFrame(rows, SCHEMA_ROWS), path, ["date"], sort_within=["key"])
    before = _digest(tmp_path / "events")
    empty = spark.createDataFrame([], SCHEMA_ROWS)
    for _ in range(2):
        write_partitioned(empty, path, ["date"], replace=DAYS[2:4], staging=staging, marker="_BUILT")
        after = _digest(tmp_path / "events")
        assert {
            k: v for k, v in after.items() if not k.startswith(("date=2026-03-03", "date=2026-03-04"))
        } == {k: v for k, v in before.items() if not k.startswith(("date=2026-03-03", "date=2026-03-04"))}
        assert existing_date_partitions(spark, path) == set(DAYS) - set(DAYS[2:4])
        assert existing_date_partitions(spark, path, marker="_BUILT") == set(DAYS)
        assert _rows(read_partition_range(spark, path, DAYS[0], DAYS[-1])) == sorted(
            (k, v, d) for d, k, v in rows if d not in DAYS[2:4]
        )


def test_process_by_partition_failing_on_one_date_then_rerun(spark, tmp_path: Path) -> None:
    # Oracle: the dates before the failing one hold the new result, it and the later ones the old;
    # a rerun brings every date to the new result, and another rerun changes no row.
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    days = DAYS[:4]
    write_partitioned(
        spark.createDataFrame([(d, f"k{k}", k + 1) for d in days for k in range(3)], SCHEMA_ROWS),
        source,
        ["date"],
    )

    def scaled(factor: int, failing: date | None = None):
        def transform(df, day):
            value = F.col("value") * factor
            if day == failing:
                value = F.assert_true(F.col("value") < 0, "boom").cast("long")
            return df.groupBy("key").agg(F.sum(value).alias("total"))

        return transform

    def totals() -> dict[date, int]:
        return {
            r["date"]: r["total"]
            for r in spark.read.parquet(target).groupBy("date").agg(F.sum("total").alias("total")).collect()
        }

    process_by_partition(spark, input_path=source, output_path=target, dates=days, transform=scaled(1))
    with pytest.raises(Exception, match="boom"):
        process_by_partition(
            spark, input_path=source, output_path=target, dates=days, transform=scaled(10, days[2])
        )
    assert totals() == {days[0]: 60, days[1]: 60, days[2]: 6, days[3]: 6}
    assert sorted(p.name for p in Path(target).iterdir()) == [f"date={d.isoformat()}" for d in days]

    for _ in range(2):
        done = process_by_partition(
            spark, input_path=source, output_path=target, dates=days, transform=scaled(10)
        )
        assert done == days
        assert totals() == dict.fromkeys(days, 60)


@pytest.mark.parametrize(
    ("marker", "marker_text", "error"),
    [
        pytest.param(None, {DAYS[0]: "built from raw"}, r"marker_text needs marker=", id="no-marker"),
        pytest.param(
            "_BUILT",
            {"2026-03-01": "built from raw"},
            r"a marker_text date must be a datetime\.date",
            id="str-key",
        ),
    ],
)
def test_marker_text_that_no_marker_would_hold_is_refused(
    spark, tmp_path: Path, marker, marker_text, error
) -> None:
    # The text was dropped without a word: no marker at all, or an empty one for a key not a date.
    path, staging = str(tmp_path / "events"), str(tmp_path / "_staging")
    rows = spark.createDataFrame([(DAYS[0], "k", 1)], SCHEMA_ROWS)
    with pytest.raises((ValueError, TypeError), match=error):
        write_partitioned(
            rows, path, ["date"], replace=DAYS[:1], staging=staging, marker=marker, marker_text=marker_text
        )
    assert not (tmp_path / "events").exists()


def test_apply_per_key_refuses_a_partition_count_below_one(spark) -> None:
    # 0 fell back to spark.sql.shuffle.partitions without a word.
    df = spark.createDataFrame([("u1", 1.0)], "user_id string, amount double")
    with pytest.raises(ValueError, match=r"num_partitions must be >= 1 .*got 0"):
        apply_per_key(
            df, key="user_id", fn=lambda g: g, schema="user_id string, amount double", num_partitions=0
        )


@pytest.mark.parametrize(
    ("returned", "error"),
    [
        pytest.param(
            {"user_id": ["u1"], "n": [1.5]},
            r"column 'n' with type 'float64' to Arrow type 'int64'",
            id="unsafe",
        ),
        pytest.param(
            {"user_id": ["u1"], "n": [1], "extra": [1]}, r"RESULT_COLUMN_NAMES_MISMATCH.*extra", id="extra"
        ),
    ],
)
def test_apply_per_key_names_a_column_fn_returns_wrong(spark, returned, error) -> None:
    df = spark.createDataFrame([("u1", 1.0)], "user_id string, amount double")
    result = apply_per_key(
        df, key="user_id", fn=lambda g: pd.DataFrame(returned), schema="user_id string, n long"
    )
    with pytest.raises(Exception, match=error):
        result.collect()
