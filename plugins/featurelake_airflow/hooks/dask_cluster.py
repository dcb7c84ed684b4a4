"""A Dask cluster's Airflow connection.

    {"conn_type": "generic", "host": "dask-scheduler", "port": 8786}    # a distributed scheduler
    {"conn_type": "generic", "host": "local"}                           # an in-process LocalCluster

The extra `threads` sets the local cluster's threads (default 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from distributed import Client


class DaskClusterHook(BaseHook):
    """Opens a Dask client on the connection's scheduler, or on a new local cluster."""

    conn_name_attr = "dask_conn_id"
    default_conn_name = "dask_default"
    conn_type = "generic"
    hook_name = "featurelake Dask cluster"

    def __init__(self, *, dask_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dask_conn_id = dask_conn_id

    def scheduler_address(self) -> str | None:
        """tcp://host:port of the scheduler, or None for a local cluster."""
        connection = self.get_connection(self.dask_conn_id)
        host = connection.host or "local"
        if host == "local":
            return None
        if "://" not in host:
            host = f"tcp://{host}"
        return f"{host}:{connection.port}" if connection.port else host

    def get_conn(self) -> Client:
        """A client; close it when done (it also stops a local cluster it started)."""
        from featurelake.merchant_stats import dask_client

        connection = self.get_connection(self.dask_conn_id)
        threads = int(connection.extra_dejson.get("threads", 2))
        return dask_client(self.scheduler_address(), threads_per_worker=threads)
