"""What FetchMerchantProfilesOperator writes for answers that are JSON but hold what the lake
cannot store: each such merchant is quarantined and counted, and the other merchants are written.
Against the merchant API sandbox on loopback, through the operator's `execute()`."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from featurelake.merchant_api import SandboxServer
from featurelake.merchant_profiles import sandbox_fails_first, sandbox_profile
from featurelake.synthetic import generate_lake
from tests.integration.test_fetch_merchant_profiles import use_sandbox

pytestmark = pytest.mark.integration

DAY = date(2026, 8, 21)


def day_merchants(lake: Path) -> list[str]:
    raw = lake / "raw" / "transactions" / f"date={DAY.isoformat()}"
    table = pads.dataset(raw, format="parquet").to_table(columns=["merchant_id"])
    return sorted(set(table["merchant_id"].to_pylist()))


def run_task(lake: Path, monkeypatch, answer: dict[str, bytes]) -> dict:
    """Execute the task against the sandbox, with the raw JSON bodies of `answer` (by id) in front."""
    from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator

    @web.middleware
    async def misbehave(request: web.Request, handler) -> web.StreamResponse:
        body = answer.get(request.match_info.get("merchant_id", ""))
        if body is None:
            return await handler(request)
        return web.Response(body=body, content_type="application/json")

    server = SandboxServer(rate=200)
    server.app.middlewares.append(misbehave)
    with server:
        use_sandbox(monkeypatch, server.port)
        task = FetchMerchantProfilesOperator(task_id="fetch", lake=str(lake), ds=DAY.isoformat())
        return task.execute({})


def test_a_name_utf8_cannot_encode_is_quarantined_and_the_others_are_written(
    tmp_path: Path, monkeypatch
) -> None:
    """A profile valid in every field but its name, "Caf\\ud83d" (half an emoji, as JSON allows):
    writing the profiles raised UnicodeEncodeError, so the task failed and wrote nothing, and so did
    every retry. Now that merchant is quarantined as bad_name with its answer, the others written."""
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=DAY, end=DAY, users=120, seed=5)
    merchants = day_merchants(lake)
    chosen = next(m for m in merchants if sandbox_profile(m) is not None and not sandbox_fails_first(m))
    profile = {**sandbox_profile(chosen), "risk_score": 0.5}
    body = json.dumps(profile).replace(json.dumps(profile["name"]), '"Caf\\ud83d"').encode()
    assert b'"name": "Caf\\ud83d"' in body

    counts = run_task(lake, monkeypatch, {chosen: body})

    profiles = pq.read_table(lake / "raw" / "merchant_profiles" / f"date={DAY.isoformat()}")
    quarantine = pq.read_table(lake / "quarantine" / "merchant_profiles" / f"date={DAY.isoformat()}")
    rows = {r["merchant_id"]: r for r in quarantine.to_pylist()}
    assert rows[chosen]["reason"] == "bad_name"
    assert json.loads(rows[chosen]["payload"])["name"] == "Caf\ud83d"
    assert chosen not in profiles["merchant_id"].to_pylist()
    assert counts["quarantined_by_reason"]["bad_name"] == 1
    # Every merchant is a profile or quarantined, once.
    written = profiles["merchant_id"].to_pylist() + list(rows)
    assert sorted(written) == merchants and profiles.num_rows > 10
    assert (counts["profiles"], counts["quarantined"]) == (profiles.num_rows, quarantine.num_rows)


def refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


# 1e999 is valid JSON, which Python read as inf: quarantined as bad_risk_score, its payload was
# written back as `Infinity`.
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_an_answer_with_nan_is_not_json_and_every_quarantined_payload_is_json(
    tmp_path: Path, monkeypatch, constant: str
) -> None:
    """`{"risk_score": NaN}`, as Python's json.dumps (and a pandas-backed API) writes it, is not
    JSON (RFC 8259). Python's decoder took it, the profile was quarantined as bad_risk_score, and
    its payload, documented as JSON text, was `... NaN ...`, which JSON.parse refuses and jq reads
    as null. Now it is a body that is not JSON, as documented: quarantined with the reason
    (`fetch_failed: not JSON: ...`) and counted as the API's failure."""
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=DAY, end=DAY, users=120, seed=5)
    merchants = day_merchants(lake)
    chosen = next(m for m in merchants if sandbox_profile(m) is not None and not sandbox_fails_first(m))
    body = json.dumps({**sandbox_profile(chosen), "risk_score": 0.123456789}).replace("0.123456789", constant)
    assert f'"risk_score": {constant}' in body

    counts = run_task(lake, monkeypatch, {chosen: body.encode()})

    quarantine = pq.read_table(lake / "quarantine" / "merchant_profiles" / f"date={DAY.isoformat()}")
    for row in quarantine.to_pylist():
        if row["payload"] is not None:
            json.loads(row["payload"], parse_constant=refuse)
    rows = {r["merchant_id"]: r for r in quarantine.to_pylist()}
    assert rows[chosen]["reason"].startswith("fetch_failed: not JSON: ")
    assert counts["quarantined"] == quarantine.num_rows
