"""The publish task of a real Airflow run (`dag.test()`, a real Redis server) checks the partition it
reads against the report of the task that wrote it. A partition it cannot see reads as absent, which
would remove every record of the date; with the check, the task fails and the store keeps them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig

pytestmark = pytest.mark.integration

DAY = date(2030, 1, 1)
USERS = ["u1", "u2", "u3"]


def write_partition(lake: Path, users: list[str]) -> None:
    partition = lake / "features" / "user_features" / f"date={DAY.isoformat()}"
    partition.mkdir(parents=True)
    pq.write_table(
        pa.table({"user_id": users, "total_spend": [10.0] * len(users)}), partition / "part-0.parquet"
    )


@pytest.fixture(scope="module")
def dag(airflow_db):
    """publish_report_dag.py's DAG, written to the metadata database as the DAG processor would
    (dag.test() runs only a DAG found there)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(Path(__file__).with_name("publish_report_dag.py")))
    assert bag.import_errors == {}
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.get_dag("publish_checks_the_job_report")


@pytest.fixture
def store_with_the_date(redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A Redis server holding records of DAY for USERS, named by featurelake_online."""
    node = redis_nodes[0]
    host, port = node.rsplit(":", 1)
    monkeypatch.setenv(
        "AIRFLOW_CONN_FEATURELAKE_ONLINE", json.dumps({"conn_type": "redis", "host": host, "port": int(port)})
    )
    with OnlineStore(OnlineStoreConfig(nodes=[node])) as store:
        records = [(user, FeatureRecord(DAY.isoformat(), {"total_spend": 1.0})) for user in USERS]
        store.replace_date("user_features", DAY, records, USERS)
    return node


def run(
    dag, lake: Path, monkeypatch: pytest.MonkeyPatch, *, written_lake: Path, users: list[str], report: object
) -> dict[str, tuple[str, int]]:
    """Run the DAG on DAY with the Variable's lake `lake`; its first task writes `users` to
    `written_lake` and reports `report`. Returns {task_id: (state, try number)}: the publish task
    may retry twice, at once, so a check that fails it without retry shows as 1 try."""
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(lake))
    conf = {"written_lake": str(written_lake), "users": users, "report": report}
    dag_run = dag.test(logical_date=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC), run_conf=conf)
    return {ti.task_id: (str(ti.state), ti.try_number) for ti in dag_run.get_task_instances()}


def stored_users(node: str) -> dict[str, float]:
    with OnlineStore(OnlineStoreConfig(nodes=[node])) as store:
        return {
            user: record.values["total_spend"] for user, record in store.read("user_features", USERS).items()
        }


def test_a_partition_written_where_the_worker_does_not_read_removes_nothing(
    dag, store_with_the_date: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    # The job wrote two users to a lake this worker does not see (a path local to a cluster's
    # machines, or the Variable changed in between): the worker's partition is absent.
    elsewhere = tmp_path / "cluster-local-lake"
    report = {"users_written": 2, "output_path": f"{elsewhere}/features/user_features/date={DAY}"}
    states = run(
        dag, tmp_path / "worker-lake", monkeypatch, written_lake=elsewhere, users=["u1", "u2"], report=report
    )

    assert states == {"compute_user_features": ("success", 1), "publish": ("failed", 1)}, (
        "failed, not retried"
    )
    assert stored_users(store_with_the_date) == dict.fromkeys(USERS, 1.0), "the date's records were removed"
    out = capfd.readouterr().out
    assert "task 'compute_user_features' reported 2 rows written to" in out
    assert "holds 0: this task reads another partition than the one it wrote" in out


def test_a_partition_holding_other_rows_than_reported_publishes_nothing(
    dag, store_with_the_date: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    # A stale partition of an earlier run sits where the worker reads; the job wrote elsewhere.
    lake = tmp_path / "lake"
    write_partition(lake, ["u1"])
    states = run(
        dag, lake, monkeypatch, written_lake=tmp_path / "elsewhere", users=USERS, report={"users_written": 3}
    )

    assert states == {"compute_user_features": ("success", 1), "publish": ("failed", 1)}, (
        "failed, not retried"
    )
    assert stored_users(store_with_the_date) == dict.fromkeys(USERS, 1.0)
    assert "reported 3 rows written to its output, but" in capfd.readouterr().out


@pytest.mark.parametrize(
    "report", [None, {"users": 3}, {"users_written": "3"}], ids=["none", "no-key", "text"]
)
def test_a_job_that_left_no_report_fails_the_publish(
    dag, store_with_the_date: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd, report
) -> None:
    lake = tmp_path / "lake"
    states = run(dag, lake, monkeypatch, written_lake=lake, users=USERS, report=report)

    assert states == {"compute_user_features": ("success", 1), "publish": ("failed", 1)}, (
        "failed, not retried"
    )
    assert stored_users(store_with_the_date) == dict.fromkeys(USERS, 1.0)
    assert "left no report with an integer 'users_written' in its XCom" in capfd.readouterr().out


@pytest.mark.parametrize(
    ("users", "want"),
    [
        pytest.param(["u1", "u3"], {"u1": 10.0, "u3": 10.0}, id="rerun-without-u2"),
        # no user had data in the window: the job leaves the partition absent and reports 0
        pytest.param([], {}, id="no-user-in-the-window"),
    ],
)
def test_a_partition_as_reported_is_published_and_the_dates_stale_records_removed(
    dag,
    store_with_the_date: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    users: list[str],
    want: dict,
) -> None:
    lake = tmp_path / "lake"
    states = run(dag, lake, monkeypatch, written_lake=lake, users=users, report={"users_written": len(users)})

    assert states == {"compute_user_features": ("success", 1), "publish": ("success", 1)}
    assert stored_users(store_with_the_date) == want


def test_the_publish_run_alone_by_airflow_tasks_test_says_to_run_the_dag_first(
    airflow_db, store_with_the_date: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `airflow tasks test DAG TASK DATE`, with no run of the date, runs the task in a run of its
    # own that holds no upstream XCom: clearing the job, as the message said, could not help.
    lake = tmp_path / "lake"
    write_partition(lake, USERS)
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(lake))
    airflow = Path(sys.executable).parent / "airflow"
    command = [
        str(airflow),
        "tasks",
        "test",
        "user_features_daily",
        "publish_online_features",
        DAY.isoformat(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    out = done.stdout + done.stderr

    assert "left no report with an integer 'users_written' in its XCom" in out, out[-3000:]
    assert "`airflow tasks test` ran this task alone, in a run of its own (__airflow_temporary_run_" in out
    assert f"`airflow dags test user_features_daily {DAY.isoformat()}`" in out
    assert stored_users(store_with_the_date) == dict.fromkeys(USERS, 1.0), "nothing was published"
