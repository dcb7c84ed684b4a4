"""A failed task can be retried with the same result: every task of `user_features_daily` and
`merchant_profiles_daily` is run by its operator's `execute` in a process of its own, killed with
SIGKILL (or failed by an exception) at a chosen or a random point, and retried in a new process (the
Spark feature job killed with its spark-submit and driver: test_user_features_killed_run.py). The
retry must end with what a run never interrupted gives: the same lake files (compared as sorted
rows; no hidden or staging leftovers), Delta table rows with a readable history, Redis keys and
values, and XCom; and the killed task must leave no process behind.

Each attempt is a fork of one runner process that imported Airflow, Dask, delta-rs and redis-py
once (Airflow's own supervisor forks its task processes too), so an attempt starts in milliseconds.
A stop point wraps a function in the attempt: at its n-th call it pauses (the test then kills the
attempt) or raises."""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support import PROJECT_ROOT, redis_client

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

# What the runner imports before it forks: everything an attempt needs that takes long to import.
RUNNER_IMPORTS = (
    "airflow.sdk",
    "featurelake_airflow.operators.dask_merchant_stats",
    "featurelake_airflow.operators.fetch_merchant_profiles",
    "featurelake_airflow.operators.publish_online_features",
    "featurelake_airflow.operators.raw_partition",
    "featurelake_airflow.operators.refresh_feature_view",
    "featurelake.arrow_partitions",
    "featurelake.fetch",
    "featurelake.materialized_views",
    "featurelake.merchant_profiles",
    "featurelake.merchant_stats",
    "featurelake.offline_features",
    "featurelake.online_store",
    "aiohttp",
    "dask.dataframe",
    "deltalake",
    "distributed",
    "fsspec.implementations.local",
    "pyarrow.dataset",
    "pyarrow.parquet",
    "redis",
)


# -- the runner process (runs `python -c "...; _runner_main()"`) ----------------------------------
def _runner_main() -> None:
    """Import RUNNER_IMPORTS, then fork one attempt per JSON line read from stdin and answer with
    its pid. Attempts are reaped by the kernel (SIGCHLD ignored)."""
    for name in RUNNER_IMPORTS:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        spec = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _attempt(spec)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


def _attempt(spec: dict[str, Any]) -> None:
    """One task attempt in a forked child; never returns. Writes `started` before `execute`, then
    `result.json` (the XCom) or `error.json`."""
    directory = Path(spec["dir"])
    code = 1
    try:
        os.setsid()  # its own process group: the test finds every process it leaves behind
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # it waits for its own children
        with (directory / "attempt.log").open("ab") as output:
            os.dup2(output.fileno(), 1)
            os.dup2(output.fileno(), 2)
        os.environ.update(spec["env"])
        if spec.get("stop"):
            _install_stop(spec["stop"], directory)
        module, name = spec["operator"].rsplit(":", 1)
        operator = getattr(importlib.import_module(module), name)(task_id=spec["task_id"], **spec["kwargs"])
        context = {"ti": types.SimpleNamespace(**spec["ti"])} if spec.get("ti") else {}
        (directory / "started").touch()
        result = operator.execute(context)
        _write_json(directory / "result.json", result)
        code = 0
    except BaseException as error:  # the attempt's outcome, read by the test
        _write_json(directory / "error.json", {"type": type(error).__name__, "message": str(error)})
    finally:
        os._exit(code)


def _write_json(path: Path, value: Any) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value, default=str))
    partial.rename(path)


def _owner_and_name(target: str) -> tuple[Any, str]:
    """The object that holds `target` (`module:attribute[.attribute]`), and the attribute's name."""
    module, path = target.split(":")
    owner: Any = importlib.import_module(module)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def _install_stop(stop: dict[str, Any], directory: Path) -> None:
    """Wrap `stop["target"]`: at its `call`-th call (counting only the calls whose arguments' text
    holds `stop["match"]`, when given), `before` or `after` it runs, pause (write `paused`, then
    sleep until killed) or raise. `stop["returns"]` maps other targets to a value they return
    instead of running."""
    for target, value in stop.get("returns", {}).items():
        holder, attribute = _owner_and_name(target)
        setattr(holder, attribute, lambda *args, _value=value, **kwargs: _value)
    owner, name = _owner_and_name(stop["target"])
    real = getattr(owner, name)
    calls = itertools.count(1)
    lock = threading.Lock()

    def stop_here(number: int) -> None:
        if stop["action"] == "pause":
            (directory / "paused").touch()
            time.sleep(3600)
        raise RuntimeError(f"injected failure at call {number} of {stop['target']}")

    @functools.wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if stop.get("match") and stop["match"] not in repr((args, kwargs)):
            return real(*args, **kwargs)
        with lock:
            number = next(calls)
        if number == stop["call"] and stop["when"] == "before":
            stop_here(number)
        value = real(*args, **kwargs)
        if number == stop["call"] and stop["when"] == "after":
            stop_here(number)
        return value

    setattr(owner, name, wrapper)


