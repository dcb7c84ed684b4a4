"""Ring nodes at IPv6 addresses, written as URLs write them (`[::1]:6379`) or plainly (`::1:6379`),
on a real redis-server listening on ::1. The bracketed form reached the resolver with its
brackets and failed every call with "Name or service not known"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from featurelake.feature_records import FeatureRecord
from featurelake.local_redis import LocalRedisServer
from featurelake.online_store import OnlineStore, OnlineStoreConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ipv6_port() -> Iterator[int]:
    """The port of a redis-server that listens on ::1 only."""
    server = LocalRedisServer(host="::1")
    try:
        server.start()
    except (OSError, TimeoutError, RuntimeError) as error:  # EADDRNOTAVAIL: no ::1
        pytest.fail(
            "no redis-server could listen on ::1: enable IPv6 on the loopback interface "
            f"(sysctl net.ipv6.conf.lo.disable_ipv6=0); {error}"
        )
    try:
        yield server.port
    finally:
        server.stop()


@pytest.mark.parametrize("written", ["[::1]:{port}", "::1:{port}"], ids=["bracketed", "plain"])
def test_a_ring_node_at_an_ipv6_address_is_written_and_read(ipv6_port: int, written: str) -> None:
    node = written.format(port=ipv6_port)
    records = {f"u{i}": FeatureRecord("2026-10-28", {"total_spend": float(i)}) for i in range(50)}
    with OnlineStore(OnlineStoreConfig(nodes=[node])) as store:
        assert store.write("user_features", records.items()).written == 50
        assert store.read("user_features", list(records)) == records
        assert store.count_keys("user_features") == {node: 50}
        store.delete("user_features", list(records))
