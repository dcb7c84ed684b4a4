"""The online store over TLS, configured as the Airflow UI's Redis connection form saves it: a real
`redis-server` with a TLS port and a certificate signed by a CA made for the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from featurelake.feature_records import FeatureRecord
from featurelake.local_redis import LocalRedisServer, RedisTls
from featurelake.online_store import OnlineStore, OnlineStoreConfig

pytestmark = pytest.mark.integration


def _certificate(subject: str, key, *, issuer: x509.Name | None = None, issuer_key=None, ca: bool = False):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write_pem(path: Path, thing) -> str:
    if isinstance(thing, x509.Certificate):
        path.write_bytes(thing.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            thing.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return str(path)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory) -> Iterator[tuple[int, str]]:
    """A redis-server that speaks only TLS on 127.0.0.1:<port>; yields (port, CA certificate path)."""
    folder = tmp_path_factory.mktemp("redis-tls")
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("featurelake test CA", ca_key, ca=True)
    server = _certificate("localhost", server_key, issuer=ca.subject, issuer_key=ca_key)
    ca_path = _write_pem(folder / "ca.pem", ca)
    tls = RedisTls(
        cert_file=_write_pem(folder / "server.pem", server),
        key_file=_write_pem(folder / "server.key", server_key),
        ca_file=ca_path,
    )
    with LocalRedisServer(tls=tls) as redis_server:
        yield redis_server.port, ca_path


def test_the_redis_forms_tls_fields_reach_the_server(tls_redis: tuple[int, str]) -> None:
    port, ca_path = tls_redis
    saved_by_the_form = {
        "db": 0,
        "cluster": False,
        "startup_nodes": "",
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": ca_path,
        "ssl_keyfile": None,
        "ssl_certfile": None,
        "ssl_check_hostname": True,
    }
    config = OnlineStoreConfig.from_connection(host="127.0.0.1", port=port, extra=saved_by_the_form)
    record = FeatureRecord("2026-10-28", {"total_spend": 12.5})
    with OnlineStore(config) as store:
        assert store.write("user_features", [("u1", record)]).written == 1
        assert store.read("user_features", ["u1"]) == {"u1": record}

    # Without the CA the server's certificate is refused: the TLS options are what made it work.
    untrusted = OnlineStoreConfig.from_connection(host="127.0.0.1", port=port, extra={"ssl": True})
    with (
        OnlineStore(untrusted) as store,
        pytest.raises(redis.ConnectionError, match="certificate verify failed"),
    ):
        store.read("user_features", ["u1"])