# -- the test side ----------------------------------------------------------------------------------
@dataclass
class Attempt:
    """A running or finished attempt, as the test sees it."""

    pid: int
    directory: Path

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait_for(self, name: str, timeout: float = 60) -> bool:
        """Whether the file `name` appeared before the attempt ended (or the timeout)."""
        deadline = time.monotonic() + timeout
        while not (self.directory / name).exists():
            if not self.alive() or time.monotonic() > deadline:
                return (self.directory / name).exists()
            time.sleep(0.005)
        return True

    def kill(self) -> None:
        """SIGKILL the task process alone (as the OOM killer or a lost node would): what it started
        is left to fend for itself."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.join()

    def join(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.alive():
            assert time.monotonic() < deadline, f"attempt {self.pid} still runs; see {self.directory}"
            time.sleep(0.01)

    def outcome(self) -> dict[str, Any]:
        self.join()
        for name in ("result.json", "error.json"):
            if (self.directory / name).exists():
                return {name.split(".")[0]: json.loads((self.directory / name).read_text())}
        return {"killed": True}

    def result(self) -> dict[str, Any]:
        outcome = self.outcome()
        assert "result" in outcome, f"{outcome}; log: {self.log()[-3000:]}"
        return outcome["result"]

    def log(self) -> str:
        path = self.directory / "attempt.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def left_processes(self, timeout: float = 10) -> list[str]:
        """The processes of the attempt's group still running after `timeout` seconds (their
        command lines), killed then so that none outlives the test."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return []
            time.sleep(0.1)
        listed = subprocess.run(
            ["ps", "-o", "pid=,args=", "-g", str(self.pid)], capture_output=True, text=True
        ).stdout.splitlines()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        return [line.strip() for line in listed if line.strip()]


