"""The benchmark scripts in bench/ (except dag_parse.py, which tests/dags runs), each run as `make bench`
runs it, as a subprocess, at a tiny size, so that they keep working as the library changes. Their
results are checked for shape and for the cross-checks the benches make (Spark against DuckDB, Dask
against DuckDB), never for speed: the machines are shared and noisy. Every script's data, scratch
directories and redis-servers live under the test's tmp_path (`--data-dir`, TMPDIR for tempfile,
SPARK_LOCAL_DIRS for Spark)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import PROJECT_ROOT

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

# A tiny lake for merchant_stats.py and feature_job.py: about 5,000 rows over 10 dates for 500 users,
# a window of 7 dates (feature_job.py wants history beyond the window).
TINY_LAKE = ["--users", "500", "--days", "10", "--rows", "5000", "--window-days", "7"]


def run_bench(
    script: str, *args: str, tmp_path: Path, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """Run bench/`script` with `args` from the project root, its temporary files (tempfile's and
    Spark's) under tmp_path; fail with the end of its output unless it exits 0."""
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / script), *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "TMPDIR": str(scratch), "SPARK_LOCAL_DIRS": str(scratch)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    log.info("bench/%s exited %d after %.1f s", script, result.returncode, time.perf_counter() - started)
    assert result.returncode == 0, f"bench/{script} exited {result.returncode}:\n" + (
        result.stdout[-3000:] + result.stderr[-5000:]
    )
    return result


def assert_positive_finite(values: dict[str, Any]) -> None:
    for name, value in values.items():
        assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
        assert math.isfinite(value) and value > 0, (name, value)


def test_generate_reports_the_rows_it_wrote(tmp_path: Path) -> None:
    result = run_bench(
        "generate.py", "--users", "200", "--days", "3", "--workers", "1", "--repeat", "1", tmp_path=tmp_path
    )
    rows = re.search(r"^run 1: ([\d,]+) rows in [\d.]+ s = ([\d,]+) rows/s", result.stdout, re.MULTILINE)
    assert rows is not None, result.stdout
    assert int(rows[1].replace(",", "")) > 0
    assert "best" in result.stdout and "median" in result.stdout
    # The lake was a temporary directory, removed after the run.
    assert list((tmp_path / "tmp").iterdir()) == []


def test_online_store_reports_every_measurement_and_ratio(tmp_path: Path) -> None:
    output = tmp_path / "online_store.json"
    # 200 records: enough for the latency quantiles and for keys to move in the rebalance to 4 nodes.
    run_bench(
        "online_store.py", "--records", "200", "--repeat", "1", "--json", str(output), tmp_path=tmp_path
    )
    report = json.loads(output.read_text())
    assert report["records"] == 200
    measurements = {
        # timed writes replace the previous date's records, as the daily publish does
        "write_plain_set_over_previous_date_s",
        "write_store_over_previous_date_s",
        "write_store_into_empty_s",
        "publish_replace_date_over_previous_date_s",
        "read_store_s",
        "read_get_per_key_s",
        "cache_from_redis_s",
        "cache_local_s",
        "get_local_p50_us",
        "get_local_p99_us",
        "get_redis_p50_us",
        "get_redis_p99_us",
        "rebalance_s",
        "rebalance_moved",
        "cluster_write_store_over_previous_date_s",
        "cluster_read_store_s",
        "cluster_mget_per_slot_s",
        "cluster_get_pipeline_s",
    }
    assert measurements <= report["results"].keys()
    assert_positive_finite(report["results"])
    assert len(report["ratios"]) == 7, report["ratios"]
    assert_positive_finite(report["ratios"])


def test_merchant_stats_dask_matches_duckdb(tmp_path: Path) -> None:
    output = tmp_path / "merchant_stats.json"
    run_bench(
        "merchant_stats.py",
        *TINY_LAKE,
        "--data-dir",
        str(tmp_path / "data"),
        "--json",
        str(output),
        tmp_path=tmp_path,
    )
    results = json.loads(output.read_text())["results"]
    assert results["same_result"] is True
    assert results["merchants"] > 0 and results["buckets"] > 0
    assert 0 < results["rows_counted"] <= results["rows_read"]
    assert_positive_finite(
        {
            name: results[name]
            for name in (
                "window_in_pandas_mib",
                "workers_memory_limit_mib",
                "window_over_limit",
                "dask_seconds",
                "dask_workers_peak_rss_mib",
                "duckdb_seconds",
                "dask_over_duckdb",
            )
        }
    )
    assert isinstance(results["workers_restarted"], int)
    assert list((tmp_path / "data").iterdir()), "the lake was not written under --data-dir"


@pytest.mark.slow
def test_feature_job_spark_matches_duckdb_and_reports_its_targets(tmp_path: Path) -> None:
    output = tmp_path / "feature_job.json"
    data_dir = tmp_path / "data"
    run_bench(
        "feature_job.py",
        *TINY_LAKE,
        "--repeat",
        "1",
        "--repeat-heavy",
        "1",
        "--data-dir",
        str(data_dir),
        "--json",
        str(output),
        tmp_path=tmp_path,
        timeout=600,
    )
    results = json.loads(output.read_text())
    params = results["params"]
    assert params["rows"] > 0
    assert Path(params["lake"]).parent == data_dir and Path(params["doubled_lake"]).parent == data_dir

    # The bench's cross-checks: DuckDB and Spark give the same users with the same features, and
    # quarantine the same rows.
    check = results["output_check"]
    assert check["users_spark"] == check["users_duckdb"] > 0, check
    assert results["users_match"] is True, check
    assert results["outputs_match"] is True and results["mismatching_users"] == 0, check
    quarantine = results["information"][0]
    assert quarantine["duckdb_quarantine_rows"] == quarantine["spark_quarantine_rows"]

    # DuckDB's two timings, then the warm-up, full, doubled-history, rebuild and incremental runs.
    assert len(results["timings"]) == 7, [row["name"] for row in results["timings"]]
    assert_positive_finite({row["name"]: row["median_seconds"] for row in results["timings"]})
    assert [target["name"] for target in results["targets"]] == [
        "spark full / duckdb",
        "incremental / full",
        "full 20-day / full 10-day history",
    ]
    for target in results["targets"]:
        assert_positive_finite(
            {target["name"]: target["ratio"], f"{target['name']} (CPU)": target["cpu_ratio"]}
        )
        assert target["verdict"] in ("PASS", "MISS")

    runs = results["runs"]
    rebuild = runs["spark rebuild, DS-1 (every tile of the window, then combine)"]
    assert len(rebuild[0]["report"]["tiles_built"]) == 7
    incremental = runs["spark incremental (after the rebuild for DS-1)"]
    assert incremental[0]["report"]["tiles_built"] == [params["ds"]]
    assert all(run["report"]["users_written"] > 0 for scenario in runs.values() for run in scenario)
    # Spark's CPU time is the JVM's and the Python driver's.
    for run in (run for scenario in runs.values() for run in scenario):
        assert run["driver_cpu_seconds"] > 0 and run["jvm_cpu_seconds"] > 0, run["label"]
        assert run["cpu_seconds"] == pytest.approx(run["jvm_cpu_seconds"] + run["driver_cpu_seconds"])
