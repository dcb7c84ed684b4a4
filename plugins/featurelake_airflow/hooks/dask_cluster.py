"""A Dask cluster's Airflow connection.

    {"conn_type": "generic", "host": "dask-scheduler", "port": 8786}    # a distributed scheduler
    {"conn_type": "generic", "host": "local"}                           # a LocalCluster in the task

Extras of a local cluster: `workers` (default 1), `threads` per worker (default 2), `processes`
(default false: the workers are threads of the task process; true: each worker is a process of its
own, with a nanny that restarts it when it passes its memory limit) and `memory_limit` per worker
(Dask's format, such as "2GiB"; default Dask's "auto", the machine's memory split among the workers).
A connection given as a URI carries them as strings, which are read the same way:
`generic://local?workers=2&processes=true`.

A scheduler given as a URI keeps its protocol: `tls://dask-scheduler:8786` (Airflow stores `tls` as
the conn_type; a `generic` connection with no scheme in its host means `tcp://`). With no port in the
host nor in the port field, the scheduler's is Dask's default, 8786. An address that is not
protocol://host:port with a protocol Dask speaks (`http://...`, `h:87x6`, `tcp://h:8786/`) is
refused before any connection is tried, naming the connection.

A scheduler's connection takes one extra, `timeout`: how long to try to reach the scheduler (Dask's
format, default "30s"). A `tls://` scheduler needs Dask's TLS settings on the Airflow worker
(`distributed.comm.tls.*`, or the `DASK_DISTRIBUTED__COMM__TLS__*` environment variables, in the
worker's environment when it starts: Dask reads them when it is imported).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from featurelake.network_address import url_host
from featurelake_airflow.connection_extra import extra_options

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from distributed import Client

LOCAL_EXTRAS = frozenset({"workers", "threads", "processes", "memory_limit"})
SCHEDULER_EXTRAS = frozenset({"timeout"})
# distributed's default scheduler port, taken when neither the host nor the port field gives one.
DEFAULT_SCHEDULER_PORT = 8786
# distributed's communication protocols, which a URI connection gives as its conn_type.
SCHEDULER_SCHEMES = frozenset({"tcp", "tls", "ucx", "ws", "wss", "inproc"})


class DaskClusterHook(BaseHook):
    """Opens a Dask client on the connection's scheduler, or on a new local cluster."""

    conn_name_attr = "dask_conn_id"
    default_conn_name = "dask_default"
    conn_type = "generic"
    hook_name = "featurelake Dask cluster"

    def __init__(self, *, dask_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dask_conn_id = dask_conn_id

    @cached_property
    def _dask_connection(self) -> Connection:
        # Looked up once: the operator asks for the address and the options before get_conn, and a
        # secrets backend may answer each lookup over the network.
        return self.get_connection(self.dask_conn_id)

    def scheduler_address(self) -> str | None:
        """tcp://host:port of the scheduler, or None for a local cluster."""
        connection = self._dask_connection
        host = (connection.host or "local").strip()
        if host.lower() == "local":
            return None
        if "://" not in host:
            # A URI connection (`tls://dask-scheduler:8786`) keeps its scheme as the conn_type.
            scheme = (connection.conn_type or "").lower()
            host = f"{scheme if scheme in SCHEDULER_SCHEMES else 'tcp'}://{url_host(host)}"
        else:  # `tcp://::1` too: its colons read as a port, and Dask refused it naming no connection
            scheme, address = host.split("://", 1)
            host = f"{scheme}://{url_host(address)}"
        has_port = ":" in host.split("://", 1)[1].rsplit("]", 1)[-1]
        if not connection.port:
            # Dask refused `tls://dask-scheduler` ("missing port number"), naming no connection
            # (an inproc:// address names a process and a counter, no port)
            if has_port or host.startswith("inproc://"):
                return self._checked_address(host)
            return self._checked_address(f"{host}:{DEFAULT_SCHEDULER_PORT}")
        if has_port:
            # tcp://h:8786:8786 is no address: the client failed without naming the connection
            raise ValueError(
                f"connection {self.dask_conn_id!r}: host {connection.host!r} has a port and the port "
                f"field is {connection.port} too; give the port in one of them"
            )
        return self._checked_address(f"{host}:{connection.port}")

    def _checked_address(self, address: str) -> str:
        """`address` if it is protocol://host:port with a protocol Dask speaks; otherwise a ValueError
        naming the connection. Dask refused `http://...` after seconds, and `h:87x6`, `tcp://h:8786/`
        with "invalid literal for int() with base 10", naming neither the connection nor the address."""
        scheme, rest = address.split("://", 1)
        if scheme not in SCHEDULER_SCHEMES:
            problem = f"{scheme}:// is no protocol of Dask's ({', '.join(sorted(SCHEDULER_SCHEMES))})"
        elif scheme == "inproc":
            return address
        else:
            host, _, port = rest.rpartition(":")
            if not host or any(c.isspace() or c in "/?#@" for c in host):
                problem = f"{host!r} is no host name or address"
            elif not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
                problem = f"{port!r} is no port number (1 to 65535)"
            else:
                return address
        raise ValueError(
            f"connection {self.dask_conn_id!r}: the scheduler address {address}, from host "
            f"{self._dask_connection.host!r} and port {self._dask_connection.port!r}, is not "
            f"protocol://host:port: {problem}. Give the host as dask-scheduler or tls://dask-scheduler "
            'and the port in the port field (default 8786), or host "local" for a cluster inside the task'
        )

    def local_cluster_options(self) -> dict[str, Any]:
        """The LocalCluster's options from the connection's extras (distributed's names)."""
        extra = extra_options(self._dask_connection, example='{"workers": 2, "threads": 2}')
        unknown = sorted(set(extra) - LOCAL_EXTRAS)
        if unknown:
            raise ValueError(
                f"connection {self.dask_conn_id!r}: unknown extra {', '.join(unknown)}; "
                f"a local Dask cluster takes {', '.join(sorted(LOCAL_EXTRAS))}"
            )
        options: dict[str, Any] = {
            "n_workers": self._count_extra(extra, "workers", default=1),
            "threads_per_worker": self._count_extra(extra, "threads", default=2),
            "processes": self._flag_extra(extra, "processes", default=False),
        }
        if "memory_limit" in extra:
            options["memory_limit"] = extra["memory_limit"]
        return options

    def _count_extra(self, extra: dict[str, Any], name: str, *, default: int) -> int:
        """A positive whole number: a local cluster of 0 workers or threads never runs a task."""
        value = extra.get(name, default)
        count = int(value) if isinstance(value, str) and value.strip().isdigit() else value
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(
                f"connection {self.dask_conn_id!r}: extra {name} must be a whole number >= 1, got {value!r}"
            )
        return count

    def _flag_extra(self, extra: dict[str, Any], name: str, *, default: bool) -> bool:
        value = extra.get(name, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ValueError(
                f"connection {self.dask_conn_id!r}: extra {name} must be true or false, got {value!r}"
            )
        return value

    def get_conn(self) -> Client:
        """A client; close it when done (it also stops a local cluster it started). A local cluster
        with worker processes spawns them: start it inside
        `featurelake_airflow.task_process.child_processes_allowed()`."""
        from featurelake.merchant_stats import DaskProtocolMissing, DaskTLSSettingsMissing, dask_client

        address = self.scheduler_address()
        if address is None:
            return dask_client(None, **self.local_cluster_options())
        timeout = self._scheduler_timeout()
        try:
            return dask_client(address, connect_timeout=timeout)
        except OSError as error:
            if address.startswith("tls://") and _is_tls_error(error):
                # a certificate or key that cannot be loaded, or a handshake either side refused: the
                # scheduler answered, or was never tried (the task said to start it)
                raise ValueError(
                    f"connection {self.dask_conn_id!r}: the TLS connection to the scheduler {address} "
                    f"failed ({error}). The scheduler must speak TLS, and on the Airflow workers "
                    "distributed.comm.tls.ca-file must be the CA that signed the scheduler's "
                    "certificate, and .client.cert and .client.key a certificate signed by the "
                    "scheduler's CA and its key, all readable files (or "
                    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, __CLIENT__CERT, __CLIENT__KEY)"
                ) from error
            raise OSError(
                f"connection {self.dask_conn_id!r}: no Dask scheduler answered at {address} within "
                f"{timeout} ({error}). Start the scheduler, or fix the connection's host and port "
                '(host "local" runs a cluster inside the task)'
            ) from error
        except DaskProtocolMissing as error:
            raise ValueError(
                f"connection {self.dask_conn_id!r}: {error}: install its package on the Airflow "
                "workers (distributed-ucxx for ucx://), or reach the scheduler over tcp:// or tls://"
            ) from error
        except DaskTLSSettingsMissing as error:
            raise ValueError(f"connection {self.dask_conn_id!r}: {error}, on the Airflow workers") from error

    def _scheduler_timeout(self) -> str:
        """The scheduler connection's `timeout` extra (default "30s"); local-cluster extras are refused."""
        from dask.utils import parse_timedelta

        from featurelake.merchant_stats import DEFAULT_SCHEDULER_TIMEOUT

        extra = extra_options(self._dask_connection, example='{"timeout": "30s"}')
        unknown = sorted(set(extra) - SCHEDULER_EXTRAS)
        if unknown:
            raise ValueError(
                f"connection {self.dask_conn_id!r}: extra {', '.join(unknown)} does not apply to a "
                f"scheduler's connection (it takes {', '.join(sorted(SCHEDULER_EXTRAS))}); the extras "
                f'{", ".join(sorted(LOCAL_EXTRAS))} shape a local cluster, with host "local"'
            )
        timeout = str(extra.get("timeout", DEFAULT_SCHEDULER_TIMEOUT))
        try:
            seconds = parse_timedelta(timeout)
        except (TypeError, ValueError, KeyError):
            seconds = None
        if seconds is None or seconds <= 0:
            raise ValueError(
                f'connection {self.dask_conn_id!r}: extra timeout must be a duration such as "30s", '
                f"got {extra['timeout']!r}"
            )
        return timeout


def _is_tls_error(error: BaseException) -> bool:
    """Whether `error`, or an error it came from, is a TLS error (ssl.SSLError) or a TLS file that
    could not be read, rather than a scheduler that was not reached."""
    import ssl

    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError | FileNotFoundError | PermissionError | IsADirectoryError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False