@dataclass
class Runner:
    """The runner process; `start` forks an attempt of an operator."""

    process: subprocess.Popen
    workdir: Path
    numbers: Iterator[int] = field(default_factory=itertools.count)

    def start(
        self,
        operator: str,
        kwargs: dict[str, Any],
        *,
        env: dict[str, str] | None = None,
        stop: dict[str, Any] | None = None,
        ti: dict[str, Any] | None = None,
    ) -> Attempt:
        directory = self.workdir / f"attempt-{next(self.numbers)}"
        directory.mkdir()
        spec = {
            "operator": operator,
            "task_id": "task",
            "kwargs": kwargs,
            "env": env or {},
            "stop": stop,
            "ti": ti,
            "dir": str(directory),
        }
        self.process.stdin.write(json.dumps(spec) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the runner died: {self.process.stderr.read()[-3000:]}"
        return Attempt(int(line), directory)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Iterator[Runner]:
    workdir = tmp_path_factory.mktemp("attempts")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tests.integration.test_task_retries import _runner_main; _runner_main()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    try:
        yield Runner(process, workdir)
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def after_exchange() -> dict[str, Any]:
    """A pause inside `swap_in` right after the atomic exchange of the new output and the previous
    one (Linux on a local filesystem), before the previous one, now in the staging path, is deleted."""
    return stop_at("featurelake.arrow_partitions:exchange_paths", 1, when="after")


def between_renames() -> dict[str, Any]:
    """A pause inside `swap_in` between its two renames, as where the filesystem has no atomic
    exchange (macOS, NFS, an old kernel): the previous output was moved aside (`.<name>.old-*`),
    the new one is not in place."""
    stop = stop_at("fsspec.implementations.local:LocalFileSystem.mv", 1, when="after")
    return {**stop, "match": ".old-", "returns": {"featurelake.arrow_partitions:exchange_paths": False}}


def stop_at(target: str, call: int = 1, *, when: str = "before", action: str = "pause") -> dict[str, Any]:
    return {"target": target, "call": call, "when": when, "action": action}


def killed_then_retried(
    runner: Runner,
    operator: str,
    kwargs: dict[str, Any],
    *,
    stop: dict[str, Any] | None,
    kill_after: float | None = None,
    env: dict[str, str] | None = None,
    ti: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An attempt stopped at `stop` (killed if it pauses there; failed if it raises), or killed
    `kill_after` seconds after it started; then a retry. Returns (the first attempt's outcome, the
    retry's XCom). Fails when the first attempt left a process running."""
    first = runner.start(operator, kwargs, env=env, stop=stop, ti=ti)
    if stop is not None and stop["action"] == "pause":
        assert first.wait_for("paused"), f"never reached {stop}: {first.outcome()}; {first.log()[-3000:]}"
        first.kill()
    elif kill_after is not None:
        assert first.wait_for("started"), first.log()[-3000:]
        time.sleep(kill_after)
        first.kill()
    outcome = first.outcome()
    assert first.left_processes() == [], "the killed attempt left processes running"
    retry = runner.start(operator, kwargs, env=env, ti=ti)
    return outcome, retry.result()


def visible_files(root: Path) -> list[str]:
    """Every file under `root` that a reader of the lake sees: no path part starting with `.` or `_`."""
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)
    )


def leftovers(root: Path) -> list[str]:
    """What a killed run's scratch is: hidden entries, and files under a `_` directory (a job's
    empty `_staging/<job>/` stays, as after any run), `_delta_log` aside."""
    found = []
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if "_delta_log" in parts:
            continue
        if path.name.startswith(".") or (path.is_file() and any(p.startswith("_") for p in parts)):
            found.append(str(path.relative_to(root)))
    return sorted(found)


def sorted_rows(path: Path, key: str) -> pd.DataFrame:
    frame = pq.read_table(path).to_pandas()
    return frame.sort_values(key, kind="stable").reset_index(drop=True)


# -- the Dask merchant statistics task ------------------------------------------------------------
DS = date(2026, 8, 20)
WINDOW = 6
STATS = "featurelake_airflow.operators.dask_merchant_stats:DaskMerchantStatsOperator"
LOCAL_DASK = {"AIRFLOW_CONN_DASK_DEFAULT": json.dumps({"conn_type": "generic", "host": "local"})}


@pytest.fixture(scope="module")
def stats_lake(tmp_path_factory, runner: Runner) -> tuple[Path, dict[str, Any], pd.DataFrame]:
    """A lake whose merchant_stats of DS hold a shorter window's output (a run to replace), and the
    XCom and rows of an uninterrupted run over WINDOW days."""
    from featurelake.synthetic import generate_lake

    lake = tmp_path_factory.mktemp("stats") / "lake"
    generate_lake(lake=lake, start=DS - timedelta(days=WINDOW + 1), end=DS, users=300, seed=5)
    previous = runner.start(
        STATS, {"lake": str(lake), "ds": DS.isoformat(), "window_days": 2}, env=LOCAL_DASK
    )
    previous.result()
    clean = Path(shutil.copytree(lake, lake.parent / "clean"))
    report = runner.start(STATS, stats_kwargs(clean), env=LOCAL_DASK).result()
    return lake, report, sorted_rows(stats_output(clean), "merchant_id")


def stats_kwargs(lake: Path) -> dict[str, Any]:
    return {"lake": str(lake), "ds": DS.isoformat(), "window_days": WINDOW}


def stats_output(lake: Path) -> Path:
    return lake / "features" / "merchant_stats" / f"date={DS}"


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(
            stop_at("featurelake.merchant_stats:stage_partition", 3, when="after"), id="kill-staging"
        ),
        pytest.param(
            stop_at("featurelake.merchant_stats:merchant_stats_of_bucket", 1), id="kill-aggregating"
        ),
        pytest.param(between_renames(), id="kill-between-renames"),
        pytest.param(after_exchange(), id="kill-after-exchange"),
        # swapped in; the staging directory is still there
        pytest.param(stop_at("featurelake.merchant_stats:remove_tree", 3), id="kill-after-swap"),
        pytest.param(
            stop_at("featurelake.merchant_stats:swap_in", action="raise"),
            id="fail-at-swap",
        ),
        pytest.param(None, id="kill-at-random"),
    ],
)
def test_merchant_stats_retry_gives_the_uninterrupted_output(
    runner: Runner, stats_lake, tmp_path: Path, stop: dict[str, Any] | None
) -> None:
    base, want_report, want_rows = stats_lake
    lake = Path(shutil.copytree(base, tmp_path / "lake"))
    kill_after = random.Random(20260820).uniform(0.0, 1.5) if stop is None else None
    first, report = killed_then_retried(
        runner, STATS, stats_kwargs(lake), stop=stop, kill_after=kill_after, env=LOCAL_DASK
    )
    log.info("first attempt: %s", first)
    pd.testing.assert_frame_equal(sorted_rows(stats_output(lake), "merchant_id"), want_rows)
    assert {**report, "output_path": None} == {**want_report, "output_path": None}
    assert visible_files(lake / "features") == visible_files(base.parent / "clean" / "features")
    assert leftovers(lake) == [], "the retry left scratch behind"


