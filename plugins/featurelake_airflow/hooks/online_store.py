"""The online store's Airflow connection: a Redis connection whose extra can list ring nodes.

    {"conn_type": "redis", "host": "redis-0", "port": 6379,
     "extra": {"nodes": ["redis-0:6379", "redis-1:6379", "redis-2:6379"], "key_ttl_seconds": 172800}}

One node: host and port. A ketama ring: the `nodes` extra (and `previous_nodes` while it is
rebalanced). A Redis Cluster: `{"cluster": true}` with the startup nodes as host/port or `nodes`.
Login and password apply to every node; see `OnlineStoreConfig.from_connection` for every extra.
A redis:// URI's path (`/2`, the connection's schema) is the database number, as the `db` extra.
A rediss:// URI (conn_type "rediss") turns TLS on, as the `ssl` extra does.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from featurelake_airflow.connection_extra import extra_options

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from featurelake.online_store import OnlineStore, OnlineStoreConfig

log = logging.getLogger(__name__)


class OnlineStoreHook(BaseHook):
    """Builds the featurelake `OnlineStore` of a Redis connection."""

    conn_name_attr = "online_conn_id"
    default_conn_name = "featurelake_online"
    conn_type = "redis"
    hook_name = "featurelake online store (Redis)"

    def __init__(self, *, online_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.online_conn_id = online_conn_id

    @cached_property
    def _online_connection(self) -> Connection:
        # Looked up once: a task may read the config, then build the store from it.
        return self.get_connection(self.online_conn_id)

    def config(self) -> OnlineStoreConfig:
        """The store config of this hook's connection."""
        return self.config_of(self._online_connection)

    @staticmethod
    def config_of(connection: Connection) -> OnlineStoreConfig:
        """The store config of an Airflow connection (the demo builds one from its JSON or URI with
        `demo.read_online_connection`): host, port, login, password, schema (a URI's `/db`) and extras.
        An error names the connection and the field to fix."""
        # Imported here: DAG files import this hook through operators, and parse without redis.
        from featurelake.online_store import OnlineStoreConfig

        config = OnlineStoreConfig.from_connection(
            host=connection.host,
            port=connection.port,
            login=connection.login,
            password=connection.password,
            extra=_extra_of(connection),
            conn_id=connection.conn_id,
        )
        _warn_of_unverified_tls(config, conn_id=connection.conn_id)
        if not config.cluster:
            # A ring refuses a name given twice, but only when the store is built, naming neither
            # the connection nor the extra. (A cluster's startup nodes may repeat: no ring.)
            for name in ("nodes", "previous_nodes"):
                nodes = getattr(config, name)
                twice = sorted({node for node in nodes if nodes.count(node) > 1})
                if twice:
                    raise ValueError(
                        f"connection {connection.conn_id!r}: extra `{name}` lists "
                        f"{', '.join(map(repr, twice))} twice; list each node once"
                    )
        return config

    def get_conn(self) -> OnlineStore:
        """A new store on the connection's nodes; close it (or use it as a context manager)."""
        from featurelake.online_store import OnlineStore

        return OnlineStore(self.config())

    def check_servers(self, store: OnlineStore) -> None:
        """Before a rebalance: every node of `nodes` and `previous_nodes` answers, and no Redis
        server is listed under two names (a host name and an address, say). The ring takes two
        names for two nodes, so a rebalance would "move" keys onto the server they are on, then
        delete them there. Raises RuntimeError for a node that does not answer (a retry may find
        it up), ValueError for one server under two names or a node that refuses the password."""
        import redis

        from featurelake.online_store import same_server_message

        config = store.config
        lists: dict[str, list[str]] = {node: [] for node in store.every_node}
        for name, nodes in (("nodes", config.nodes), ("previous_nodes", config.previous_nodes)):
            for node in nodes:
                lists[node].append(f"`{name}`")
        unreachable = []
        for node in store.every_node:
            try:
                store.client(node).ping()
            except redis.AuthenticationError as error:  # a ConnectionError to redis-py, but no outage
                raise ValueError(
                    f"connection {self.online_conn_id!r}: {node} (in {' and '.join(lists[node])}) refuses "
                    f"its login and password ({error}). Nothing was moved. Every node takes the "
                    "connection's login and password: set them to the ones the node expects."
                ) from None
            except (redis.ConnectionError, redis.TimeoutError) as error:
                unreachable.append(f"{node} (in {' and '.join(lists[node])}) does not answer ({error})")
        if unreachable:
            raise RuntimeError(
                f"connection {self.online_conn_id!r}: {'; '.join(unreachable)}. Nothing was moved. "
                "Start it again and retry; a node of `nodes` that is gone for good must leave `nodes`. "
                "A node of `previous_nodes` alone that is gone for good has lost its keys: remove it "
                "from `previous_nodes` and publish again the dates it held."
            )
        if aliases := store.servers_listed_twice():
            raise ValueError(f"connection {self.online_conn_id!r}: {same_server_message(aliases)}")


