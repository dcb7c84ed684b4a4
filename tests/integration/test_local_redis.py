"""featurelake.local_redis starts its own redis-server on a free loopback port (the demo's store, the
tests' clusters). A port found free can be taken before redis-server binds it: the server must then
start on another port, and never take a server that was there first for its own. It keeps no data
file, shows its log when it exits at start, and stops when the process that started it dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from featurelake import local_redis
from featurelake.local_redis import LocalRedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def _ports_first(monkeypatch: pytest.MonkeyPatch, *first: int) -> None:
    """free_port answers `first`, as if each were taken right after it was found free, then free ports."""
    queue = list(first)
    real_free_port = local_redis.free_port
    monkeypatch.setattr(
        local_redis, "free_port", lambda host="127.0.0.1": queue.pop(0) if queue else real_free_port(host)
    )


def _server_pid(port: int) -> int:
    with redis.Redis(host="127.0.0.1", port=port) as client:
        return client.info("server")["process_id"]


def test_a_port_taken_before_the_server_binds_it_is_given_up_for_another(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    _ports_first(monkeypatch, taken_port)
    with LocalRedisServer() as server:
        assert server.port != taken_port
        with redis.Redis(host="127.0.0.1", port=server.port) as client:
            assert client.set("k", "v") and client.get("k") == b"v"


def test_a_redis_server_already_on_the_port_is_not_taken_for_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalRedisServer() as other:
        _ports_first(monkeypatch, other.port)
        with LocalRedisServer() as server:
            assert server.port != other.port
            assert _server_pid(server.port) == server._process.pid
        # the other server was neither stopped nor written to
        assert _server_pid(other.port) == other._process.pid
        with redis.Redis(host="127.0.0.1", port=other.port) as client:
            assert client.dbsize() == 0


def test_ports_taken_every_time_are_named_and_nothing_is_left_running(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    monkeypatch.setattr(local_redis, "free_port", lambda host="127.0.0.1": taken_port)
    server = LocalRedisServer()
    with pytest.raises(RuntimeError, match="found each of 5 free ports taken"):
        server.start()
    assert server._process is None and server._workdir is None


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_server_does_not_outlive_the_process_that_started_it(signal_number: int) -> None:
    # A demo killed by the OOM killer or a CI timeout runs no `finally`: its redis-server must still stop.
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from featurelake.local_redis import LocalRedisServer\n"
            "server = LocalRedisServer().start()\n"
            "print(server._process.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    server_pid = int(starter.stdout.readline())
    try:
        starter.send_signal(signal_number)
        starter.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(server_pid), "redis-server outlived the process that started it"
    finally:
        starter.kill()
        starter.wait()
        if _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, reaped by init soon, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_server_keeps_no_data_file_and_leaves_no_directory() -> None:
    with LocalRedisServer() as server, redis.Redis(host="127.0.0.1", port=server.port) as client:
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        workdir = server._workdir
        client.set("k", "v")
    assert not workdir.exists()


def test_a_server_that_exits_at_start_shows_its_log() -> None:
    server = LocalRedisServer(cluster=True).start()
    try:
        server.kill()
        (server._workdir / "nodes.conf").write_text("not a cluster config\n")
        with pytest.raises(
            RuntimeError, match=r"(?s)exited at start: .*Unrecoverable error: corrupted cluster config file"
        ):
            server.restart()
        assert not server.running
    finally:
        server.stop()


def test_a_killed_restarted_and_stopped_server_leaves_no_pipe_open() -> None:
    """Each process's stderr pipe (what redis-server says before its log file takes over) is
    closed when the process is dropped: left open, it is an unclosed file once collected, which a
    test that counts leaked files blames on whatever it runs at that moment."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        server = LocalRedisServer().start()
        server.kill()
        server.restart()
        server.stop()
        del server
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
