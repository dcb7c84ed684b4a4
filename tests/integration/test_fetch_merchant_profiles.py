"""Rate-limited async fetching against a real HTTP server on loopback (the merchant API sandbox,
aiohttp), and the DAG merchant_profiles_daily end to end through `dag.test()`."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from featurelake import fetch
from featurelake.fetch import FetchConfig, fetch_all
from featurelake.merchant_api import LIMITED, PATH_TEMPLATE, SERVED, SandboxServer
from featurelake.merchant_profiles import (
    ApiUnavailableError,
    merchants_of_day,
    sandbox_fails_first,
    sandbox_profile,
)
from featurelake.synthetic import generate_lake
from tests.support import PROJECT_ROOT, client_requests, free_port

pytestmark = pytest.mark.integration

IDS = [f"m{i:05d}" for i in range(80)]
# Ids the sandbox answers with a profile at the first request.
PLAIN = [i for i in IDS if sandbox_profile(i) is not None and not sandbox_fails_first(i)]

# An answer for one id: given the request and its number (from 1) for that id, a response, or None
# to let the sandbox answer.
Answer = Callable[[web.Request, int], Awaitable[web.StreamResponse | None]]


def add_misbehaviour(server: SandboxServer, answers: dict[str, Answer]) -> list[tuple[str, float]]:
    """Put `answers` in front of a sandbox that has not started yet (a middleware). Returns the log
    of every request the sandbox gets, filled as they come: (merchant id, monotonic time)."""
    seen: list[tuple[str, float]] = []

    @web.middleware
    async def misbehave(request: web.Request, handler) -> web.StreamResponse:
        merchant_id = request.match_info.get("merchant_id", "")
        seen.append((merchant_id, time.monotonic()))
        answer = answers.get(merchant_id)
        response = None
        if answer is not None:
            response = await answer(request, sum(1 for seen_id, _ in seen if seen_id == merchant_id))
        return response if response is not None else await handler(request)

    server.app.middlewares.append(misbehave)
    return seen


async def redirect_to_itself(request: web.Request, number: int) -> web.StreamResponse:
    raise web.HTTPFound(request.raw_path)


async def malformed_status_line(request: web.Request, number: int) -> web.StreamResponse:
    """A status line no HTTP parser accepts, then the connection closes. aiohttp's own response
    is never sent: writing it to the closed transport fails, and aiohttp drops it quietly."""
    request.transport.write(b"HTTP/1.1 2x0 Nonsense\r\n\r\n")
    request.transport.close()
    return web.Response()


def most_in_one_second(times: list[float]) -> int:
    return max((sum(1 for t in times if start <= t < start + 1.0) for start in times), default=0)


def test_requests_stay_under_the_rate_and_retries_fetch_everything() -> None:
    # The server's limit is twice the client's: its clock sees requests late and bunched when its
    # thread is starved (at 25 a second, a stall of 0.25 s could draw 429s). The exact check of the rate is
    # on the client's clock, below.
    with SandboxServer(rate=40) as server:
        config = FetchConfig(
            base_url=server.base_url, path_template=PATH_TEMPLATE, rate_per_second=20, max_concurrency=6
        )
        with client_requests() as client:
            result = asyncio.run(fetch_all(config, [*IDS, *IDS[:5]]))  # duplicates are fetched once
        served, limited = server.app[SERVED], server.app[LIMITED]
    unknown = {i for i in IDS if sandbox_profile(i) is None}
    flaky = {i for i in IDS if sandbox_fails_first(i)}
    assert flaky and unknown, "the sample holds both kinds"
    assert set(result.found) == set(IDS) - unknown
    assert result.failed == dict.fromkeys(sorted(unknown), "HTTP 404: not found")
    assert result.api_failed == set(), "a 404 is the id's failure, not the API's"
    assert result.found[IDS[1]] == sandbox_profile(IDS[1])
    assert (result.retries, result.requests) == (len(flaky), len(IDS) + len(flaky))
    assert limited == 0, "the client never went over the server's limit"
    # On the client's clock, where the limiter decides; the server's sees requests late, unevenly.
    assert len(client.sent) == result.requests
    assert served == len(IDS), "each id answered once with a profile or a 404"
    assert most_in_one_second(client.sent) <= 20


def test_a_client_faster_than_the_server_is_slowed_by_429s_and_loses_nothing() -> None:
    with SandboxServer(rate=10) as server:
        config = FetchConfig(
            base_url=server.base_url,
            path_template=PATH_TEMPLATE,
            rate_per_second=40,
            max_concurrency=8,
            max_attempts=8,
        )
        result = asyncio.run(fetch_all(config, IDS[:40]))
        limited = server.app[LIMITED]
    assert limited > 0, "the server refused some requests (429)"
    assert len(result.found) + len(result.failed) == 40
    assert all(why == "HTTP 404: not found" for why in result.failed.values())


def test_an_unreachable_api_fails_every_id_with_the_reason() -> None:
    config = FetchConfig(
        base_url=f"http://127.0.0.1:{free_port()}", rate_per_second=100, max_attempts=2, backoff_seconds=0.01
    )
    result = asyncio.run(fetch_all(config, ["a", "b"]))
    assert result.found == {}
    assert set(result.failed) == {"a", "b"}
    assert all("ClientConnectorError" in why and "after 2 attempts" in why for why in result.failed.values())
    assert result.api_failed == {"a", "b"}


def test_a_silent_api_fails_the_id_after_timeout_seconds() -> None:
    """A positive timeout_seconds bounds every request (0 or less would turn aiohttp's timeout off,
    and FetchConfig refuses it): a server that reads the request and never answers fails the id."""

    async def main() -> tuple[object, float]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1024)
            await asyncio.sleep(3600)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            config = FetchConfig(base_url=f"http://127.0.0.1:{port}", timeout_seconds=0.3, max_attempts=1)
            started = time.monotonic()
            result = await asyncio.wait_for(fetch_all(config, ["a"]), timeout=30)
            return result, time.monotonic() - started
        finally:
            server.close()

    result, took = asyncio.run(main())
    assert result.found == {}
    assert result.failed == {
        "a": "TimeoutError: no answer within 0.3 s after 1 attempts"
    } and result.api_failed == {"a"}
    assert took > 0.25  # it waited for the timeout (no upper bound: a busy machine is slow)
    with pytest.raises(ValueError, match="timeout_seconds must be > 0"):
        FetchConfig(base_url="http://127.0.0.1:1", timeout_seconds=0)


def test_a_redirect_loop_or_a_malformed_response_fails_that_id_alone_without_retry() -> None:
    good = [i for i in IDS[:14] if sandbox_profile(i) is not None]
    server = SandboxServer(rate=200)
    seen = add_misbehaviour(server, {"m-loop": redirect_to_itself, "m-garbage": malformed_status_line})
    with server:
        config = FetchConfig(
            base_url=server.base_url, path_template=PATH_TEMPLATE, rate_per_second=100, backoff_seconds=0.01
        )
        result = asyncio.run(fetch_all(config, [*good[:5], "m-loop", *good[5:9], "m-garbage", *good[9:]]))
    assert any(sandbox_fails_first(i) for i in good), "the good ids include some retried ones"
    assert result.found == {i: sandbox_profile(i) for i in good}
    assert set(result.failed) == {"m-loop", "m-garbage"}
    assert result.failed["m-loop"] == (
        "TooManyRedirects: 10 redirects in a row (a redirect loop?), "
        f"the last from {server.base_url}/merchants/m-loop"
    )
    assert result.failed["m-garbage"].startswith(
        "ClientResponseError: malformed HTTP response: Bad status line: Invalid status code: "
        "b'HTTP/1.1 2x0 Nonsense'"
    )
    requested = [merchant_id for merchant_id, _ in seen]
    assert requested.count("m-loop") == 10, "one GET (aiohttp stops at 10 redirects), not retried"
    assert requested.count("m-garbage") == 1, "not retried"
    assert result.retries == sum(sandbox_fails_first(i) for i in good)


def test_every_redirect_hop_waits_for_the_rate_limit() -> None:
    """Each id's first request is redirected to the same path: twice the requests, and still at most
    `rate_per_second` of them in any second (aiohttp following redirects itself sent the hops
    outside the limiter: about 40 a second at a rate of 20)."""
    ids = PLAIN[:30]

    async def redirect_the_first_request(request: web.Request, number: int) -> web.StreamResponse | None:
        if number > 1:
            return None
        raise web.HTTPFound(request.match_info["merchant_id"])  # relative: /merchants/<id>

    server = SandboxServer(rate=200)
    seen = add_misbehaviour(server, dict.fromkeys(ids, redirect_the_first_request))
    with server:
        config = FetchConfig(
            base_url=server.base_url, path_template=PATH_TEMPLATE, rate_per_second=20, max_concurrency=8
        )
        with client_requests() as client:
            result = asyncio.run(fetch_all(config, ids))
    assert len(client.sent) == len(seen)
    assert most_in_one_second(client.sent) <= 20, "each hop waits for the limiter"
    assert result.found == {i: sandbox_profile(i) for i in ids}
    assert (result.requests, result.retries, len(seen)) == (60, 0, 60), "each hop counts as a request"


def test_redirects_keep_credentials_on_their_origin_and_bad_ones_fail_their_id() -> None:
    """A hop to another origin drops every configured header, Authorization as aiohttp does and an
    API key in another header too (X-Api-Key went to the other host); a same-origin hop keeps them;
    a redirect to a non-HTTP URL or without a Location fails its id alone, without retry."""
    near, away = PLAIN[:2]
    other = SandboxServer(rate=200)
    elsewhere = add_misbehaviour(other, {})
    authorization: list[tuple[int, str, str | None, str | None]] = []

    @web.middleware
    async def record(request: web.Request, handler) -> web.StreamResponse:
        authorization.append(
            (
                request.url.port,
                request.path,
                request.headers.get("Authorization"),
                request.headers.get("X-Api-Key"),
            )
        )
        return await handler(request)

    other.app.middlewares.insert(0, record)

    async def to_the_same_origin(request: web.Request, number: int) -> web.StreamResponse | None:
        if number > 1:
            return None
        raise web.HTTPTemporaryRedirect(f"{request.path}?hop=1")

    async def to_another_origin(request: web.Request, number: int) -> web.StreamResponse | None:
        raise web.HTTPMovedPermanently(f"{other.base_url}/merchants/{away}")

    async def to_ftp(request: web.Request, number: int) -> web.StreamResponse | None:
        raise web.HTTPFound("ftp://127.0.0.1/merchants/m-ftp")

    async def nowhere(request: web.Request, number: int) -> web.StreamResponse | None:
        return web.Response(status=302)

    server = SandboxServer(rate=200)
    server.app.middlewares.insert(0, record)
    seen = add_misbehaviour(
        server, {near: to_the_same_origin, away: to_another_origin, "m-ftp": to_ftp, "m-nowhere": nowhere}
    )
    with other, server:
        config = FetchConfig(
            base_url=server.base_url,
            path_template=PATH_TEMPLATE,
            rate_per_second=100,
            headers=(("Authorization", "Bearer secret"), ("X-Api-Key", "key-1")),
        )
        result = asyncio.run(fetch_all(config, [near, away, "m-ftp", "m-nowhere"]))
    assert result.found == {near: sandbox_profile(near), away: sandbox_profile(away)}
    assert result.failed == {
        "m-ftp": "HTTP 302: a redirect to 'ftp://127.0.0.1/merchants/m-ftp', which is not an http(s) URL",
        "m-nowhere": (
            f"HTTP 302: a redirect without a Location header, from {server.base_url}/merchants/m-nowhere"
        ),
    }
    # a redirect the client cannot follow is the API's doing, not the merchant's
    assert result.api_failed == {"m-ftp", "m-nowhere"} and result.retries == 0
    assert sorted(authorization) == sorted(
        [
            (server.port, f"/merchants/{near}", "Bearer secret", "key-1"),
            (server.port, f"/merchants/{near}", "Bearer secret", "key-1"),  # the hop, same origin
            (server.port, f"/merchants/{away}", "Bearer secret", "key-1"),
            (other.port, f"/merchants/{away}", None, None),  # the hop to another origin
            (server.port, "/merchants/m-ftp", "Bearer secret", "key-1"),
            (server.port, "/merchants/m-nowhere", "Bearer secret", "key-1"),
        ]
    )
    assert [i for i, _ in elsewhere] == [away] and len(seen) == 5


def test_answers_that_hold_no_profile_and_redirects_with_credentials_fail_their_id_alone() -> None:
    """A redirect to a URL with a user name and password made aiohttp raise a ValueError (it will not
    send that and an Authorization header) out of fetch_all: every id of the run was lost, on every
    retry. A 300 or a 202 with a JSON body was taken as the profile, and a redirect to `http:///x`
    (no host) was followed as a path on the same origin. Now each fails its id alone, as the API's."""
    good = PLAIN[:4]
    server = SandboxServer(rate=200)

    async def with_credentials(request: web.Request, number: int) -> web.StreamResponse:
        raise web.HTTPFound(f"http://user:secret@127.0.0.1:{request.url.port}/merchants/{good[0]}")

    async def multiple_choices(request: web.Request, number: int) -> web.StreamResponse:
        return web.json_response({"merchant_id": "m-300"}, status=300)

    async def accepted(request: web.Request, number: int) -> web.StreamResponse:
        return web.json_response({"merchant_id": "m-202"}, status=202)

    async def no_host(request: web.Request, number: int) -> web.StreamResponse:
        raise web.HTTPFound(f"http:///merchants/{good[1]}")

    seen = add_misbehaviour(
        server,
        {"m-creds": with_credentials, "m-300": multiple_choices, "m-202": accepted, "m-no-host": no_host},
    )
    with server:
        config = FetchConfig(
            base_url=server.base_url,
            path_template=PATH_TEMPLATE,
            rate_per_second=100,
            headers=(("Authorization", "Bearer secret"),),
        )
        result = asyncio.run(
            fetch_all(config, [good[0], "m-creds", "m-300", "m-202", "m-no-host", *good[1:]])
        )
    assert result.found == {i: sandbox_profile(i) for i in good}
    assert result.failed == {
        "m-creds": (
            f"HTTP 302: a redirect from {server.base_url}/merchants/m-creds to a URL with a user name or "
            "password in it, which is not followed"
        ),
        "m-300": "HTTP 300: not an answer that holds a profile (200 or 203)",
        "m-202": "HTTP 202: not an answer that holds a profile (200 or 203)",
        "m-no-host": f"HTTP 302: a redirect to 'http:///merchants/{good[1]}', which is not an http(s) URL",
    }
    assert "secret" not in result.failed["m-creds"]
    assert result.api_failed == {"m-creds", "m-300", "m-202", "m-no-host"} and result.retries == 0
    # every id asked once: a followed hop would have asked for good[0] or good[1] again
    assert sorted(i for i, _ in seen) == sorted([*good, "m-creds", "m-300", "m-202", "m-no-host"])


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("ftp://user:secret@127.0.0.1/merchants/x", id="ftp"),
        pytest.param("http://user:secret@/merchants/x", id="no-host"),
        pytest.param("http://user:secret@[::1/merchants/x", id="not-a-url"),
        pytest.param("http://user:secret@127.0.0.1:99999/merchants/x", id="bad-port"),
        pytest.param("//user:secret@127.0.0.1/merchants/x", id="scheme-relative"),
    ],
)
def test_a_redirect_with_credentials_is_never_quoted_whatever_else_is_wrong(location: str) -> None:
    """A redirect to a URL with a password in it fails without quoting it, which the reason for an
    http(s) URL did; one to another scheme, or to no URL at all, was quoted whole, and the reason
    goes into the quarantine partition in the lake."""
    server = SandboxServer(rate=200)

    async def with_credentials(request: web.Request, number: int) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": location})

    add_misbehaviour(server, {"m-creds": with_credentials})
    with server:
        config = FetchConfig(base_url=server.base_url, path_template=PATH_TEMPLATE, rate_per_second=100)
        result = asyncio.run(fetch_all(config, ["m-creds"]))
    assert result.failed == {
        "m-creds": (
            f"HTTP 302: a redirect from {server.base_url}/merchants/m-creds to a URL with a user name or "
            "password in it, which is not followed"
        )
    }
    assert result.api_failed == {"m-creds"} and result.retries == 0


