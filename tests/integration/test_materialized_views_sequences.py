"""Sequences of feature-job runs and view refreshes, found by a model-based fuzz of
featurelake.materialized_views, that the daily DAG must get through: each pins a defect the fuzz
found, with the shortest sequence that shows it."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from featurelake.materialized_views import refresh_full, refresh_view
from tests.feature_view_partitions import D1, D2, D3, rows_of, write_feature_partitions, write_partition

pytestmark = pytest.mark.integration

D4, D5 = date(2026, 10, 29), date(2026, 10, 30)


def write_partition_without(features: Path, day: date, users: dict[str, float], column: str) -> None:
    write_partition(features, day, users)
    path = features / f"date={day.isoformat()}" / "part-00000.snappy.parquet"
    pq.write_table(pq.read_table(path).drop_columns([column]), path)


def test_after_a_dropped_column_and_the_full_refresh_incremental_refreshes_go_on(tmp_path: Path) -> None:
    """The feature definition drops std_spend from D4 on. The first incremental refresh is refused,
    saying to refresh in full; after that full refresh (which keeps the column, null for D4's rows)
    the daily incremental refreshes must go on, as after an added column. They were refused every
    day, full refresh or not, since every older partition still has the column."""
    features = write_feature_partitions(tmp_path / "features" / "user_features")
    view = tmp_path / "views" / "v"
    refresh_view(str(view), str(features), ds=D3)
    write_partition_without(features, D4, {"a": 31.0, "f": 6.0}, "std_spend")
    with pytest.raises(ValueError, match=r"view columns it lacks: std_spend.*Refresh the view in full"):
        refresh_view(str(view), str(features), ds=D4)
    refresh_view(str(view), str(features), ds=D4, mode="full")

    write_partition_without(features, D5, {"a": 41.0, "g": 7.0}, "std_spend")
    assert refresh_view(str(view), str(features), ds=D5).inserted == 1
    assert refresh_view(str(view), str(features), ds=D4).mode == "incremental", "a rerun of D4"

    reference = tmp_path / "views" / "reference"
    refresh_full(str(reference), str(features), as_of=D5)
    schema = pa.schema(DeltaTable(str(view)).schema().to_arrow())
    assert schema == pa.schema(DeltaTable(str(reference)).schema().to_arrow())
    assert "std_spend" in schema.names, "a dropped column stays while older partitions have it"
    assert rows_of(view) == rows_of(reference)
    assert {r["user_id"]: r["std_spend"] for r in rows_of(view) if r["user_id"] in "afg"} == {
        "a": None,
        "f": None,
        "g": None,
    }


def test_spark_sees_the_dropped_column_as_delta_rs_does(tmp_path: Path, spark) -> None:
    """delta-spark's incremental refresh makes the same check (no jars needed: the view is read
    through its file list). Its MERGE itself cannot run here."""
    from featurelake import materialized_views as delta_rs
    from featurelake import materialized_views_spark as on_spark

    features = write_feature_partitions(tmp_path / "features" / "user_features")
    view = tmp_path / "views" / "v"
    write_partition_without(features, D4, {"a": 31.0}, "std_spend")
    refresh_full(str(view), str(features), as_of=D3)
    before = delta_rs.spark_read_delta_files(spark, str(view))
    refresh_full(str(view), str(features), as_of=D4)
    after = delta_rs.spark_read_delta_files(spark, str(view))
    table = DeltaTable(str(view))
    assert (
        delta_rs._may_lack(table, ["std_spend"], D5) is on_spark._may_lack(after, ["std_spend"], D5) is True
    )
    assert on_spark._may_lack(before, ["std_spend"], D5) is False
    assert on_spark._may_lack(after, [], D5) is delta_rs._may_lack(table, [], D5) is False
    # a column added after the date: the view's rows up to it hold no value there
    assert on_spark._may_lack(before, ["std_spend"], date(2026, 10, 1)) is True


def test_after_an_added_column_an_older_date_refreshes_incrementally(tmp_path: Path) -> None:
    """The feature definition adds std_spend from D3 on. The view refreshed in full as of D3 has it.
    An incremental refresh of D1 or D2 (a rerun of the refresh task of a backfilled date, whose
    partition predates the column) was refused, saying to refresh in full; the full refresh changed
    nothing, and every such rerun was refused again. Their rows get nulls there, as in a full refresh."""
    features = tmp_path / "features" / "user_features"
    write_partition_without(features, D1, {"a": 1.0, "b": 2.0, "c": 3.0}, "std_spend")
    write_partition_without(features, D2, {"a": 11.0, "e": 15.0}, "std_spend")
    write_partition(features, D3, {"a": 21.0, "c": 23.0, "d": 24.0})
    view = tmp_path / "views" / "v"
    refresh_view(str(view), str(features), ds=D3, mode="full")

    # a rerun of D2 whose partition lost `e`: e's row is replaced by its newest earlier one (none)
    shutil.rmtree(features / f"date={D2.isoformat()}")
    write_partition_without(features, D2, {"a": 11.0}, "std_spend")
    for ds in (D1, D2):
        assert refresh_view(str(view), str(features), ds=ds).mode == "incremental"
    reference = tmp_path / "views" / "reference"
    refresh_full(str(reference), str(features), as_of=D3)
    assert rows_of(view) == rows_of(reference)
    # a partition of the column's dates without it is still refused
    shutil.rmtree(features / f"date={D3.isoformat()}")
    write_partition_without(features, D3, {"a": 21.0, "c": 23.0, "d": 24.0}, "std_spend")
    with pytest.raises(ValueError, match=r"view columns it lacks: std_spend.*Refresh the view in full"):
        refresh_view(str(view), str(features), ds=D3)
