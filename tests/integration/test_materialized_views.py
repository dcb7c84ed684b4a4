"""Delta-table materialized views on real Delta tables (delta-rs): a full rebuild and incremental
MERGEs give the same table, whatever order the dates arrive in; reruns are idempotent; bad input is
refused with the path; and Spark reads the table the library wrote."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from featurelake.materialized_views import (
    refresh_full,
    refresh_incremental,
    refresh_view,
    spark_read_delta_files,
)
from tests.feature_view_partitions import (
    D1,
    D2,
    D3,
    WANT_AS_OF_D3,
    rows_of,
    write_feature_partitions,
    write_partition,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def features(tmp_path: Path) -> Path:
    return write_feature_partitions(tmp_path / "features" / "user_features")


@pytest.mark.parametrize(
    "order",
    [
        pytest.param([D1, D2, D3], id="daily"),
        pytest.param([D3, D1, D2], id="backfill-after-latest"),
        pytest.param([D2, D3, D1, D3], id="out-of-order-with-rerun"),
    ],
)
def test_incremental_merges_equal_a_full_refresh(features: Path, tmp_path: Path, order: list[date]) -> None:
    incremental, full = tmp_path / "views" / "incremental", tmp_path / "views" / "full"
    reports = [refresh_incremental(str(incremental), str(features), ds=day) for day in order]
    assert reports[0].mode == "full", "a view that does not exist yet is built in full"
    assert all(report.mode == "incremental" for report in reports[1:])
    refresh_full(str(full), str(features), as_of=D3)
    got = rows_of(incremental)
    assert got == rows_of(full)
    if order[0] == D3:
        # built in full as of D3 first: a MERGE of an older date rewrites only the rows of that very
        # date (b on D1; e and n on D2), and keeps every newer row
        assert (reports[1].inserted, reports[1].updated, reports[2].inserted, reports[2].updated) == (
            0,
            1,
            0,
            2,
        )
    assert {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in got} == WANT_AS_OF_D3
    assert next(r for r in got if r["user_id"] == "n")["std_spend"] is None


def test_a_full_refresh_ignores_later_partitions_and_a_rerun_gives_the_same_rows(
    features: Path, tmp_path: Path
) -> None:
    view = tmp_path / "views" / "v"
    first = refresh_view(str(view), str(features), ds=D2, mode="full")
    assert (first.dates_read, first.rows) == (2, 5)
    assert {r["user_id"]: r["feature_date"] for r in rows_of(view)} == {
        "a": D2,
        "b": D1,
        "c": D1,
        "e": D2,
        "n": D2,
    }
    before = rows_of(view)
    again = refresh_view(str(view), str(features), ds=D2, mode="incremental")
    assert again.version == first.version + 1 and rows_of(view) == before
    assert [h["operation"] for h in DeltaTable(str(view)).history()] == ["MERGE", "WRITE"]


def test_bad_input_is_refused_with_its_path(features: Path, tmp_path: Path) -> None:
    view = tmp_path / "views" / "v"
    with pytest.raises(ValueError, match="mode must be one of incremental, full"):
        refresh_view(str(view), str(features), ds=D3, mode="merge")
    with pytest.raises(FileNotFoundError, match="no feature partition on or before 2026-01-01"):
        refresh_full(str(view), str(features), as_of=date(2026, 1, 1))
    refresh_full(str(view), str(features), as_of=D3)
    with pytest.raises(FileNotFoundError, match=r"date=2026-10-29 does not exist"):
        refresh_incremental(str(view), str(features), ds=date(2026, 10, 29))
    write_partition(features, date(2026, 10, 29), {"a": 1.0})
    duplicated = features / "date=2026-10-29" / "part-00001.snappy.parquet"
    pq.write_table(pq.read_table(features / "date=2026-10-29" / "part-00000.snappy.parquet"), duplicated)
    with pytest.raises(ValueError, match=r"date=2026-10-29 holds an 'user_id' more than once"):
        refresh_incremental(str(view), str(features), ds=date(2026, 10, 29))
    assert {r["user_id"] for r in rows_of(view)} == set(WANT_AS_OF_D3), (
        "a refused MERGE leaves the view as it was"
    )


def test_spark_reads_the_delta_table_the_library_wrote(features: Path, tmp_path: Path, spark) -> None:
    view = tmp_path / "views" / "v"
    refresh_full(str(view), str(features), as_of=D2)
    refresh_incremental(str(view), str(features), ds=D3)  # a second version: older files are stale
    frame = spark_read_delta_files(spark, str(view))
    got = sorted((row["user_id"], row["feature_date"], row["total_spend"]) for row in frame.collect())
    assert got == sorted((user, day, spend) for user, (day, spend) in WANT_AS_OF_D3.items())


def test_an_empty_date_changes_nothing(features: Path, tmp_path: Path) -> None:
    """A date with no user in its window leaves its partition empty: both refreshes skip it."""
    (features / "date=2026-10-29").mkdir()
    view = tmp_path / "views" / "v"
    full = refresh_view(str(view), str(features), ds=date(2026, 10, 29), mode="full")
    merged = refresh_view(str(view), str(features), ds=date(2026, 10, 29), mode="incremental")
    assert (full.dates_read, full.rows, merged.rows, merged.version) == (4, 6, 6, full.version)
    assert {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in rows_of(view)} == WANT_AS_OF_D3