def test_a_retry_after_http_date_pauses_every_request_until_the_date() -> None:
    dated, *others = PLAIN[:4]

    async def unavailable_for_a_second_or_two(request: web.Request, number: int) -> web.StreamResponse | None:
        if number > 1:
            return None
        until = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)  # whole seconds
        return web.json_response({"error": "maintenance"}, status=503, headers={"Retry-After": until})

    server = SandboxServer(rate=200)
    seen = add_misbehaviour(server, {dated: unavailable_for_a_second_or_two})
    with server:
        # 4/s: the others' turns come after the 503 is back, at 0.25 s intervals
        config = FetchConfig(base_url=server.base_url, path_template=PATH_TEMPLATE, rate_per_second=4)
        result = asyncio.run(fetch_all(config, [dated, *others]))
    assert result.found == {i: sandbox_profile(i) for i in [dated, *others]}
    assert (result.requests, result.retries) == (5, 1)
    (first, _), *later = seen
    assert first == dated
    # The date is 1-2 s ahead: no other id went on at the full rate meanwhile.
    assert all(at - seen[0][1] > 0.8 for _, at in later), seen
    # After the pause the limiter spaces the four again (0.25 s apart at 4/s), not all at once.
    assert later[-1][1] - later[0][1] > 0.6, seen


