"""`make demo`'s run of user_features_daily (`featurelake_airflow.demo`, after `featurelake generate`)
on a small generated lake, first and again: real tasks through `dag.test()`, real spark-submit on
local[*], a Dask LocalCluster, a private redis-server and delta-rs. What it prints is what the
README's "What the demo shows" says: the task table, the job's report (a first run `full`, counting
its date's rows; a rerun `incremental`, building every tile of the window), the most active users,
the Dask job's merchants, the Delta view and the reads through the layered cache."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import pytest

from featurelake.synthetic import generate_lake
from featurelake_airflow import demo

pytestmark = pytest.mark.integration

DAY = date(2026, 10, 28)


def test_the_demo_runs_the_daily_pipeline_and_prints_what_the_readme_says(
    airflow_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=DAY - timedelta(days=95), end=DAY, users=300, seed=7)
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(lake))
    monkeypatch.delenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", raising=False)  # the demo starts its own

    assert demo.main(["--date", DAY.isoformat()]) == 0
    first = capfd.readouterr().out
    states = dict(re.findall(r"│ (\w+)\s+│ (success|skipped|failed|upstream_failed)\s+│", first))
    assert states == {
        "check_raw_partition": "success",
        "choose_view_engine": "success",
        "compute_merchant_stats": "success",
        "compute_user_features": "success",
        "publish_online_features": "success",
        "refresh_user_features_view": "success",
        "refresh_user_features_view_spark": "skipped",  # the demo's Spark connection loads no Delta
    }, first
    first = " ".join(first.split())  # rich wraps lines at 140 columns
    written = re.search(
        r"Wrote (\d+) user feature rows to \S+ \(mode full, 1 tile\(s\) built; in the raw", first
    )
    assert written, first
    users = int(written[1])
    assert 100 < users <= 300
    assert "counted by the runs" not in first, "no claim about the window's other dates"
    assert "Most active users" in first
    assert re.search(r"Dask \(LocalCluster\): \d+ merchants' 30-day statistics", first), first
    assert re.search(rf"Delta view \S+: {users} rows, version 0", first), first
    assert re.search(
        r"evicted from Redis and locally │ 100 │ 0 local, 0 Redis, 100 computed, 0 missing", first
    )

    # Again, as a second `make demo`: the window's tiles are built.
    assert demo.main(["--date", DAY.isoformat()]) == 0
    again = " ".join(capfd.readouterr().out.split())
    assert re.search(
        rf"Wrote {users} user feature rows to \S+ \(mode incremental, 90 tile\(s\) built", again
    ), again
    # The same rows again: the MERGE changes nothing, and Delta commits no new version.
    assert re.search(rf"Delta view \S+: {users} rows, version 0; latest commits: v0 WRITE", again), again
