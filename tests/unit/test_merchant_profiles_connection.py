"""The merchant API connection as fetch settings (an extra that is no JSON object, a URI
connection's https scheme, headers the hook would send wrong), and `years_active` across leap days."""

from __future__ import annotations

import json
from datetime import date

import pytest

from featurelake.merchant_profiles import enrich_profile, sandbox_profile, validate_profile

GOOD = {"merchant_id": "m1", "name": "Shop", "country": "DE", "risk_score": 0.1}


@pytest.mark.parametrize(
    ("established", "as_of", "years"),
    [
        pytest.param("2005-11-01", date(2026, 10, 28), 20, id="four-days-before-the-21st-year"),
        pytest.param("2000-03-01", date(2026, 2, 27), 25, id="two-days-before-the-26th-year"),
        pytest.param("2000-03-01", date(2026, 3, 1), 26, id="on-the-anniversary"),
        pytest.param("2024-02-29", date(2025, 2, 28), 0, id="leap-day-not-yet"),
        pytest.param("2024-02-29", date(2025, 3, 1), 1, id="leap-day-passed"),
        pytest.param("2030-01-01", date(2026, 10, 28), 0, id="established-later"),
    ],
)
def test_years_active_counts_whole_years(established: str, as_of: date, years: int) -> None:
    """days // 365 said 21 years for a merchant established 2005-11-01 on 2026-10-28 (about 1 in 20
    of the sandbox's merchants on that day): the leap days had added up to the missing 4 days."""
    checked = enrich_profile(validate_profile(("m1", {**GOOD, "established": established})), as_of=as_of)
    assert checked.row is not None and checked.row["years_active"] == years


def test_the_sandbox_merchant_m00004_is_20_years_active_not_21() -> None:
    assert sandbox_profile("m00004")["established"] == "2005-11-01"
    checked = enrich_profile(
        validate_profile(("m00004", sandbox_profile("m00004"))), as_of=date(2026, 10, 28)
    )
    assert checked.row["years_active"] == 20


def use(monkeypatch, **connection: object) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MERCHANTS", json.dumps({"conn_type": "http", "host": "api", **connection})
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            '{"rate_per_second": 2,}',
            r"connection 'merchants': its extra is not valid JSON \(Expecting property name",
            id="trailing-comma",
        ),
        pytest.param(
            "rate_per_second=2", r"connection 'merchants': its extra is not valid JSON", id="not-json"
        ),
        pytest.param(
            "[1, 2]",
            r"connection 'merchants': its extra must be a JSON object of options such as .*, got a JSON list",
            id="list",
        ),
    ],
)
def test_an_extra_that_is_no_json_object_is_refused_by_name(monkeypatch, extra: str, message: str) -> None:
    """Airflow's extra_dejson logs and returns {} for text that is not JSON, so the task ran at the
    default 20 requests/s where the extra asked for 2; a list failed with a bare TypeError."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    use(monkeypatch, extra=extra)
    with pytest.raises(ValueError, match=message):
        HttpApiHook(http_conn_id="merchants").get_conn()
    with pytest.raises(ValueError, match=message):
        HttpApiHook(http_conn_id="merchants").max_failed_fraction()


@pytest.mark.parametrize("extra", [None, "", "{}", "null"])
def test_an_empty_extra_gives_the_defaults(monkeypatch, extra: str | None) -> None:
    from featurelake_airflow.hooks.http_api import HttpApiHook

    use(monkeypatch, extra=extra)
    hook = HttpApiHook(http_conn_id="merchants")
    assert (hook.get_conn().rate_per_second, hook.max_failed_fraction()) == (20.0, 0.5)


def test_a_uri_connection_keeps_its_https_scheme(monkeypatch) -> None:
    """AIRFLOW_CONN_X='https://:token@host' has conn_type https and no schema: the hook used to send
    the bearer token in clear text to http://host."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", "https://:tok3n@merchants.example.com")
    config = HttpApiHook(http_conn_id="merchants").get_conn()
    assert config.base_url == "https://merchants.example.com"
    assert dict(config.headers) == {"Authorization": "Bearer tok3n"}
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", "http://127.0.0.1:8089")
    assert HttpApiHook(http_conn_id="merchants").get_conn().base_url == "http://127.0.0.1:8089"
    use(monkeypatch, conn_type="https", schema="http", port=8089)
    assert HttpApiHook(http_conn_id="merchants").get_conn().base_url == "http://api:8089", "schema wins"


@pytest.mark.parametrize("name", ["Authorization", "authorization", "AUTHORIZATION"])
def test_an_authorization_header_wins_over_the_password_in_any_case(monkeypatch, name: str) -> None:
    """Header names are case-insensitive. With "AUTHORIZATION" in the extra, the hook added the
    password's "Authorization" too, and aiohttp sent the password's bearer token, not the extra's."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    use(monkeypatch, password="tok3n", extra={"headers": {name: "Basic abc"}})
    assert dict(HttpApiHook(http_conn_id="merchants").get_conn().headers) == {name: "Basic abc"}


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        pytest.param(
            {"password": "tok3n\n"},
            r"connection 'merchants': its password, sent as a bearer token, holds a control character",
            id="password-newline",
        ),
        pytest.param(
            {"extra": {"headers": {"X-Api-Key": "k1\r\nX-Other: 1"}}},
            r"connection 'merchants': extra 'headers': header 'X-Api-Key' holds a control character",
            id="header-crlf",
        ),
    ],
)
def test_a_header_with_a_control_character_is_refused_by_name(
    monkeypatch, connection: dict, message: str
) -> None:
    """aiohttp refuses it at the first request ("Forbidden control character detected in headers.
    Potential header injection attack."), naming neither the connection nor the field."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    use(monkeypatch, **connection)
    with pytest.raises(ValueError, match=message):
        HttpApiHook(http_conn_id="merchants").get_conn()
