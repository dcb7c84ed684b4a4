"""A manual backfill of user_features_daily through the real Airflow CLI, run by a real scheduler:
`airflow standalone` (scheduler, dag-processor, api-server, triggerer) in its own AIRFLOW_HOME, with
LocalExecutor on a private PostgreSQL database, on a free loopback port; `airflow backfill create`
for two dates, newest first (`--run-backwards`), then the two partitions checked against the DuckDB
oracle, and the online store (two real Redis shards) and the Delta view checked to hold each user's
newest features."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from featurelake.synthetic import generate_lake
from tests.integration.test_user_features_job import assert_matches_oracle, read_features
from tests.oracle.user_features_duckdb import compute_user_features
from tests.support import VENV_BIN, emptied_redis_nodes, free_port

pytestmark = pytest.mark.integration

DAG_ID = "user_features_daily"
DS = date(2026, 8, 20)
BACKFILL_DATES = [DS - timedelta(days=1), DS]  # --from-date and --to-date are both inclusive
STARTUP_TIMEOUT = 240.0  # seconds until the API answers and the DAG is parsed (about 50 s here)
RUN_TIMEOUT = 600.0  # seconds for both backfill runs to succeed
STOP_TIMEOUT = 60.0  # seconds for standalone to stop its components after SIGINT
# Every process standalone starts (components, task supervisors, spark-submit, the JVM, pyspark
# daemons that start their own process groups) inherits this variable, so teardown finds them all.
MARKER = "FEATURELAKE_TEST_STANDALONE_HOME"


@dataclass(frozen=True)
class Standalone:
    """A running `airflow standalone`: its home, environment, API root and combined log."""

    home: Path
    env: dict[str, str]
    base_url: str
    log: Path

    def log_tail(self, lines: int = 150) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def task_log_tails(self, lines: int = 60) -> str:
        """The end of every task attempt's log, newest last."""
        logs = sorted((self.home / "logs").glob("dag_id=*/**/*.log"), key=lambda p: p.stat().st_mtime)
        return "\n".join(
            f"--- {path.relative_to(self.home)}\n"
            + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in logs
        )

    def diagnostics(self) -> str:
        return (
            f"\n=== task logs ===\n{self.task_log_tails()}"
            f"\n=== standalone log ({self.log}) ===\n{self.log_tail()}"
        )

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the real Airflow CLI against this standalone's home and database."""
        return subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _request(url: str, *, token: str | None = None, body: dict | None = None) -> Any:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _poll(
    what: str, check: Callable[[], Any], *, timeout: float, standalone: Standalone, every: float = 2
) -> Any:
    """Call `check` until it returns something truthy; fail with the logs after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ValueError) as error:  # not listening yet, 401/404 before parsing, half a reply
            last, result = error, None
        if result:
            return result
        time.sleep(every)
    pytest.fail(
        f"timed out after {timeout:.0f} s waiting for {what} (last error: {last}){standalone.diagnostics()}"
    )


def _marked_processes(home: Path) -> list[int]:
    """Pids of live processes whose environment carries this standalone's marker."""
    needle = f"{MARKER}={home}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return pids


def _stop(process: subprocess.Popen, home: Path) -> list[int]:
    """SIGINT standalone (it then stops its components; SIGTERM would orphan the scheduler), wait,
    then kill whatever is left. Returns the pids that outlived the graceful stop."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
    deadline = time.monotonic() + 15
    while _marked_processes(home) and time.monotonic() < deadline:
        time.sleep(0.5)  # components exit a moment after standalone itself
    leftovers = _marked_processes(home)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in _marked_processes(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)
    return leftovers


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("backfill-lake") / "lake"
    generate_lake(lake=root, start=DS - timedelta(days=95), end=DS + timedelta(days=1), users=150, seed=23)
    return root


@pytest.fixture(scope="module")
def metadata_database() -> Iterator[str]:
    """A private database on the machine's PostgreSQL (FEATURELAKE_TEST_POSTGRES, default
    postgresql://postgres@127.0.0.1:5432/postgres): LocalExecutor on Postgres, as it runs at scale.

    Not SQLite: when the scheduler and `backfill create` write at once, SQLite can refuse a writer
    at once ("database is locked") whatever its busy timeout, when a read transaction upgrades.
    """
    import psycopg2
    from psycopg2 import sql

    admin_url = os.environ.get("FEATURELAKE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"featurelake_backfill_{os.getpid()}_{int(time.time())}"
    try:
        admin = psycopg2.connect(admin_url)
    except psycopg2.OperationalError as error:
        pytest.fail(
            f"cannot reach PostgreSQL at {admin_url} ({error}); start it or set FEATURELAKE_TEST_POSTGRES"
        )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture(scope="module")
def online_nodes(redis_shard_0, redis_shard_1) -> list[str]:
    """Two emptied pytest-redis servers: the online store's ring for this module."""
    return emptied_redis_nodes(redis_shard_0, redis_shard_1)


