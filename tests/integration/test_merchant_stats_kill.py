"""Airflow stopping a Dask merchant-stats task (marked failed in the UI, its run stopped): Airflow's
task runner answers SIGTERM by calling the operator's `on_kill` (`_on_term` in
airflow.sdk.execution_time.task_runner), and its supervisor sends SIGKILL 5 s later. Here a real
`dask scheduler` and `dask worker` run on loopback, and the operator's `execute` runs in a process of
its own with that handler. The worker is paused (Dask sends a paused worker no task), so the job's
tasks wait on the scheduler, and the SIGTERM comes mid-run whatever the machine's speed. Then the
worker runs again, and a retry writes the oracle's statistics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from distributed import Client
from distributed.core import Status

from featurelake.synthetic import generate_lake
from featurelake_airflow.operators.dask_merchant_stats import DaskMerchantStatsOperator
from tests.integration.test_merchant_stats import assert_matches
from tests.integration.test_merchant_stats_tls import TASK
from tests.oracle.merchant_stats_duckdb import oracle
from tests.support import PROJECT_ROOT, VENV_BIN, dask_processes

pytestmark = pytest.mark.integration

DS = date(2026, 8, 20)
WINDOW = 3


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[str]:
    # No memory limit: the worker's memory monitor would otherwise undo the pause below (it sets
    # a paused worker running again while its memory is under the pause threshold).
    with dask_processes(
        [str(VENV_BIN / "dask"), "worker"], tmp_path, env={}, worker_options=["--memory-limit", "0"]
    ) as address:
        yield address


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    generate_lake(lake=root, start=DS - timedelta(days=WINDOW - 1), end=DS, users=200, seed=23)
    return root


def set_workers_status(client: Client, status: Status) -> None:
    # A lambda: cloudpickle sends it by value, as the worker cannot import this test module.
    client.run(lambda dask_worker: setattr(dask_worker, "status", status))
    deadline = time.monotonic() + 30
    while {w["status"] for w in client.scheduler_info()["workers"].values()} != {status.name}:
        assert time.monotonic() < deadline, client.scheduler_info()["workers"]
        time.sleep(0.1)


def scheduler_tasks(client: Client) -> int:
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def dask_connection(address: str) -> str:
    host, port = address.rsplit(":", 1)
    return json.dumps({"conn_type": "generic", "host": host, "port": int(port)})


def start_task(tmp_path: Path, lake: Path, address: str, name: str) -> tuple[subprocess.Popen, Path]:
    outcome = tmp_path / f"{name}.json"
    process = subprocess.Popen(
        [sys.executable, "-c", TASK, str(outcome), str(lake), DS.isoformat(), str(WINDOW)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / f"{name}.log").open("w"),
        env={**os.environ, "AIRFLOW_CONN_DASK_DEFAULT": dask_connection(address)},
        cwd=PROJECT_ROOT,
    )
    return process, outcome


def outcome_of(process: subprocess.Popen, outcome: Path, log: Path) -> dict[str, Any]:
    assert outcome.exists(), f"the task process died ({process.returncode}): {log.read_text()[-3000:]}"
    return json.loads(outcome.read_text())


def test_a_stopped_task_closes_its_client_the_scheduler_drops_its_work_and_a_retry_succeeds(
    scheduler: str, lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = lake / "features" / "merchant_stats" / f"date={DS}"
    with Client(scheduler, set_as_default=False, timeout="30s") as client:
        set_workers_status(client, Status.paused)
        process, outcome = start_task(tmp_path, lake, scheduler, "stopped")
        try:
            deadline = time.monotonic() + 120
            while scheduler_tasks(client) == 0:  # the job has sent its staging tasks, none can run
                assert process.poll() is None, (tmp_path / "stopped.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the job sent no task to the scheduler"
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    "the task went on waiting for its Dask job after SIGTERM (Airflow's handler "
                    "calls on_kill, which must stop the job)"
                ) from None
        finally:
            process.kill()
            process.wait()
        stopped = outcome_of(process, outcome, tmp_path / "stopped.log")
        assert stopped.get("error") == "RuntimeError", stopped
        assert stopped["message"].startswith(f"merchant stats of {DS} stopped: Airflow stopped this task"), (
            stopped
        )
        assert "Its output partition was left as it was" in stopped["message"]
        deadline = time.monotonic() + 30
        while (left := scheduler_tasks(client)) != 0:  # the closed client's tasks are dropped
            assert time.monotonic() < deadline, f"the scheduler still holds {left} tasks of the stopped job"
            time.sleep(0.1)
        # No task ran (the worker is paused), so no staging file was written after the job's
        # clean-up removed the staging directory.
        assert not output.exists()
        assert not (lake / "_staging" / "merchant_stats" / f"date={DS}").exists()

        # The retry, once the worker takes tasks again, writes what a run that was never stopped
        # writes. In this process: a second task process would only add its start-up.
        set_workers_status(client, Status.running)
    monkeypatch.setenv("AIRFLOW_CONN_DASK_DEFAULT", dask_connection(scheduler))
    operator = DaskMerchantStatsOperator(
        task_id="compute_merchant_stats", lake=str(lake), ds=DS.isoformat(), window_days=WINDOW
    )
    report = operator.execute(context={})
    want = oracle(lake, DS, WINDOW)
    assert report["merchants"] == len(want)
    assert_matches(output, want, DS)
