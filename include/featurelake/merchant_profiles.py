"""Merchant profiles from an HTTP API: fetched at a bounded rate (`featurelake.fetch`), validated on a
thread pool and enriched on a process pool (`featurelake.stages`), then written as one date's Parquet
partition, with every profile that could not be fetched or failed validation quarantined with its
reason. When too many ids failed because of the API itself (`check_api_available`), nothing is
written: an outage must not replace a good partition with an empty one. `featurelake merchant-api`
serves a sandbox of this API (`featurelake.merchant_api`).

A profile is a JSON object: `merchant_id` (the id asked for), `name` (non-empty, and text UTF-8 can
encode: no lone surrogate such as JSON's `"\\ud83d"`), `country` (ISO 3166 alpha-2: two ASCII letters
A-Z), `risk_score` (a number in [0, 1]) and `established` (a real date written YYYY-MM-DD, ASCII
digits; not the other ISO 8601 forms Python's `date.fromisoformat` accepts, such as `19900101` or
`1990-W01-1`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa

from featurelake.feature_records import encodes_as_utf8
from featurelake.fetch import NOT_FOUND, FetchResult
from featurelake.stages import Stage, run_stages

PROFILE_SCHEMA = pa.schema(
    [
        pa.field("merchant_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("country", pa.string(), nullable=False),
        pa.field("risk_score", pa.float64(), nullable=False),
        pa.field("risk_bucket", pa.string(), nullable=False),
        pa.field("established", pa.date32(), nullable=False),
        pa.field("years_active", pa.int32(), nullable=False),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [("merchant_id", pa.string()), ("reason", pa.string()), ("payload", pa.string())]
)

RISK_BUCKETS = ((0.2, "low"), (0.6, "medium"), (1.0, "high"))
# ASCII only: `str.isupper()` and `\d` also accept letters and digits of other scripts.
COUNTRY_PATTERN = re.compile(r"[A-Z]{2}")
DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# A failure `fetch_all` reports for an HTTP 4xx answer ("HTTP 400: <the start of its body>").
CLIENT_ERROR = re.compile(r"HTTP 4[0-9]{2}\b")


@dataclass(frozen=True)
class Checked:
    """A profile after validation: its row, or why it was refused."""

    merchant_id: str
    row: dict[str, Any] | None
    reason: str | None
    payload: str


def answer_not_a_profile(merchant_id: str, payload: Any) -> str | None:
    """Why the API's answer for `merchant_id` is no profile of it at all, or None: `not_an_object`
    (a list, a string, a number) or `wrong_merchant_id` (another merchant's, or an error object
    such as {"error": "quota exceeded"} sent with HTTP 200)."""
    if not isinstance(payload, Mapping):
        return "not_an_object"
    if payload.get("merchant_id") != merchant_id:
        return "wrong_merchant_id"
    return None


def validate_profile(item: tuple[str, Any]) -> Checked:
    """(merchant id, JSON payload) -> a checked profile (thread stage: cheap, per item)."""
    merchant_id, payload = item
    # The whole answer, as JSON, so a quarantined profile can be read anywhere and replayed.
    # ASCII escapes: a lone surrogate (a truncated emoji, "\ud800") stays valid, encodable text.
    text = json.dumps(payload)
    if (not_a_profile := answer_not_a_profile(merchant_id, payload)) is not None:
        return Checked(merchant_id, None, not_a_profile, text)
    name, country, score = payload.get("name"), payload.get("country"), payload.get("risk_score")
    if not isinstance(name, str) or not name.strip():
        return Checked(merchant_id, None, "missing_name", text)
    if not encodes_as_utf8(name):  # JSON's "\ud83d" (half an emoji): Parquet cannot store it, the task failed
        return Checked(merchant_id, None, "bad_name", text)
    if not (isinstance(country, str) and COUNTRY_PATTERN.fullmatch(country)):
        return Checked(merchant_id, None, "bad_country", text)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        return Checked(merchant_id, None, "bad_risk_score", text)
    written = payload.get("established")
    if not (isinstance(written, str) and DATE_PATTERN.fullmatch(written)):
        return Checked(merchant_id, None, "bad_established", text)
    try:
        established = date.fromisoformat(written)
    except ValueError:  # the form is right, the date is not: 2001-02-30
        return Checked(merchant_id, None, "bad_established", text)
    row = {"merchant_id": merchant_id, "name": name.strip(), "country": country, "risk_score": float(score)}
    return Checked(merchant_id, {**row, "established": established}, None, text)


def enrich_profile(checked: Checked, *, as_of: date | None = None) -> Checked:
    """Add the derived columns (process stage: the CPU-bound part of a real enrichment):
    `risk_bucket`, and `years_active`, the whole years from `established` to `as_of` (0 if later)."""
    if checked.row is None:
        return checked
    row = dict(checked.row)
    row["risk_bucket"] = next(bucket for limit, bucket in RISK_BUCKETS if row["risk_score"] <= limit)
    reference, established = as_of or date.today(), row["established"]
    # Whole years, as for an age: days // 365 counted a year early once enough leap days added up.
    anniversary_ahead = (reference.month, reference.day) < (established.month, established.day)
    row["years_active"] = max(0, reference.year - established.year - anniversary_ahead)
    return Checked(checked.merchant_id, row, None, checked.payload)


@dataclass
class _EnrichAsOf:
    """`enrich_profile` with a fixed date, picklable for a process pool."""

    as_of: date

    def __call__(self, checked: Checked) -> Checked:
        return enrich_profile(checked, as_of=self.as_of)


class ApiUnavailableError(RuntimeError):
    """Too many merchants failed because of the API (`FetchResult.api_failed`) to write the result."""


def check_api_available(fetched: FetchResult, *, max_failed_fraction: float, api: str, day: date) -> None:
    """Raise ApiUnavailableError when more than `max_failed_fraction` (in [0, 1]) of the merchants
    asked for failed because of the API (down, or refusing our credentials), not because of the
    merchant (a 404, a bad field), or were answered with no profile at all (`answer_not_a_profile`:
    an API that sends its errors with HTTP 200 answers every merchant so); and when every merchant
    was answered a 4xx of its own (all 404, all 400, or a mix), unless `max_failed_fraction` is 1. `api` names the API in the message. Call it
    before writing."""
    asked = len(fetched.found) + len(fetched.failed)
    # Each 4xx is the merchant's own failure, but one for every merchant is a request the API
    # refuses whatever the merchant: a typo in path_template or a retired API version (404), a
    # missing required header or query parameter (400), a wrong method or path (405, 410). It
    # wrote an empty profiles partition, in a task that succeeded.
    refused = sorted(
        (merchant, why)
        for merchant, why in fetched.failed.items()
        if merchant not in fetched.api_failed and CLIENT_ERROR.match(why)
    )
    if asked and len(refused) == asked and max_failed_fraction < 1:
        statuses = sorted({why.split(":")[0] for _, why in refused})
        if statuses == [NOT_FOUND.split(":")[0]]:
            what = "answered 404 (not found)"
            why = "its URL names no merchant. Check the connection's path_template and base URL"
        else:
            merchant, example = refused[0]
            what = f"answered a client error ({', '.join(statuses)})"
            why = (
                f"it refuses the request whatever the merchant (for example {merchant}: {example}). "
                "Check the connection's path_template, base URL and headers"
            )
        raise ApiUnavailableError(
            f"the merchant API {api} {what} for every one of the {asked} merchants of "
            f"{day.isoformat()}: {why}. The profile and quarantine partitions of {day.isoformat()} "
            "were left as they were; to write them all the same, set the connection's extra "
            "max_failed_fraction to 1"
        )
    not_profiles = {
        merchant: payload
        for merchant, payload in fetched.found.items()
        if answer_not_a_profile(merchant, payload) is not None
    }
    failed = len(fetched.api_failed) + len(not_profiles)
    if not asked or failed <= max_failed_fraction * asked:
        return
    examples = [f"{i}: {fetched.failed[i]}" for i in sorted(fetched.api_failed)[:3]]
    examples += [
        f"{i}: answered {json.dumps(not_profiles[i])[:120]}"
        for i in sorted(not_profiles)[: 3 - len(examples)]
    ]
    answered = (
        f" ({len(not_profiles)} of them answered with no profile of theirs: not a JSON object, or "
        "another merchant_id, such as an error sent with HTTP 200)"
        if not_profiles
        else ""
    )
    raise ApiUnavailableError(
        f"the merchant API {api} failed {failed} of {asked} merchants for reasons of its own{answered}, "
        f"more than max_failed_fraction={max_failed_fraction:g} allows (for example {'; '.join(examples)}). "
        f"The profile and quarantine partitions of {day.isoformat()} were left as they were. If the API "
        "is down, the task's retry (or a rerun once it is up) fetches again; if it refuses our "
        "credentials, fix the connection; to accept this share of failures, raise the connection's "
        "extra max_failed_fraction"
    )


def _merchant_of_answer(answer: tuple[str, Any]) -> str:
    """How a failed stage names a `(merchant_id, payload)` item: "merchant 'm-7'"."""
    return f"merchant {answer[0]!r}"


def build_profiles(
    fetched: FetchResult, *, as_of: date, validate_workers: int = 2, enrich_workers: int = 2
) -> tuple[pa.Table, pa.Table]:
    """(profiles, quarantine): valid profiles sorted by merchant_id, and one quarantine row per
    merchant that failed to fetch (`fetch_failed: <why>`) or to validate (the rule it broke)."""
    stages = [
        Stage("validate", validate_profile, pool="thread", workers=validate_workers),
        Stage("enrich", _EnrichAsOf(as_of), pool="process", workers=enrich_workers),
    ]
    rows, quarantine = [], []
    answers = sorted(fetched.found.items())
    for checked in run_stages(answers, stages, name_item=_merchant_of_answer):
        if checked.row is None:
            quarantine.append(
                {"merchant_id": checked.merchant_id, "reason": checked.reason, "payload": checked.payload}
            )
        else:
            rows.append(checked.row)
    for merchant_id, why in sorted(fetched.failed.items()):
        quarantine.append({"merchant_id": merchant_id, "reason": f"fetch_failed: {why}", "payload": None})
    profiles = pa.Table.from_pylist(rows, schema=PROFILE_SCHEMA)
    refused = pa.Table.from_pylist(
        sorted(quarantine, key=lambda r: r["merchant_id"]), schema=QUARANTINE_SCHEMA
    )
    return profiles, refused


# -- the sandbox API's data -----------------------------------------------------------------------
def _digest(merchant_id: str) -> int:
    return int.from_bytes(hashlib.sha256(merchant_id.encode()).digest()[:8], "big")


def sandbox_profile(merchant_id: str) -> dict[str, Any] | None:
    """The sandbox API's deterministic profile of a merchant: None (a 404) for about 1 in 50 ids,
    and a profile that breaks a rule for about 1 in 40."""
    digest = _digest(merchant_id)
    if digest % 50 == 0:
        return None
    countries = ("DE", "FR", "US", "GB", "NL", "ES", "IT", "SE")
    profile = {
        "merchant_id": merchant_id,
        "name": f"Merchant {merchant_id}",
        "country": countries[digest % len(countries)],
        "risk_score": round((digest >> 8) % 1000 / 999, 3),
        "established": date(1990 + (digest >> 20) % 35, 1 + (digest >> 28) % 12, 1).isoformat(),
    }
    if digest % 40 == 1:
        profile["risk_score"] = "n/a"
    return profile


def sandbox_fails_first(merchant_id: str) -> bool:
    """Whether the sandbox answers this id's first request with a 503 (about 1 in 10 ids)."""
    return _digest(merchant_id) % 10 == 3


