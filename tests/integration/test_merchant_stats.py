"""The Dask merchant statistics job on a real distributed scheduler and worker (the `dask scheduler`
and `dask worker` commands on loopback) and on an in-process LocalCluster, against an independent
DuckDB computation on the same files."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from featurelake.merchant_stats import compute_merchant_stats, dask_client
from featurelake.synthetic import generate_lake
from tests.oracle.merchant_stats_duckdb import oracle
from tests.support import VENV_BIN, free_port

pytestmark = pytest.mark.integration

DS = date(2026, 8, 20)
WINDOW = 10


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dask-lake") / "lake"
    # days after DS exist too: they must never count
    generate_lake(lake=root, start=DS - timedelta(days=14), end=DS + timedelta(days=2), users=400, seed=11)
    return root


@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory) -> Iterator[str]:
    """`dask scheduler` and one `dask worker` (2 threads, its own process) on loopback."""
    port = free_port()
    logs = tmp_path_factory.mktemp("dask")
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen(
        [str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=(logs / "scheduler.log").open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    address = f"tcp://127.0.0.1:{port}"
    worker = subprocess.Popen(
        [
            str(VENV_BIN / "dask"),
            "worker",
            address,
            "--nthreads",
            "2",
            "--nworkers",
            "1",
            "--no-dashboard",
            "--local-directory",
            str(logs / "worker"),
        ],
        stdout=(logs / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        from distributed import Client

        deadline = time.monotonic() + 90
        with Client(address, timeout="60s", set_as_default=False) as client:
            while not client.scheduler_info()["workers"]:
                assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-2000:]
                time.sleep(0.5)
        yield address
    finally:
        for process in (worker, scheduler):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def assert_matches(got_path: Path, want: pd.DataFrame, ds: date) -> None:
    got = pd.read_parquet(got_path).sort_values("merchant_id").reset_index(drop=True)
    assert len(got) == len(want) > 20
    assert (got["stats_date"] == ds).all()
    assert got["merchant_id"].tolist() == want["merchant_id"].tolist()
    for column in ("transaction_count", "unique_users", "active_days"):
        assert got[column].tolist() == want[column].astype("int64").tolist(), column
    for column in ("total_amount", "avg_amount", "refund_share"):
        pd.testing.assert_series_equal(
            got[column], want[column].astype("float64"), rtol=1e-9, check_names=False
        )


def run_merchant_stats(client, lake: Path, tmp_path: Path):
    """The job over WINDOW days up to DS, into tmp_path's merchant_stats/date=DS, staging in tmp_path."""
    return compute_merchant_stats(
        client,
        raw_transactions=str(lake / "raw" / "transactions"),
        output=str(tmp_path / "merchant_stats" / f"date={DS}"),
        staging=str(tmp_path / "staging"),
        ds=DS,
        window_days=WINDOW,
    )


def test_a_distributed_scheduler_computes_the_oracle_stats(
    lake: Path, dask_scheduler: str, tmp_path: Path
) -> None:
    with dask_client(dask_scheduler) as client:
        report = run_merchant_stats(client, lake, tmp_path)
        assert client.scheduler.address == dask_scheduler
    assert_matches(Path(report.output_path), oracle(lake, DS, WINDOW), DS)
    assert report.rows_read > report.rows_counted > 0, "invalid rows were read and not counted"


def test_a_local_cluster_gives_the_same_and_a_rerun_replaces_the_output(lake: Path, tmp_path: Path) -> None:
    # What a failed attempt could leave in the staging directory, where a bucket task reads: a date
    # of bucket 0 holding the whole raw day. It must not count.
    stale = tmp_path / "staging" / "bucket=0" / f"date={DS}"
    stale.mkdir(parents=True)
    raw_day = next((lake / "raw" / "transactions" / f"date={DS}").glob("*.parquet"))
    shutil.copy(raw_day, stale / "part-999-0.parquet")
    want = oracle(lake, DS, WINDOW)
    with dask_client("local") as client:
        for _ in range(2):  # the first run meets the stale files; the rerun replaces its output
            report = run_merchant_stats(client, lake, tmp_path)
            assert_matches(Path(report.output_path), want, DS)
    assert not (tmp_path / "staging").exists(), "the job removes its staging directory"
    with pytest.raises(ValueError, match="window_days must be >= 1"):
        compute_merchant_stats(None, raw_transactions="x", output="y", staging="z", ds=DS, window_days=0)
