"""An HTTP API's Airflow connection as featurelake's fetch settings.

    {"conn_type": "http", "host": "merchants.example.com", "schema": "https",
     "extra": {"path_template": "/v1/merchants/{id}", "rate_per_second": 20, "max_concurrency": 8,
               "headers": {"Authorization": "Bearer ..."}}}

The password, when set, is sent as a bearer token. Extras: `path_template`, `rate_per_second`,
`max_concurrency`, `max_attempts`, `timeout_seconds`, `max_retry_after_seconds`, `headers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from featurelake.fetch import FetchConfig


class HttpApiHook(BaseHook):
    """Builds a `FetchConfig` from an HTTP connection."""

    conn_name_attr = "http_conn_id"
    default_conn_name = "merchant_api"
    conn_type = "http"
    hook_name = "featurelake rate-limited HTTP API"

    def __init__(self, *, http_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.http_conn_id = http_conn_id

    def get_conn(self) -> FetchConfig:
        from featurelake.fetch import FetchConfig

        connection = self.get_connection(self.http_conn_id)
        extra = dict(connection.extra_dejson)
        known = {
            "path_template",
            "rate_per_second",
            "max_concurrency",
            "max_attempts",
            "timeout_seconds",
            "max_retry_after_seconds",
            "headers",
        }
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ValueError(
                f"connection {self.http_conn_id!r}: unknown extra {unknown}; known: {sorted(known)}"
            )
        if not connection.host:
            raise ValueError(f"connection {self.http_conn_id!r} has no host; set it to the API's host name")
        host = (
            connection.host
            if "://" in connection.host
            else f"{connection.schema or 'http'}://{connection.host}"
        )
        base_url = f"{host}:{connection.port}" if connection.port else host
        headers = dict(extra.pop("headers", {}))
        if connection.password:
            headers.setdefault("Authorization", f"Bearer {connection.password}")
        return FetchConfig(base_url=base_url, headers=tuple(sorted(headers.items())), **extra)
