"""Ring nodes at IPv6 addresses, written as URLs write them (`[::1]:6379`) or plainly (`::1:6379`),
on a real redis-server listening on ::1. The bracketed form reached the resolver with its
brackets and failed every call with "Name or service not known"."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import free_port, redis_server_told_its_port, retried_on_taken_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ipv6_port(tmp_path_factory) -> Iterator[int]:
    """The port of a redis-server that listens on ::1 only."""
    folder: Path = tmp_path_factory.mktemp("redis-ipv6")
    log = folder / "redis.log"

    def start() -> tuple[subprocess.Popen, int]:
        try:
            port = free_port("::1")
        except OSError as error:  # EADDRNOTAVAIL: no ::1
            pytest.fail(
                "no port is free on ::1: enable IPv6 on the loopback interface "
                f"(sysctl net.ipv6.conf.lo.disable_ipv6=0); {error}"
            )
        command = ["redis-server", "--port", str(port), "--bind", "::1", "--save", "", "--dir", str(folder)]
        client = redis.Redis(
            host="::1", port=port, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        server = redis_server_told_its_port(
            command,
            port=port,
            output=log,
            client=client,
            what="the redis-server on ::1",
            not_answering="enable IPv6 on the loopback interface (sysctl net.ipv6.conf.lo.disable_ipv6=0)",
        )
        return server, port

    server, port = retried_on_taken_port(start, what="the redis-server on ::1")
    try:
        yield port
    finally:
        server.terminate()
        server.wait(timeout=15)


@pytest.mark.parametrize("written", ["[::1]:{port}", "::1:{port}"], ids=["bracketed", "plain"])
def test_a_ring_node_at_an_ipv6_address_is_written_and_read(ipv6_port: int, written: str) -> None:
    node = written.format(port=ipv6_port)
    records = {f"u{i}": FeatureRecord("2026-10-28", {"total_spend": float(i)}) for i in range(50)}
    with OnlineStore(OnlineStoreConfig(nodes=[node])) as store:
        assert store.write("user_features", records.items()).written == 50
        assert store.read("user_features", list(records)) == records
        assert store.count_keys("user_features") == {node: 50}
        store.delete("user_features", list(records))