def test_a_503_without_retry_after_backs_off_its_own_id_alone() -> None:
    plain, *others = PLAIN[:3]

    async def unavailable_twice(request: web.Request, number: int) -> web.StreamResponse | None:
        return web.json_response({"error": "try again"}, status=503) if number <= 2 else None

    server = SandboxServer(rate=200)
    seen = add_misbehaviour(server, {plain: unavailable_twice})
    with server:
        config = FetchConfig(
            base_url=server.base_url,
            path_template=PATH_TEMPLATE,
            rate_per_second=100,
            backoff_seconds=0.3,
            max_attempts=4,
        )
        result = asyncio.run(fetch_all(config, [plain, *others]))
    assert result.found == {i: sandbox_profile(i) for i in [plain, *others]}
    assert (result.requests, result.retries) == (5, 2)
    requested = [merchant_id for merchant_id, _ in seen]
    # The others are not held back by plain's backoff (0.3 s, then 0.6 s and more): they come first.
    assert requested[:3] == [plain, *others] and requested[3:] == [plain, plain], requested


def test_a_huge_retry_after_waits_only_max_retry_after_seconds() -> None:
    (slow,) = PLAIN[:1]

    async def come_back_tomorrow(request: web.Request, number: int) -> web.StreamResponse | None:
        if number > 1:
            return None
        return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "86400"})

    server = SandboxServer(rate=200)
    seen = add_misbehaviour(server, {slow: come_back_tomorrow})
    with server:
        config = FetchConfig(
            base_url=server.base_url, path_template=PATH_TEMPLATE, max_retry_after_seconds=0.05
        )
        result = asyncio.run(asyncio.wait_for(fetch_all(config, [slow]), timeout=60))
    assert result.found == {slow: sandbox_profile(slow)}
    assert (result.requests, result.retries, len(seen)) == (2, 1, 2)


