"""user_features_daily end to end through Airflow (`dag.test()`, real spark-submit, real Redis
shards): on local[2], and on a real Spark standalone cluster on loopback reached through the Spark
connection alone; and online_store_rebalance moving the online store to a bigger ring."""

from __future__ import annotations

import json
import os
import re
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
from tests.oracle.latest_features_duckdb import latest_features
from tests.oracle.user_features_duckdb import compute_user_features
from tests.support import PROJECT_ROOT, VENV_BIN

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


def ring_connection(nodes: list[str], **extra: object) -> dict:
    """The featurelake_online connection of a ketama ring over `nodes`."""
    host, port = nodes[0].rsplit(":", 1)
    return {"conn_type": "redis", "host": host, "port": int(port), "extra": {"nodes": nodes, **extra}}


def assert_online_store_holds(nodes: list[str], lake: Path, day: date) -> None:
    """Every user of the day's feature partition is in the online store, with exactly its values."""
    from featurelake.offline_features import partition_records
    from featurelake.online_store import OnlineStore, OnlineStoreConfig

    partition = lake / "features" / "user_features" / f"date={day.isoformat()}"
    want = dict(partition_records(str(partition), feature_date=day))
    with OnlineStore(OnlineStoreConfig(nodes=nodes)) as store:
        got = store.read("user_features", want)
    assert len(want) > 100 and got == want
    values = next(iter(got.values())).values
    assert {"total_spend", "unique_merchants", "last_transaction_ts", "top_category_group"} <= set(values)


def assert_view_holds_the_latest_features(lake: Path, day: date) -> None:
    """views/user_features_latest is each user's newest feature row on or before `day`, as DuckDB
    finds it in the feature partitions (not the view's own `latest_per_entity`)."""
    from deltalake import DeltaTable

    view = DeltaTable(str(lake / "views" / "user_features_latest")).to_pyarrow_table().sort_by("user_id")
    want = latest_features(lake / "features" / "user_features", day)
    assert view.num_rows > 100 and view.to_pylist() == want.to_pylist()


def run_dag(
    dag,
    day: date,
    *,
    lake: Path,
    spark_connection: dict,
    online_nodes: list[str],
    monkeypatch,
    run_conf: dict | None = None,
) -> dict[str, str]:
    """Run the DAG for one logical date; return {task_id: state}."""
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(lake))
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(spark_connection))
    monkeypatch.setenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", json.dumps(ring_connection(online_nodes)))
    run = dag.test(logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC), run_conf=run_conf)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    return states


def test_daily_run_writes_the_oracle_features(
    daily_dag, lake: Path, redis_nodes: list[str], monkeypatch
) -> None:
    online_nodes = redis_nodes[:3]
    states = run_dag(
        daily_dag,
        DS,
        lake=lake,
        spark_connection={"conn_type": "spark", "host": "local[2]"},
        online_nodes=online_nodes,
        monkeypatch=monkeypatch,
    )
    assert states == {
        "check_raw_partition": "success",
        "compute_user_features": "success",
        "compute_merchant_stats": "success",
        "publish_online_features": "success",
        # no Delta session extension in the Spark connection: delta-rs refreshes the view
        "choose_view_engine": "success",
        "refresh_user_features_view": "success",
        "refresh_user_features_view_spark": "skipped",
    }

    got = read_features(lake, DS)
    want = compute_user_features(lake=lake, ds=DS)
    assert_matches_oracle(got, want)
    assert got["total_spend"].sum() == pytest.approx(want["total_spend"].sum(), rel=1e-9)
    report = json.loads((lake / "_metrics" / "user_features" / f"date={DS.isoformat()}.json").read_text())
    assert report["users_written"] == len(want)
    assert_online_store_holds(online_nodes, lake, DS)
    assert_view_holds_the_latest_features(lake, DS)
    stats = pd.read_parquet(lake / "features" / "merchant_stats" / f"date={DS.isoformat()}")
    assert len(stats) > 20 and stats["merchant_id"].is_unique, "the Dask task wrote one row per merchant"

    # The store grows to four nodes: online_store_rebalance moves the keys, and none is lost.
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv(
        "AIRFLOW_CONN_FEATURELAKE_ONLINE",
        json.dumps(ring_connection(redis_nodes, previous_nodes=online_nodes)),
    )
    rebalance = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).get_dag("online_store_rebalance")
    run = rebalance.test(logical_date=datetime(2026, 11, 1, tzinfo=UTC))
    assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert_online_store_holds(redis_nodes, lake, DS)


