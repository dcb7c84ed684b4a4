"""`dask_client` refuses an address this process cannot connect to before any Client exists: a
Client that fails in `__init__` is closed by its `__del__`, which waits out twice the connect
timeout (a task that failed on a TLS scheduler without TLS settings held its process 60 s more)."""

from __future__ import annotations

from typing import Any

import dask
import distributed
import pytest

from featurelake.merchant_stats import DaskProtocolMissing, DaskTLSSettingsMissing, dask_client

NO_TLS = {"distributed.comm.tls.ca-file": None, "distributed.comm.tls.client.cert": None}


class Made(Exception):
    """Raised by the stand-in Client once it is made, with its arguments."""


class RecordingClient:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise Made(args, kwargs)


@pytest.fixture(autouse=True)
def recorded_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "Client", RecordingClient)


def test_tls_without_settings_is_refused_before_a_client_exists() -> None:
    with dask.config.set(NO_TLS), pytest.raises(DaskTLSSettingsMissing) as refused:
        dask_client("tls://127.0.0.1:1", connect_timeout="1s")
    assert str(refused.value).startswith("the scheduler tls://127.0.0.1:1 uses TLS, and this process has no")
    for name in ("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "__CLIENT__CERT", "__CLIENT__KEY"):
        assert name in str(refused.value)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(
            {"distributed.comm.tls.ca-file": "/ca.pem", "distributed.comm.tls.client.cert": None}, id="ca"
        ),
        pytest.param(
            {"distributed.comm.tls.ca-file": None, "distributed.comm.tls.client.cert": "/c.pem"}, id="cert"
        ),
    ],
)
def test_tls_needs_both_a_ca_file_and_a_client_certificate(settings: dict[str, str | None]) -> None:
    with dask.config.set(settings), pytest.raises(DaskTLSSettingsMissing):
        dask_client("tls://127.0.0.1:1", connect_timeout="1s")


def test_tls_with_settings_makes_a_client() -> None:
    """The files are the Client's to read: the check only looks for the settings."""
    settings = {"distributed.comm.tls.ca-file": "/ca.pem", "distributed.comm.tls.client.cert": "/c.pem"}
    with dask.config.set(settings), pytest.raises(Made) as made:
        dask_client("tls://127.0.0.1:1", connect_timeout="1s")
    assert made.value.args[0] == ("tls://127.0.0.1:1",)


def test_a_protocol_without_its_connector_is_refused_before_a_client_exists() -> None:
    """ucx:// without distributed-ucxx: distributed keeps the scheme, but its connector is abstract."""
    with pytest.raises(
        DaskProtocolMissing, match=r"cannot open the ucx:// connection to ucx://127\.0\.0\.1:1"
    ):
        dask_client("ucx://127.0.0.1:1", connect_timeout="1s")


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "127.0.0.1:1"])
def test_tcp_makes_a_client_whatever_the_tls_settings(address: str) -> None:
    with dask.config.set(NO_TLS), pytest.raises(Made) as made:
        dask_client(address, connect_timeout="1s")
    assert made.value.args[0] == (address,)