def distinct(values: Iterable[str | None]) -> list[str]:
    """The distinct non-empty values, sorted."""
    return sorted({value for value in values if value})


def merchants_of_day(raw_transactions: str, day: date) -> list[str]:
    """The distinct merchant ids of `day`'s raw transactions (`<raw_transactions>/date=<day>/`),
    sorted: the merchant_id column read through the data contract (`read_raw_piece`: found whatever
    the case of its name, binary or dictionary cast to text), as the feature and merchant-stats jobs
    read the partition. Read as plain Parquet, a partition they accept failed this task on every
    try. A partition that breaks the contract, or holds no data file, is an error that names it."""
    from featurelake.raw_contract_arrow import (
        PIECE_BYTES,
        list_raw_window,
        raw_contract_error,
        raw_pieces,
        raw_window_problems,
        read_raw_footers,
        read_raw_piece,
    )

    window = list_raw_window(raw_transactions, [day.isoformat()])
    footers = read_raw_footers(window)
    if problems := raw_window_problems(window, footers):
        raise raw_contract_error(
            problems,
            not_written=f"no merchant profile of {day} was fetched (its partitions are as they were)",
        )
    if not window.files:
        raise FileNotFoundError(
            f"no raw transactions for {day} under {raw_transactions}: land that day's partition "
            f"(date={day.isoformat()}/ with *.parquet files), then retry the task"
        )
    merchants: set[str] = set()
    for piece in raw_pieces(window, footers, max_bytes=PIECE_BYTES):
        merchants.update(read_raw_piece(piece, ["merchant_id"]).column(0).to_pylist())
    return distinct(merchants)
