"""An HTTP API's Airflow connection as featurelake's fetch settings.

    {"conn_type": "http", "host": "merchants.example.com", "schema": "https",
     "extra": {"path_template": "/v1/merchants/{id}", "rate_per_second": 20, "max_concurrency": 8,
               "headers": {"Authorization": "Bearer ..."}}}

The password, when set, is sent as a bearer token (an `Authorization` header in the extras wins);
a login is refused, as it would not be sent.
The scheme is `schema`, else `https` for an `https://` URI connection, else `http`. A URI connection
(`AIRFLOW_CONN_MERCHANT_API='https://api.example.com/v1?rate_per_second=2'`) carries its path where
the scheme would be (Airflow stores it as `schema`): a `schema` other than `http` or `https` is the
path that the base URL ends with. Its extras arrive as text, and the numeric ones are read as
numbers; `headers`, an object, must come as JSON in `__extra__`. Extras:
`path_template`, `rate_per_second`, `max_concurrency`, `max_attempts`, `timeout_seconds`,
`backoff_seconds`, `max_backoff_seconds`, `max_retry_after_seconds`, `max_body_bytes`, `headers` (the `FetchConfig`
settings of the same names), and `max_failed_fraction`: the largest share of ids that
may fail because of the API (unavailable, or refusing our credentials) before a task refuses the
result (default 0.5). A bad value fails naming the connection and the extra.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from featurelake.network_address import url_host
from featurelake_airflow.connection_extra import extra_options

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from featurelake.fetch import FetchConfig

FETCH_EXTRAS = frozenset(
    {
        "path_template",
        "rate_per_second",
        "max_concurrency",
        "max_attempts",
        "timeout_seconds",
        "backoff_seconds",
        "max_backoff_seconds",
        "max_retry_after_seconds",
        "max_body_bytes",
        "headers",
    }
)
# The numeric extras: a URI connection carries them as text ("2"), which is read as a number.
COUNT_EXTRAS = frozenset({"max_concurrency", "max_attempts", "max_body_bytes"})
NUMBER_EXTRAS = frozenset(
    {
        "rate_per_second",
        "timeout_seconds",
        "backoff_seconds",
        "max_backoff_seconds",
        "max_retry_after_seconds",
        "max_failed_fraction",
    }
)
DEFAULT_MAX_FAILED_FRACTION = 0.5


class HttpApiHook(BaseHook):
    """Builds a `FetchConfig` from an HTTP connection."""

    conn_name_attr = "http_conn_id"
    default_conn_name = "merchant_api"
    conn_type = "http"
    hook_name = "featurelake rate-limited HTTP API"

    def __init__(self, *, http_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.http_conn_id = http_conn_id

    @cached_property
    def _http_connection(self) -> Connection:
        # Looked up once: the operator asks for the fetch settings and max_failed_fraction, and a
        # secrets backend may answer each lookup over the network.
        return self.get_connection(self.http_conn_id)

    def _extras(self) -> tuple[Connection, dict[str, Any]]:
        """The connection and its extras, refusing unknown ones."""
        connection = self._http_connection
        extra = extra_options(connection, example='{"rate_per_second": 20}')
        known = FETCH_EXTRAS | {"max_failed_fraction"}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ValueError(
                f"connection {self.http_conn_id!r}: unknown extra {unknown}; known: {sorted(known)}"
            )
        return connection, {name: _number_from_text(name, value) for name, value in extra.items()}

    def get_conn(self) -> FetchConfig:
        from yarl import URL

        from featurelake.fetch import HEADER_CONTROL_CHARACTERS, FetchConfig, FetchSettingError

        connection, extra = self._extras()
        if not connection.host:
            raise ValueError(f"connection {self.http_conn_id!r} has no host; set it to the API's host name")
        # A URI connection (AIRFLOW_CONN_X='https://host/v1') has its scheme as the conn_type and its
        # path as the schema.
        schema = (connection.schema or "").strip("/")
        if schema.lower() in ("http", "https"):
            scheme, path = schema.lower(), ""
        else:
            scheme = "https" if connection.conn_type == "https" else "http"
            path = f"/{schema}" if schema else ""
        host = connection.host if "://" in connection.host else f"{scheme}://{url_host(connection.host)}"
        base_url = host
        if connection.port:
            # After the host, not after a path the host may carry ("https://api/v1" gave /v1:8443).
            try:
                base_url = str(URL(host).with_port(connection.port))
            except ValueError as error:
                raise ValueError(
                    f"connection {self.http_conn_id!r}: its host {connection.host!r} and port "
                    f"{connection.port!r} make no URL ({error}); correct them"
                ) from error
        if path:  # after the port, as a path the host carries
            base_url = f"{base_url.rstrip('/')}{path}"
        headers = extra.pop("headers", {})
        if isinstance(headers, list) and all(isinstance(pair, list) and len(pair) == 2 for pair in headers):
            headers = dict(headers)  # [[name, value], ...], which earlier versions took too
        if not isinstance(headers, dict) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in headers.items()
        ):
            raise ValueError(
                f"connection {self.http_conn_id!r}: extra 'headers' must be an object of header names "
                f"to string values (in a URI connection, as JSON in `__extra__`); {_headers_shape(headers)}"
            )
        headers = dict(headers)  # a control character in one is refused by FetchConfig, named below
        if connection.login:
            # HttpHook's habit is basic auth with login and password; this hook sends the password
            # alone, as a bearer token, so a login was dropped and every merchant got a 401.
            raise ValueError(
                f"connection {self.http_conn_id!r} has a login ({connection.login!r}), which this hook "
                "does not send: it sends the password as a bearer token. For basic auth, put "
                '"Authorization": "Basic <base64 of login:password>" in the extra `headers`; '
                "otherwise clear the login"
            )
        if connection.password:
            if HEADER_CONTROL_CHARACTERS.search(connection.password):
                raise ValueError(
                    f"connection {self.http_conn_id!r}: its password, sent as a bearer token, holds a "
                    "control character (a trailing line break?), which no HTTP header may hold; remove it"
                )
            # Header names are case-insensitive: an "authorization" extra wins over the password.
            if not any(name.lower() == "authorization" for name in headers):
                headers["Authorization"] = f"Bearer {connection.password}"
        settings = {name: value for name, value in extra.items() if name in FETCH_EXTRAS}
        for name in ("max_concurrency", "max_attempts"):  # counts; a UI or JSON tool may write 4.0
            value = settings.get(name)
            if isinstance(value, float) and value.is_integer():
                settings[name] = int(value)
        try:
            return FetchConfig(base_url=base_url, headers=tuple(sorted(headers.items())), **settings)
        except FetchSettingError as error:
            # Every setting but base_url is the extra of the same name (headers: checked above).
            where = "its host, schema and port" if error.setting == "base_url" else f"extra {error.setting!r}"
            raise ValueError(f"connection {self.http_conn_id!r}: {where}: {error}") from error

    def max_failed_fraction(self) -> float:
        """The extra `max_failed_fraction` (default 0.5): a number in [0, 1]."""
        _, extra = self._extras()
        value = extra.get("max_failed_fraction", DEFAULT_MAX_FAILED_FRACTION)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(
                f"connection {self.http_conn_id!r}: extra 'max_failed_fraction' must be a number in [0, 1] "
                f"(the largest share of ids that may fail because of the API; 1 turns the check off), "
                f"got {value!r}"
            )
        return float(value)


def _headers_shape(headers: Any) -> str:
    """What is wrong with a `headers` extra, by header name and JSON type: never a value, which may be
    a credential that Airflow's log masking does not know (an `Ocp-Apim-Subscription-Key`, or any
    header of the [name, value] pairs form)."""
    if isinstance(headers, dict):
        problems = [f"a header name is a {_json_type(name)}" for name in headers if not isinstance(name, str)]
        problems += [
            f"{name!r} holds a {_json_type(value)}"
            for name, value in headers.items()
            if isinstance(name, str) and not isinstance(value, str)
        ]
        return f"{', '.join(problems)}: write each name and value as a JSON string"
    if isinstance(headers, list):
        return "got a list that is not of [name, value] pairs"
    return f"got a JSON {_json_type(headers)}"


def _json_type(value: Any) -> str:
    kinds = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _number_from_text(name: str, value: Any) -> Any:
    """A numeric extra given as text, as a URI connection gives every extra ("2", "0.2"), as a
    number; anything else as it is, for the setting's own check to name."""
    if name not in COUNT_EXTRAS | NUMBER_EXTRAS or not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if name in COUNT_EXTRAS and number.is_integer() else number
