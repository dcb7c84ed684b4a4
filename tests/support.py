"""Helpers shared by the test levels: free loopback ports and servers started on them again when
another process took one first, real spark-submit runs, Redis clients, emptied Redis servers, Dask
scheduler and worker processes, and the requests an aiohttp client sends."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from featurelake.local_redis import free_port

__all__ = [
    "PROJECT_ROOT",
    "VENV_BIN",
    "ClientRequests",
    "PortTaken",
    "client_requests",
    "dask_processes",
    "emptied_redis_nodes",
    "free_port",
    "port_taken_line",
    "redis_client",
    "retried_on_taken_port",
    "spark_submit",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

log = logging.getLogger(__name__)

Started = TypeVar("Started")


class PortTaken(Exception):
    """A server could not bind the free port it was given: another process bound it in between."""


def port_taken_line(output: str) -> str | None:
    """The line of a server's output that says its bind failed with EADDRINUSE (as Python's
    servers, uvicorn and aiohttp, and redis-server word it), if one does."""
    return next(
        (line.strip() for line in output.splitlines() if "address already in use" in line.lower()), None
    )


def retried_on_taken_port(start: Callable[[], Started], *, what: str, attempts: int = 5) -> Started:
    """`start()`, called again while it raises PortTaken, up to `attempts` calls in all; the last
    one's PortTaken is raised. `start` picks its free ports afresh on each call, and stops whatever
    it started before it raises: `free_port()` is free only when it looks, and a process that must
    be told its port binds it later, when another process may have taken it."""
    for attempt in range(1, attempts):
        try:
            return start()
        except PortTaken as taken:
            log.info("%s: %s; starting again on new ports (try %d of %d)", what, taken, attempt, attempts)
    return start()


def spark_submit(
    application: Path,
    *args: str,
    master: str = "local[2]",
    conf: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a real spark-submit and return its completed process (output captured). `env` is added
    to this process's environment."""
    command = [str(VENV_BIN / "spark-submit"), "--master", master]
    for key, value in {"spark.log.level": "WARN", **(conf or {})}.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(application), *args]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900
    )


def redis_client(address: str):
    """A plain redis-py client of one server, `host:port`; close it (or use it as a context manager)."""
    import redis

    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port))


def keys_on(node: str, *, match: str = "fl:*") -> set[bytes]:
    """The keys one Redis server holds under `match` (SCAN, never KEYS)."""
    with redis_client(node) as client:
        return set(client.scan_iter(match=match, count=1000))


def emptied_redis_nodes(*servers) -> list[str]:
    """host:port of pytest-redis server fixtures, each emptied (FLUSHALL) first."""
    import redis

    nodes = []
    for server in servers:
        client = redis.Redis(host=server.host, port=server.port)
        try:
            client.flushall()
        finally:
            client.close()
        nodes.append(f"{server.host}:{server.port}")
    return nodes


@contextmanager
def dask_processes(
    worker_command: list[str],
    logs: Path,
    *,
    env: dict[str, str],
    workers: int = 1,
    threads: int = 2,
    scheduler_env: dict[str, str] | None = None,
    protocol: str = "tcp",
    scheduler_options: Sequence[str] = (),
    worker_options: Sequence[str] = (),
    security: Any = None,
) -> Iterator[str]:
    """A `dask scheduler` on loopback and `workers` workers of `threads` threads, each started by
    `worker_command` + its address (with `env`); yields the scheduler's address. `protocol`, and
    the options added to the scheduler's and each worker's command, serve a TLS cluster, which
    this process reaches with `security` (a distributed.Security)."""
    base_env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    # Port 0: the scheduler binds a port the system picks, so no other process can take it first,
    # and writes the address it listens on to its scheduler file.
    scheduler_file = logs / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    scheduler = subprocess.Popen(
        [
            str(VENV_BIN / "dask"),
            "scheduler",
            "--protocol",
            protocol,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--scheduler-file",
            str(scheduler_file),
            "--no-dashboard",
            *scheduler_options,
        ],
        stdout=(logs / "scheduler.log").open("w"),
        stderr=subprocess.STDOUT,
        env={**base_env, **(scheduler_env or {})},
    )
    processes = [scheduler]
    try:
        address = _listening_address(scheduler, scheduler_file, logs / "scheduler.log")
        for n in range(workers):
            log = logs / f"worker-{n}.log"
            options = [
                *("--nthreads", str(threads), "--no-dashboard", "--local-directory", str(logs / f"w{n}")),
                *worker_options,
            ]
            processes.append(
                subprocess.Popen(
                    [*worker_command, address, *options],
                    stdout=log.open("w"),
                    stderr=subprocess.STDOUT,
                    env={**base_env, **env},
                    cwd=logs,
                )
            )
        from distributed import Client

        from featurelake.merchant_stats import collect_unclosed_clients

        collect_unclosed_clients()
        deadline = time.monotonic() + 90
        with Client(address, timeout="60s", security=security, set_as_default=False) as client:
            while len(client.scheduler_info()["workers"]) < workers:
                for process in processes[1:]:
                    assert process.poll() is None, (logs / "worker-0.log").read_text()[-2000:]
                assert time.monotonic() < deadline, (logs / "worker-0.log").read_text()[-2000:]
                time.sleep(0.5)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _listening_address(
    scheduler: subprocess.Popen, scheduler_file: Path, output: Path, *, timeout: float = 60
) -> str:
    """The address a `dask scheduler` listens on, once it has written its scheduler file."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(scheduler_file.read_text())["address"]
        except (FileNotFoundError, ValueError):  # not written yet, or half written
            assert scheduler.poll() is None, output.read_text()[-2000:]
            assert time.monotonic() < deadline, (
                f"the dask scheduler wrote no {scheduler_file} in {timeout} s: {output.read_text()[-2000:]}"
            )
            time.sleep(0.1)


def entity_on_node(store: Any, view: str, node: str) -> str:
    """The first id `u-<i>` whose key in `view` the store's ring places on `node`."""
    return next(e for e in (f"u-{i}" for i in range(1000)) if store.ring.node_for(store.key(view, e)) == node)


@dataclass
class ClientRequests:
    """What aiohttp clients of this process sent and got, on the monotonic clock (an event loop's
    clock): when each `ClientSession.get` was called, and each answer as (when it reached the
    client, its status, its headers)."""

    sent: list[float] = field(default_factory=list)
    answers: list[tuple[float, int, dict[str, str]]] = field(default_factory=list)


@contextmanager
def client_requests() -> Iterator[ClientRequests]:
    """Record every `aiohttp.ClientSession.get` of this process while the block runs.

    The client's clock is where a rate limiter decides, so a rate checked on it is exact. A
    server's clock in the same process sees requests late, and unevenly: on a loaded machine a
    server thread starved of its turn stamped several requests within a millisecond."""
    import aiohttp

    record = ClientRequests()
    original = aiohttp.ClientSession.get

    class Recorded:
        def __init__(self, request: Any) -> None:
            self._request = request

        async def __aenter__(self) -> Any:
            response = await self._request.__aenter__()
            record.answers.append((time.monotonic(), response.status, dict(response.headers)))
            return response

        async def __aexit__(self, *exc_info: object) -> Any:
            return await self._request.__aexit__(*exc_info)

    def get(session: Any, *args: Any, **kwargs: Any) -> Recorded:
        record.sent.append(time.monotonic())
        return Recorded(original(session, *args, **kwargs))

    aiohttp.ClientSession.get = get
    try:
        yield record
    finally:
        aiohttp.ClientSession.get = original