def use_sandbox(monkeypatch: pytest.MonkeyPatch, port: int, *, rate_per_second: float = 150) -> None:
    """Point the `merchant_api` connection at a sandbox on `port`."""
    connection = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"path_template": PATH_TEMPLATE, "rate_per_second": rate_per_second, "max_concurrency": 16},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MERCHANT_API", json.dumps(connection))


def partition_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_an_api_outage_fails_the_task_and_keeps_the_last_good_partitions(tmp_path: Path, monkeypatch) -> None:
    """An API that answers 503 to everything: fetch_all fails every merchant without raising, and
    the task used to replace the good profiles with an empty partition (every merchant quarantined).
    Now it raises, names the API and the counts, and both partitions keep their bytes; with
    max_failed_fraction=1 the check is off and the outage is written as before."""
    from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator

    day = date(2026, 8, 21)
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=day, end=day, users=120, seed=5)
    profile_dir = lake / "raw" / "merchant_profiles" / "date=2026-08-21"
    quarantine_dir = lake / "quarantine" / "merchant_profiles" / "date=2026-08-21"
    task = FetchMerchantProfilesOperator(task_id="fetch", lake=str(lake), ds="2026-08-21")

    def use_api(port: int, **extra: object) -> None:
        connection = {"conn_type": "http", "host": "127.0.0.1", "port": port, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_MERCHANT_API", json.dumps(connection))

    with SandboxServer(rate=200) as server:
        use_api(server.port, path_template=PATH_TEMPLATE, rate_per_second=150, max_concurrency=16)
        good = task.execute({})
    assert good["profiles"] > 10
    profiles, quarantine = partition_files(profile_dir), partition_files(quarantine_dir)

    @web.middleware
    async def unavailable(request: web.Request, handler) -> web.StreamResponse:
        return web.json_response({"error": "down for maintenance"}, status=503)

    outage = SandboxServer(rate=200)
    outage.app.middlewares.append(unavailable)
    with outage:
        use_api(outage.port, path_template=PATH_TEMPLATE, rate_per_second=200, max_attempts=2)
        with pytest.raises(ApiUnavailableError) as caught:
            task.execute({})
        message = str(caught.value)
        assert message.startswith(
            f"the merchant API {outage.base_url} (connection 'merchant_api') failed "
            f"{good['merchants']} of {good['merchants']} merchants for reasons of its own, more than "
            "max_failed_fraction=0.5 allows (for example "
        )
        assert "HTTP 503 after 2 attempts" in message
        assert "The profile and quarantine partitions of 2026-08-21 were left as they were" in message
        assert partition_files(profile_dir) == profiles and partition_files(quarantine_dir) == quarantine

        use_api(
            outage.port,
            path_template=PATH_TEMPLATE,
            rate_per_second=200,
            max_attempts=1,
            max_failed_fraction=1,
        )
        written = task.execute({})
    assert (written["profiles"], written["quarantined_by_reason"]) == (0, {"fetch_failed": good["merchants"]})
    assert list(profile_dir.iterdir()) == []


def test_a_path_that_names_no_merchant_fails_the_task_and_keeps_the_partitions(
    tmp_path: Path, monkeypatch
) -> None:
    """A path_template with a typo: the API answers 404 for every merchant, each the merchant's own
    failure, so the outage check passed and an empty profiles partition replaced the good one."""
    from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator

    day = date(2026, 8, 21)
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=day, end=day, users=120, seed=5)
    profile_dir = lake / "raw" / "merchant_profiles" / "date=2026-08-21"
    task = FetchMerchantProfilesOperator(task_id="fetch", lake=str(lake), ds="2026-08-21")

    def use_api(port: int, path_template: str, **extra: object) -> None:
        extra = {"path_template": path_template, "rate_per_second": 200, **extra}
        connection = {"conn_type": "http", "host": "127.0.0.1", "port": port, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_MERCHANT_API", json.dumps(connection))

    with SandboxServer(rate=400) as server:
        use_api(server.port, PATH_TEMPLATE)
        good = task.execute({})
        profiles = partition_files(profile_dir)
        use_api(server.port, "/merchant/{id}")  # "merchants" misspelt
        with pytest.raises(
            ApiUnavailableError,
            match=rf"answered 404 \(not found\) for every one of the {good['merchants']} merchants of "
            r"2026-08-21: its URL names no merchant. Check the connection's path_template",
        ):
            task.execute({})
        assert partition_files(profile_dir) == profiles
        use_api(server.port, "/merchant/{id}", max_failed_fraction=1)  # the documented switch
        assert task.execute({})["profiles"] == 0


def test_a_client_error_for_every_merchant_fails_the_task_and_keeps_the_partitions(
    tmp_path: Path, monkeypatch
) -> None:
    """An API that requires a header the connection lost answers 400 for every merchant, each the
    merchant's own failure: the outage check passed, and an empty profiles partition replaced the
    good one, every merchant quarantined, in a task that succeeded."""
    from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator

    day = date(2026, 8, 21)
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=day, end=day, users=120, seed=5)
    profile_dir = lake / "raw" / "merchant_profiles" / "date=2026-08-21"
    quarantine_dir = lake / "quarantine" / "merchant_profiles" / "date=2026-08-21"
    task = FetchMerchantProfilesOperator(task_id="fetch", lake=str(lake), ds="2026-08-21")
    server = SandboxServer(rate=400)

    @web.middleware
    async def needs_a_version(request: web.Request, handler) -> web.StreamResponse:
        if request.headers.get("X-Api-Version") != "2":
            return web.json_response({"error": "the header X-Api-Version is required"}, status=400)
        return await handler(request)

    server.app.middlewares.append(needs_a_version)

    def use_api(**extra: object) -> None:
        extra = {"path_template": PATH_TEMPLATE, "rate_per_second": 200, **extra}
        connection = {"conn_type": "http", "host": "127.0.0.1", "port": server.port, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_MERCHANT_API", json.dumps(connection))

    with server:
        use_api(headers={"X-Api-Version": "2"})
        good = task.execute({})
        assert good["profiles"] > 0, good
        profiles, quarantine = partition_files(profile_dir), partition_files(quarantine_dir)
        use_api()  # the header lost from the connection
        with pytest.raises(
            ApiUnavailableError,
            match=rf"answered a client error \(HTTP 400\) for every one of the {good['merchants']} "
            r"merchants of 2026-08-21: it refuses the request whatever the merchant \(for example m\d+: "
            r'HTTP 400: \{"error": "the header X-Api-Version is required"\}\). Check the connection\'s '
            r"path_template, base URL and headers",
        ):
            task.execute({})
        assert (partition_files(profile_dir), partition_files(quarantine_dir)) == (profiles, quarantine)
        use_api(max_failed_fraction=1)  # the documented switch
        assert task.execute({})["quarantined_by_reason"] == {"fetch_failed": good["merchants"]}


def test_a_try_with_retries_left_writes_nothing_when_the_api_failed_some_merchants(
    tmp_path: Path, monkeypatch
) -> None:
    """A partial outage, within max_failed_fraction: the first try wrote the smaller partition,
    dropping those merchants' good profiles, and succeeded, so no retry fetched them again. Now a
    try with retries left raises and writes nothing; the last try writes what it has."""
    from types import SimpleNamespace

    from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator

    day = date(2026, 8, 21)
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=day, end=day, users=120, seed=5)
    profile_dir = lake / "raw" / "merchant_profiles" / "date=2026-08-21"
    task = FetchMerchantProfilesOperator(task_id="fetch", lake=str(lake), ds="2026-08-21")
    server = SandboxServer(rate=400)
    down_for = {"m00000", "m00001"}  # merchants of every generated day

    @web.middleware
    async def partly_down(request: web.Request, handler) -> web.StreamResponse:
        if request.match_info.get("merchant_id") in down_for:
            return web.json_response({"error": "shard down"}, status=503)
        return await handler(request)

    server.app.middlewares.append(partly_down)
    with server:
        # two attempts: the sandbox fails a few merchants once (sandbox_fails_first), the API shard for good
        extra = {
            "path_template": PATH_TEMPLATE,
            "rate_per_second": 200,
            "max_attempts": 2,
            "backoff_seconds": 0.05,
        }
        connection = {"conn_type": "http", "host": "127.0.0.1", "port": server.port, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_MERCHANT_API", json.dumps(connection))
        first_try = {"ti": SimpleNamespace(try_number=1, max_tries=2)}
        with pytest.raises(
            RuntimeError, match=r"2 of \d+ merchants failed because of the merchant API .*try 1 of 3"
        ):
            task.execute(first_try)
        assert not profile_dir.exists(), "a try with retries left wrote the partition"
        last_try = task.execute({"ti": SimpleNamespace(try_number=3, max_tries=2)})
    assert last_try["api_failed"] == 2 and last_try["profiles"] > 0, last_try


def test_an_api_that_sends_its_errors_with_http_200_fails_the_task(tmp_path: Path, monkeypatch) -> None:
    """An API over quota that answers `200 {"error": ...}` for every merchant: nothing failed to
    fetch, and the task used to quarantine every merchant as wrong_merchant_id and replace the good
    profiles with an empty partition. Now it raises before writing, naming what the API answered."""
    from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator

    day = date(2026, 8, 21)
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=day, end=day, users=120, seed=5)
    profile_dir = lake / "raw" / "merchant_profiles" / "date=2026-08-21"
    task = FetchMerchantProfilesOperator(task_id="fetch", lake=str(lake), ds="2026-08-21")

    def use_api(port: int) -> None:
        use_sandbox(monkeypatch, port, rate_per_second=200)

    with SandboxServer(rate=200) as server:
        use_api(server.port)
        good = task.execute({})
    profiles = partition_files(profile_dir)

    @web.middleware
    async def over_quota(request: web.Request, handler) -> web.StreamResponse:
        return web.json_response({"error": "quota exceeded"}, status=200)

    api = SandboxServer(rate=200)
    api.app.middlewares.append(over_quota)
    with api, pytest.raises(ApiUnavailableError) as caught:
        use_api(api.port)
        task.execute({})
    message = str(caught.value)
    assert f"failed {good['merchants']} of {good['merchants']} merchants for reasons of its own" in message
    assert (
        "such as an error sent with HTTP 200" in message and 'answered {"error": "quota exceeded"}' in message
    )
    assert partition_files(profile_dir) == profiles


