"""The delta-spark refresh of a materialized view (featurelake.materialized_views_spark).

Without the delta-spark jars (this project's CI machines cannot reach Maven Central): Spark's
rebuild picks the same rows as delta-rs's, and the spark-submit job refuses to run, saying what to
configure. With the jars (`FEATURELAKE_DELTA_SPARK_JARS`: the local delta-spark and delta-storage
jars, comma-separated), the job's full and incremental refreshes write the same table as delta-rs,
and each engine refreshes a table the other wrote.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from featurelake import materialized_views as delta_rs
from featurelake.materialized_views_spark import delta_spark_package, latest_per_entity
from tests.feature_view_partitions import D1, D2, D3, WANT_AS_OF_D3, rows_of, write_feature_partitions
from tests.support import PROJECT_ROOT, spark_submit

pytestmark = pytest.mark.integration


@pytest.fixture
def features(tmp_path: Path) -> Path:
    return write_feature_partitions(tmp_path / "features" / "user_features")


JOB = PROJECT_ROOT / "spark_jobs" / "refresh_feature_view.py"
DELTA_SPARK_JARS = os.environ.get("FEATURELAKE_DELTA_SPARK_JARS", "")


def spark_rows(frame) -> list[dict]:
    """Through Arrow, which keeps timestamps tz-aware in the session's zone (UTC), as delta-rs reads them."""
    return frame.toArrow().sort_by("user_id").to_pylist()


@pytest.mark.parametrize("as_of", [D1, D2, D3, date(2026, 10, 30)])
def test_spark_rebuild_picks_the_rows_delta_rs_picks(features: Path, spark, as_of: date) -> None:
    got = spark_rows(latest_per_entity(spark, str(features), as_of=as_of))
    want, _ = delta_rs.latest_per_entity(str(features), as_of=as_of)
    assert got == want.to_pylist()
    assert [
        field.name for field in latest_per_entity(spark, str(features), as_of=D3).schema
    ] == want.column_names


@pytest.mark.parametrize("stored_as", ["timestamp", "timestamp-utc", "iso-text"])
def test_spark_reads_a_feature_date_written_as_a_timestamp_or_text_as_delta_rs_does(
    features: Path, spark, stored_as: str
) -> None:
    """pandas writes a date column as a timestamp (of midnight), a job may write its ISO text:
    delta-rs takes either as the date. Spark refused every row of a timestamp ("2026-10-28
    00:00:00" is not 2026-10-28) and kept text as text, which a view of dates then refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake import materialized_views_spark as on_spark

    casts = {
        "timestamp": [pa.timestamp("us")],
        "timestamp-utc": [pa.timestamp("us"), pa.timestamp("us", tz="UTC")],
        "iso-text": [pa.string()],
    }[stored_as]
    for path in features.glob("date=*/*.parquet"):
        table = pq.read_table(path)
        stored = table["feature_date"]
        for arrow_type in casts:
            stored = stored.cast(arrow_type)
        index = table.schema.get_field_index("feature_date")
        pq.write_table(table.set_column(index, "feature_date", stored), path)
    want, _ = delta_rs.latest_per_entity(str(features), as_of=D3)
    assert want.schema.field("feature_date").type == pa.date32()
    assert spark_rows(latest_per_entity(spark, str(features), as_of=D3)) == want.to_pylist()
    rows = on_spark._partition_rows(spark, str(features), D3)
    assert rows.schema["feature_date"].dataType.simpleString() == "date"
    assert {row["feature_date"] for row in rows.collect()} == {D3}


def test_spark_rebuild_refuses_an_entity_twice_in_a_date(features: Path, spark) -> None:
    import pyarrow.parquet as pq

    partition = features / f"date={D2.isoformat()}"
    pq.write_table(
        pq.read_table(partition / "part-00000.snappy.parquet"), partition / "part-00001.snappy.parquet"
    )
    with pytest.raises(ValueError, match=r"holds 'user_id' '(a|e|n)' more than once"):
        latest_per_entity(spark, str(features), as_of=D3)


def test_spark_helpers_of_a_rerun_agree_with_delta_rs(features: Path, spark, tmp_path: Path) -> None:
    # The parts of Spark's incremental refresh that need no Delta jars: the look-back for entities a
    # rewritten date dropped, and the schema check.
    import pyarrow as pa

    from featurelake import materialized_views_spark as on_spark

    view_path = str(tmp_path / "view")
    delta_rs.refresh_full(view_path, str(features), as_of=D3)
    view = spark.read.parquet(view_path)  # the table's data files, as the Delta reader sees them
    wanted = ["a", "c", "e", "zz"]
    got = on_spark.newest_rows_before(
        spark,
        str(features),
        before=D3,
        entities=spark.createDataFrame([(u,) for u in wanted], "user_id string"),
        entity_column="user_id",
        view=view,
        view_path=view_path,
    )
    want, _ = delta_rs.newest_rows_before(
        str(features),
        before=D3,
        entities=pa.array(wanted),
        entity_column="user_id",
        view_schema=pa.schema(DeltaTable(view_path).schema().to_arrow()),
        view_path=view_path,
    )
    assert spark_rows(got) == want.sort_by("user_id").to_pylist()
    assert [row["user_id"] for row in spark_rows(got)] == ["a", "c", "e"]

    partition = str(features / f"date={D3.isoformat()}")
    on_spark._check_view_columns(spark.read.parquet(partition), view, partition, view_path)
    changed = spark.read.parquet(partition).drop("std_spend").withColumn("new_feature", F.lit(1))
    with pytest.raises(
        ValueError, match=r"columns the view lacks: new_feature; view columns it lacks: std_spend\)"
    ):
        on_spark._check_view_columns(changed, view, partition, view_path)


def test_spark_refuses_a_features_path_that_is_no_directory_as_delta_rs_does(
    features: Path, spark, tmp_path: Path
) -> None:
    """A file at the features path: delta-rs refused it, and the delta-spark refresh checked only
    that the path existed, so its missing partition of ds took the view's rows of ds back."""
    from featurelake.materialized_views_spark import require_features_dataset

    view_path = str(tmp_path / "view")
    delta_rs.refresh_full(view_path, str(features), as_of=D3)
    a_file = tmp_path / "features.parquet"
    a_file.write_bytes((features / f"date={D3.isoformat()}" / "part-00000.snappy.parquet").read_bytes())
    for path, found in (
        (a_file, "is a file, not a directory of date partitions"),
        (tmp_path / "typo", "does not exist"),
    ):
        message = rf"{path} {found}: check the features path"
        with pytest.raises(OSError, match=message):
            require_features_dataset(spark, str(path))
        with pytest.raises(OSError, match=message):
            delta_rs.refresh_incremental(view_path, str(path), ds=date(2026, 10, 30))
    require_features_dataset(spark, str(features))
    assert {r["user_id"] for r in rows_of(view_path)} == set(WANT_AS_OF_D3), "the view is as it was"


