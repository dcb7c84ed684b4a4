"""featurelake.local_redis starts its own redis-server on a free loopback port (the demo's store, the
tests' clusters). A port found free can be taken before redis-server binds it: the server must then
start on another port, and never take a server that was there first for its own."""

from __future__ import annotations

import socket
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
    monkeypatch.setattr(local_redis, "free_port", lambda: queue.pop(0) if queue else real_free_port())


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
    monkeypatch.setattr(local_redis, "free_port", lambda: taken_port)
    server = LocalRedisServer()
    with pytest.raises(RuntimeError, match="found each of 5 free ports taken"):
        server.start()
    assert server._process is None and server._workdir is None
