"""Merchant profile validation and enrichment, the fetch settings and `Retry-After` parsing, and the
HTTP connection."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime

import pytest

from featurelake.fetch import (
    FetchConfig,
    FetchResult,
    _without_header_values,
    backoff_seconds,
    retry_after_seconds,
)
from featurelake.merchant_profiles import (
    ApiUnavailableError,
    build_profiles,
    check_api_available,
    enrich_profile,
    sandbox_profile,
    validate_profile,
)
from featurelake.stages import StageError

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
        pytest.param({**GOOD, "name": "Caf\ud83d"}, "bad_name", id="name-lone-surrogate"),
        pytest.param({**GOOD, "country": "Germany"}, "bad_country", id="country"),
        pytest.param({**GOOD, "risk_score": "n/a"}, "bad_risk_score", id="score-text"),
        pytest.param({**GOOD, "risk_score": 1.5}, "bad_risk_score", id="score-range"),
        pytest.param({**GOOD, "risk_score": True}, "bad_risk_score", id="score-bool"),
        pytest.param({**GOOD, "established": "03/01/2001"}, "bad_established", id="date"),
        # ISO 3166 alpha-2 is two ASCII capitals; isalpha()/isupper() also accept other scripts.
        pytest.param({**GOOD, "country": "ÄÖ"}, "bad_country", id="country-latin-1"),
        pytest.param({**GOOD, "country": "ΔΕ"}, "bad_country", id="country-greek"),
        pytest.param({**GOOD, "country": "de"}, "bad_country", id="country-lower"),
        pytest.param({**GOOD, "country": "D1"}, "bad_country", id="country-digit"),
        pytest.param({**GOOD, "country": "DE\n"}, "bad_country", id="country-newline"),
        pytest.param({**GOOD, "country": 49}, "bad_country", id="country-number"),
        # YYYY-MM-DD only; Python 3.11's date.fromisoformat accepts the other ISO 8601 forms too.
        pytest.param({**GOOD, "established": "20010301"}, "bad_established", id="date-basic"),
        pytest.param({**GOOD, "established": "2001-W09-4"}, "bad_established", id="date-week"),
        pytest.param({**GOOD, "established": "2001W094"}, "bad_established", id="date-week-basic"),
        pytest.param({**GOOD, "established": "2001-060"}, "bad_established", id="date-ordinal"),
        pytest.param({**GOOD, "established": "2001-03-01T00:00"}, "bad_established", id="date-time"),
        pytest.param({**GOOD, "established": "2001-03-01\n"}, "bad_established", id="date-newline"),
        pytest.param(
            {**GOOD, "established": "\uff12\uff10\uff10\uff11-\uff10\uff13-\uff10\uff11"},
            "bad_established",
            id="date-fullwidth",
        ),
        pytest.param({**GOOD, "established": "2001-02-30"}, "bad_established", id="date-no-such-day"),
        pytest.param({**GOOD, "established": 20010301}, "bad_established", id="date-number"),
        pytest.param({k: v for k, v in GOOD.items() if k != "established"}, "bad_established", id="no-date"),
    ],
)
def test_bad_profiles_are_refused_with_the_rule(payload: object, reason: str) -> None:
    checked = validate_profile(("m1", payload))
    assert (checked.row, checked.reason) == (None, reason)
    assert json.loads(checked.payload) == payload, "the quarantine keeps the whole answer, as JSON"


@pytest.mark.parametrize(("country", "established"), [("US", "2000-02-29"), ("ZA", "0001-01-01")])
def test_strict_forms_still_accept_every_real_code_and_date(country: str, established: str) -> None:
    checked = validate_profile(("m1", {**GOOD, "country": country, "established": established}))
    assert checked.reason is None
    assert (checked.row["country"], checked.row["established"]) == (country, date.fromisoformat(established))


def test_a_payload_with_a_lone_surrogate_is_quarantined_as_valid_json() -> None:
    """JSON's decoder turns "\\ud800" (half an emoji) into a lone surrogate, which UTF-8 cannot
    encode: the quarantine keeps it escaped, so one such answer cannot fail the whole task."""
    payload = json.loads('{"merchant_id": "m1", "name": "Caf\\ud800", "risk_score": "n/a"}')
    profiles, quarantine = build_profiles(FetchResult(found={"m1": payload}), as_of=date(2026, 10, 28))
    assert profiles.num_rows == 0
    assert json.loads(quarantine["payload"][0].as_py()) == payload


@pytest.mark.parametrize(
    ("score", "bucket"),
    [(0, "low"), (0.2, "low"), (0.2000001, "medium"), (0.6, "medium"), (0.6000001, "high"), (1, "high")],
)
def test_risk_scores_from_0_to_1_are_valid_and_each_bucket_holds_its_upper_limit(
    score: float, bucket: str
) -> None:
    checked = enrich_profile(
        validate_profile(("m1", {**GOOD, "risk_score": score})), as_of=date(2026, 10, 28)
    )
    assert (checked.reason, checked.row["risk_score"], checked.row["risk_bucket"]) == (None, score, bucket)


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


def test_a_stage_that_fails_in_build_profiles_names_the_merchant(monkeypatch) -> None:
    """A validation that raises (a defect, not a bad profile: those are quarantined) fails the
    task naming the merchant whose answer it raised on, not only its position."""
    import featurelake.merchant_profiles as merchant_profiles

    checked_for_real = merchant_profiles.validate_profile

    def validate_or_break(item):
        if item[0] == "m3":
            raise RuntimeError("validator defect")
        return checked_for_real(item)

    monkeypatch.setattr(merchant_profiles, "validate_profile", validate_or_break)
    fetched = FetchResult(found={f"m{i}": {**GOOD, "merchant_id": f"m{i}"} for i in range(5)}, failed={})
    with pytest.raises(StageError) as caught:
        build_profiles(fetched, as_of=date(2026, 10, 28), enrich_workers=1)
    assert str(caught.value) == (
        "stage 'validate' failed on item 3 (merchant 'm3'): RuntimeError('validator defect')"
    )


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
    with pytest.raises(ValueError, match="and name a host, got 'http://'"):
        FetchConfig(base_url="http://")
    with pytest.raises(ValueError, match=r"must hold \{id\}"):
        FetchConfig(base_url="http://api", path_template="/merchants")
    with pytest.raises(ValueError, match="rate_per_second must be > 0"):
        FetchConfig(base_url="http://api", rate_per_second=0)
    with pytest.raises(ValueError, match="max_retry_after_seconds must be >= 0"):
        FetchConfig(base_url="http://api", max_retry_after_seconds=-1)


def test_fetch_config_refuses_a_header_with_a_control_character_by_name() -> None:
    """aiohttp refused it at every request, with "Forbidden control character detected in
    headers", naming neither the setting nor the header; the value (a secret) is not shown."""
    with pytest.raises(ValueError, match="header 'Authorization' holds a control character") as caught:
        FetchConfig(base_url="http://api", headers=(("Authorization", "Bearer t0ken\n"),))
    assert caught.value.setting == "headers" and "t0ken" not in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        # 0 or less turns aiohttp's timeout off: a silent server would hang the task.
        pytest.param(
            "timeout_seconds", 0, r"timeout_seconds must be > 0 \(a finite number\), got 0 ", id="timeout-0"
        ),
        pytest.param(
            "timeout_seconds", -1, r"timeout_seconds must be > 0 .*got -1 \(0 or less", id="timeout-neg"
        ),
        pytest.param(
            "timeout_seconds", float("inf"), "timeout_seconds must be > 0 .*got inf", id="timeout-inf"
        ),
        pytest.param(
            "timeout_seconds", float("nan"), "timeout_seconds must be > 0 .*got nan", id="timeout-nan"
        ),
        pytest.param("timeout_seconds", "10", "timeout_seconds must be > 0 .*got '10'", id="timeout-text"),
        pytest.param(
            "backoff_seconds",
            -0.1,
            r"backoff_seconds must be >= 0 \(a finite number\), got -0.1",
            id="backoff",
        ),
        pytest.param(
            "backoff_seconds", float("nan"), "backoff_seconds must be >= 0 .*got nan", id="backoff-nan"
        ),
        pytest.param("rate_per_second", float("inf"), "rate_per_second must be > 0 .*got inf", id="rate-inf"),
        pytest.param(
            "max_retry_after_seconds", float("nan"), "max_retry_after_seconds must be >= 0", id="cap-nan"
        ),
        pytest.param(
            "max_concurrency", 0, r"max_concurrency must be >= 1 \(an integer\), got 0", id="concurrency"
        ),
        pytest.param(
            "max_concurrency", 2.5, "max_concurrency must be >= 1 .*got 2.5", id="concurrency-float"
        ),
        pytest.param("max_attempts", True, "max_attempts must be >= 1 .*got True", id="attempts-bool"),
        pytest.param("max_attempts", 0, "max_attempts must be >= 1 .*got 0", id="attempts"),
    ],
)
def test_fetch_config_refuses_a_bad_number_by_name(setting: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        FetchConfig(base_url="http://api", **{setting: value})
    assert caught.value.setting == setting


@pytest.mark.parametrize(
    ("template", "also"),
    [
        pytest.param("/{version}/merchants/{id}", "['version']", id="other-field"),
        pytest.param("/merchants/{id}?fields={name}", "['name']", id="query-field"),
        pytest.param("/merchants/{}/{id}", "['']", id="positional"),
        pytest.param("/merchants/{id!r}", "['id']", id="conversion"),
        pytest.param("/merchants/{id:>8}", "['id']", id="format-spec"),
        pytest.param("/merchants/{id[0]}", "['id[0]']", id="index"),
        pytest.param("/merchants/{id", "expected '}' before end of string", id="unclosed"),
        pytest.param("/a}/{id}", "Single '}' encountered", id="lone-close"),
    ],
)
def test_fetch_config_allows_only_the_id_field_in_path_template(template: str, also: str) -> None:
    with pytest.raises(ValueError, match=r"path_template may hold only the field \{id\}") as caught:
        FetchConfig(base_url="http://api", path_template=template)
    assert "write a literal brace as {{ or }}" in str(caught.value)
    assert repr(template) in str(caught.value) and also in str(caught.value)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("merchants/{id}", id="into-the-last-segment"),
        pytest.param("{id}", id="into-the-port"),
        pytest.param(".evil.example/{id}", id="into-the-host"),
    ],
)
def test_fetch_config_refuses_a_path_template_without_a_leading_slash(template: str) -> None:
    """The template is appended to base_url as it is: without a slash it runs into the base."""
    with pytest.raises(ValueError, match=r"path_template must start with / \(or \? for a query\)") as caught:
        FetchConfig(base_url="http://api:8089/v1", path_template=template)
    assert caught.value.setting == "path_template" and repr(template) in str(caught.value)
    query = FetchConfig(base_url="http://api:8089/v1/merchants", path_template="?id={id}")
    assert query.url("m 1") == "http://api:8089/v1/merchants?id=m%201"


