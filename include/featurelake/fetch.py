"""Rate-limited async HTTP fetching: many JSON resources from one API, at most `rate_per_second`
requests per second and `max_concurrency` in flight, with retries, and every failure reported.

The rate limit is aiolimiter's leaky bucket with a capacity of one request (`AsyncLimiter(1,
1 / rate)`): `AsyncLimiter(rate, 1)` lets a whole second's worth through at once, so a 1-second
window can see twice the rate. A semaphore alone limits concurrency, not requests per second.
Retries (429, 5xx, timeouts and connection errors) back off exponentially and honour `Retry-After`
(delay-seconds or an HTTP-date, at most `max_retry_after_seconds`); a retry waits for the limiter
again, so retries count against the rate too. Any other aiohttp error (a redirect loop, a malformed
response, a redirect to a non-HTTP URL) fails its id at once, with the reason; it never fails the
other ids.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from aiolimiter import AsyncLimiter

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Errors another attempt may not see: a timeout, a refused or lost connection, a body cut short...
TRANSIENT_ERRORS = (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
# ...except the connection errors that waiting does not fix: the server's certificate or fingerprint.
PERMANENT_CONNECTION_ERRORS = (aiohttp.ClientConnectorCertificateError, aiohttp.ServerFingerprintMismatch)


@dataclass(frozen=True)
class FetchConfig:
    """How to call the API: `base_url` + `path_template.format(id=<quoted id>)`."""

    base_url: str
    path_template: str = "/{id}"
    rate_per_second: float = 20.0
    max_concurrency: int = 8
    max_attempts: int = 4
    timeout_seconds: float = 10.0
    backoff_seconds: float = 0.2
    max_retry_after_seconds: float = 60.0
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if "{id}" not in self.path_template:
            raise ValueError(f"path_template must hold {{id}}, got {self.path_template!r}")
        if self.rate_per_second <= 0 or self.max_concurrency < 1 or self.max_attempts < 1:
            raise ValueError(
                "rate_per_second must be > 0, max_concurrency and max_attempts >= 1; got "
                f"{self.rate_per_second}, {self.max_concurrency}, {self.max_attempts}"
            )
        if not self.max_retry_after_seconds >= 0:
            raise ValueError(f"max_retry_after_seconds must be >= 0, got {self.max_retry_after_seconds}")

    def url(self, resource_id: str) -> str:
        return self.base_url.rstrip("/") + self.path_template.format(id=quote(resource_id, safe=""))


@dataclass
class FetchResult:
    """The JSON of every id fetched, and why each other id failed (after its last attempt)."""

    found: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0


class _Retry(Exception):
    """A failed attempt worth retrying, and how long the server asked us to wait (None: back off)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


class _Failed(Exception):
    """A failed attempt that another attempt would not fix; the message is the id's reason."""


def retry_after_seconds(value: str | None, *, cap: float, now: datetime | None = None) -> float | None:
    """The seconds a `Retry-After` header value asks to wait, at most `cap`: either delay-seconds
    (`"120"`) or an HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, measured from `now`, by default the
    current UTC time; a date in the past is 0). None when there is no value or it is neither form, so
    the caller backs off as if there were none."""
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"[0-9]+", text):
        asked = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            log.warning("ignoring a Retry-After that is neither seconds nor an HTTP-date: %r", value)
            return None
        if when.tzinfo is None:  # "-0000": UTC, with no claim about the local zone (RFC 5322)
            when = when.replace(tzinfo=UTC)
        asked = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    if asked > cap:
        log.warning("Retry-After %r asks for %.0f s; waiting the cap of %.1f s", value, asked, cap)
        return cap
    return asked


def _transient(error: BaseException) -> bool:
    """Whether a failed request is worth another attempt."""
    return isinstance(error, TRANSIENT_ERRORS) and not isinstance(error, PERMANENT_CONNECTION_ERRORS)


def _describe(error: BaseException) -> str:
    """Why an aiohttp error failed an id, on one line."""
    if isinstance(error, aiohttp.TooManyRedirects):
        return (
            f"TooManyRedirects: {len(error.history)} redirects in a row (a redirect loop?), "
            f"the last from {error.request_info.real_url}"
        )
    if isinstance(error, aiohttp.ClientResponseError) and error.message:
        return f"{type(error).__name__}: malformed HTTP response: {' '.join(error.message.split())}"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


async def fetch_all(config: FetchConfig, ids: Iterable[str]) -> FetchResult:
    """GET every id once (duplicates are fetched once). A 429 or 5xx, a timeout or a lost connection
    is retried; a 404 (the id does not exist), another 4xx, a body that is not JSON, and any other
    aiohttp error (a redirect loop, a malformed response) fail the id without retry. Never raises
    for one id; the result names each id that failed, and why."""
    unique = list(dict.fromkeys(ids))
    result = FetchResult()
    limiter = AsyncLimiter(1, 1 / config.rate_per_second)
    in_flight = asyncio.Semaphore(config.max_concurrency)
    timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)

    async with aiohttp.ClientSession(timeout=timeout, headers=dict(config.headers)) as session:

        async def attempt(resource_id: str) -> Any:
            async with in_flight:
                await limiter.acquire()
                result.requests += 1
                try:
                    async with session.get(config.url(resource_id)) as response:
                        if response.status in RETRY_STATUSES:
                            wait = retry_after_seconds(
                                response.headers.get("Retry-After"), cap=config.max_retry_after_seconds
                            )
                            raise _Retry(f"HTTP {response.status}", wait)
                        if response.status == 404:
                            raise _Failed("HTTP 404: not found")
                        if response.status >= 400:
                            body = await response.text(errors="replace")
                            raise _Failed(f"HTTP {response.status}: {body[:200]}")
                        try:
                            return await response.json(content_type=None)
                        except ValueError as error:  # not JSON, or not UTF-8
                            raise _Failed(f"not JSON: {error}") from error
                except (TimeoutError, aiohttp.ClientError) as error:
                    if _transient(error):
                        raise _Retry(f"{type(error).__name__}: {error}") from error
                    reason = _describe(error)
                    log.warning("GET %s failed without retry: %s", config.url(resource_id), reason)
                    raise _Failed(reason) from error

        async def fetch_one(resource_id: str) -> None:
            for number in range(1, config.max_attempts + 1):
                try:
                    result.found[resource_id] = await attempt(resource_id)
                    return
                except _Retry as retry:
                    if number == config.max_attempts:
                        result.failed[resource_id] = f"{retry} after {number} attempts"
                        return
                    result.retries += 1
                    backoff = config.backoff_seconds * 2 ** (number - 1) * (1 + random.random() / 2)
                    await asyncio.sleep(retry.wait if retry.wait is not None else backoff)
                except _Failed as failure:
                    result.failed[resource_id] = str(failure)
                    return

        await asyncio.gather(*(fetch_one(resource_id) for resource_id in unique))
    log.info(
        "fetched %d of %d ids from %s in %d requests (%d retries, %d failed)",
        len(result.found),
        len(unique),
        config.base_url,
        result.requests,
        result.retries,
        len(result.failed),
    )
    return result