@pytest.mark.parametrize("replacing", [None, D2], ids=["rerun", "replacing-a-dropped-row"])
def test_spark_reads_the_merge_update_condition_as_delta_rs_does(spark, replacing) -> None:
    """Both engines' MERGE updates a matched row under one SQL condition
    (`matched_update_predicate`): a later source date, or the same date with some column changed
    (nulls compared as values), or, replacing, a view row of that date. Without the jars, Spark
    evaluates the condition on the pairs a MERGE would match; delta-rs's MERGEs are tested in
    test_materialized_views.py."""
    columns = ["user-id", "feature_date", "total_spend", "std_spend"]
    predicate = delta_rs.matched_update_predicate(columns, entity_column="user-id", replacing=replacing)
    pairs = [  # (entity, view row, source row), each row (feature_date, total_spend, std_spend)
        ("later", (D1, 1.0, None), (D2, 1.0, None)),
        ("same", (D2, 1.0, None), (D2, 1.0, None)),
        ("changed", (D2, 1.0, 0.5), (D2, 2.0, 0.5)),
        ("now-null", (D2, 1.0, 0.5), (D2, 1.0, None)),
        ("older", (D3, 1.0, None), (D2, 5.0, None)),
        ("stands-in", (D2, 1.0, None), (D1, 1.0, None)),
    ]
    schema = "`user-id` string, feature_date date, total_spend double, std_spend double"
    view = spark.createDataFrame([(entity, *row) for entity, row, _ in pairs], schema).alias("t")
    source = spark.createDataFrame([(entity, *row) for entity, _, row in pairs], schema).alias("s")
    matched = view.join(source, F.col("t.`user-id`") == F.col("s.`user-id`")).where(F.expr(predicate))
    updated = sorted(row[0] for row in matched.select("t.`user-id`").collect())
    want = ["changed", "later", "now-null"] + (["stands-in"] if replacing == D2 else [])
    assert updated == sorted(want)