@pytest.fixture(scope="module")
def standalone(
    tmp_path_factory, lake: Path, metadata_database: str, online_nodes: list[str]
) -> Iterator[Standalone]:
    """`airflow standalone` with a fresh home and database, serving on a free loopback port."""
    home = tmp_path_factory.mktemp("standalone-home")
    port = free_port()
    env = {
        **os.environ,  # airflow.env as applied by tests/conftest.py: dags and plugins folders, executor
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_database,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # The log servers' fixed default ports (8793, 8794) would clash with another Airflow here.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # The scheduler creates no runs from the DAG's own timetable, so the only runs are the
        # backfill's. (Unpausing only after `backfill create` would not help: the scheduler still
        # creates the latest interval's run, whose raw partition is missing, as soon as it is unpaused.)
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW_VAR_FEATURELAKE_LAKE": str(lake),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {"conn_type": "spark", "host": "local[2]", "extra": {"conf": {"spark.log.level": "WARN"}}}
        ),
        "AIRFLOW_CONN_FEATURELAKE_ONLINE": json.dumps(
            {"conn_type": "redis", "host": "127.0.0.1", "port": 1, "extra": {"nodes": online_nodes}}
        ),
        "NO_COLOR": "1",
        MARKER: str(home),
    }
    log = home / "standalone.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "standalone"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown can kill the group
        )
    running = Standalone(home=home, env=env, base_url=f"http://127.0.0.1:{port}", log=log)
    try:
        yield running
    finally:
        leftovers = _stop(process, home)
        assert not _marked_processes(home), f"processes survived SIGKILL: {_marked_processes(home)}"
        if leftovers:
            print(f"killed {len(leftovers)} processes that outlived standalone's SIGINT stop: {leftovers}")


def _token(standalone: Standalone) -> str:
    passwords = json.loads((standalone.home / "simple_auth_manager_passwords.json.generated").read_text())
    reply = _request(
        f"{standalone.base_url}/auth/token", body={"username": "admin", "password": passwords["admin"]}
    )
    return reply["access_token"]


def _dag_runs(standalone: Standalone, token: str) -> list[dict]:
    reply = _request(
        f"{standalone.base_url}/api/v2/dags/{DAG_ID}/dagRuns?limit=100&order_by=logical_date", token=token
    )
    return reply["dag_runs"]


def _task_states(standalone: Standalone, token: str, run_id: str) -> dict[str, str | None]:
    run = urllib.parse.quote(run_id, safe="")
    url = f"{standalone.base_url}/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances"
    return {ti["task_id"]: ti["state"] for ti in _request(url, token=token)["task_instances"]}


def _xcom(standalone: Standalone, token: str, run_id: str, task_id: str) -> Any:
    run = urllib.parse.quote(run_id, safe="")
    url = f"{standalone.base_url}/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{task_id}/xcomEntries/return_value"
    value = _request(url, token=token)["value"]
    return json.loads(value) if isinstance(value, str) else value