def _warn_of_unverified_tls(config: OnlineStoreConfig, *, conn_id: str) -> None:
    """Say in the log when TLS runs without checking whom it talks to. The Airflow UI's Redis form
    saves `ssl_check_hostname` false unless its "Enable hostname check" is ticked, so a connection
    made there with "Enable SSL" took any certificate the CA signed, for any host (redis-py's own
    default checks the name)."""
    if not config.ssl:
        return
    if config.ssl_cert_reqs in ("none", "optional"):
        log.warning(
            "connection %r: TLS with ssl_cert_reqs %r does not verify the Redis servers' certificates, "
            "so anyone on the path can stand in for them and read the password; set it to required",
            conn_id,
            config.ssl_cert_reqs,
        )
    elif config.ssl_check_hostname is False:
        log.warning(
            "connection %r: TLS without a hostname check (its extra ssl_check_hostname is false, as the "
            'Airflow UI\'s Redis form saves it unless "Enable hostname check" is ticked) takes a '
            "certificate the CA signed for any other host; tick it, or set the extra to true",
            conn_id,
        )


def _extra_of(connection: Connection) -> dict[str, Any]:
    """The connection's extra (`extra_options`) with the database of a URI's path (its schema) as
    `db`."""
    conn_id = connection.conn_id
    extra = extra_options(connection, example='{"nodes": ["redis-0:6379", "redis-1:6379"]}')
    if (connection.conn_type or "").lower() == "rediss":
        # A rediss:// URI (conn_type "rediss") means TLS, as it does to redis-py and redis-cli.
        given = extra.get("ssl")
        if given not in (None, "") and str(given).strip().lower() != "true":
            raise ValueError(
                f"connection {conn_id!r} is a rediss:// (TLS) connection, but its `ssl` extra is "
                f"{given!r}: drop the extra, or use redis:// for a server without TLS"
            )
        extra = {**extra, "ssl": True}
    database = (connection.schema or "").strip("/")
    if database:
        if not database.isdigit():
            raise ValueError(
                f"connection {conn_id!r}: its schema (a redis:// URI's path) {connection.schema!r} must "
                "be a database number, such as 2 in redis://redis-0:6379/2"
            )
        if int(database) and str(extra.get("cluster")).strip().lower() == "true":
            raise ValueError(
                f"connection {conn_id!r}: its URI's path /{database} names database {database}, but a "
                f"Redis Cluster has only database 0: drop the /{database} from the URI (or the schema)"
            )
        given = extra.get("db")
        if given not in (None, "") and str(given).strip() != str(int(database)):
            raise ValueError(
                f"connection {conn_id!r} names two databases: {database} in its schema (a URI's path) "
                f"and {given!r} in its `db` extra; keep one"
            )
        extra = {**extra, "db": int(database)}
    return extra
