"""Spark properties carried by an Airflow Spark connection.

The stock Spark connection knows the master, deploy mode, queue and namespace, but has no place for
Spark properties. featurelake reads them from the connection's `conf` extra, a JSON object, so moving
a job to a cluster (executor memory, event log, S3 credentials provider...) is a connection change:

    {"conn_type": "spark", "host": "spark://spark-master:7077",
     "extra": {"conf": {"spark.executor.memory": "8g"}}}
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from featurelake_airflow.connection_extra import extra_options

if TYPE_CHECKING:
    from airflow.sdk import Connection


def spark_conf_from_extra(extra: Mapping[str, Any], *, conn_id: str) -> dict[str, str]:
    """The `conf` extra as a flat {property: string} dict; anything else is a clear error."""
    conf = extra.get("conf") or {}
    if not isinstance(conf, Mapping):
        raise ValueError(
            f"connection {conn_id!r}: the `conf` extra must be a JSON object of Spark properties, "
            f"got {type(conf).__name__}"
        )
    # null would reach spark-submit as the string "None"
    bad = [key for key, value in conf.items() if value is None or isinstance(value, (Mapping, list))]
    if bad:
        raise ValueError(
            f"connection {conn_id!r}: Spark properties must be strings, numbers or booleans (remove a "
            f"property to leave it unset); fix {sorted(bad)}"
        )
    return {
        str(key): str(value).lower() if isinstance(value, bool) else str(value) for key, value in conf.items()
    }


# Last segments of a property that holds a secret (lower case): S3A's `access.key`, `secret.key` and
# `session.token`, GCS's `private.key`, an OAuth client `secret`, `keyStorePassword`, `spark.redis.auth`
_CREDENTIAL_ENDINGS = ("key", "secret", "password", "passwd", "token")


def credential_properties(conf: Mapping[str, str]) -> list[str]:
    """The properties of `conf` whose value is a credential: a last segment that is or ends with
    `key`, `secret`, `password`, `passwd` or `token` (S3A's `access.key`, `secret.key` and
    `session.token`, `spark.ssl.keyStorePassword`), or is `auth` (`spark.redis.auth`); or a `key` or
    `sas` segment inside the name, as in Azure's
    `spark.hadoop.fs.azure.account.key.<account>.dfs.core.windows.net`. `spark.io.encryption.keySizeBits`
    is not one.

    They are masked in the task's log, and SparkFeatureJobOperator hands them to spark-submit in a
    properties file only its user can read, not as --conf: a command line is open to every user of
    the machine (`ps`, /proc). The provider logs its command line masking only properties named
    `secret` or `password`, and Airflow masks the extra's values by name too (`secret`, `token`,
    `access_key`...), which misses the Azure account key."""
    found = []
    for name in conf:
        segments = name.lower().split(".")
        if (
            segments[-1].endswith(_CREDENTIAL_ENDINGS)
            or segments[-1] == "auth"
            or {"key", "sas"} & set(segments)
        ):
            found.append(name)
    return found


def mask_credentials(conf: Mapping[str, str]) -> None:
    """Mask the values of `conf`'s credential properties (`credential_properties`) in the task's log
    from here on. A boolean or a number is left shown: masking `false` would mask it in every line."""
    from airflow.sdk.log import mask_secret

    for key in credential_properties(conf):
        value = conf[key].strip()
        if value.lower() not in ("true", "false") and not value.isdigit():
            mask_secret(conf[key])


_EXAMPLE_EXTRA = '{"conf": {"spark.executor.memory": "4g"}}'


class SparkConnectionConfHook(BaseHook):
    """Reads the Spark properties (`conf` extra) of a Spark connection."""

    conn_name_attr = "conn_id"
    default_conn_name = "spark_default"
    conn_type = "spark"
    hook_name = "Spark properties (featurelake)"

    def __init__(self, *, conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.conn_id = conn_id

    @cached_property
    def _spark_connection(self) -> Connection:
        """The connection, looked up once for the conf, the master and the extra."""
        return self.get_connection(self.conn_id)

    def get_conn(self) -> dict[str, str]:
        """The connection's Spark properties, {} when it has none. The values of those that hold a
        credential (`credential_properties`) are masked in the task's logs from here on."""
        conf = spark_conf_from_extra(self.extra(), conn_id=self.conn_id)
        mask_credentials(conf)
        return conf

    def master(self) -> str:
        """The master URL spark-submit gets from this connection, as SparkSubmitHook builds it: the
        host when it is a whole URL (`local[*]`, `yarn`, `spark://h`), else type://host; then
        `:port` when the connection has a port."""
        connection = self._spark_connection
        host = connection.host or ""
        if connection.conn_type == "spark" and host and ("://" in host or not connection.port):
            master = host
        else:
            master = f"{connection.conn_type}://{host}"
        return f"{master}:{connection.port}" if connection.port else master

    def extra(self) -> dict[str, Any]:
        """The connection's extra, parsed (deploy mode, queue, ResourceManager address...)."""
        return extra_options(self._spark_connection, example=_EXAMPLE_EXTRA)
