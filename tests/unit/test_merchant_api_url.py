"""The URL `featurelake merchant-api` prints once it serves: one a client can call."""

from __future__ import annotations

import pytest

from featurelake.merchant_api import merchants_url


@pytest.mark.parametrize(
    ("host", "url"),
    [
        pytest.param("127.0.0.1", "http://127.0.0.1:8089/merchants/<id>", id="ipv4"),
        pytest.param("0.0.0.0", "http://0.0.0.0:8089/merchants/<id>", id="every-address"),
        pytest.param("merchant-api", "http://merchant-api:8089/merchants/<id>", id="hostname"),
        pytest.param("::1", "http://[::1]:8089/merchants/<id>", id="ipv6-in-brackets"),
        pytest.param("::", "http://[::]:8089/merchants/<id>", id="ipv6-any"),
        pytest.param("[::1]", "http://[::1]:8089/merchants/<id>", id="ipv6-already-bracketed"),
    ],
)
def test_the_url_names_the_server(host: str, url: str) -> None:
    assert merchants_url(host=host, port=8089) == url
