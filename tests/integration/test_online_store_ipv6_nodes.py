"""Ring nodes at IPv6 addresses, written as URLs write them (`[::1]:6379`) or plainly (`::1:6379`),
on a real redis-server listening on ::1. The bracketed form reached the resolver with its
brackets and failed every call with "Name or service not known"."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import PortTaken, free_port, port_taken_line, retried_on_taken_port

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
        server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while True:
                if server.poll() is not None:
                    if taken := port_taken_line(log.read_text()):
                        raise PortTaken(taken)
                    pytest.fail(f"redis-server exited at start: {log.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(
                        "no redis-server answered on ::1: enable IPv6 on the loopback interface "
                        f"(sysctl net.ipv6.conf.lo.disable_ipv6=0); {log.read_text()}"
                    )
                try:
                    # One short try per poll: another process that took the port may accept and
                    # never answer, and ours then exits, above
                    with redis.Redis(
                        host="::1",
                        port=port,
                        socket_connect_timeout=1,
                        socket_timeout=1,
                        retry=Retry(NoBackoff(), 0),
                    ) as client:
                        client.ping()
                    return server, port
                except (redis.ConnectionError, redis.TimeoutError):
                    time.sleep(0.1)
        except BaseException:
            server.terminate()
            server.wait(timeout=15)
            raise

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