def test_missing_partition_fails_naming_the_path(lake: Path) -> None:
    from featurelake_airflow.operators.raw_partition import RawPartitionCheckOperator

    check = RawPartitionCheckOperator(task_id="check", lake=str(lake), ds="2030-01-01")
    with pytest.raises(FileNotFoundError, match=r"raw/transactions/date=2030-01-01 is missing"):
        check.execute(context={})


@pytest.mark.parametrize("name", [".part-00000.parquet.tmp.parquet", "_part-00000.parquet"])
def test_a_partition_holding_only_hidden_files_has_not_landed(tmp_path: Path, name: str) -> None:
    """A writer's in-flight upload (a `.` name) or a marker (a `_` name) is not data: readers skip it."""
    from featurelake_airflow.operators.raw_partition import RawPartitionCheckOperator

    partition = tmp_path / "raw" / "transactions" / "date=2030-01-01"
    partition.mkdir(parents=True)
    (partition / name).write_bytes(b"PAR1")
    check = RawPartitionCheckOperator(task_id="check", lake=str(tmp_path), ds="2030-01-01")
    with pytest.raises(FileNotFoundError, match=r"date=2030-01-01 is missing or holds no \.parquet files"):
        check.execute(context={})
    (partition / "part-00000.parquet").write_bytes(b"PAR1")
    assert check.execute(context={})["files"] == 1


def test_publishing_a_date_with_no_features_removes_that_dates_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window with no clean transaction leaves the features partition absent (docs/features.md):
    the publish task then writes nothing, and removes the store's records of that date (a rerun
    whose corrected data left no entity) while keeping those of other dates."""
    from featurelake.feature_records import FeatureRecord
    from featurelake.local_redis import LocalRedisServer
    from featurelake.online_store import OnlineStore, OnlineStoreConfig
    from featurelake_airflow.operators.publish_online_features import PublishOnlineFeaturesOperator

    with LocalRedisServer() as server:
        connection = {"conn_type": "redis", "host": "127.0.0.1", "port": server.port}
        monkeypatch.setenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", json.dumps(connection))
        with OnlineStore(OnlineStoreConfig(nodes=(server.address,))) as store:
            store.write(
                "user_features",
                [("a", FeatureRecord("2030-01-01", {"n": 1})), ("b", FeatureRecord("2030-01-02", {"n": 2}))],
            )
            publish = PublishOnlineFeaturesOperator(task_id="publish", lake=str(tmp_path), ds="2030-01-01")
            result = publish.execute(context={})
            assert set(store.read("user_features", ["a", "b"])) == {"b"}
    assert result == {
        "partition": f"{tmp_path}/features/user_features/date=2030-01-01",
        "written": 0,
        "kept_newer": 0,
        "by_node": {},
        "redirected": 0,
        "removed_stale": 1,
    }


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


def _started_services(
    process: subprocess.Popen, log: Path, services: set[str], *, timeout: float
) -> dict[str, int]:
    """The port each of a Spark daemon's `services` bound, by name, read from its log."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        bound = dict(re.findall(r"Successfully started service '(\w+)' on port (\d+)", text))
        if services <= bound.keys():
            return {name: int(bound[name]) for name in services}
        assert process.poll() is None, f"{log.name}: {text[-2000:]}"
        assert time.monotonic() < deadline, (
            f"{log.name} named no port of {services} in {timeout} s: {text[-2000:]}"
        )
        time.sleep(0.5)


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A Spark standalone master and one worker (2 cores) on loopback; yields (master URL, master UI URL).
    Each binds port 0, a port the system picks (no other process can take it first), and the
    master's ports are read from its log."""
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
            "0",
            "--webui-port",
            "0",
        ],
        env=env,
        stdout=(logs / "master.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    worker = None
    try:
        ports = _started_services(master, logs / "master.log", {"sparkMaster", "MasterUI"}, timeout=60)
        port, ui = ports["sparkMaster"], f"http://127.0.0.1:{ports['MasterUI']}"
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
                "0",
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
    daily_dag, lake: Path, standalone_cluster, redis_nodes: list[str], monkeypatch
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
        online_nodes=redis_nodes,
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
    assert_online_store_holds(redis_nodes, lake, day)
    assert_view_holds_the_latest_features(lake, day)
