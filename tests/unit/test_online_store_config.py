"""OnlineStoreConfig from an Airflow Redis connection's fields, and the errors that name what to fix."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from featurelake.online_store import OnlineStore, OnlineStoreConfig, copy_ttl


def test_one_node_from_host_and_port() -> None:
    config = OnlineStoreConfig.from_connection(host="redis-0", port=6380, password="s", extra={"db": 2})
    assert config.nodes == ("redis-0:6380",)
    assert (config.db, config.password, config.cluster, config.key_prefix) == (2, "s", False, "fl")
    assert config.key_ttl_seconds == 2 * 24 * 3600
    assert OnlineStoreConfig.from_connection(host="redis-0", port=None).nodes == ("redis-0:6379",)


def test_a_ring_and_its_previous_nodes_from_the_extra() -> None:
    config = OnlineStoreConfig.from_connection(
        host="ignored",
        port=1,
        extra={
            "nodes": ["r0:6379", "r1:6379", "r2:6379"],
            "previous_nodes": ["r0:6379", "r1:6379"],
            "key_prefix": "prod",
            "key_ttl_seconds": 0,
            "batch_size": 500,
        },
    )
    assert config.nodes == ("r0:6379", "r1:6379", "r2:6379")
    assert config.previous_nodes == ("r0:6379", "r1:6379")
    assert (config.key_prefix, config.key_ttl_seconds, config.batch_size) == ("prod", 0, 500)


def test_a_cluster_from_the_extra() -> None:
    config = OnlineStoreConfig.from_connection(host="c0", port=7000, extra={"cluster": True})
    assert config.cluster and config.nodes == ("c0:7000",)


def test_extras_typed_as_text_mean_what_they_say() -> None:
    # An extra typed by hand, or from a connection URI's query, is often a string: "false" is false.
    extra = {"cluster": "false", "ssl": "False", "db": "2", "key_ttl_seconds": "3600"}
    config = OnlineStoreConfig.from_connection(host="r", port=1, extra=extra)
    assert (config.cluster, config.ssl, config.db, config.key_ttl_seconds) == (False, False, 2, 3600)
    assert OnlineStoreConfig.from_connection(host="r", port=1, extra={"ssl": "true"}).ssl


# What the Airflow UI's Redis connection form saves: every one of its fields, untouched ones too.
REDIS_FORM_DEFAULTS = {
    "db": 0,
    "cluster": False,
    "startup_nodes": None,
    "ssl": False,
    "ssl_cert_reqs": "required",
    "ssl_ca_certs": None,
    "ssl_keyfile": None,
    "ssl_certfile": None,
    "ssl_check_hostname": False,
}


def test_a_connection_saved_by_the_redis_form_works() -> None:
    config = OnlineStoreConfig.from_connection(host="redis-0", port=6379, extra=REDIS_FORM_DEFAULTS)
    assert (config.nodes, config.cluster, config.ssl, config.db) == (("redis-0:6379",), False, False, 0)
    assert OnlineStore(config)._tls_options() == {"ssl": False}


def test_the_forms_startup_nodes_list_a_rings_or_a_clusters_other_nodes() -> None:
    ring = OnlineStoreConfig.from_connection(
        host="r0", port=6379, extra={**REDIS_FORM_DEFAULTS, "startup_nodes": "r1:6380, r2"}
    )
    assert ring.nodes == ("r0:6379", "r1:6380", "r2:6379") and not ring.cluster
    cluster = OnlineStoreConfig.from_connection(
        host="c0", port=7000, extra={**REDIS_FORM_DEFAULTS, "cluster": True, "startup_nodes": "c1:7000"}
    )
    assert cluster.cluster and cluster.nodes == ("c0:7000", "c1:7000")


def test_startup_nodes_take_ipv6_addresses_in_brackets_and_refuse_them_bare() -> None:
    """`fd00::2` had a ':' and so was taken as host:port: host `fd00:`, port 2, with no check; the
    ring hashed that name and the client failed to connect naming neither the entry nor the fix."""
    ring = OnlineStoreConfig.from_connection(
        host="fd00::1", port=6379, extra={**REDIS_FORM_DEFAULTS, "startup_nodes": "[fd00::2], [fd00::3]:6380"}
    )
    assert ring.nodes == ("fd00::1:6379", "[fd00::2]:6379", "[fd00::3]:6380")
    for entry in ("fd00::2", "fd00::2:6379", "[fd00::2", "r1:port"):
        with pytest.raises(
            ValueError, match=rf"`startup_nodes` holds {re.escape(repr(entry))}; .* in brackets"
        ):
            OnlineStoreConfig.from_connection(
                host="r0", port=6379, extra={**REDIS_FORM_DEFAULTS, "startup_nodes": f"r1, {entry}"}
            )


def test_the_forms_tls_fields_reach_the_clients() -> None:
    extra = {**REDIS_FORM_DEFAULTS, "ssl": True, "ssl_ca_certs": "/etc/ca.pem", "ssl_check_hostname": True}
    config = OnlineStoreConfig.from_connection(host="r0", port=6380, extra=extra)
    assert OnlineStore(config)._tls_options() == {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_check_hostname": True,
    }


def test_timeouts_and_retries_default_to_the_stores_and_redis_pys_and_reach_every_ring_client() -> None:
    default = OnlineStore(OnlineStoreConfig.from_connection(host="r0", port=6379)).client("r0:6379")
    options = default.connection_pool.connection_kwargs
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (10.0, 5.0)
    assert default.get_retry().get_retries() == 10  # redis-py's own default
    extra = {
        "socket_timeout": "0.05",
        "socket_connect_timeout": 0.2,
        "retries": "1",
        "retry_backoff_cap": 0.01,
    }
    config = OnlineStoreConfig.from_connection(
        host="r0", port=6379, extra={"nodes": ["r0:1", "r1:2"], **extra}
    )
    assert (config.socket_timeout, config.socket_connect_timeout) == (0.05, 0.2)
    assert (config.retries, config.retry_backoff_cap) == (1, 0.01)
    store = OnlineStore(config)
    for node in ("r0:1", "r1:2"):
        client = store.client(node)
        options = client.connection_pool.connection_kwargs
        assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.05, 0.2)
        assert client.get_retry().get_retries() == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"host": None, "port": None}, "names no Redis node", id="no-node"),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"shards": []}}, "unknown extra \\['shards'\\]", id="typo"
        ),
        pytest.param(
            {"host": None, "port": None, "extra": {"nodes": ["r0"]}}, "must be host:port", id="no-port"
        ),
        pytest.param(
            {"host": None, "port": None, "extra": {"nodes": "r0:1"}}, "must be a list", id="not-a-list"
        ),
        # read as host `:` port 1, and host `fd00:` port 5, then failed to resolve naming neither
        pytest.param(
            {"host": None, "port": None, "extra": {"nodes": ["::1"]}},
            r"`nodes` holds '::1'; .*\(an IPv6 address in brackets, \"\[fd00::5\]:6379\"\)",
            id="ipv6-without-port",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"previous_nodes": ["fd00::5"]}},
            r"`previous_nodes` holds 'fd00::5'; each entry must be host:port",
            id="ipv6-without-port-previous",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"cluster": True, "db": 3}},
            "Redis Cluster uses database 0",
            id="cluster-db",
        ),
        pytest.param({"host": "r", "port": 1, "extra": {"key_ttl_seconds": -1}}, "key_ttl_seconds", id="ttl"),
        pytest.param({"host": "r", "port": 1, "extra": {"key_prefix": "a:b"}}, "key prefix", id="prefix"),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"ssl": "no"}},
            "'featurelake_online': extra `ssl` must be true or false, got 'no'",
            id="flag",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"db": "two"}},
            "'featurelake_online': extra `db` must be a whole number, got 'two'",
            id="db-text",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"nodes": ["r:1"], "startup_nodes": "r2:1"}},
            "sets both `nodes` and `startup_nodes`",
            id="nodes-twice",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"key_ttl_seconds": "2d"}},
            "extra `key_ttl_seconds` must be a whole number",
            id="ttl-text",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"socket_timeout": "5s"}},
            "'featurelake_online': extra `socket_timeout` must be a number of seconds, got '5s'",
            id="timeout-text",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"socket_connect_timeout": True}},
            "extra `socket_connect_timeout` must be a number of seconds, got True",
            id="timeout-flag",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"socket_timeout": "nan"}},
            "extra `socket_timeout` must be a number of seconds",
            id="timeout-nan",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"socket_timeout": 0}},
            "'featurelake_online': socket_timeout must be a number of seconds > 0, got 0.0",
            id="timeout-zero",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"retries": -1}}, "retries must be >= 0", id="retries-negative"
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"retries": 1.5}},
            "extra `retries` must be a whole number",
            id="retries-fraction",
        ),
        pytest.param(
            {"host": "r", "port": 1, "extra": {"retry_backoff_cap": -0.5}},
            "retry_backoff_cap must be >= 0 seconds",
            id="backoff-negative",
        ),
    ],
)
def test_bad_connections_say_what_to_fix(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OnlineStoreConfig.from_connection(**fields, conn_id="featurelake_online")


@pytest.mark.parametrize(
    ("pttl", "ttl"),
    [
        pytest.param(-1, "0", id="no-expiry"),
        pytest.param(1500, "1500", id="remaining"),
        pytest.param(0, None, id="expiring-now"),
        pytest.param(-2, None, id="gone"),
    ],
)
def test_a_rebalance_copies_the_remaining_ttl_and_never_revives_an_expired_key(
    pttl: int, ttl: str | None
) -> None:
    assert copy_ttl(pttl) == ttl


@pytest.mark.parametrize(
    ("feature_date", "shown"),
    [
        pytest.param("28/10/2026", "'28/10/2026'", id="not-iso"),
        # its isoformat() has a time, which sorts after the records' plain date
        pytest.param(datetime(2026, 10, 28), "datetime.datetime(2026, 10, 28, 0, 0)", id="datetime"),
    ],
)
def test_a_replaced_date_must_be_a_day(feature_date: object, shown: str) -> None:
    store = OnlineStore(OnlineStoreConfig(nodes=("127.0.0.1:1",)))
    with pytest.raises(
        ValueError, match=re.escape(f"feature_date must be a date or YYYY-MM-DD, got {shown};")
    ):
        store.replace_date("user_features", feature_date, [], [])


@pytest.mark.parametrize(
    ("name", "value"), [("key_ttl_seconds", 1.5 * 3600), ("batch_size", 500.0), ("batch_size", True)]
)
def test_a_ttl_or_batch_size_that_is_no_whole_number_is_refused_by_name(name: str, value: object) -> None:
    """A float TTL reached Redis as `PX 5400000.0`, which failed every write with "value is not an
    integer or out of range" in the write script, naming neither the setting nor the fix."""
    with pytest.raises(TypeError, match=f"{name} must be a whole number, got {value!r}"):
        OnlineStoreConfig(nodes=("127.0.0.1:6379",), **{name: value})


