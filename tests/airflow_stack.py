"""Real Airflow components as processes, for the tests that run DAGs under a scheduler: a private
PostgreSQL database, the environment every component shares, the REST API (what the UI calls), and a
teardown that finds every process the components started.

Used by tests/integration/test_backfill_under_scheduler.py (`airflow standalone`, LocalExecutor) and
tests/integration/test_executors.py (api-server, scheduler, dag-processor and, under CeleryExecutor, a
Celery worker, each its own process, as in docker-compose.yaml)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import VENV_BIN, PortTaken, free_port, port_taken_line, retried_on_taken_port

__all__ = ["MARKER", "AirflowStack", "component_env", "private_postgres_database", "stop_components"]

# Every process a component starts (task supervisors, spark-submit, the JVM, pyspark daemons and
# Celery pool workers that start their own process groups) inherits this variable, so teardown
# finds them all.
MARKER = "FEATURELAKE_TEST_AIRFLOW_HOME"


def request_json(url: str, *, token: str | None = None, body: dict | None = None) -> Any:
    """GET `url` (or POST `body` as JSON) and return the decoded JSON reply."""
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


@contextlib.contextmanager
def private_postgres_database(prefix: str, *, copy_of: str | None = None) -> Iterator[str]:
    """A new database on the machine's PostgreSQL (FEATURELAKE_TEST_POSTGRES, default
    postgresql://postgres@127.0.0.1:5432/postgres), dropped afterwards; yields its SQLAlchemy URL.
    With `copy_of` (the URL of another such database, with no connection open to it), the new
    database starts as a copy of that one (PostgreSQL's CREATE DATABASE ... TEMPLATE), for example
    of one `airflow db migrate` migrated.

    Not SQLite: when the scheduler and the CLI write at once, SQLite can refuse a writer at once
    ("database is locked") whatever its busy timeout, when a read transaction upgrades.
    """
    import psycopg2
    from psycopg2 import sql

    admin_url = os.environ.get("FEATURELAKE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"{prefix}_{os.getpid()}_{int(time.time())}"
    try:
        admin = psycopg2.connect(admin_url)
    except psycopg2.OperationalError as error:
        pytest.fail(
            f"cannot reach PostgreSQL at {admin_url} ({error}); start it or set FEATURELAKE_TEST_POSTGRES"
        )
    admin.autocommit = True
    with admin.cursor() as cursor:
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if copy_of is not None:
            template = copy_of.rsplit("/", 1)[1]
            create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
        cursor.execute(create)
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def component_env(
    *, home: Path, database: str, lake: Path, online_nodes: list[str], **overrides: str
) -> dict[str, str]:
    """The environment every component of one test's Airflow shares: its own home and database, the
    API and the log servers on free loopback ports (`with_free_ports`), and the DAGs' connections
    (Spark local[2], the online store's ring, the Dask default of airflow.env). The scheduler
    creates no runs from the DAGs' own timetables (`use_job_schedule` off), so the only runs are
    the ones the test asks for, and the dag-processor parses each DAG file once."""
    env = {
        **os.environ,  # airflow.env as applied by tests/conftest.py: dags and plugins folders
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        # Components started one by one must share these, or task tokens fail between them.
        "AIRFLOW__API_AUTH__JWT_SECRET": f"featurelake-test-jwt-{home.name}",
        "AIRFLOW__API__SECRET_KEY": f"featurelake-test-api-{home.name}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # The DAG files do not change while a test runs: parse each once (a modified file is still
        # parsed again at once). At the default, 30 s, the dag-processor parsed all three again
        # every 30 s, about 1 s of CPU each time (6 CPU s more in 5 minutes), beside the tasks.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
        "AIRFLOW_VAR_FEATURELAKE_LAKE": str(lake),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {"conn_type": "spark", "host": "local[2]", "extra": {"conf": {"spark.log.level": "WARN"}}}
        ),
        "AIRFLOW_CONN_FEATURELAKE_ONLINE": json.dumps(
            {"conn_type": "redis", "host": "127.0.0.1", "port": 1, "extra": {"nodes": online_nodes}}
        ),
        "NO_COLOR": "1",
        # What a component says reaches its log at once: start_listening reads the logs as they run
        "PYTHONUNBUFFERED": "1",
        MARKER: str(home),
        **overrides,
    }
    return with_free_ports(env)


def with_free_ports(env: dict[str, str]) -> dict[str, str]:
    """`env` with new free loopback ports for the API and the log servers."""
    port = free_port()
    return {
        **env,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # The log servers' fixed default ports (8793, 8794) would clash with another Airflow here.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }


@dataclass
class AirflowStack:
    """A running Airflow of one test: its home, shared environment, component processes and their
    logs. The API's root, `base_url`, follows the environment's port."""

    home: Path
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    _token: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['AIRFLOW__API__PORT']}"

    # --- diagnostics -------------------------------------------------------------------------
    def task_log_tails(self, lines: int = 60) -> str:
        """The end of every task attempt's log, newest last."""
        logs = sorted((self.home / "logs").glob("dag_id=*/**/*.log"), key=lambda p: p.stat().st_mtime)
        return "\n".join(
            f"--- {path.relative_to(self.home)}\n"
            + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in logs
        )

    def component_log_tails(self, lines: int) -> str:
        """The end of each component's log (standalone, scheduler, ...), in start order."""
        return "".join(
            f"\n=== {log.name} ===\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            for log in self.logs
            if log.exists()
        )

    def diagnostics(self, lines: int = 150) -> str:
        return f"\n=== task logs ===\n{self.task_log_tails()}{self.component_log_tails(lines)}"

    def stop(self, sig: int) -> None:
        """`stop_components` with `sig`; a warning in the session's summary names the processes that
        outlived the graceful stop, with the end of each component's log."""
        leftovers = stop_components(self.processes, self.home, sig=sig)
        if leftovers:
            warnings.warn(
                f"killed {len(leftovers)} processes that outlived {signal.Signals(sig).name}: "
                f"{leftovers}{self.component_log_tails(10)}",
                pytest.PytestWarning,
                stacklevel=2,
            )

    # --- the CLI and the REST API --------------------------------------------------------------
    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the real Airflow CLI against this Airflow's home and database."""
        return subprocess.run(
            [str(VENV_BIN / "airflow"), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """Start `airflow <args>` in its own process group, its output in `<home>/<name>.log`."""
        log = self.home / f"{name}.log"
        self.logs.append(log)
        with log.open("w") as output:
            process = subprocess.Popen(
                [str(VENV_BIN / "airflow"), *args],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def start_listening(
        self, start_components: Callable[[], object], *, stop_signal: int, timeout: float
    ) -> None:
        """Call `start_components` (which `start`s each component) on free ports, and wait until
        the api-server listens. The ports are free when chosen, but another process can bind one
        before the component that was told it does: when a component says so, every component is
        stopped (with `stop_signal`, as `stop_components`) and started again on new ports."""

        def attempt() -> None:
            self.env = with_free_ports(self.env)
            self.processes, self.logs = [], []
            try:
                start_components()
                self._wait_for_api(timeout=timeout)
            except BaseException:
                stop_components(self.processes, self.home, sig=stop_signal)
                self.processes = []
                raise

        retried_on_taken_port(attempt, what=f"the Airflow in {self.home}")

    def _wait_for_api(self, *, timeout: float) -> None:
        """Until the api-server says it listens on its port. Raises PortTaken when a component says
        a port was in use: the API's (another server would answer in its place), or a log
        server's (one that binds after the API listens goes unnoticed; the tests read task logs
        from files)."""
        listening = f"Uvicorn running on {self.base_url}"
        deadline = time.monotonic() + timeout
        while True:
            # Which exited before reading what they said: an exit's last words are then in its log
            exited = [process for process in self.processes if process.poll() is not None]
            outputs = {log.name: log.read_text(errors="replace") for log in self.logs}
            for name, output in outputs.items():
                if taken := port_taken_line(output):
                    raise PortTaken(f"{name}: {taken}")
            if any(listening in output for output in outputs.values()):
                return
            if exited:
                pytest.fail(f"a component exited before the API listened{self.diagnostics()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the API did not listen on {self.base_url} in {timeout:.0f} s{self.diagnostics()}"
                )
            time.sleep(1)

    def poll(self, what: str, check: Callable[[], Any], *, timeout: float, every: float = 2) -> Any:
        """Call `check` until it returns something truthy; fail with the logs after `timeout` s."""
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
            f"timed out after {timeout:.0f} s waiting for {what} (last error: {last}){self.diagnostics()}"
        )

    def api(self, path: str, *, body: dict | None = None) -> Any:
        """The REST API as the UI calls it, signed in as admin (simple auth manager)."""
        if self._token is None:
            passwords = self.env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") or str(
                self.home / "simple_auth_manager_passwords.json.generated"
            )
            password = json.loads(Path(passwords).read_text())["admin"]
            reply = request_json(
                f"{self.base_url}/auth/token", body={"username": "admin", "password": password}
            )
            self._token = reply["access_token"]
        return request_json(f"{self.base_url}{path}", token=self._token, body=body)

    def wait_until_ready(self, dag_ids: list[str], *, timeout: float) -> None:
        """Until the health endpoint reports the database, scheduler and dag-processor healthy and
        every DAG of `dag_ids` is parsed (an import error of one of them fails at once)."""
        components = ("metadatabase", "scheduler", "dag_processor")

        def healthy() -> bool:
            health = request_json(f"{self.base_url}/api/v2/monitor/health")
            return all((health.get(part) or {}).get("status") == "healthy" for part in components)

        self.poll(f"the API and healthy {', '.join(components)}", healthy, timeout=timeout)

        def parsed() -> bool:
            errors = self.api("/api/v2/importErrors")["import_errors"]
            ours = [e for e in errors if any(e["filename"].endswith(f"{d}.py") for d in dag_ids)]
            assert not ours, f"DAGs failed to import: {ours}"
            return all(self.api(f"/api/v2/dags/{d}")["dag_id"] == d for d in dag_ids)

        self.poll(f"{', '.join(dag_ids)} to be parsed", parsed, timeout=timeout)

    def task_log(self, dag_id: str, task_id: str) -> str:
        """The log of a task's only attempt in this Airflow (a test with one run of the DAG)."""
        (log,) = self.home.glob(f"logs/dag_id={dag_id}/**/task_id={task_id}/*.log")
        return log.read_text(errors="replace")

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.api(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=logical_date")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        run = urllib.parse.quote(run_id, safe="")
        return self.api(f"/api/v2/dags/{dag_id}/dagRuns/{run}/taskInstances")["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        run = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run}/taskInstances/{task_id}/xcomEntries/return_value"
        value = self.api(path)["value"]
        return json.loads(value) if isinstance(value, str) else value

    def wait_for_runs(self, dag_id: str, count: int, *, run_type: str, timeout: float) -> list[dict]:
        """Until `count` runs of `run_type` have succeeded; the first failed task or run fails the
        test with the logs (the DAGs retry after a minute, so a first failure is already the answer).
        Returns every run of the DAG."""

        def finished() -> list[dict] | None:
            runs = self.dag_runs(dag_id)
            for run in runs:
                states = self.task_states(dag_id, run["dag_run_id"])
                if run["state"] == "failed" or {"failed", "up_for_retry"} & set(states.values()):
                    pytest.fail(f"run {run['dag_run_id']} failed: {states}{self.diagnostics()}")
            ours = [run for run in runs if run["run_type"] == run_type]
            if len(ours) == count and all(run["state"] == "success" for run in ours):
                return runs
            return None

        return self.poll(
            f"{count} {run_type} runs of {dag_id} to succeed", finished, timeout=timeout, every=3
        )


def marked_processes(home: Path) -> list[int]:
    """Pids of live processes whose environment carries this Airflow's marker."""
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


def process_command(pid: int) -> str:
    """`pid` and its command line (cut at 200 characters), or its pid alone once it has exited."""
    try:
        command = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").strip()
    except OSError:
        return str(pid)
    return f"{pid} ({command.decode(errors='replace')[:200]})"


def stop_components(
    processes: list[subprocess.Popen], home: Path, *, sig: int, timeout: float = 30
) -> list[str]:
    """Send `sig` to each component (SIGINT for `airflow standalone`, which then stops its own
    components, where SIGTERM would orphan the scheduler; SIGTERM for the others), wait, then kill
    whatever is left. Fails if a process survives SIGKILL. Returns the processes that outlived the
    graceful stop, each its pid and command line. (The components stop in 3 to 12 s; in 3 of 5 full
    suites on 2026-12-08, `airflow standalone` did not act on SIGINT at all.)"""
    for process in processes:
        if process.poll() is None:
            process.send_signal(sig)
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    deadline = time.monotonic() + 15
    while marked_processes(home) and time.monotonic() < deadline:
        time.sleep(0.5)  # children exit a moment after their parents
    leftovers = [process_command(pid) for pid in marked_processes(home)]
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    for pid in marked_processes(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for process in processes:
        process.wait(timeout=10)
    deadline = time.monotonic() + 15
    while marked_processes(home) and time.monotonic() < deadline:
        time.sleep(0.1)  # a killed process leaves /proc once the kernel has torn it down
    assert not marked_processes(home), f"processes survived SIGKILL: {marked_processes(home)}"
    return leftovers