# -- the Delta view refresh (delta-rs) ------------------------------------------------------------
VIEW_TASK = "featurelake_airflow.operators.refresh_feature_view:RefreshFeatureViewOperator"
TASK_INSTANCE = {
    "dag_id": "user_features_daily",
    "task_id": "refresh_user_features_view",
    "run_id": "r1",
    "map_index": -1,
}


def view_lake(root: Path) -> Path:
    """Three feature dates; the view refreshed with the first two, as by the two earlier runs."""
    from featurelake.materialized_views import refresh_view
    from tests.feature_view_partitions import D1, D2, write_feature_partitions

    features = write_feature_partitions(root / "features" / "user_features")
    for day in (D1, D2):
        refresh_view(str(root / "views" / "user_features_latest"), str(features), ds=day)
    return root


def view_state(lake: Path) -> tuple[list[dict], list[str]]:
    """The view's rows by user, and each version's operation, every version read back."""
    from deltalake import DeltaTable

    path = str(lake / "views" / "user_features_latest")
    table = DeltaTable(path)
    history = table.history()
    for entry in history:
        DeltaTable(path, version=entry["version"]).to_pyarrow_table()
    rows = table.to_pyarrow_table().sort_by("user_id").to_pylist()
    return rows, [entry["operation"] for entry in reversed(history)]


@pytest.mark.parametrize("mode", ["incremental", "full"])
@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(stop_at("deltalake:DeltaTable.merge"), id="kill-before-merge"),
        # committed, not yet vacuumed nor returned
        pytest.param(stop_at("featurelake.materialized_views:vacuum_view"), id="kill-after-commit"),
        pytest.param(
            stop_at("featurelake.materialized_views:vacuum_view", action="raise"), id="fail-after-commit"
        ),
    ],
)
def test_view_refresh_retry_gives_the_uninterrupted_table_and_report(
    runner: Runner, tmp_path: Path, mode: str, stop: dict[str, Any]
) -> None:
    from tests.feature_view_partitions import D3

    if mode == "full" and stop["target"].startswith("deltalake"):
        stop = stop_at("featurelake.materialized_views:latest_per_entity", when="after")
    clean, lake = view_lake(tmp_path / "clean"), view_lake(tmp_path / "lake")
    kwargs = {"ds": D3.isoformat(), "mode": mode}
    want = runner.start(VIEW_TASK, {**kwargs, "lake": str(clean)}, ti=TASK_INSTANCE).result()
    first, report = killed_then_retried(
        runner, VIEW_TASK, {**kwargs, "lake": str(lake)}, stop=stop, ti=TASK_INSTANCE
    )
    log.info("first attempt: %s", first)
    assert view_state(lake) == view_state(clean)
    assert report == want
    assert visible_files(lake / "features") == visible_files(clean / "features")


