"""The feature run's modes on generated data with every edge case added: full and incremental give
the oracle's rows and each other's, in the test session's Spark (`run_user_features`, what the
job's entry point calls); then a rerun of the same date through real spark-submit, in incremental
mode, is idempotent. test_user_features_job.py covers the entry point on the edge cases alone; a
spark-submit costs 15 to 25 s of start-up here, so the four runs that set the lake up share the
session's JVM."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from featurelake.synthetic import generate_lake
from featurelake.user_features_run import run_user_features
from tests.integration.test_user_features_job import (
    DS,
    assert_matches_oracle,
    assert_quarantine_matches_oracle,
    quarantine_counts,
    read_features,
    run_job,
    window,
)
from tests.oracle.edge_case_lake import write_edge_case_lake
from tests.oracle.user_features_duckdb import compute_user_features, duplicate_rows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def generated_lake(tmp_path_factory) -> Path:
    """Generated data from 100 days before DS to 3 days after it, with the edge-case rows added as
    extra files in their partitions (the generator's categories stay the lookup)."""
    root = tmp_path_factory.mktemp("generated")
    lake = root / "lake"
    generate_lake(lake=lake, start=DS - timedelta(days=100), end=DS + timedelta(days=3), users=300, seed=11)
    edge = root / "edge"
    write_edge_case_lake(edge, ds=DS)
    for source in sorted((edge / "raw" / "transactions").glob("date=*/*.parquet")):
        target = lake / "raw" / "transactions" / source.parent.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target / f"edge-{source.name}")
    return lake


def run_in_session(spark, lake: Path, ds: date, mode: str = "auto") -> dict:
    """The run's report, as the job writes it to `_metrics/` (dates as ISO text)."""
    return asdict(run_user_features(spark, ds=ds, lake=str(lake), window_days=90, mode=mode))


def test_full_and_incremental_agree_with_the_oracle_and_each_other(spark, generated_lake: Path) -> None:
    lake = generated_lake
    yesterday = DS - timedelta(days=1)
    first = run_in_session(spark, lake, yesterday)  # no tiles yet: auto resolves to full, from raw
    assert first["mode"] == "full"
    assert first["tiles_built"] == [yesterday.isoformat()]
    assert first["raw_dates_read"] == 90
    assert first["duplicate_rows_dropped"] == duplicate_rows(lake=lake, dates=[yesterday])
    assert first["quarantined_by_reason"] == quarantine_counts(lake, [yesterday])
    assert first["quarantined_rows"] > 0  # the edge-case date mismatch lands on that date
    assert_quarantine_matches_oracle(lake, [yesterday])  # and no other date's
    assert_matches_oracle(read_features(lake, yesterday), compute_user_features(lake=lake, ds=yesterday))

    # A tile exists: auto resolves to incremental, which builds the window's other 89 tiles first.
    bootstrap = run_in_session(spark, lake, DS)
    assert bootstrap["mode"] == "incremental"
    assert len(bootstrap["tiles_built"]) == 89
    assert yesterday.isoformat() not in bootstrap["tiles_built"]
    assert bootstrap["duplicate_rows_dropped"] == duplicate_rows(
        lake=lake, dates=[date.fromisoformat(d) for d in bootstrap["tiles_built"]]
    )
    # Every date of DS's window now has its tile and its quarantine, from one run or the other.
    assert_quarantine_matches_oracle(lake, window(DS))
    assert_matches_oracle(read_features(lake, DS), compute_user_features(lake=lake, ds=DS))

    daily = run_in_session(spark, lake, DS)  # every tile exists: the daily run builds the tile of DS only
    assert daily["mode"] == "incremental"
    assert daily["tiles_built"] == [DS.isoformat()]
    assert daily["duplicate_rows_dropped"] == duplicate_rows(lake=lake, dates=[DS])
    incremental_rows = read_features(lake, DS)
    assert_matches_oracle(incremental_rows, compute_user_features(lake=lake, ds=DS))

    full = run_in_session(spark, lake, DS, mode="full")
    assert full["mode"] == "full"
    full_rows = read_features(lake, DS)
    pd.testing.assert_frame_equal(full_rows, incremental_rows, check_exact=True)
    assert full["users_written"] == daily["users_written"] == len(full_rows)
    assert full_rows["user_id"].is_unique
    assert full["duplicate_rows_dropped"] == duplicate_rows(lake=lake, dates=[DS])
    # That tiles outside the window (before it, after DS) change nothing is checked in
    # test_user_features_window_listing.py.


def test_a_rerun_through_spark_submit_is_idempotent_and_leaves_other_dates_alone(
    spark, generated_lake: Path
) -> None:
    lake = generated_lake
    for day in (DS - timedelta(days=1), DS):  # written by the test above, unless this one runs alone
        if not (lake / "features" / "user_features" / f"date={day.isoformat()}").is_dir():
            run_in_session(spark, lake, day)
    other = lake / "features" / "user_features" / f"date={(DS - timedelta(days=1)).isoformat()}"
    other_bytes = {p.name: p.read_bytes() for p in other.glob("*.parquet")}
    assert other_bytes
    before = read_features(lake, DS)

    report = run_job(lake, DS, "--mode", "incremental")
    after = read_features(lake, DS)

    assert report["mode"] == "incremental" and report["tiles_built"] == [DS.isoformat()]
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    assert {p.name: p.read_bytes() for p in other.glob("*.parquet")} == other_bytes
    assert len(list((lake / "features" / "user_features" / f"date={DS.isoformat()}").glob("*.parquet"))) >= 1
