"""How the online store hook reads the nodes of its connection: a node listed twice, weights (which
the ring does not take), and a database in a cluster connection's URI, each refused naming the
connection and what to fix."""

from __future__ import annotations

import json

import pytest


def config_of(extra: dict, **fields):
    from airflow.sdk import Connection

    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    connection = Connection(
        conn_id="online", conn_type="redis", host="redis-0", port=6379, extra=json.dumps(extra), **fields
    )
    return OnlineStoreHook.config_of(connection)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            {"nodes": ["redis-0:6379", "redis-1:6379", "redis-0:6379"]},
            r"'online': extra `nodes` lists 'redis-0:6379' twice; list each node once",
            id="nodes",
        ),
        pytest.param(
            {"nodes": ["redis-0:6379", "redis-1:6379"], "previous_nodes": ["redis-1:6379", "redis-1:6379"]},
            r"'online': extra `previous_nodes` lists 'redis-1:6379' twice; list each node once",
            id="previous-nodes",
        ),
        pytest.param(
            {"nodes": {"redis-0:6379": 2, "redis-1:6379": 1}},
            r"'online': `nodes` must be a list such as",
            id="weights",
        ),
    ],
)
def test_a_node_listed_twice_or_weighted_is_refused_naming_the_extra(extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_of(extra)


def test_a_cluster_connection_is_not_refused_for_a_startup_node_given_twice() -> None:
    # startup nodes are only where the cluster client first asks; the ring is what needs unique names
    config = config_of({"cluster": True, "nodes": ["redis-0:6379", "redis-0:6379"]})
    assert config.cluster


@pytest.mark.parametrize("cluster", [True, "true"])
def test_a_database_in_a_cluster_uris_path_is_named_as_the_path(cluster: object) -> None:
    with pytest.raises(
        ValueError, match=r"'online'.*path /2.*Redis Cluster has only database 0.*drop the /2"
    ):
        config_of({"cluster": cluster}, schema="2")


def test_database_0_in_a_cluster_uris_path_is_fine() -> None:
    assert config_of({"cluster": True}, schema="0").db == 0


@pytest.mark.parametrize(
    ("extra", "warning"),
    [
        pytest.param(
            {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": False},
            "TLS without a hostname check",
            id="as-the-form-saves-it",
        ),
        pytest.param({"ssl": True, "ssl_cert_reqs": "none"}, "does not verify", id="cert-reqs-none"),
        pytest.param({"ssl": True, "ssl_check_hostname": True}, None, id="checked"),
        pytest.param({"ssl": True}, None, id="redis-py-defaults"),
        pytest.param({"ssl": False, "ssl_check_hostname": False}, None, id="no-tls"),
    ],
)
def test_tls_that_does_not_check_the_server_is_named_in_the_log(caplog, extra: dict, warning) -> None:
    """The Redis form saves ssl_check_hostname false unless its box is ticked: a connection made in
    the UI with TLS on took a certificate for another host (reproduced on a TLS redis-server on
    127.0.0.2 with a certificate for 127.0.0.1), and nothing said so."""
    with caplog.at_level("WARNING", logger="featurelake_airflow.hooks.online_store"):
        config_of(extra)
    said = [r.getMessage() for r in caplog.records if r.name == "featurelake_airflow.hooks.online_store"]
    if warning is None:
        assert said == []
    else:
        assert len(said) == 1 and said[0].startswith("connection 'online': ") and warning in said[0]
