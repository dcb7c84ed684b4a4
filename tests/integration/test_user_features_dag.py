"""user_features_daily end to end through Airflow (`dag.test()`, real spark-submit): on local[2], and
on a real Spark standalone cluster on loopback reached through the Spark connection alone."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from featurelake.synthetic import generate_lake
from tests.integration.test_user_features_job import assert_matches_oracle, read_features
from tests.oracle.user_features_duckdb import compute_user_features
from tests.support import PROJECT_ROOT, VENV_BIN, free_port

pytestmark = pytest.mark.integration

DS = date(2026, 8, 20)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dag-lake") / "lake"
    generate_lake(lake=root, start=DS - timedelta(days=95), end=DS + timedelta(days=2), users=250, seed=5)
    return root


@pytest.fixture(scope="module")
def daily_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag("user_features_daily")


def run_dag(
    dag, day: date, *, lake: Path, spark_connection: dict, monkeypatch, run_conf: dict | None = None
) -> dict[str, str]:
    """Run the DAG for one logical date; return {task_id: state}."""
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(lake))
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(spark_connection))
    run = dag.test(logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC), run_conf=run_conf)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    return states


def test_daily_run_writes_the_oracle_features(daily_dag, lake: Path, monkeypatch) -> None:
    states = run_dag(
        daily_dag,
        DS,
        lake=lake,
        spark_connection={"conn_type": "spark", "host": "local[2]"},
        monkeypatch=monkeypatch,
    )
    assert states == {"check_raw_partition": "success", "compute_user_features": "success"}

    got = read_features(lake, DS)
    want = compute_user_features(lake=lake, ds=DS)
    assert_matches_oracle(got, want)
    assert got["total_spend"].sum() == pytest.approx(want["total_spend"].sum(), rel=1e-9)
    report = json.loads((lake / "_metrics" / "user_features" / f"date={DS.isoformat()}.json").read_text())
    assert report["users_written"] == len(want)


def test_missing_partition_fails_naming_the_path(lake: Path) -> None:
    from featurelake_airflow.operators.raw_partition import RawPartitionCheckOperator

    check = RawPartitionCheckOperator(task_id="check", lake=str(lake), ds="2030-01-01")
    with pytest.raises(FileNotFoundError, match=r"raw/transactions/date=2030-01-01 is missing"):
        check.execute(context={})


def _wait_for(url: str, predicate, *, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                state = json.loads(response.read())
            if predicate(state):
                return state
        except (OSError, ValueError) as error:  # not up yet, or a half-started UI
            last = error
        time.sleep(1)
    raise TimeoutError(f"{url} did not reach the wanted state in {timeout} s (last error: {last})")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A Spark standalone master and one worker (2 cores) on loopback; yields (master URL, master UI URL)."""
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    logs = tmp_path_factory.mktemp("spark-standalone")
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(logs / "work"),
        # The REST submission server would take the fixed port 6066; this test submits in client mode.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
    }
    spark_class = str(VENV_BIN / "spark-class")
    master = subprocess.Popen(
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
        ],
        env=env,
        stdout=(logs / "master.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    worker = None
    try:
        ui = f"http://127.0.0.1:{ui_port}"
        _wait_for(f"{ui}/json/", lambda s: s.get("status") == "ALIVE", timeout=60)
        worker = subprocess.Popen(
            [
                spark_class,
                "org.apache.spark.deploy.worker.Worker",
                f"spark://127.0.0.1:{port}",
                "--cores",
                "2",
                "--memory",
                "2g",
                "--webui-port",
                str(worker_ui),
            ],
            env=env,
            stdout=(logs / "worker.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        _wait_for(f"{ui}/json/", lambda s: s.get("aliveworkers", 0) >= 1, timeout=90)
        yield f"spark://127.0.0.1:{port}", ui
    finally:
        for process in (worker, master):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_same_dag_runs_on_a_standalone_cluster(
    daily_dag, lake: Path, standalone_cluster, monkeypatch
) -> None:
    master_url, ui = standalone_cluster
    day = DS + timedelta(days=1)
    connection = {
        "conn_type": "spark",
        "host": master_url,
        "extra": {
            "conf": {"spark.executor.memory": "768m", "spark.cores.max": "2", "spark.log.level": "WARN"}
        },
    }
    run_dag(
        daily_dag,
        day,
        lake=lake,
        spark_connection=connection,
        monkeypatch=monkeypatch,
        run_conf={"mode": "incremental"},
    )

    state = _wait_for(f"{ui}/json/", lambda s: len(s.get("completedapps", [])) >= 1, timeout=60)
    apps = {app["name"]: app for app in state["completedapps"]}
    app = apps.get(f"featurelake-user-features-{day.isoformat()}")
    assert app is not None, sorted(apps)
    # The connection's `conf` extra reached the cluster: 768m executors, not the 1g default.
    assert app.get("memoryperexecutor", app.get("memoryperslave")) == 768, app
    assert_matches_oracle(read_features(lake, day), compute_user_features(lake=lake, ds=day))
    report = json.loads((lake / "_metrics" / "user_features" / f"date={day.isoformat()}.json").read_text())
    assert report["mode"] == "incremental"
    assert day.isoformat() in report["tiles_built"]
    assert pd.Timestamp(read_features(lake, day)["feature_date"].iloc[0]).date() == day