def test_fetch_config_keeps_doubled_braces_literal() -> None:
    config = FetchConfig(base_url="http://api", path_template="/v{{1}}/merchants/{id}/{id}")
    # As sent: yarl quotes the literal braces; the ids are quoted whole.
    assert config.url("m/1") == "http://api/v%7B1%7D/merchants/m%2F1/m%2F1"


def test_fetch_config_keeps_an_ids_quoted_delimiters() -> None:
    """yarl decodes %3B, %26 and %3D in a path: the id is put in after it normalizes the rest."""
    config = FetchConfig(base_url="http://api/v 1", path_template="/merchants/{id}")
    assert config.url("a;b&c=d") == "http://api/v%201/merchants/a%3Bb%26c%3Dd"
    assert (
        config.url("featurelakeresourceidmarker") == "http://api/v%201/merchants/featurelakeresourceidmarker"
    )


def test_check_api_available_counts_only_the_apis_failures() -> None:
    day = date(2026, 10, 28)
    found = {f"m{i}": {**GOOD, "merchant_id": f"m{i}"} for i in range(4)}
    missing = {f"x{i}": "HTTP 404: not found" for i in range(6)}
    # 10 merchants: 6 unknown (404) and 4 found; the 404s say nothing about the API.
    check_api_available(FetchResult(found=found, failed=missing), max_failed_fraction=0, api="A", day=day)
    down = {f"d{i}": "HTTP 503 after 4 attempts" for i in range(5)}
    half = FetchResult(found=found, failed={**down, "x0": "HTTP 404: not found"}, api_failed=set(down))
    check_api_available(half, max_failed_fraction=0.5, api="A", day=day)  # 5 of 10: not more than half
    with pytest.raises(ApiUnavailableError) as caught:
        check_api_available(half, max_failed_fraction=0.4, api="http://api (connection 'm')", day=day)
    assert str(caught.value).startswith(
        "the merchant API http://api (connection 'm') failed 5 of 10 merchants for reasons of its own, "
        "more than max_failed_fraction=0.4 allows (for example d0: HTTP 503 after 4 attempts; "
        "d1: HTTP 503 after 4 attempts; d2: HTTP 503 after 4 attempts). The profile and quarantine "
        "partitions of 2026-10-28 were left as they were."
    )
    check_api_available(FetchResult(), max_failed_fraction=0, api="A", day=day)  # no merchants at all


