"""The connection's `socket_timeout`, `socket_connect_timeout`, `retries` and `retry_backoff_cap`
reach every Redis client of the store, on a ring and on a Redis Cluster.

Attempts are counted, never timed: a real TCP server on loopback stands in for a Redis node that
fails. It counts the connections made to it, and closes each at once (a node that drops its
clients) or never answers (a node that hangs).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from featurelake.feature_records import FeatureRecord
from featurelake.local_redis import LocalRedisCluster
from featurelake.online_store import OnlineStore, OnlineStoreConfig

VIEW = "user_features"


class FailingNode:
    """A TCP server on loopback that counts connections and closes each at once, or holds it
    open and never answers."""

    def __init__(self, port: int, *, answer: bool) -> None:
        self.connections = 0
        self._answer = answer
        self._held: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", port))
        self._server.settimeout(0.1)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            if self._answer:
                connection.close()
            else:
                self._held.append(connection)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()
        # a connection the kernel took while the thread was starved counts too: it is still queued
        self._server.setblocking(False)
        while True:
            try:
                connection, _ = self._server.accept()
            except BlockingIOError:
                break
            self.connections += 1
            self._held.append(connection)
        self._server.close()
        for connection in self._held:
            connection.close()


@contextmanager
def failing_node(port: int | None = None, *, answer: bool = True) -> Iterator[FailingNode]:
    node = FailingNode(port or 0, answer=answer)  # 0: a port the system picks as it binds
    try:
        yield node
    finally:
        node.close()


def ring_store(node: str, **extra: object) -> OnlineStore:
    host, port = node.rsplit(":", 1)
    return OnlineStore(OnlineStoreConfig.from_connection(host=host, port=int(port), extra=extra))


@pytest.mark.parametrize("retries", [0, 2])
def test_a_ring_node_that_drops_connections_is_tried_retries_plus_one_times(retries: int) -> None:
    with failing_node() as node:
        store = ring_store(node.address, retries=retries, retry_backoff_cap=0)
        with store, pytest.raises(redis.ConnectionError):
            store.read(VIEW, ["u1"])
    assert node.connections == retries + 1


def test_without_the_extras_a_ring_node_is_tried_as_redis_py_does_eleven_times() -> None:
    # redis-py's default of 10 retries, with no waits between them (a cap of 0) to keep this short.
    with failing_node() as node:
        store = ring_store(node.address, retry_backoff_cap="0")
        with store, pytest.raises(redis.ConnectionError):
            store.read(VIEW, ["u1"])
    assert node.connections == 11


def test_a_ring_node_that_never_answers_fails_the_read_after_its_socket_timeout() -> None:
    with failing_node(answer=False) as node:
        store = ring_store(node.address, socket_timeout=0.2, retries=1, retry_backoff_cap=0)
        with store, pytest.raises(redis.TimeoutError):
            store.read(VIEW, ["u1"])
    assert node.connections == 2


def test_a_cluster_client_and_its_nodes_take_the_connections_settings() -> None:
    record = FeatureRecord("2026-01-02", {"x": 1.0})
    with LocalRedisCluster(primaries=3) as cluster:
        host, port = cluster.addresses[0].rsplit(":", 1)

        def store_of(**extra: object) -> OnlineStore:
            config = OnlineStoreConfig.from_connection(
                host=host, port=int(port), extra={"cluster": True, **extra}
            )
            return OnlineStore(config)

        with store_of(socket_timeout="0.5", socket_connect_timeout=0.25, retries=2) as store:
            store.write(VIEW, [(f"u{i}", record) for i in range(30)])
            client = store.cluster_client()
            assert client.retry.get_retries() == 2
            for node in client.get_nodes():
                options = node.redis_connection.connection_pool.connection_kwargs
                assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.5, 0.25)
            owner = client.get_node_from_key(store.key(VIEW, "u0"))
        # The primary of u0 is killed (it has no replica), and its port taken by a server that
        # drops each connection. A read of u0 asks it once per try, and again when it reloads the
        # slot table, so the count is not exactly 1 + retries; each retry adds at least one try.
        cluster.server(f"{owner.host}:{owner.port}").kill()
        attempts = {}
        with failing_node(owner.port) as node:
            for retries in (0, 4):
                with store_of(retries=retries, retry_backoff_cap=0) as store:
                    before = node.connections
                    with pytest.raises(redis.ConnectionError):
                        store.read(VIEW, ["u0"])
                    attempts[retries] = node.connections - before
        assert attempts[0] >= 1 and attempts[4] >= attempts[0] + 4, attempts