def test_the_dag_writes_profiles_and_quarantine_and_a_rerun_gives_the_same_files(
    tmp_path: Path, monkeypatch, airflow_db
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    day = date(2026, 8, 20)
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=day, end=day, users=300, seed=3)
    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).get_dag("merchant_profiles_daily")
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(lake))
    with SandboxServer(rate=200) as server:
        use_sandbox(monkeypatch, server.port)
        files = []
        for _ in range(2):
            run = dag.test(logical_date=datetime(2026, 8, 20, tzinfo=UTC))
            states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
            assert str(run.state) == "success", states
            report = next(
                ti for ti in run.get_task_instances() if ti.task_id == "fetch_merchant_profiles"
            ).xcom_pull(task_ids="fetch_merchant_profiles")
            profile_dir = lake / "raw" / "merchant_profiles" / "date=2026-08-20"
            quarantine_dir = lake / "quarantine" / "merchant_profiles" / "date=2026-08-20"
            files.append(
                (
                    sorted(p.name for p in profile_dir.iterdir()),
                    (profile_dir / "part-00000.parquet").read_bytes(),
                )
            )
    merchants = sorted(
        set(
            pq.read_table(lake / "raw" / "transactions" / "date=2026-08-20", columns=["merchant_id"])[
                "merchant_id"
            ].to_pylist()
        )
        - {None, ""}
    )
    profiles = pq.read_table(profile_dir)
    quarantine = pq.read_table(quarantine_dir)
    assert report["merchants"] == len(merchants) > 20
    assert report["profiles"] + report["quarantined"] == len(merchants), (
        "every merchant is a profile or quarantined"
    )
    assert profiles.num_rows == report["profiles"] and quarantine.num_rows == report["quarantined"]
    assert set(report["quarantined_by_reason"]) <= {"fetch_failed", "bad_risk_score"}
    assert report["quarantined_by_reason"].get("fetch_failed") == sum(
        sandbox_profile(m) is None for m in merchants
    )
    assert files[0] == files[1], "the rerun replaced the partition with the same bytes"