def test_spark_updates_a_same_date_row_holding_a_map_as_changed(spark) -> None:
    """Spark cannot compare maps (`<=>` refuses them at analysis): the delta-spark MERGE counts such
    a column as changed, as it did before it compared columns, rather than fail."""
    from featurelake.materialized_views_spark import _holds_a_map

    schema = "`user_id` string, feature_date date, tags map<string,int>, total_spend double"
    frame = spark.createDataFrame([("a", D2, {"x": 1}, 1.0), ("b", D2, {"x": 1}, 2.0)], schema)
    uncomparable = [field.name for field in frame.schema if _holds_a_map(field.dataType)]
    assert uncomparable == ["tags"]
    predicate = delta_rs.matched_update_predicate(
        frame.columns, entity_column="user_id", uncomparable=uncomparable
    )
    matched = frame.alias("t").join(frame.alias("s"), F.col("t.user_id") == F.col("s.user_id"))
    assert sorted(row[0] for row in matched.where(F.expr(predicate)).select("t.user_id").collect()) == [
        "a",
        "b",
    ]


def test_job_without_the_jars_says_what_to_configure(features: Path, tmp_path: Path) -> None:
    lake = tmp_path  # `features` is <tmp_path>/features/user_features
    # No spark.jars here, whether or not FEATURELAKE_DELTA_SPARK_JARS names them (only run_job passes it)
    result = spark_submit(JOB, "--ds", D3.isoformat(), "--lake", str(lake), "--mode", "full")
    output = result.stdout + result.stderr  # spark-submit passes the Python driver's stderr to stdout
    assert result.returncode != 0
    assert "the delta-spark jars are not on Spark's classpath" in output, output[-3000:]
    assert f"spark.jars.packages={delta_spark_package()}" in output
    assert not (lake / "views").exists(), "nothing was written"