@pytest.mark.parametrize("method", ["read", "delete", "removals", "remove_stale"])
def test_one_id_given_as_a_string_is_refused_before_any_server_is_asked(method: str) -> None:
    """A string is an iterable of its characters: delete("v", "u1") deleted the records of "u" and
    "1", and kept the one of "u1". Refused before a connection is made (the port answers nothing)."""
    store = OnlineStore(OnlineStoreConfig(nodes=("127.0.0.1:1",)))
    arguments = ("2026-10-28", "u1") if method == "remove_stale" else ("u1",)
    with pytest.raises(
        TypeError, match=r"takes an iterable of entity ids, got the string 'u1'; pass a list such as \['u1'\]"
    ):
        getattr(store, method)("user_features", *arguments)


@pytest.mark.parametrize("name", ["nodes", "previous_nodes"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            "redis-0:6379",
            r"a list of host:port names, got the string 'redis-0:6379'; pass \['redis-0:6379'\]",
            id="one-node-as-a-string",
        ),
        pytest.param(
            {"redis-0:6379": 2, "redis-1:6379": 1},
            r"a list of host:port names, got a dict; the ring takes no weights",
            id="a-map-of-weights",
        ),
    ],
)
def test_nodes_given_as_a_string_or_a_map_of_weights_are_refused(
    name: str, value: object, message: str
) -> None:
    """A string was split into its characters, and the error named node 'r'; a map of node to
    weight was read as its names, its weights silently dropped, though the ring takes none."""
    settings = {"nodes": ["redis-9:6379"], name: value}
    with pytest.raises(TypeError, match=f"{name} must be {message}"):
        OnlineStoreConfig(**settings)  # type: ignore[arg-type]
