"""The Dask merchant statistics job when a worker process dies mid-job: real `dask scheduler` and
`dask worker` processes on loopback, one worker killed with SIGKILL (its nanny starts a new one)."""

from __future__ import annotations

import importlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from featurelake import merchant_stats
from featurelake.local_redis import free_port
from featurelake.merchant_stats import compute_merchant_stats, dask_client
from featurelake.synthetic import generate_lake
from tests.integration.test_merchant_stats import assert_matches
from tests.oracle.merchant_stats_duckdb import oracle
from tests.support import VENV_BIN, dask_processes

pytestmark = pytest.mark.integration

DS = date(2026, 8, 20)
WINDOW = 10
BUCKETS = 48
# How long a wait of the test gives up after: a hang guard, not a bound on the job's speed.
PATIENCE = 300


@contextmanager
def scheduler_and_workers(logs: Path, *, workers: int = 2) -> Iterator[str]:
    """`dask scheduler` and `workers` `dask worker` processes (1 thread each, with a nanny) on loopback."""
    # the scheduler's transition log keeps every transition of the test (1000 by default)
    transitions = {"DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH": "1000000"}
    with dask_processes(
        [str(VENV_BIN / "dask"), "worker"],
        logs,
        env={},
        workers=workers,
        threads=1,
        scheduler_env=transitions,
    ) as address:
        yield address


def staging_runs(client) -> int:
    """How many times the scheduler sent a staging task to a worker."""

    def count(dask_scheduler) -> int:  # nested: pickled by value, as the scheduler cannot import tests
        transitions = dask_scheduler.transition_log
        return sum(
            1 for key, _start, finish, *_ in transitions if finish == "processing" and "stage" in str(key)
        )

    return client.run_on_scheduler(count)


def holders_of_staging_results(client) -> list[str]:
    """The workers holding staging tasks' results, most first."""

    def holders(dask_scheduler) -> list[str]:
        held: dict[str, int] = {}
        for task in dask_scheduler.tasks.values():
            if "stage" in str(task.key) and task.state == "memory":
                for worker in task.who_has:
                    held[worker.address] = held.get(worker.address, 0) + 1
        return sorted(held, key=lambda address: -held[address])

    return client.run_on_scheduler(holders)


