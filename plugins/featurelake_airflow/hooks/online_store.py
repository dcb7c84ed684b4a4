"""The online store's Airflow connection: a Redis connection whose extra can list ring nodes.

    {"conn_type": "redis", "host": "redis-0", "port": 6379,
     "extra": {"nodes": ["redis-0:6379", "redis-1:6379", "redis-2:6379"], "key_ttl_seconds": 172800}}

One node: host and port. A ketama ring: the `nodes` extra (and `previous_nodes` while it is
rebalanced). A Redis Cluster: `{"cluster": true}` with the startup nodes as host/port or `nodes`.
Login and password apply to every node; see `OnlineStoreConfig.from_connection` for every extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

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

    def config(self) -> OnlineStoreConfig:
        """The store config of this hook's connection."""
        return self.config_of(self.get_connection(self.online_conn_id))

    @staticmethod
    def config_of(connection: Connection) -> OnlineStoreConfig:
        """The store config of an Airflow connection (the demo builds one from its JSON with
        `Connection.from_json`): host, port, login, password and extras."""
        # Imported here: DAG files import this hook through operators, and parse without redis.
        from featurelake.online_store import OnlineStoreConfig

        return OnlineStoreConfig.from_connection(
            host=connection.host,
            port=connection.port,
            login=connection.login,
            password=connection.password,
            extra=connection.extra_dejson,
            conn_id=connection.conn_id,
        )

    def get_conn(self) -> OnlineStore:
        """A new store on the connection's nodes; close it (or use it as a context manager)."""
        from featurelake.online_store import OnlineStore

        return OnlineStore(self.config())