def run_job(lake: Path, ds: date, mode: str) -> dict:
    result = spark_submit(
        JOB,
        "--ds",
        ds.isoformat(),
        "--lake",
        str(lake),
        "--mode",
        mode,
        conf={"spark.jars": DELTA_SPARK_JARS},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(
        (lake / "_metrics" / "user_features_latest" / f"date={ds.isoformat()}.json").read_text()
    )


@pytest.mark.skipif(
    not DELTA_SPARK_JARS,
    reason=f"needs the delta-spark jars ({delta_spark_package()} and delta-storage) in "
    "FEATURELAKE_DELTA_SPARK_JARS; Maven Central is unreachable on this project's CI machines",
)
def test_delta_spark_refreshes_equal_delta_rs_and_share_the_table(features: Path, tmp_path: Path) -> None:
    lake = tmp_path  # `features` is <tmp_path>/features/user_features
    view = lake / "views" / "user_features_latest"

    # Spark builds in full as of D2, then MERGEs D3 and the older D1 (a backfill): delta-rs's rows.
    built = run_job(lake, D2, "incremental")
    assert built["mode"] == "full", "a view that does not exist yet is built in full"
    assert run_job(lake, D3, "incremental")["mode"] == "incremental"
    older = run_job(lake, D1, "incremental")
    assert (older["inserted"], older["updated"]) == (0, 1), "only b's own row of D1 is rewritten"
    reference = tmp_path / "reference"
    delta_rs.refresh_full(str(reference), str(features), as_of=D3)
    assert rows_of(view) == rows_of(reference)
    assert {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in rows_of(view)} == WANT_AS_OF_D3

    # Either engine continues a table the other wrote.
    delta_rs.refresh_incremental(str(view), str(features), ds=D2)
    assert run_job(lake, D3, "full")["rows"] == len(WANT_AS_OF_D3)
    delta_rs.refresh_incremental(str(view), str(features), ds=D3)
    assert rows_of(view) == rows_of(reference)
    assert DeltaTable(str(view)).history()[0]["operation"] in ("MERGE", "WRITE")


def test_spark_rebuild_reads_only_the_partitions_on_or_before_as_of(features: Path, spark) -> None:
    """As delta-rs: a later partition's new column, or changed type, does not change an older
    rebuild; a changed type is refused naming the partition; no partition is an error, never an
    empty table that would overwrite the view."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = features / f"date={D3.isoformat()}" / "part-00000.snappy.parquet"
    table = pq.read_table(path).append_column("new_feature", pa.array([7.0, 8.0, 9.0]))
    pq.write_table(table, path)
    want, _ = delta_rs.latest_per_entity(str(features), as_of=D2)
    assert spark_rows(latest_per_entity(spark, str(features), as_of=D2)) == want.to_pylist()

    index = table.schema.get_field_index("transaction_count")
    pq.write_table(table.set_column(index, "transaction_count", pa.array(["21", "23", "24"])), path)
    assert spark_rows(latest_per_entity(spark, str(features), as_of=D2)) == want.to_pylist()
    with pytest.raises(
        ValueError,
        match=r"date=2026-10-28: column 'transaction_count' is string, but bigint in the older "
        r"partitions.*then refresh the view in full",
    ):
        latest_per_entity(spark, str(features), as_of=D3)

    with pytest.raises(FileNotFoundError, match="no feature partition on or before 2026-01-01"):
        latest_per_entity(spark, str(features), as_of=date(2026, 1, 1))


def test_spark_look_back_ignores_the_columns_of_later_partitions(
    features: Path, spark, tmp_path: Path
) -> None:
    """A rerun of an older date while a later partition already has a new column (its incremental
    refresh refused, waiting for a full one): delta-rs's look-back reads only the older partitions,
    and so must Spark's, instead of refusing the view's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake import materialized_views_spark as on_spark

    view_path = str(tmp_path / "view")
    delta_rs.refresh_full(view_path, str(features), as_of=D3)
    path = features / f"date={D3.isoformat()}" / "part-00000.snappy.parquet"
    pq.write_table(pq.read_table(path).append_column("new_feature", pa.array([7.0, 8.0, 9.0])), path)
    got = on_spark.newest_rows_before(
        spark,
        str(features),
        before=D2,
        entities=spark.createDataFrame([("b",), ("e",)], "user_id string"),
        entity_column="user_id",
        view=spark.read.parquet(view_path),
        view_path=view_path,
    )
    want, _ = delta_rs.newest_rows_before(
        str(features),
        before=D2,
        entities=pa.array(["b", "e"]),
        entity_column="user_id",
        view_schema=pa.schema(DeltaTable(view_path).schema().to_arrow()),
        view_path=view_path,
    )
    assert spark_rows(got) == want.sort_by("user_id").to_pylist()
    assert [row["user_id"] for row in spark_rows(got)] == ["b"]


def test_spark_refuses_rows_dated_otherwise_than_their_partition(
    features: Path, spark, tmp_path: Path
) -> None:
    """As delta-rs (test_materialized_views.py): a copy of D1's partition under date=D3 gave a
    rebuild that took its rows as D3's and a MERGE that kept a's row of D2. Spark's rebuild, its
    look-back and its incremental read of the day refuse it with delta-rs's message."""
    import shutil

    from featurelake import materialized_views_spark as on_spark

    shutil.rmtree(features / f"date={D3}")
    shutil.copytree(features / f"date={D1}", features / f"date={D3}")
    message = (
        r"date=2026-10-28 has 3 row\(s\) whose 'feature_date' is not 2026-10-28 \(2026-10-26\).*"
        r"Rerun the feature job for 2026-10-28"
    )
    with pytest.raises(ValueError, match=message):
        delta_rs.refresh_full(str(tmp_path / "delta-rs"), str(features), as_of=D3)
    with pytest.raises(ValueError, match=message):
        latest_per_entity(spark, str(features), as_of=D3)
    with pytest.raises(ValueError, match=message):
        on_spark._partition_rows(spark, str(features), D3)
    view_path = str(tmp_path / "view")
    delta_rs.refresh_full(view_path, str(features), as_of=D2)
    with pytest.raises(ValueError, match=message):
        on_spark.newest_rows_before(
            spark,
            str(features),
            before=date(2026, 10, 29),
            entities=spark.createDataFrame([("a",)], "user_id string"),
            entity_column="user_id",
            view=spark.read.parquet(view_path),
            view_path=view_path,
        )
    # the dates before it are as they should be
    assert spark_rows(latest_per_entity(spark, str(features), as_of=D2)) == (
        delta_rs.latest_per_entity(str(features), as_of=D2)[0].to_pylist()
    )


def test_spark_reads_a_partition_as_the_union_of_its_files_columns(features: Path, spark) -> None:
    """A partition whose later file has a column the first lacks: Spark read one file's columns and
    dropped the other's (delta-rs reads their union, null where a file lacks one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake import materialized_views_spark as on_spark
    from featurelake.offline_features import partition_dataset

    partition = features / f"date={D3.isoformat()}"
    table = pq.read_table(partition / "part-00000.snappy.parquet")
    pq.write_table(table.slice(0, 1), partition / "part-00000.snappy.parquet")
    later = table.slice(1).append_column("new_feature", pa.array([7.0] * (table.num_rows - 1)))
    pq.write_table(later, partition / "part-00001.snappy.parquet")

    got = on_spark._partition_rows(spark, str(features), D3)
    want = partition_dataset(str(partition), entity_column="user_id").to_table()
    assert "new_feature" in got.columns
    assert sorted(got.toArrow().to_pylist(), key=lambda row: row["user_id"]) == sorted(
        want.to_pylist(), key=lambda row: row["user_id"]
    )
