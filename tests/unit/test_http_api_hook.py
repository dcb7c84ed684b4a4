"""HttpApiHook: every FetchConfig setting can be set from the connection, and the base URL keeps a
host's path when the connection also has a port. A bad setting's error:
tests/unit/test_merchant_profiles.py::test_the_hook_names_the_connection_and_the_extra_of_a_bad_setting."""

from __future__ import annotations

import json

import pytest


def config_of(monkeypatch, connection: dict):
    from featurelake_airflow.hooks.http_api import HttpApiHook

    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", json.dumps(connection))
    return HttpApiHook(http_conn_id="merchants").get_conn()


def test_the_backoff_settings_are_extras(monkeypatch) -> None:
    """backoff_seconds was a FetchConfig setting no connection could set ("unknown extra"), and
    max_backoff_seconds, the cap of each backoff, is one too."""
    extra = {"backoff_seconds": 1.5, "max_backoff_seconds": 20, "max_attempts": 8}
    config = config_of(monkeypatch, {"conn_type": "http", "host": "api.example.com", "extra": extra})
    assert (config.backoff_seconds, config.max_backoff_seconds, config.max_attempts) == (1.5, 20, 8)


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        pytest.param("api.example.com", 8443, "https://api.example.com:8443/v2/m/a%2Fb", id="host"),
        pytest.param(
            "https://api.example.com/v1",
            8443,
            "https://api.example.com:8443/v1/v2/m/a%2Fb",
            id="url-with-path",
        ),
        pytest.param(
            "https://api.example.com/v1", None, "https://api.example.com/v1/v2/m/a%2Fb", id="no-port"
        ),
    ],
)
def test_a_port_goes_after_the_host_not_after_its_path(
    monkeypatch, host: str, port: int | None, url: str
) -> None:
    """A host written as a URL with a path ("https://api.example.com/v1") and a port gave
    "https://api.example.com/v1:8443": every request went to port 443, path /v1:8443/..., and
    every merchant failed with a 404, which counts as the merchant's own failure."""
    connection = {
        "conn_type": "http",
        "host": host,
        "schema": "https",
        "port": port,
        "extra": {"path_template": "/v2/m/{id}"},
    }
    assert config_of(monkeypatch, connection).url("a/b") == url


@pytest.mark.parametrize(
    ("uri", "url"),
    [
        pytest.param("https://api.example.com/v1", "https://api.example.com/v1/m/7", id="path"),
        pytest.param(
            "https://api.example.com:8443/v1/", "https://api.example.com:8443/v1/m/7", id="port-path"
        ),
        pytest.param("http://127.0.0.1:8089", "http://127.0.0.1:8089/m/7", id="no-path"),
    ],
)
def test_a_uri_connection_keeps_its_scheme_and_its_path(monkeypatch, uri: str, url: str) -> None:
    """Airflow stores a URI's path as the schema: https://api.example.com/v1 made the base URL
    v1://api.example.com, which the fetch settings refused."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", f"{uri}?path_template=%2Fm%2F%7Bid%7D")
    assert HttpApiHook(http_conn_id="merchants").get_conn().url("7") == url


def test_a_uri_connections_extras_are_read_as_numbers(monkeypatch) -> None:
    """A URI carries every extra as text: "2" was refused as no number ("must be > 0, got '2'")."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_MERCHANTS",
        "https://api.example.com?rate_per_second=2&max_concurrency=4&max_attempts=3"
        "&timeout_seconds=2.5&max_failed_fraction=0.2",
    )
    hook = HttpApiHook(http_conn_id="merchants")
    config = hook.get_conn()
    assert (config.rate_per_second, config.max_concurrency, config.max_attempts, config.timeout_seconds) == (
        2.0,
        4,
        3,
        2.5,
    )
    assert isinstance(config.max_concurrency, int)
    assert hook.max_failed_fraction() == 0.2


def test_a_uri_connections_text_that_is_no_number_is_named(monkeypatch) -> None:
    from featurelake_airflow.hooks.http_api import HttpApiHook

    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", "https://api.example.com?rate_per_second=fast")
    with pytest.raises(ValueError, match=r"connection 'merchants': extra 'rate_per_second'.*'fast'"):
        HttpApiHook(http_conn_id="merchants").get_conn()


@pytest.mark.parametrize(
    ("uri", "base_url"),
    [
        ("http://[::1]:8089", "http://[::1]:8089"),
        ("https://[fd00::5]/v1", "https://[fd00::5]/v1"),
        ("http://[::1]", "http://[::1]"),
    ],
)
def test_an_ipv6_api_keeps_its_brackets(monkeypatch, uri: str, base_url: str) -> None:
    """Airflow keeps `[::1]` of a URI as the host `::1`: `http://::1:8089` made no URL, and the task
    failed saying to correct the host and port."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS_URI", uri)
    assert HttpApiHook(http_conn_id="merchants_uri").get_conn().base_url == base_url
    json_form = {"conn_type": "http", "host": "::1", "port": 8089}
    assert config_of(monkeypatch, json_form).base_url == "http://[::1]:8089"


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param(
            {"conn_type": "http", "host": "api.example.com", "login": "me", "password": "pw"}, id="json"
        ),
        pytest.param("http://me:pw@api.example.com", id="uri"),
    ],
)
def test_a_login_is_refused_as_it_would_not_be_sent(monkeypatch, connection) -> None:
    """The hook sends the password alone, as a bearer token: a login (HttpHook's basic auth habit)
    was dropped without a word, and every merchant got a 401."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    value = connection if isinstance(connection, str) else json.dumps(connection)
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", value)
    with pytest.raises(
        ValueError, match=r"connection 'merchants' has a login \('me'\), which this hook does not send.*Basic"
    ):
        HttpApiHook(http_conn_id="merchants").get_conn()
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", "http://:pw@api.example.com")  # the token alone
    assert dict(HttpApiHook(http_conn_id="merchants").get_conn().headers) == {"Authorization": "Bearer pw"}