async def server_error_501(request: web.Request, number: int) -> web.StreamResponse:
    return web.Response(status=501, text="not implemented")


async def cdn_origin_down_521(request: web.Request, number: int) -> web.StreamResponse:
    return web.Response(status=521, text="<html>Web server is down</html>", content_type="text/html")


async def maintenance_page(request: web.Request, number: int) -> web.StreamResponse:
    return web.Response(status=200, text="<html>Down for maintenance</html>", content_type="text/html")


async def to_a_login_page(request: web.Request, number: int) -> web.StreamResponse:
    if request.path.startswith("/login"):
        return web.Response(status=200, text="<html>Sign in</html>", content_type="text/html")
    raise web.HTTPFound("/login?next=" + request.path)


@pytest.mark.parametrize(
    "outage",
    [server_error_501, cdn_origin_down_521, maintenance_page, to_a_login_page],
    ids=lambda f: f.__name__,
)
def test_every_way_an_api_is_down_counts_as_the_apis_failure(outage: Answer) -> None:
    """An outage rarely answers 503 alone: other 5xx, a maintenance page or a login page all say
    nothing about the merchant, so they count in api_failed (and trip max_failed_fraction), while a
    404 stays the merchant's own."""
    ids = IDS[:6]
    server = SandboxServer(rate=200)

    @web.middleware
    async def down(request: web.Request, handler) -> web.StreamResponse:
        if request.match_info.get("merchant_id") == "m-missing":
            raise web.HTTPNotFound()
        return await outage(request, 1)

    server.app.middlewares.append(down)
    with server:
        config = FetchConfig(
            base_url=server.base_url, path_template=PATH_TEMPLATE, rate_per_second=200, max_attempts=1
        )
        result = asyncio.run(fetch_all(config, [*ids, "m-missing"]))
    assert result.found == {}
    assert result.api_failed == set(ids), result.failed
    assert result.failed["m-missing"] == "HTTP 404: not found"


async def json_in_base64_charset(request: web.Request, number: int) -> web.StreamResponse:
    return web.Response(body=b'{"a": 1}', headers={"Content-Type": "application/json; charset=base64"})


async def bad_request_in_rot13_charset(request: web.Request, number: int) -> web.StreamResponse:
    return web.Response(
        status=400, body=b"no such field", headers={"Content-Type": "text/plain; charset=rot13"}
    )


async def json_nested_too_deep(request: web.Request, number: int) -> web.StreamResponse:
    return web.Response(body=b"[" * 100_000, content_type="application/json")


async def json_empty(request: web.Request, number: int) -> web.StreamResponse:
    return web.Response(status=200, body=b" \n", content_type="application/json")


def test_a_body_no_decoder_can_read_fails_that_id_alone() -> None:
    """A charset that names no text encoding, or JSON nested deeper than Python recurses, used to
    raise LookupError or RecursionError out of fetch_all and lose every id. An empty 200 body used
    to count as the merchant's own payload, null, instead of the API's failure."""
    good = PLAIN[:3]
    server = SandboxServer(rate=200)
    answers = {
        "m-base64": json_in_base64_charset,
        "m-rot13": bad_request_in_rot13_charset,
        "m-deep": json_nested_too_deep,
        "m-empty": json_empty,
    }
    add_misbehaviour(server, answers)
    with server:
        config = FetchConfig(base_url=server.base_url, path_template=PATH_TEMPLATE, rate_per_second=100)
        result = asyncio.run(fetch_all(config, [*good, *answers]))
    assert result.found == {i: sandbox_profile(i) for i in good}
    assert result.failed["m-base64"].startswith("not JSON: 'base64' is not a text encoding")
    assert result.failed["m-deep"].startswith("not JSON: maximum recursion depth exceeded")
    assert result.failed["m-rot13"] == "HTTP 400: no such field"
    assert result.failed["m-empty"] == "not JSON: an empty body"
    assert result.api_failed == {"m-base64", "m-deep", "m-empty"}, "a 400 stays the id's own"


@pytest.mark.parametrize("bad", [None, 1017, ""], ids=["none", "int", "empty"])
def test_an_id_that_is_not_a_non_empty_string_is_refused_before_any_request(bad: object) -> None:
    server = SandboxServer(rate=200)
    seen = add_misbehaviour(server, {})

    async def main() -> list[asyncio.Task]:
        config = FetchConfig(base_url=server.base_url, path_template=PATH_TEMPLATE, rate_per_second=100)
        with pytest.raises(ValueError, match=r"ids must be non-empty strings; 1 are not, for example"):
            await fetch_all(config, [*PLAIN[:3], bad])
        await asyncio.sleep(0.2)
        return [t for t in asyncio.all_tasks() if "fetch_one" in repr(t.get_coro())]

    with server:
        left = asyncio.run(main())
    assert left == [], "no fetch left running against the closed session"
    assert seen == []


