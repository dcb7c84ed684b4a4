"""A SparkFeatureJobOperator followed through YARN's ResourceManager REST API (the provider's
durable mode: the application's id is kept in the task state store) runs its job again when its
task instance runs again in the same DAG run, as after a clear or a backfill with
--reprocess-behavior completed. Real Airflow (`dag.test()`, Airflow's own clear, the task state store
in the metadata database); YARN is a loopback ResourceManager API that reports every application
finished, and spark-submit a stand-in that records each submit and writes the report (no YARN
cluster here)."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TASK_ID = "compute_user_features"
LOGICAL_DATE = datetime(2030, 2, 1, tzinfo=UTC)

# spark-submit on a YARN cluster in cluster mode: it prints the application's id and returns once
# YARN has it (spark.yarn.submit.waitAppCompletion=false). Here the "application" runs at once:
# each submit counts itself next to the report and writes the report with its number.
SPARK_SUBMIT = """#!{python}
import json, sys
from pathlib import Path

report = Path(sys.argv[sys.argv.index("--report") + 1])
counter = report.with_name(report.name + ".submissions")
number = int(counter.read_text()) + 1 if counter.exists() else 1
report.parent.mkdir(parents=True, exist_ok=True)
counter.write_text(str(number))
report.write_text(json.dumps({{"submission": number}}))
print(f"INFO Client: Submitted application application_1900000000000_{{number:04d}}", flush=True)
"""


class _FinishedApplications(BaseHTTPRequestHandler):
    """GET /ws/v1/cluster/apps/<id>: every application has finished and succeeded."""

    def do_GET(self) -> None:
        body = json.dumps({"app": {"state": "FINISHED", "finalStatus": "SUCCEEDED", "diagnostics": ""}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def resourcemanager() -> Iterator[str]:
    """The address of a loopback YARN ResourceManager REST API."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FinishedApplications)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def yarn_connection(resourcemanager: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`spark_yarn_rerun`: YARN in cluster mode, followed through `resourcemanager`; spark-submit on
    PATH is the stand-in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "spark-submit"
    stand_in.write_text(SPARK_SUBMIT.format(python=sys.executable))
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    extra = {"deploy-mode": "cluster", "yarn_resourcemanager_webapp_address": resourcemanager}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_YARN_RERUN", json.dumps({"conn_type": "spark", "host": "yarn", "extra": extra})
    )


@pytest.fixture(scope="module")
def dag(airflow_db):
    """spark_job_rerun_dag.py's DAG, written to the metadata database as the DAG processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(Path(__file__).with_name("spark_job_rerun_dag.py")))
    assert bag.import_errors == {}
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.get_dag("spark_feature_job_rerun")


def run_again(dag, dag_run) -> str:
    """Clear the task instance in `dag_run` as the UI's Clear does, then run it as the scheduler
    would, the way `dag.test()` runs a scheduled task instance; returns its state."""
    from airflow.models.taskinstance import clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    with create_session() as session:
        ti = dag_run.get_task_instance(TASK_ID, session=session)
        clear_task_instances([ti], session)
    with create_session() as session:
        ti = dag_run.get_task_instance(TASK_ID, session=session)
        ti.try_number += 1
        ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        _run_task(ti=ti, task=dag.task_dict[TASK_ID])
        return TaskInstanceState(ti.state).value


def test_a_cleared_task_submits_its_job_again(dag, yarn_connection, tmp_path: Path) -> None:
    report = tmp_path / "lake" / "_metrics" / "user_features" / "date=2030-02-01.json"
    dag_run = dag.test(logical_date=LOGICAL_DATE, run_conf={"report": str(report)})
    assert str(dag_run.get_task_instance(TASK_ID).state) == "success"
    assert json.loads(report.read_text()) == {"submission": 1}

    assert run_again(dag, dag_run) == "success"
    # the finished application of the first try was not taken for this one's
    assert report.with_name(report.name + ".submissions").read_text() == "2"
    assert json.loads(report.read_text()) == {"submission": 2}