def test_a_rerun_after_the_inputs_changed_refreshes_again(tmp_path: Path) -> None:
    """The recorded run is reported again only while its commit is the newest and the partitions it
    read are unchanged: a cleared task whose feature job rewrote the date refreshes the view."""
    from featurelake.materialized_views import refresh_view
    from tests.feature_view_partitions import D3, rows_of, write_partition

    lake = view_lake(tmp_path)
    view, features = lake / "views" / "user_features_latest", lake / "features" / "user_features"
    first = refresh_view(str(view), str(features), ds=D3, run_key="k")
    assert refresh_view(str(view), str(features), ds=D3, run_key="k") == first, "a retry"
    shutil.rmtree(features / f"date={D3}")
    write_partition(features, D3, {"a": 99.0})
    again = refresh_view(str(view), str(features), ds=D3, run_key="k")
    assert again.version == first.version + 1
    assert {row["user_id"]: row["total_spend"] for row in rows_of(view)}["a"] == 99.0


# -- the online-store publish ---------------------------------------------------------------------
PUBLISH = "featurelake_airflow.operators.publish_online_features:PublishOnlineFeaturesOperator"
PUBLISH_DAY = "2030-01-02"
USERS = [f"u{i:04d}" for i in range(400)]


def publish_lake(root: Path) -> Path:
    partition = root / "features" / "user_features" / f"date={PUBLISH_DAY}"
    partition.mkdir(parents=True)
    table = pa.table({"user_id": USERS[:300], "n": list(range(300)), "spend": [i / 4 for i in range(300)]})
    pq.write_table(table, partition / "part-00000.parquet")
    return root


def published_before(nodes: list[str]) -> None:
    """An earlier publish of the date that held 100 users more (a rerun drops them), and a later
    date for 20 users (kept)."""
    from featurelake.feature_records import FeatureRecord
    from featurelake.online_store import OnlineStore, OnlineStoreConfig

    with OnlineStore(OnlineStoreConfig(nodes=nodes)) as store:
        store.write("user_features", [(u, FeatureRecord(PUBLISH_DAY, {"n": -1})) for u in USERS])
        store.write("user_features", [(u, FeatureRecord("2030-01-03", {"n": 7})) for u in USERS[::20]])


def store_contents(nodes: list[str]) -> dict[bytes, bytes]:
    """The ring's keys and values; every key is on its ring node, once, with a TTL."""
    from featurelake.sharding import ShardRing

    ring, contents = ShardRing(nodes), {}
    for node in nodes:
        with redis_client(node) as client:
            keys = sorted(client.scan_iter(match="fl:*", count=1000))
            assert all(client.pttl(key) > 0 and ring.node_for(key) == node for key in keys)
            assert not set(keys) & set(contents)
            contents.update(zip(keys, client.mget(keys), strict=True) if keys else {})
    return contents


def online_env(nodes: list[str]) -> dict[str, str]:
    host, port = nodes[0].rsplit(":", 1)
    connection = {
        "conn_type": "redis",
        "host": host,
        "port": int(port),
        "extra": {"nodes": nodes, "batch_size": 40},
    }
    return {"AIRFLOW_CONN_FEATURELAKE_ONLINE": json.dumps(connection)}


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(
            stop_at("featurelake.online_store:OnlineStore._write_node", 3, when="after"), id="kill-writing"
        ),
        pytest.param(stop_at("featurelake.online_store:OnlineStore._delete_dated", 3), id="kill-removing"),
        pytest.param(stop_at("featurelake.online_store:OnlineStore.close"), id="kill-before-return"),
        pytest.param(None, id="kill-at-random"),
    ],
)
def test_publish_retry_gives_the_uninterrupted_store(
    runner: Runner, redis_nodes: list[str], tmp_path: Path, stop: dict[str, Any] | None
) -> None:
    clean_nodes, nodes = redis_nodes[:2], redis_nodes[2:]
    lake = publish_lake(tmp_path)
    kwargs = {"lake": str(lake), "ds": PUBLISH_DAY}
    for ring in (clean_nodes, nodes):
        published_before(ring)
    want = runner.start(PUBLISH, kwargs, env=online_env(clean_nodes)).result()
    assert (want["written"], want["kept_newer"], want["removed_stale"]) == (285, 15, 95)
    kill_after = random.Random(20300102).uniform(0.0, 0.3) if stop is None else None
    first, report = killed_then_retried(
        runner, PUBLISH, kwargs, stop=stop, kill_after=kill_after, env=online_env(nodes)
    )
    log.info("first attempt: %s", first)
    assert store_contents(nodes) == store_contents(clean_nodes)
    assert sum(report["by_node"].values()) == sum(want["by_node"].values())
    # What the retry itself removed: the first attempt may have removed some or all of them.
    assert report["removed_stale"] <= want["removed_stale"]
    same = ("partition", "written", "kept_newer", "redirected")
    assert {k: report[k] for k in same} == {k: want[k] for k in same}