def test_backoff_never_waits_more_than_max_backoff_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The n-th backoff was backoff_seconds * 2**(n-1) with no upper bound: at max_attempts=12
    and backoff_seconds=0.01 the last wait was 10-15 s (at the default 0.2 s, 3-5 minutes, and at
    max_attempts=20 a day). Each wait is now at most max_backoff_seconds. The waits are read from
    the sleeps asked for, not from the clock, which a busy machine stretches."""
    (flaky,) = PLAIN[:1]
    backoffs: list[float] = []
    sleeps: list[float] = []
    compute, sleep = fetch.backoff_seconds, asyncio.sleep

    def recorded_backoff(*args, **kwargs) -> float:
        backoffs.append(compute(*args, **kwargs))
        return backoffs[-1]

    async def recorded_sleep(delay: float, *args, **kwargs):
        sleeps.append(delay)
        return await sleep(delay, *args, **kwargs)

    monkeypatch.setattr(fetch, "backoff_seconds", recorded_backoff)
    monkeypatch.setattr(asyncio, "sleep", recorded_sleep)

    async def unavailable_eleven_times(request: web.Request, number: int) -> web.StreamResponse | None:
        return web.json_response({"error": "try again"}, status=503) if number <= 11 else None

    server = SandboxServer(rate=200)
    seen = add_misbehaviour(server, {flaky: unavailable_eleven_times})
    with server:
        config = FetchConfig(
            base_url=server.base_url,
            path_template=PATH_TEMPLATE,
            rate_per_second=100,
            max_attempts=12,
            backoff_seconds=0.01,
            max_backoff_seconds=0.05,
        )
        result = asyncio.run(asyncio.wait_for(fetch_all(config, [flaky]), timeout=30))
    assert result.found == {flaky: sandbox_profile(flaky)}
    assert (result.requests, result.retries) == (12, 11)
    assert len(seen) == 12
    # The uncapped waits from the 8th retry on were 1.28, 2.56, 5.12 and 10.24 s.
    assert len(backoffs) == 11 and max(backoffs) == 0.05 and min(backoffs) >= 0.01, backoffs
    assert all(backoff in sleeps for backoff in backoffs) and max(sleeps) <= 0.05, sleeps


async def to_a_host_no_resolver_accepts(request: web.Request, number: int) -> web.StreamResponse:
    label = request.match_info["merchant_id"].removeprefix("m-bad-host-")
    host = {"empty-label": "a..b", "long-label": "a" * 64 + ".example", "bad-punycode": "xn--zz"}[label]
    raise web.HTTPFound(f"http://{host}/merchants/x")


def test_a_redirect_to_a_host_no_resolver_accepts_fails_that_id_alone() -> None:
    """yarl accepts a host such as "a..b", a label of 64 letters or "xn--zz" (no punycode), and
    then its `host` or getaddrinfo raised UnicodeError (the IDNA codec) out of fetch_all: every id
    of the run was lost for one merchant's bad redirect. Now that id fails alone, as the API's."""
    good = PLAIN[:4]
    bad = ["m-bad-host-empty-label", "m-bad-host-long-label", "m-bad-host-bad-punycode"]
    server = SandboxServer(rate=200)
    add_misbehaviour(server, dict.fromkeys(bad, to_a_host_no_resolver_accepts))
    with server:
        config = FetchConfig(base_url=server.base_url, path_template=PATH_TEMPLATE, rate_per_second=100)
        result = asyncio.run(fetch_all(config, [good[0], *bad, *good[1:]]))
    assert result.found == {i: sandbox_profile(i) for i in good}
    assert result.failed == {
        "m-bad-host-empty-label": (
            "HTTP 302: a redirect to 'http://a..b/merchants/x', whose host is not a valid host name"
        ),
        "m-bad-host-long-label": (
            f"HTTP 302: a redirect to 'http://{'a' * 64}.example/merchants/x', "
            "whose host is not a valid host name"
        ),
        "m-bad-host-bad-punycode": (
            "HTTP 302: a redirect to 'http://xn--zz/merchants/x', whose host is not a valid host name"
        ),
    }
    assert result.api_failed == set(bad) and result.retries == 0
    with pytest.raises(
        ValueError, match=r"base_url names a host no resolver accepts .*, got 'http://a\.\.b'"
    ):
        FetchConfig(base_url="http://a..b")


@pytest.mark.parametrize("form", ["binary-merchant-id", "upper-case-name", "dictionary", "many-row-groups"])
def test_the_task_reads_the_merchants_of_any_partition_the_contract_accepts(
    tmp_path: Path, monkeypatch, form: str
) -> None:
    """The task read `merchant_id` as plain Parquet: a partition the data contract accepts, and
    the Spark and Dask jobs read, failed it on every try (binary ids were not text; `Merchant_ID`
    was no column)."""
    from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator

    day = date(2026, 8, 21)
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=day, end=day, users=120, seed=5)
    partition = lake / "raw" / "transactions" / f"date={day.isoformat()}"
    (path,) = partition.glob("*.parquet")
    table = pq.read_table(path)
    merchants = sorted({m for m in table["merchant_id"].to_pylist() if m})
    column = table.schema.get_field_index("merchant_id")
    if form == "binary-merchant-id":
        table = table.set_column(column, "merchant_id", table["merchant_id"].cast(pa.binary()))
    elif form == "upper-case-name":
        table = table.rename_columns(["Merchant_ID" if n == "merchant_id" else n for n in table.column_names])
    elif form == "dictionary":
        table = table.set_column(column, "merchant_id", table["merchant_id"].dictionary_encode())
    if form == "many-row-groups":  # read a piece of one row group at a time, every piece counted
        import featurelake.raw_contract_arrow

        monkeypatch.setattr(featurelake.raw_contract_arrow, "PIECE_BYTES", 1)
        pq.write_table(table, path, row_group_size=7)
        assert pq.ParquetFile(path).num_row_groups > 3
    else:
        pq.write_table(table, path)

    task = FetchMerchantProfilesOperator(task_id="fetch", lake=str(lake), ds=day.isoformat())
    with SandboxServer(rate=200) as server:
        use_sandbox(monkeypatch, server.port, rate_per_second=200)
        result = task.execute({})
    assert result["merchants"] == len(merchants) > 10
    written = pq.read_table(lake / "raw" / "merchant_profiles" / f"date={day.isoformat()}")
    quarantined = pq.read_table(lake / "quarantine" / "merchant_profiles" / f"date={day.isoformat()}")
    assert sorted(written["merchant_id"].to_pylist() + quarantined["merchant_id"].to_pylist()) == merchants


def test_the_task_names_a_partition_that_breaks_the_contract(tmp_path: Path, monkeypatch) -> None:
    from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator

    day = date(2026, 8, 21)
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=day, end=day, users=20, seed=5)
    stray = lake / "raw" / "transactions" / f"date={day.isoformat()}" / "part-1.parquet"
    stray.write_bytes(b"not parquet")
    task = FetchMerchantProfilesOperator(task_id="fetch", lake=str(lake), ds=day.isoformat())
    with pytest.raises(ValueError, match=rf"{re.escape(str(stray))}: it cannot be read as Parquet"):
        task.execute({})
    assert not (lake / "raw" / "merchant_profiles").exists()

    # Binary ids pass the footer check. One that is not UTF-8 (data contract rule 7) is left out,
    # as the feature job quarantines its row; before, it failed the task on every try.
    stray.unlink()
    (path,) = stray.parent.glob("*.parquet")
    table = pq.read_table(path)
    ids = table["merchant_id"].cast(pa.binary()).to_pylist()
    ids[0] = b"m\xff"
    pq.write_table(
        table.set_column(table.schema.get_field_index("merchant_id"), "merchant_id", pa.array(ids)), path
    )
    want = sorted({i.decode() for i in ids[1:] if i})
    assert merchants_of_day(str(lake / "raw" / "transactions"), day) == want


def test_an_answer_larger_than_max_body_bytes_fails_its_id_unread_past_the_limit() -> None:
    """Each request read its whole answer (and an error page whole, to keep 200 characters): a
    proxy streaming a dump could take the worker's memory. Now an answer is read up to
    `max_body_bytes`, by its Content-Length or as it arrives, and an error page's first bytes only."""
    sent: dict[str, int] = {}

    async def main():
        async def answer(request: web.Request) -> web.StreamResponse:
            merchant = request.match_info["merchant_id"]
            if merchant == "small":
                return web.json_response({"merchant_id": merchant})
            if merchant == "declared":
                return web.Response(body=b'"' + b"x" * 5000 + b'"', content_type="application/json")
            if merchant == "declared-at-limit":  # max_body_bytes itself is within the limit
                return web.Response(body=b'"' + b"x" * 4094 + b'"', content_type="application/json")
            if merchant == "streamed-at-limit":
                response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
                response.enable_chunked_encoding()
                await response.prepare(request)
                await response.write(b'"' + b"x" * 2047)
                await response.write(b"x" * 2047 + b'"')
                await response.write_eof()
                return response
            response = web.StreamResponse(status=200 if merchant == "streamed" else 521)
            response.enable_chunked_encoding()
            await response.prepare(request)
            sent[merchant] = 0
            try:
                for _ in range(200):  # 200 MiB, unless the client leaves
                    await response.write(b"x" * 2**20)
                    sent[merchant] += 2**20
                await response.write_eof()
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            return response

        app = web.Application()
        app.router.add_get("/m/{merchant_id}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            config = FetchConfig(
                base_url=f"http://127.0.0.1:{port}",
                path_template="/m/{id}",
                max_attempts=1,
                max_body_bytes=4096,
            )
            ids = ["small", "declared-at-limit", "streamed-at-limit", "declared", "streamed", "error"]
            return await asyncio.wait_for(fetch_all(config, ids), 30)
        finally:
            await runner.cleanup()

    result = asyncio.run(main())
    assert result.found == {
        "small": {"merchant_id": "small"},
        "declared-at-limit": "x" * 4094,
        "streamed-at-limit": "x" * 4094,
    }
    assert result.failed["declared"] == "an answer of 5002 bytes, more than max_body_bytes (4096)"
    assert result.failed["streamed"] == "an answer of more than max_body_bytes (4096) bytes"
    assert result.failed["error"] == "HTTP 521: " + "x" * 200
    assert result.api_failed == {"declared", "streamed", "error"}
    # the server got no further than the sockets' buffers let it: far from the 200 MiB it had to send
    assert sent["streamed"] < 50 * 2**20 and sent["error"] < 50 * 2**20, sent
    with pytest.raises(ValueError, match="max_body_bytes"):
        FetchConfig(base_url="http://127.0.0.1:1", max_body_bytes=0)