def test_check_api_available_counts_answers_that_are_no_profile_as_the_apis() -> None:
    """An API that sends its errors with HTTP 200: every merchant is "found", and every answer is
    an error object, which validation would quarantine as wrong_merchant_id, one merchant at a time."""
    day = date(2026, 10, 28)
    found = {f"m{i}": {"error": "quota exceeded"} for i in range(6)}
    found |= {"m6": ["not", "an", "object"], "m9": {**GOOD, "merchant_id": "m0"}}
    found |= {merchant: {**GOOD, "merchant_id": merchant} for merchant in ("m7", "m8")}
    fetched = FetchResult(found=found)
    check_api_available(fetched, max_failed_fraction=0.8, api="A", day=day)  # 8 of 10
    with pytest.raises(ApiUnavailableError) as caught:
        check_api_available(fetched, max_failed_fraction=0.5, api="http://api (connection 'm')", day=day)
    assert str(caught.value).startswith(
        "the merchant API http://api (connection 'm') failed 8 of 10 merchants for reasons of its own "
        "(8 of them answered with no profile of theirs: not a JSON object, or another merchant_id, such "
        "as an error sent with HTTP 200), more than max_failed_fraction=0.5 allows (for example "
        'm0: answered {"error": "quota exceeded"}; m1: answered {"error": "quota exceeded"}; '
        'm2: answered {"error": "quota exceeded"}). The profile and quarantine partitions of 2026-10-28 '
        "were left as they were."
    ), caught.value