# -- the merchant profile fetch and the raw partition check --------------------------------------
FETCH = "featurelake_airflow.operators.fetch_merchant_profiles:FetchMerchantProfilesOperator"
CHECK = "featurelake_airflow.operators.raw_partition:RawPartitionCheckOperator"
FETCH_DAY = date(2026, 8, 20)


@pytest.fixture(scope="module")
def profiles_lake(tmp_path_factory) -> Path:
    """One raw day, and profile and quarantine partitions of an earlier fetch (one bogus row each)."""
    from featurelake.merchant_profiles import PROFILE_SCHEMA, QUARANTINE_SCHEMA
    from featurelake.synthetic import generate_lake

    lake = tmp_path_factory.mktemp("profiles") / "lake"
    generate_lake(lake=lake, start=FETCH_DAY, end=FETCH_DAY, users=300, seed=3)
    for dataset, schema in (("raw", PROFILE_SCHEMA), ("quarantine", QUARANTINE_SCHEMA)):
        partition = lake / dataset / "merchant_profiles" / f"date={FETCH_DAY}"
        partition.mkdir(parents=True)
        row = {field.name: None for field in schema} | {
            "merchant_id": "old",
            "name": "x",
            "country": "DE",
            "risk_score": 0.5,
            "risk_bucket": "medium",
            "established": date(2000, 1, 1),
            "years_active": 1,
            "reason": "old",
        }
        pq.write_table(
            pa.Table.from_pylist([{k: row[k] for k in schema.names}], schema=schema),
            partition / "part-00000.parquet",
        )
    return lake


def fetch_env(port: int) -> dict[str, str]:
    from featurelake.merchant_api import PATH_TEMPLATE

    connection = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"path_template": PATH_TEMPLATE, "rate_per_second": 400, "max_concurrency": 16},
    }
    return {"AIRFLOW_CONN_MERCHANT_API": json.dumps(connection)}


def profile_partitions(lake: Path) -> list[pd.DataFrame]:
    return [
        sorted_rows(lake / dataset / "merchant_profiles" / f"date={FETCH_DAY}", "merchant_id")
        for dataset in ("raw", "quarantine")
    ]


@pytest.mark.parametrize(
    "stop",
    [
        # the profiles swapped in, the quarantine not yet
        pytest.param(stop_at("featurelake.arrow_partitions:swap_in", 2), id="kill-between-partitions"),
        pytest.param(between_renames(), id="kill-between-renames"),
        pytest.param(after_exchange(), id="kill-after-exchange"),
        # while the enrich stage's process pool runs
        pytest.param(stop_at("featurelake.merchant_profiles:validate_profile", 20), id="kill-enriching"),
    ],
)
def test_fetch_retry_gives_the_uninterrupted_partitions(
    runner: Runner, profiles_lake: Path, tmp_path: Path, stop: dict[str, Any]
) -> None:
    from featurelake.merchant_api import SandboxServer

    clean = Path(shutil.copytree(profiles_lake, tmp_path / "clean"))
    lake = Path(shutil.copytree(profiles_lake, tmp_path / "lake"))
    with SandboxServer(rate=1000) as server:
        want = runner.start(
            FETCH, {"lake": str(clean), "ds": FETCH_DAY.isoformat()}, env=fetch_env(server.port)
        ).result()
    with SandboxServer(rate=1000) as server:  # the killed attempt and its retry share it
        first, report = killed_then_retried(
            runner,
            FETCH,
            {"lake": str(lake), "ds": FETCH_DAY.isoformat()},
            stop=stop,
            env=fetch_env(server.port),
        )
    log.info("first attempt: %s", first)
    for got, expected in zip(profile_partitions(lake), profile_partitions(clean), strict=True):
        pd.testing.assert_frame_equal(got, expected)
    assert visible_files(lake) == visible_files(clean)
    assert leftovers(lake) == []
    # requests and retries count this attempt's HTTP traffic: the sandbox, like a real API, answers
    # a retried id's first request differently (its one 503 was spent on the killed attempt)
    same = ("merchants", "profiles", "quarantined", "quarantined_by_reason")
    assert {k: report[k] for k in same} == {k: want[k] for k in same}