def test_an_error_page_that_echoes_the_key_keeps_it_out_of_the_failure_reason() -> None:
    """A 401 or 403 page that quotes the key it refused put the key in the failure reason, which the
    fetch task writes to the lake's quarantine, where no log masking reaches."""
    refused, forbidden = PLAIN[:2]
    server = SandboxServer(rate=200)

    async def echoes_the_key(request: web.Request, number: int) -> web.StreamResponse:
        key = request.headers.get("X-Api-Key")
        return web.json_response({"error": f"invalid key {key}"}, status=401)

    async def echoes_the_token(request: web.Request, number: int) -> web.StreamResponse:
        return web.Response(text=f"forbidden: {request.headers['Authorization']}", status=403)

    add_misbehaviour(server, {refused: echoes_the_key, forbidden: echoes_the_token})
    with server:
        config = FetchConfig(
            base_url=server.base_url,
            path_template=PATH_TEMPLATE,
            rate_per_second=100,
            headers=(("Authorization", "Bearer tok-0123456789"), ("X-Api-Key", "api-key-0123456789")),
        )
        result = asyncio.run(fetch_all(config, [refused, forbidden]))
    assert result.failed == {
        refused: 'HTTP 401: {"error": "invalid key ***"}',
        forbidden: "HTTP 403: forbidden: ***",
    }


def test_refused_credentials_are_the_apis_failure_and_other_4xx_the_ids_own() -> None:
    """A 401, 403 or 407 (a proxy refusing our credentials) says nothing about the merchant: it
    counts in api_failed, so that max_failed_fraction stops the task rather than quarantine every
    merchant as its own failure. Another 4xx is the id's own. None of them is retried."""
    statuses = {401: True, 403: True, 407: True, 400: False, 405: False, 410: False, 422: False}
    ids = dict(zip(PLAIN, statuses, strict=False))
    assert len(ids) == len(statuses)
    server = SandboxServer(rate=200)

    def refuse_with(status: int) -> Answer:
        async def refuse(request: web.Request, number: int) -> web.StreamResponse:
            return web.Response(status=status, text="refused")

        return refuse

    seen = add_misbehaviour(server, {merchant: refuse_with(status) for merchant, status in ids.items()})
    with server:
        config = FetchConfig(base_url=server.base_url, path_template=PATH_TEMPLATE, rate_per_second=100)
        result = asyncio.run(fetch_all(config, list(ids)))
    assert result.failed == {merchant: f"HTTP {status}: refused" for merchant, status in ids.items()}
    assert result.api_failed == {merchant for merchant, status in ids.items() if statuses[status]}
    assert (result.requests, result.retries, len(seen)) == (len(ids), 0, len(ids))