@pytest.mark.parametrize(
    "failures",
    [
        pytest.param(
            {f"m{i}": 'HTTP 400: {"error": "missing X-Api-Version"}' for i in range(5)}, id="all-400"
        ),
        pytest.param(
            {"m0": "HTTP 405: ", "m1": "HTTP 410: gone", "m2": "HTTP 404: not found"}, id="mixed-4xx"
        ),
    ],
)
def test_check_api_available_refuses_a_client_error_for_every_merchant(failures: dict[str, str]) -> None:
    """Each 4xx is the merchant's own failure, but one for every merchant is a request the API
    refuses whatever the merchant (a missing required header): it wrote an empty partition."""
    day = date(2026, 10, 28)
    with pytest.raises(ApiUnavailableError) as caught:
        check_api_available(FetchResult(failed=failures), max_failed_fraction=0.99, api="A", day=day)
    statuses = ", ".join(sorted({why.split(":")[0] for why in failures.values()}))
    first = min(failures)
    assert str(caught.value) == (
        f"the merchant API A answered a client error ({statuses}) for every one of the {len(failures)} "
        f"merchants of 2026-10-28: it refuses the request whatever the merchant (for example {first}: "
        f"{failures[first]}). Check the connection's path_template, base URL and headers. The profile "
        "and quarantine partitions of 2026-10-28 were left as they were; to write them all the same, "
        "set the connection's extra max_failed_fraction to 1"
    )
    check_api_available(FetchResult(failed=failures), max_failed_fraction=1, api="A", day=day)
    one_found = FetchResult(found={"z": {**GOOD, "merchant_id": "z"}}, failed=failures)
    check_api_available(one_found, max_failed_fraction=0, api="A", day=day)  # some merchant answered


