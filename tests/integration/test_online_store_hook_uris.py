"""The online store hook reads a `rediss://` URI (Airflow's conn_type "rediss") as TLS, as redis-py
and redis-cli do: on a real TLS-only redis-server, not as plain TCP to its TLS port."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from featurelake.feature_records import FeatureRecord
from tests.integration import test_online_store_tls

pytestmark = pytest.mark.integration

# The TLS-only server and its CA, from the TLS tests' fixture
tls_redis = test_online_store_tls.tls_redis


def test_a_rediss_uri_connects_with_tls(tls_redis: tuple[int, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    port, ca_path = tls_redis
    options = f"ssl_ca_certs={quote(ca_path, safe='')}&retries=0&socket_timeout=2"
    monkeypatch.setenv("AIRFLOW_CONN_TLS_ONLINE", f"rediss://127.0.0.1:{port}/0?{options}")
    record = FeatureRecord("2026-10-28", {"total_spend": 12.5})
    with OnlineStoreHook(online_conn_id="tls_online").get_conn() as store:
        assert store.write("user_features", [("u1", record)]).written == 1
        assert store.read("user_features", ["u1"]) == {"u1": record}


@pytest.mark.parametrize("ssl", [False, "false"])
def test_a_rediss_uri_that_turns_tls_off_is_refused(ssl: object) -> None:
    from airflow.sdk import Connection

    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    connection = Connection(
        conn_id="tls_online", conn_type="rediss", host="redis-0", extra=json.dumps({"ssl": ssl})
    )
    with pytest.raises(ValueError, match=r"(?i)'tls_online'.*rediss.*`ssl` extra is .?false.*redis://"):
        OnlineStoreHook.config_of(connection)
