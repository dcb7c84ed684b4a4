"""Rate-limited async HTTP fetching: many JSON resources from one API, at most `rate_per_second`
requests per second and `max_concurrency` in flight, with retries, and every failure reported.

The rate limit is aiolimiter's leaky bucket with a capacity of one request (`AsyncLimiter(1,
1 / rate)`): `AsyncLimiter(rate, 1)` lets a whole second's worth through at once, so a 1-second
window can see twice the rate. A semaphore alone limits concurrency, not requests per second.
Retries (429, 5xx, timeouts and connection errors) back off exponentially and honour `Retry-After`;
a retry waits for the limiter again, so retries count against the rate too.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from aiolimiter import AsyncLimiter

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


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
    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


async def fetch_all(config: FetchConfig, ids: Iterable[str]) -> FetchResult:
    """GET every id once (duplicates are fetched once). A 404 is a failure without retry: the id
    does not exist. Never raises for one id; the result names each id that failed, and why."""
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
                            retry_after = response.headers.get("Retry-After")
                            wait = float(retry_after) if retry_after and retry_after.isdigit() else None
                            raise _Retry(f"HTTP {response.status}", wait)
                        if response.status == 404:
                            raise LookupError("HTTP 404: not found")
                        if response.status >= 400:
                            raise ValueError(f"HTTP {response.status}: {(await response.text())[:200]}")
                        return await response.json(content_type=None)
                except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
                    raise _Retry(f"{type(error).__name__}: {error}") from error

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
                except (LookupError, ValueError) as error:
                    result.failed[resource_id] = str(error)
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