def test_check_api_available_keeps_refused_credentials_to_max_failed_fraction() -> None:
    """A 401 or 403 is the API's failure (api_failed), weighed against max_failed_fraction; only
    the merchants' own 4xx count as a request the API refuses whatever the merchant."""
    day = date(2026, 10, 28)
    refused = {"m0": "HTTP 401: bad key", "m1": "HTTP 403: forbidden"}
    failures = {**refused, "m2": "HTTP 404: not found", "m3": "HTTP 404: not found"}
    fetched = FetchResult(failed=failures, api_failed=set(refused))
    check_api_available(fetched, max_failed_fraction=0.5, api="A", day=day)  # 2 of 4 are the API's
    with pytest.raises(ApiUnavailableError, match="failed 2 of 4 merchants for reasons of its own"):
        check_api_available(fetched, max_failed_fraction=0.25, api="A", day=day)


NOW = datetime(2026, 10, 28, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        pytest.param("7", 7.0, id="delay-seconds"),
        pytest.param(" 0 ", 0.0, id="zero-padded"),
        pytest.param("Wed, 28 Oct 2026 12:00:30 GMT", 30.0, id="http-date"),
        pytest.param("Wednesday, 28-Oct-26 12:00:05 GMT", 5.0, id="rfc850-date"),
        pytest.param("Wed Oct 28 12:00:02 2026", 2.0, id="asctime-date"),
        pytest.param("Wed, 28 Oct 2026 12:00:09 -0000", 9.0, id="date-minus-zero"),
        pytest.param("Wed, 28 Oct 2026 11:59:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("1.5", None, id="not-delay-seconds"),
        pytest.param("-3", None, id="negative"),
        pytest.param("²", None, id="unicode-digit"),
        pytest.param("Wed, 28 Oct 99999 12:00:00 GMT", None, id="date-out-of-range"),
    ],
)
def test_retry_after_is_read_in_both_forms(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, cap=60, now=NOW) == seconds


@pytest.mark.parametrize(
    "header",
    ["86400", "99999999999999999999999", "Wed, 28 Oct 2026 13:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"],
)
def test_a_huge_retry_after_is_capped(header: str) -> None:
    assert retry_after_seconds(header, cap=60, now=NOW) == 60
    assert retry_after_seconds(header, cap=0, now=NOW) == 0


def test_an_http_date_retry_after_counts_from_now_by_default() -> None:
    ahead = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after_seconds(ahead, cap=60) <= 30