def test_raw_partition_check_retry_reports_the_same(runner: Runner, profiles_lake: Path) -> None:
    kwargs = {"lake": str(profiles_lake), "ds": FETCH_DAY.isoformat(), "dataset": "transactions"}
    want = runner.start(CHECK, kwargs).result()
    first, report = killed_then_retried(runner, CHECK, kwargs, stop=stop_at("featurelake.lake:is_data_file"))
    assert "killed" in first and report == want == {"partition": want["partition"], "files": 1}


# -- the Spark feature job's task -----------------------------------------------------------------
FEATURE_JOB = "featurelake_airflow.operators.spark_feature_job:SparkFeatureJobOperator"
LOCAL_SPARK = {
    "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
        {"conn_type": "spark", "host": "local[2]", "extra": {"conf": {"spark.ui.enabled": "false"}}}
    )
}


def feature_job_kwargs(lake: Path, ds: date, window_days: int) -> dict[str, Any]:
    """compute_user_features's arguments, as the DAG gives them, for `lake`."""
    return {
        "conn_id": "spark_default",
        "application": str(PROJECT_ROOT / "spark_jobs" / "user_features.py"),
        "application_args": ["--ds", ds.isoformat(), "--lake", str(lake), "--window-days", str(window_days)],
        "report_path": f"{lake}/_metrics/user_features/date={ds.isoformat()}.json",
    }


def test_a_feature_job_task_killed_alone_stops_its_job(runner: Runner, tmp_path: Path) -> None:
    """The task process killed by SIGKILL (which runs no `on_kill`) while its job runs on a local
    master: spark-submit, which runs the job's driver, ends with it, and the retry gives the output
    and report of a run never interrupted. Before, spark-submit lived on and finished the job beside
    the retry, in the same staging directory (checked: this test failed on the processes left). A
    job held past the retry's end then swapped in the staging directory the retry had removed, and
    so replaced the retry's published features of the date with nothing."""
    from tests.integration.test_user_features_run import DAYS, WINDOW_DAYS, _features, _lake

    ds = DAYS[4]
    clean, lake = _lake(tmp_path / "clean", DAYS[:5]), _lake(tmp_path / "killed", DAYS[:5])
    want = runner.start(FEATURE_JOB, feature_job_kwargs(clean, ds, WINDOW_DAYS), env=LOCAL_SPARK).result()
    kwargs = feature_job_kwargs(lake, ds, WINDOW_DAYS)
    # The task process holds while spark-submit runs, until the job has planned its run: computing.
    first = runner.start(
        FEATURE_JOB,
        kwargs,
        env=LOCAL_SPARK,
        stop=stop_at(
            "airflow.providers.apache.spark.hooks.spark_submit:SparkSubmitHook._process_spark_submit_log"
        ),
    )
    assert first.wait_for("paused"), first.log()[-3000:]
    plan = lake / "_staging" / "user_features" / "_plans" / f"{ds.isoformat()}.json"
    deadline = time.monotonic() + 600
    while not plan.exists():
        assert time.monotonic() < deadline, f"the job never planned its run; see {first.directory}"
        time.sleep(0.05)
    first.kill()
    assert first.left_processes() == [], "the killed task's spark-submit went on running"
    report = runner.start(FEATURE_JOB, kwargs, env=LOCAL_SPARK).result()
    pd.testing.assert_frame_equal(_features(lake, ds), _features(clean, ds))
    assert {**report, "output_path": None} == {**want, "output_path": None}
    # Spark names its files anew at each write: the partitions are compared, and their rows above.
    assert partitions(lake) == partitions(clean)
    assert scratch(lake) == scratch(clean), "the retry left scratch behind"


def partitions(lake: Path) -> list[str]:
    """The directories of the files a reader of the lake sees."""
    return sorted({str(Path(file).parent) for file in visible_files(lake)})


def scratch(lake: Path) -> list[str]:
    """`leftovers`, but Hadoop's checksum files (`.<file>.crc`), named after Spark's files."""
    return [path for path in leftovers(lake) if not path.endswith(".crc")]