def buckets_waiting_for_the_kill(turns: Path):
    """`merchant_stats_of_bucket`, where the first bucket task to begin runs at once and marks
    `turns/done-<bucket>` when it ends, and every other one first waits for `turns/killed`: the
    bucket phase lasts until the test has killed a worker, however slow the machine. (Waiting for
    an output file instead deadlocked: the workers' threads took later buckets, which waited, before
    the write of the first one.)"""

    def merchant_stats_of_bucket_in_turn(bucket: int, **kwargs):
        # nested: pickled by value, as the workers cannot import tests
        try:
            os.close(os.open(turns / "first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            deadline = time.monotonic() + PATIENCE
            while not (turns / "killed").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        # the workers' module, which the test did not patch
        job = importlib.import_module("featurelake.merchant_stats")
        stats = job.merchant_stats_of_bucket(bucket, **kwargs)
        (turns / f"done-{bucket}").touch()
        return stats

    return merchant_stats_of_bucket_in_turn


def test_a_worker_killed_in_the_bucket_phase_does_not_rerun_staging_and_the_job_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker is SIGKILLed once the first bucket task has ended, the others held until then. The client still held
    the staging tasks' results, so the scheduler ran the lost ones again: they rewrote staged files
    while bucket tasks read them (on a 6M-row lake the job failed with ArrowInvalid "Parquet magic
    bytes not found in footer", or OSError "Directory not empty" removing the staging, which stayed
    behind)."""
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=DS - timedelta(days=WINDOW - 1), end=DS, users=20_000, seed=13)
    output = tmp_path / "merchant_stats" / f"date={DS}"
    staging = tmp_path / "staging"
    logs = tmp_path / "logs"
    logs.mkdir()
    run = {
        "raw_transactions": str(lake / "raw" / "transactions"),
        "output": str(output),
        "staging": str(staging),
        "ds": DS,
        "window_days": WINDOW,
        "buckets": BUCKETS,
    }
    with scheduler_and_workers(logs) as address, dask_client(address) as client:
        # a run undisturbed: its files, and how many staging tasks it ran (Dask may read several
        # small raw files as one partition)
        runs_before = staging_runs(client)
        compute_merchant_stats(client, **run)
        staging_tasks = staging_runs(client) - runs_before
        undisturbed = {path.name: path.read_bytes() for path in sorted(output.iterdir())}
        assert staging_tasks > 0

        pids = client.run(os.getpid)
        runs_before = staging_runs(client)
        killed: dict[str, object] = {}
        # the buckets after the first wait for the kill, so it comes within the bucket phase
        turns = tmp_path / "bucket-turns"
        turns.mkdir()
        monkeypatch.setattr(merchant_stats, "merchant_stats_of_bucket", buckets_waiting_for_the_kill(turns))

        def kill_a_worker_in_the_bucket_phase() -> None:
            try:
                deadline = time.monotonic() + PATIENCE
                while time.monotonic() < deadline and not list(turns.glob("done-*")):
                    time.sleep(0.005)
                killed["waited_out"] = time.monotonic() >= deadline
                worker = [*holders_of_staging_results(client), *sorted(pids)][0]
                killed["buckets_done"] = len(list(turns.glob("done-*")))
                os.kill(pids[worker], signal.SIGKILL)
                killed["worker"] = worker
            finally:
                (turns / "killed").touch()  # the other buckets go on, even when the kill failed

        killer = threading.Thread(target=kill_a_worker_in_the_bucket_phase, daemon=True)
        killer.start()
        report = compute_merchant_stats(client, **run)
        killer.join(PATIENCE)
        assert "worker" in killed, "no worker was killed"
        assert not killed["waited_out"], f"no bucket task ended within {PATIENCE} s"
        assert killed["buckets_done"] == 1, killed  # killed within the bucket phase
        reruns = staging_runs(client) - runs_before
        assert reruns == staging_tasks, (
            f"{reruns} staging task runs, where an undisturbed run had {staging_tasks}"
        )
        assert not staging.exists(), sorted(str(path.relative_to(staging)) for path in staging.rglob("*"))[:5]
        assert sorted(path.name for path in output.parent.iterdir()) == [f"date={DS}"]
        # the same files as the undisturbed run, byte for byte
        assert {path.name: path.read_bytes() for path in sorted(output.iterdir())} == undisturbed

    want = oracle(lake, DS, WINDOW)
    assert report.merchants == len(want)
    assert_matches(output, want, DS, min_merchants=1)


def hook_for(monkeypatch: pytest.MonkeyPatch, connection: dict):
    from featurelake_airflow.hooks.dask_cluster import DaskClusterHook

    monkeypatch.setenv("AIRFLOW_CONN_DASK_REVIEW", json.dumps({"conn_type": "generic", **connection}))
    return DaskClusterHook(dask_conn_id="dask_review")


def test_an_unreachable_scheduler_fails_within_the_connection_timeout_naming_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing listens on the port. The client tried for a fixed 30 s and raised "Timed out trying
    to connect to tcp://127.0.0.1:<port> after 30 s", naming neither the connection nor a remedy."""
    port = free_port()
    hook = hook_for(monkeypatch, {"host": "127.0.0.1", "port": port, "extra": {"timeout": "2s"}})
    with pytest.raises(OSError) as raised:
        hook.get_conn()
    message = str(raised.value)
    assert message.startswith(
        f"connection 'dask_review': no Dask scheduler answered at tcp://127.0.0.1:{port}"
    )
    assert "within 2s" in message and "fix the connection's host and port" in message


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        pytest.param(
            {"host": "127.0.0.1", "port": 8786, "extra": {"workers": 2, "memory_limit": "1GiB"}},
            "extra memory_limit, workers does not apply to a scheduler's connection",
            id="local-extras-on-a-scheduler",
        ),
        pytest.param(
            {"host": "127.0.0.1:8786", "port": 8786},
            "host '127.0.0.1:8786' has a port and the port field is 8786 too",
            id="port-twice",
        ),
        pytest.param(
            {"host": "127.0.0.1", "port": 8786, "extra": {"timeout": "soon"}},
            "extra timeout must be a duration",
            id="bad-timeout",
        ),
        pytest.param(
            {"host": "tls://127.0.0.1", "port": 1, "extra": {"timeout": "3s"}},
            "the scheduler tls://127.0.0.1:1 uses TLS, and this process has no TLS settings for Dask",
            id="tls-without-certificates",
        ),
        pytest.param(
            {"host": "ucx://127.0.0.1", "port": 1, "extra": {"timeout": "3s"}},
            "this process cannot open the ucx:// connection to ucx://127.0.0.1:1",
            id="ucx-without-its-package",
        ),
    ],
)
def test_a_scheduler_connection_that_cannot_work_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, connection: dict, message: str
) -> None:
    """The extras were ignored (the job ran on the scheduler's own workers, whatever they said), a
    port in both fields gave the address tcp://127.0.0.1:8786:8786, a TLS scheduler without
    Dask's TLS settings raised a TypeError about `ssl_context`, and a ucx:// one without the UCX
    package "Can't instantiate abstract class UCXConnector", naming no connection."""
    with pytest.raises(ValueError, match=f"connection 'dask_review': {message}"):
        hook_for(monkeypatch, connection).get_conn()


