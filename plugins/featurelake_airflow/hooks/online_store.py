"""The online store's Airflow connection: a Redis connection whose extra can list ring nodes.

    {"conn_type": "redis", "host": "redis-0", "port": 6379,
     "extra": {"nodes": ["redis-0:6379", "redis-1:6379", "redis-2:6379"], "key_ttl_seconds": 172800}}

One node: host and port. A ketama ring: the `nodes` extra (and `previous_nodes` while it is
rebalanced). A Redis Cluster: `{"cluster": true}` with the startup nodes as host/port or `nodes`.
Login and password apply to every node; see `OnlineStoreConfig.from_connection` for every extra.
A redis:// URI's path (`/2`, the connection's schema) is the database number, as the `db` extra.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from featurelake_airflow.connection_extra import extra_options

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from featurelake.online_store import OnlineStore, OnlineStoreConfig


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
        """The store config of an Airflow connection (the demo builds one from its JSON with
        `Connection.from_json`): host, port, login, password, schema (a URI's `/db`) and extras.
        An error names the connection and the field to fix."""
        # Imported here: DAG files import this hook through operators, and parse without redis.
        from featurelake.online_store import OnlineStoreConfig

        return OnlineStoreConfig.from_connection(
            host=connection.host,
            port=connection.port,
            login=connection.login,
            password=connection.password,
            extra=_extra_of(connection),
            conn_id=connection.conn_id,
        )

    def get_conn(self) -> OnlineStore:
        """A new store on the connection's nodes; close it (or use it as a context manager)."""
        from featurelake.online_store import OnlineStore

        return OnlineStore(self.config())


def _extra_of(connection: Connection) -> dict[str, Any]:
    """The connection's extra (`extra_options`) with the database of a URI's path (its schema) as
    `db`."""
    conn_id = connection.conn_id
    extra = extra_options(connection, example='{"nodes": ["redis-0:6379", "redis-1:6379"]}')
    database = (connection.schema or "").strip("/")
    if database:
        if not database.isdigit():
            raise ValueError(
                f"connection {conn_id!r}: its schema (a redis:// URI's path) {connection.schema!r} must "
                "be a database number, such as 2 in redis://redis-0:6379/2"
            )
        given = extra.get("db")
        if given not in (None, "") and str(given).strip() != str(int(database)):
            raise ValueError(
                f"connection {conn_id!r} names two databases: {database} in its schema (a URI's path) "
                f"and {given!r} in its `db` extra; keep one"
            )
        extra = {**extra, "db": int(database)}
    return extra