def test_the_nth_backoff_is_backoff_seconds_times_two_to_the_n_minus_one_plus_jitter_capped() -> None:
    """FetchConfig's promise: retry n waits backoff_seconds * 2**(n-1), plus up to half of that in
    jitter, and never more than max_backoff_seconds."""
    config = FetchConfig(base_url="http://api", backoff_seconds=0.5, max_backoff_seconds=3.0)
    assert [backoff_seconds(config, n, jitter=0.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff_seconds(config, 1, jitter=0.5) == 0.625
    assert backoff_seconds(config, 2, jitter=0.999) < 1.5
    assert backoff_seconds(config, 10_000, jitter=0.9) == 3.0, "a huge retry count is capped, not an overflow"


def test_an_error_page_keeps_no_header_value_of_six_characters_or_more() -> None:
    """What an error page echoes of a configured header (or of the credentials after its auth
    scheme) is masked from 6 characters on; shorter values would mask ordinary words."""
    headers = (("X-Api-Key", "abc123"), ("Authorization", "Bearer tok456"), ("X-Region", "north"))
    page = "key abc123 refused; token tok456 expired; region north"
    assert _without_header_values(page, headers) == "key *** refused; token *** expired; region north"


def test_the_hook_reads_the_api_from_an_http_connection(monkeypatch) -> None:
    from featurelake_airflow.hooks.http_api import HttpApiHook

    connection = {
        "conn_type": "http",
        "host": "merchants.example.com",
        "schema": "https",
        "password": "token",
        "extra": {
            "path_template": "/v1/merchants/{id}",
            "rate_per_second": 5,
            "max_retry_after_seconds": 10,
            "headers": {"X-Team": "ml"},
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", json.dumps(connection))
    config = HttpApiHook(http_conn_id="merchants").get_conn()
    assert config.url("m1") == "https://merchants.example.com/v1/merchants/m1"
    assert (config.rate_per_second, config.max_retry_after_seconds) == (5, 10)
    assert dict(config.headers) == {"Authorization": "Bearer token", "X-Team": "ml"}
    assert HttpApiHook(http_conn_id="merchants").max_failed_fraction() == 0.5
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", json.dumps({**connection, "extra": {"rate": 5}}))
    with pytest.raises(ValueError, match=r"unknown extra \['rate'\]"):
        HttpApiHook(http_conn_id="merchants").get_conn()
    monkeypatch.setenv(
        "AIRFLOW_CONN_MERCHANTS", json.dumps({**connection, "extra": {"max_failed_fraction": 0.2}})
    )
    assert HttpApiHook(http_conn_id="merchants").max_failed_fraction() == 0.2


def test_the_hook_looks_its_connection_up_once(monkeypatch) -> None:
    """The operator asks for the settings and then for max_failed_fraction; a secrets backend may
    answer each lookup over the network, so one hook asks once."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", json.dumps({"conn_type": "http", "host": "api"}))
    hook = HttpApiHook(http_conn_id="merchants")
    lookups = []
    get_connection = hook.get_connection
    monkeypatch.setattr(
        hook, "get_connection", lambda conn_id: lookups.append(conn_id) or get_connection(conn_id)
    )
    assert (hook.get_conn().base_url, hook.max_failed_fraction()) == ("http://api", 0.5)
    assert lookups == ["merchants"]


def test_the_hook_still_takes_the_extras_earlier_versions_took(monkeypatch) -> None:
    """Headers as [name, value] pairs, and counts written as 4.0 (as a JSON tool may), worked
    before the settings were checked, so connections saved that way keep working."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    extra = {"headers": [["X-Api-Key", "k1"]], "max_concurrency": 4.0, "max_attempts": 2.0}
    connection = {"conn_type": "http", "host": "127.0.0.1", "port": 8089, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", json.dumps(connection))
    config = HttpApiHook(http_conn_id="merchants").get_conn()
    assert dict(config.headers) == {"X-Api-Key": "k1"}
    assert (config.max_concurrency, config.max_attempts) == (4, 2)
    assert isinstance(config.max_attempts, int)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            {"timeout_seconds": 0},
            r"connection 'merchants': extra 'timeout_seconds': timeout_seconds must be > 0 .*got 0",
            id="timeout-0",
        ),
        pytest.param(
            {"timeout_seconds": "ten"},
            r"connection 'merchants': extra 'timeout_seconds': .*got 'ten'",
            id="timeout-text",
        ),
        pytest.param(
            {"max_attempts": 0},
            r"connection 'merchants': extra 'max_attempts': max_attempts must be >= 1",
            id="attempts",
        ),
        pytest.param(
            {"max_backoff_seconds": -1},
            r"connection 'merchants': extra 'max_backoff_seconds': max_backoff_seconds must be >= 0",
            id="negative-backoff-cap",
        ),
        pytest.param(
            {"backoff_seconds": "-1"},  # text, as a URI gives it, read as a number
            r"connection 'merchants': extra 'backoff_seconds': backoff_seconds must be >= 0",
            id="backoff-text",
        ),
        pytest.param(
            {"path_template": "/{version}/m/{id}"},
            r"connection 'merchants': extra 'path_template': path_template may hold only the field \{id\}",
            id="template",
        ),
        pytest.param(
            {"headers": ["X-Team: ml"]},
            r"connection 'merchants': extra 'headers' must be an object of header names to string values",
            id="headers-list",
        ),
        pytest.param(
            {"headers": {"X-Retries": 3}},
            r"connection 'merchants': extra 'headers' must be an object",
            id="headers-number",
        ),
    ],
)
def test_the_hook_names_the_connection_and_the_extra_of_a_bad_setting(
    monkeypatch, extra: dict, message: str
) -> None:
    from featurelake_airflow.hooks.http_api import HttpApiHook

    connection = {"conn_type": "http", "host": "merchants.example.com", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", json.dumps(connection))
    with pytest.raises(ValueError, match=message):
        HttpApiHook(http_conn_id="merchants").get_conn()


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        pytest.param(
            {"Ocp-Apim-Subscription-Key": "sub-key-0123456789", "X-Retries": 3},
            "'X-Retries' holds a number",
            id="object",
        ),
        pytest.param(
            [["X-Api-Key", "sub-key-0123456789"], ["X-Team"]],
            "got a list that is not of [name, value] pairs",
            id="pairs",
        ),
        pytest.param([[7, "sub-key-0123456789"]], "a header name is a number", id="pair-name"),
    ],
)
def test_a_bad_headers_extra_is_named_without_its_values(monkeypatch, headers: object, named: str) -> None:
    """The error echoed the whole extra, credentials included: Airflow's log masking hides the values
    of header names it knows (Authorization, X-Api-Key), not an Ocp-Apim-Subscription-Key, nor any
    header of the [name, value] pairs form (their key is `headers`)."""
    from featurelake_airflow.hooks.http_api import HttpApiHook

    connection = {"conn_type": "http", "host": "merchants.example.com", "extra": {"headers": headers}}
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", json.dumps(connection))
    with pytest.raises(ValueError, match="extra 'headers' must be an object") as raised:
        HttpApiHook(http_conn_id="merchants").get_conn()
    assert named in str(raised.value)
    assert "sub-key" not in str(raised.value)


@pytest.mark.parametrize("value", [1.5, -0.1, "half", True, None])
def test_the_hook_refuses_a_bad_max_failed_fraction_by_name(monkeypatch, value: object) -> None:
    from featurelake_airflow.hooks.http_api import HttpApiHook

    connection = {
        "conn_type": "http",
        "host": "merchants.example.com",
        "extra": {"max_failed_fraction": value},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANTS", json.dumps(connection))
    hook = HttpApiHook(http_conn_id="merchants")
    assert hook.get_conn().base_url == "http://merchants.example.com", "not a FetchConfig setting"
    with pytest.raises(
        ValueError,
        match=rf"connection 'merchants': extra 'max_failed_fraction' must be a number in \[0, 1\] .*got {value!r}",
    ):
        hook.max_failed_fraction()


def test_the_fetch_task_refuses_an_object_store_lake_by_name_without_retrying() -> None:
    # The README says it fails at once: a ValueError was retried twice, minutes apart, to no end.
    from airflow.sdk.exceptions import AirflowFailException

    from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator

    task = FetchMerchantProfilesOperator(task_id="fetch", lake="s3a://bucket/lake", ds="2026-10-28")
    with pytest.raises(
        AirflowFailException, match=r"the lake s3a://bucket/lake is not a local path.*Mount the lake"
    ):
        task.execute({})