def write_large_day(lake: Path, day: date, rows: int) -> None:
    """`rows` raw transactions of one date in one file of 1M-row row groups (pyarrow's default),
    with merchants as skewed as card data (one has a quarter of the rows)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from featurelake.synthetic import TRANSACTIONS_SCHEMA

    rng = np.random.default_rng(17)

    def text(prefix: str, numbers) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")

    midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**6
    table = pa.Table.from_arrays(
        [
            text("txn-", np.arange(rows)),
            text("user_", rng.integers(0, 1_000_000, rows)),
            text("m_", np.minimum(rng.zipf(1.3, rows), 20_000)),
            pa.array(rng.integers(1, 41, rows).astype(np.int32)),
            pa.array(np.round(rng.gamma(2, 30, rows) * np.where(rng.random(rows) < 0.03, -1, 1), 2)),
            pa.array(["EUR"] * rows, pa.string()),
            pa.array(midnight + rng.integers(0, 86_400 * 10**6, rows), pa.timestamp("us", tz="UTC")),
        ],
        schema=TRANSACTIONS_SCHEMA,
    )
    partition = lake / "raw" / "transactions" / f"date={day.isoformat()}"
    partition.mkdir(parents=True)
    pq.write_table(table, partition / "part-0.parquet", row_group_size=1_000_000)


def test_a_short_window_of_a_large_day_runs_on_a_worker_of_1_gib(tmp_path: Path) -> None:
    """One day of 4M rows (183 MiB uncompressed, far less than the worker's memory), window_days=1,
    on a worker process of 1 GiB and 1 thread. A staging task read up to 256 MiB of row groups, and
    the day went to a single bucket (one per 4 dates): each task took the worker past its memory
    (about 6x the uncompressed bytes it reads), its nanny restarted it 4 times, and the job failed
    with KilledWorker, where the same rows over a 30-day window ran."""
    lake = tmp_path / "lake"
    write_large_day(lake, DS, 4_000_000)
    output = tmp_path / "merchant_stats" / f"date={DS}"
    logs = tmp_path / "logs"
    logs.mkdir()
    with (
        dask_processes(
            [str(VENV_BIN / "dask"), "worker"],
            logs,
            env={},
            threads=1,
            worker_options=["--memory-limit", "1GiB"],
        ) as address,
        dask_client(address) as client,
    ):
        workers = client.run(os.getpid)
        report = compute_merchant_stats(
            client,
            raw_transactions=str(lake / "raw" / "transactions"),
            output=str(output),
            staging=str(tmp_path / "staging"),
            ds=DS,
            window_days=1,
        )
        assert client.run(os.getpid) == workers, "a worker was restarted"
    assert report.rows_counted == 4_000_000
    assert report.buckets == 3  # at most BUCKET_DAY_BYTES (64 MiB) of the day per bucket
    assert_matches(output, oracle(lake, DS, 1), DS)
