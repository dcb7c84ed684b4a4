"""A host as it goes in a URL: the Dask and HTTP hooks and the sandbox's URL take it."""

from __future__ import annotations

import pytest

from featurelake.network_address import is_ipv6_address, url_host


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        pytest.param("127.0.0.1", "127.0.0.1", id="ipv4"),
        pytest.param("dask-scheduler", "dask-scheduler", id="hostname"),
        pytest.param("::1", "[::1]", id="ipv6"),
        pytest.param("fd00::5", "[fd00::5]", id="ipv6-ula"),
        pytest.param("::", "[::]", id="ipv6-any"),
        pytest.param("::ffff:10.0.0.1", "[::ffff:10.0.0.1]", id="ipv4-mapped-ipv6"),
        pytest.param("[::1]", "[::1]", id="ipv6-already-bracketed"),
        pytest.param("fe80::1%eth0", "[fe80::1%eth0]", id="ipv6-with-zone-id"),
    ],
)
def test_url_host_brackets_ipv6_addresses_only(host: str, shown: str) -> None:
    assert url_host(host) == shown


@pytest.mark.parametrize(
    ("text", "ipv6"),
    [
        pytest.param("::1", True, id="ipv6"),
        pytest.param("fe80::1%eth0", True, id="ipv6-with-zone-id"),
        pytest.param("127.0.0.1", False, id="ipv4"),
        pytest.param("redis-0", False, id="hostname"),
        pytest.param("[::1]", False, id="bracketed"),
        pytest.param("fd00:", False, id="a-host-port-split-at-the-wrong-colon"),
    ],
)
def test_is_ipv6_address(text: str, ipv6: bool) -> None:
    assert is_ipv6_address(text) is ipv6