def test_backfill_create_is_run_by_the_scheduler(
    standalone: Standalone, lake: Path, online_nodes: list[str]
) -> None:
    started = time.monotonic()

    def healthy() -> bool:
        health = _request(f"{standalone.base_url}/api/v2/monitor/health")
        return all(
            (health.get(part) or {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "dag_processor")
        )

    _poll("the API and a healthy scheduler", healthy, timeout=STARTUP_TIMEOUT, standalone=standalone)
    token = _token(standalone)

    def parsed() -> bool:
        errors = _request(f"{standalone.base_url}/api/v2/importErrors", token=token)["import_errors"]
        # Only this DAG's file: other DAGs in the folder are not this test's business.
        ours = [e for e in errors if e["filename"].endswith(f"{DAG_ID}.py")]
        assert not ours, f"{DAG_ID} failed to import: {ours}"
        return _request(f"{standalone.base_url}/api/v2/dags/{DAG_ID}", token=token)["dag_id"] == DAG_ID

    _poll(f"{DAG_ID} to be parsed", parsed, timeout=STARTUP_TIMEOUT, standalone=standalone)
    ready = time.monotonic()

    created = standalone.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        BACKFILL_DATES[0].isoformat(),
        "--to-date",
        BACKFILL_DATES[-1].isoformat(),
        "--max-active-runs",
        "1",
        # newest first: the older date's publish must not replace the newer features online
        "--run-backwards",
    )
    assert created.returncode == 0, f"backfill create failed:\n{created.stdout}\n{created.stderr}"

    def finished() -> list[dict] | None:
        runs = _dag_runs(standalone, token)
        for run in runs:
            states = _task_states(standalone, token, run["dag_run_id"])
            # The DAG retries after a minute; a first failure is already the answer.
            if run["state"] == "failed" or {"failed", "up_for_retry"} & set(states.values()):
                pytest.fail(f"run {run['dag_run_id']} failed: {states}{standalone.diagnostics()}")
        backfill = [run for run in runs if run["run_type"] == "backfill"]
        if len(backfill) == len(BACKFILL_DATES) and all(run["state"] == "success" for run in backfill):
            return runs
        return None

    runs = _poll(
        "both backfill runs to succeed", finished, timeout=RUN_TIMEOUT, standalone=standalone, every=3
    )
    done = time.monotonic()
    print(f"standalone ready in {ready - started:.0f} s; backfill of 2 dates ran in {done - ready:.0f} s")

    # Both ends of the range ran, and nothing else did (use_job_schedule is off).
    assert [(run["run_type"], run["logical_date"][:10]) for run in runs] == [
        ("backfill", d.isoformat()) for d in BACKFILL_DATES
    ]
    for day in BACKFILL_DATES:
        assert (lake / "features" / "user_features" / f"date={day.isoformat()}").is_dir()
        assert_matches_oracle(read_features(lake, day), compute_user_features(lake=lake, ds=day))

    # Online: each user's newest date, although the older date was published last.
    from featurelake.offline_features import partition_records
    from featurelake.online_store import OnlineStore, OnlineStoreConfig

    newest: dict = {}
    for day in BACKFILL_DATES:  # oldest first, so a later date replaces an earlier one
        partition = lake / "features" / "user_features" / f"date={day.isoformat()}"
        newest.update(partition_records(str(partition), feature_date=day))
    with OnlineStore(OnlineStoreConfig(nodes=online_nodes)) as store:
        assert store.read("user_features", newest) == newest
    assert any(record.feature_date == DS.isoformat() for record in newest.values())
    older_run = next(run for run in runs if run["logical_date"][:10] == BACKFILL_DATES[0].isoformat())
    published = _xcom(standalone, token, older_run["dag_run_id"], "publish_online_features")
    assert published["kept_newer"] > 0 and published["written"] < len(newest), published

    # The Delta view too: built as of DS, then the MERGE of DS-1 kept every newer row.
    from deltalake import DeltaTable

    from featurelake.materialized_views import latest_per_entity

    view = DeltaTable(str(lake / "views" / "user_features_latest"))
    want, _ = latest_per_entity(str(lake / "features" / "user_features"), as_of=DS)
    assert view.to_pyarrow_table().sort_by("user_id").to_pylist() == want.to_pylist()
    refreshed = {
        run["logical_date"][:10]: _xcom(standalone, token, run["dag_run_id"], "refresh_user_features_view")
        for run in runs
    }
    newer, older = refreshed[DS.isoformat()], refreshed[BACKFILL_DATES[0].isoformat()]
    assert (newer["mode"], newer["version"]) == ("full", 0), newer  # built, as there was no table yet
    # merged after it: every user of DS-1 has a newer row, so nothing was updated (delta-rs then
    # commits nothing); users only on DS-1 would have been inserted
    assert (older["mode"], older["updated"]) == ("incremental", 0), older
    assert older["inserted"] == len(want) - newer["rows"]
