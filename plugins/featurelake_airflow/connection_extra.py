"""The extra of an Airflow connection, read strictly: every featurelake hook reads its options so."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Connection


def extra_options(connection: Connection, *, example: str) -> dict[str, Any]:
    """The connection's extra as a dict, {} when it has none. Text that is not a JSON object is
    refused, naming the connection (never echoing the extra, which may hold secrets): Airflow's
    `extra_dejson` logs it and reads it as no extra, so every option would silently take its
    default (one Redis node instead of the ring, a rate of 20/s where the extra said 2).
    `example` is a valid extra for the message."""
    conn_id = connection.conn_id
    if not connection.extra:
        return {}
    try:
        parsed = json.loads(connection.extra)
    except ValueError as error:
        raise ValueError(
            f"connection {conn_id!r}: its extra is not valid JSON ({error}); write it as a JSON object "
            f"such as {example}"
        ) from None
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise ValueError(
            f"connection {conn_id!r}: its extra must be a JSON object of options such as {example}, "
            f"got a JSON {type(parsed).__name__}"
        )
    return dict(connection.extra_dejson)  # the same dict, with its secrets masked in logs
