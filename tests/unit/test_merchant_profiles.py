"""Merchant profile validation and enrichment, the fetch settings, and the HTTP connection."""

from __future__ import annotations

import json
from datetime import date

import pytest

from featurelake.fetch import FetchConfig, FetchResult
from featurelake.merchant_profiles import build_profiles, enrich_profile, sandbox_profile, validate_profile

GOOD = {
    "merchant_id": "m1",
    "name": " Corner Shop ",
    "country": "DE",
    "risk_score": 0.5,
    "established": "2001-03-01",
}


def test_a_good_profile_is_validated_and_enriched() -> None:
    checked = enrich_profile(validate_profile(("m1", GOOD)), as_of=date(2026, 10, 28))
    assert checked.reason is None
    assert checked.row == {
        "merchant_id": "m1",
        "name": "Corner Shop",
        "country": "DE",
        "risk_score": 0.5,
        "established": date(2001, 3, 1),
        "risk_bucket": "medium",
        "years_active": 25,
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(["m1"], "not_an_object", id="list"),
        pytest.param({**GOOD, "merchant_id": "m2"}, "wrong_merchant_id", id="other-merchant"),
        pytest.param({**GOOD, "name": "  "}, "missing_name", id="blank-name"),
        pytest.param({**GOOD, "country": "Germany"}, "bad_country", id="country"),
        pytest.param({**GOOD, "risk_score": "n/a"}, "bad_risk_score", id="score-text"),
        pytest.param({**GOOD, "risk_score": 1.5}, "bad_risk_score", id="score-range"),
        pytest.param({**GOOD, "risk_score": True}, "bad_risk_score", id="score-bool"),
        pytest.param({**GOOD, "established": "03/01/2001"}, "bad_established", id="date"),
    ],
)
def test_bad_profiles_are_refused_with_the_rule(payload: object, reason: str) -> None:
    checked = validate_profile(("m1", payload))
    assert (checked.row, checked.reason) == (None, reason)


def test_build_profiles_quarantines_refused_and_unfetched_merchants() -> None:
    fetched = FetchResult(
        found={
            "m1": GOOD,
            "m0": {**GOOD, "merchant_id": "m0", "risk_score": 0.1},
            "m3": {**GOOD, "merchant_id": "m3", "country": "x"},
        },
        failed={"m2": "HTTP 404: not found"},
    )
    profiles, quarantine = build_profiles(fetched, as_of=date(2026, 10, 28), enrich_workers=1)
    assert profiles["merchant_id"].to_pylist() == ["m0", "m1"]
    assert profiles["risk_bucket"].to_pylist() == ["low", "medium"]
    assert [(r["merchant_id"], r["reason"]) for r in quarantine.to_pylist()] == [
        ("m2", "fetch_failed: HTTP 404: not found"),
        ("m3", "bad_country"),
    ]


def test_the_sandbox_is_deterministic_and_messy() -> None:
    profiles = [sandbox_profile(f"m{i:05d}") for i in range(2000)]
    assert profiles == [sandbox_profile(f"m{i:05d}") for i in range(2000)]
    missing = sum(p is None for p in profiles)
    broken = sum(
        p is not None and validate_profile((p["merchant_id"], p)).reason is not None for p in profiles
    )
    assert 10 < missing < 80 and 10 < broken < 100, (missing, broken)


def test_fetch_config_builds_quoted_urls_and_refuses_bad_settings() -> None:
    config = FetchConfig(base_url="http://api:8089/", path_template="/merchants/{id}")
    assert config.url("m 1/x") == "http://api:8089/merchants/m%201%2Fx"
    with pytest.raises(ValueError, match="http:// or https://"):
        FetchConfig(base_url="api:8089")
    with pytest.raises(ValueError, match=r"must hold \{id\}"):
        FetchConfig(base_url="http://api", path_template="/merchants")
    with pytest.raises(ValueError, match="rate_per_second must be > 0"):
        FetchConfig(base_url="http://api", rate_per_second=0)


def test_the_hook_reads_the_api_from_an_http_connection(monkeypatch) -> None:
    from featurelake_airflow.hooks.http_api import HttpApiHook

    connection = {
        "conn_type": "http",
        "host": "merchants.example.com",
        "schema": "https",
        "password": "token",
        "extra": {"path_template": "/v1/merchants/{id}", "rate_per_second": 5, "headers": {"X-Team": "ml"}},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", json.dumps(connection))
    config = HttpApiHook(http_conn_id="merchants").get_conn()
    assert config.url("m1") == "https://merchants.example.com/v1/merchants/m1"
    assert config.rate_per_second == 5
    assert dict(config.headers) == {"Authorization": "Bearer token", "X-Team": "ml"}
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", json.dumps({**connection, "extra": {"rate": 5}}))
    with pytest.raises(ValueError, match=r"unknown extra \['rate'\]"):
        HttpApiHook(http_conn_id="merchants").get_conn()
