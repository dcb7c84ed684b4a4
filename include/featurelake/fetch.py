"""Rate-limited async HTTP fetching: many JSON resources from one API, at most `rate_per_second`
requests per second and `max_concurrency` in flight, with retries, and every failure reported.

The rate limit is aiolimiter's leaky bucket with a capacity of one request (`AsyncLimiter(1,
1 / rate)`): `AsyncLimiter(rate, 1)` lets a whole second's worth through at once, so a 1-second
window can see twice the rate. A semaphore alone limits concurrency, not requests per second.
Every HTTP request waits for the limiter: a retry, and each hop of a redirect, which `fetch_all`
follows itself (up to `MAX_REDIRECTS` requests) rather than letting aiohttp follow it unseen; and
aiohttp's own unseen resend of a GET whose connection was lost is off (that is a retry of ours).
Retries (408, 429, 500, 502, 503, 504, timeouts and connection errors) back off exponentially (each
wait at most `max_backoff_seconds`) and honour `Retry-After` (delay-seconds or an HTTP-date, at most
`max_retry_after_seconds`), which speaks for the whole API: no request of any id starts before it
has passed. Any other failure (another 5xx such as a 501, a redirect loop, a malformed response, a
redirect to a non-HTTP URL or to a host name no resolver accepts) fails its id at once, with the
reason; it never fails the other ids.

The work under way stays flat in the number of ids: at most `ids_started(config)` ids are under way
at once (in flight, waiting for the limiter, or backing off), and the next one starts when one ends.
The answers are kept, parsed, until `fetch_all` returns them (`FetchResult.found`), so memory grows
with the ids by the size of their answers: about 0.7 KB each for a five-field profile, 9 KB for a
1.5 KB JSON answer (tracemalloc, 4,000 ids on loopback, 2026-12-06). aiohttp's
connection pool is unbounded: `max_concurrency` is the bound, and a request never queues inside
aiohttp for a connection while its `timeout_seconds` runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from aiolimiter import AsyncLimiter
from multidict import CIMultiDict
from yarl import URL

log = logging.getLogger(__name__)

# 408 Request Timeout: the server gave up waiting for our request (RFC 9110 says the client may
# repeat it), such as a proxy that times out a keep-alive connection just as a request goes out.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Errors another attempt may not see: a timeout, a refused or lost connection, a body cut short...
TRANSIENT_ERRORS = (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
# ...except the connection errors that waiting does not fix: the server's certificate or fingerprint.
PERMANENT_CONNECTION_ERRORS = (aiohttp.ClientConnectorCertificateError, aiohttp.ServerFingerprintMismatch)
# Redirects fetch_all follows itself, each hop through the limiter; at most this many requests per attempt.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# An id the API does not know: its own failure, and what an id's failure then says (check_api_available
# reads it: a 404 for every id is a wrong path, not that many unknown ids).
NOT_FOUND = "HTTP 404: not found"
# The answers whose body is the resource: 203 is a 200 that a proxy transformed.
ANSWER_STATUSES = frozenset({200, 203})
MAX_REDIRECTS = 10
# At most max(MIN_IDS_STARTED, IDS_STARTED_PER_SLOT * max_concurrency) ids under way at once: room
# beside those in flight for ids backing off or waiting for a pause, so a backoff idles no slot.
MIN_IDS_STARTED = 64
IDS_STARTED_PER_SLOT = 4
# Control characters (a token's trailing line break) that aiohttp refuses in a header.
HEADER_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# The failures that are the id's own: another id may well succeed. Every other failure (a 5xx, a
# refused credential, a body that is not JSON such as a maintenance or login page, a bad redirect)
# says the API is unwell, and counts in `FetchResult.api_failed`.
ID_OWN_STATUSES = frozenset(range(400, 500)) - {401, 403, 407, 408, 429}


class FetchSettingError(ValueError):
    """A FetchConfig setting with a value it cannot use; `setting` names it."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def _number(
    setting: str, value: object, *, minimum: float, inclusive: bool, whole: bool = False, why: str = ""
) -> None:
    """Refuse `value` unless it is a finite number (an int when `whole`) above `minimum`."""
    message = (
        f"{setting} must be {'>=' if inclusive else '>'} {minimum:g} "
        f"({'an integer' if whole else 'a finite number'}), got {value!r}{why}"
    )
    numeric = isinstance(value, int) if whole else isinstance(value, (int, float))
    if isinstance(value, bool) or not numeric or not math.isfinite(value):
        raise FetchSettingError(setting, message)
    if value < minimum or (value == minimum and not inclusive):
        raise FetchSettingError(setting, message)


def _check_path_template(template: object) -> None:
    """Refuse a template that `str.format(id=...)` would not turn into a path: only `{id}` may be
    a replacement field; literal braces are doubled (`{{`, `}}`)."""
    rule = "path_template may hold only the field {id} (the quoted id); write a literal brace as {{ or }}"
    if not isinstance(template, str):
        raise FetchSettingError("path_template", f"{rule}; got {template!r}, not a string")
    try:
        fields = [
            (name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
        ]
    except ValueError as error:  # a lone brace: "/{id" or "/a}/{id}"
        raise FetchSettingError("path_template", f"{rule}; got {template!r} ({error})") from error
    other = [
        name
        for name, spec, conversion in fields
        if name is not None and (name, spec, conversion) != ("id", "", None)
    ]
    if other:
        raise FetchSettingError("path_template", f"{rule}; got {template!r}, which also holds {other}")
    if not fields or all(name is None for name, _, _ in fields):
        raise FetchSettingError("path_template", f"path_template must hold {{id}}, got {template!r}")
    # Appended to base_url as it is: "merchants/{id}" after "https://api/v1" would fetch
    # /v1merchants/<id> (every id a 404), and "{id}" or ".x/{id}" would change the port or host.
    if not template.startswith(("/", "?")):
        raise FetchSettingError(
            "path_template",
            f"path_template must start with / (or ? for a query), got {template!r}: it is appended "
            "to base_url as it is, and would run into base_url's last path segment, host or port",
        )


# Stands for the id while yarl normalizes the rest of the URL: unreserved letters, left as they are.
_ID_MARKER = "featurelakeresourceidmarker"


@dataclass(frozen=True)
class FetchConfig:
    """How to call the API: `base_url` + `path_template.format(id=<quoted id>)`. Times are in
    seconds; `timeout_seconds` bounds each HTTP request (each hop of a redirect has its own). The
    n-th retry without a `Retry-After` waits `backoff_seconds * 2**(n-1)`, plus up to half of
    that in jitter, and never more than `max_backoff_seconds`."""

    base_url: str
    path_template: str = "/{id}"
    rate_per_second: float = 20.0
    max_concurrency: int = 8
    max_attempts: int = 4
    timeout_seconds: float = 10.0
    backoff_seconds: float = 0.2
    max_backoff_seconds: float = 30.0
    max_retry_after_seconds: float = 60.0
    headers: tuple[tuple[str, str], ...] = ()
    # The largest answer read: a misbehaving API or proxy streaming a dump was read whole (and held
    # about three times over, as bytes, text and objects) by each request under way.
    max_body_bytes: int = 8 * 2**20

    def __post_init__(self) -> None:
        try:
            host = URL(self.base_url).host if isinstance(self.base_url, str) else None
        except ValueError:
            host = None
        if not host or not self.base_url.startswith(("http://", "https://")):
            raise FetchSettingError(
                "base_url",
                f"base_url must start with http:// or https:// and name a host, got {self.base_url!r}",
            )
        if not _resolvable(URL(self.base_url)):
            raise FetchSettingError(
                "base_url",
                f"base_url names a host no resolver accepts (an empty label, or one longer than 63 "
                f"characters), got {self.base_url!r}; correct the host name",
            )
        _check_path_template(self.path_template)
        _number("rate_per_second", self.rate_per_second, minimum=0, inclusive=False)
        _number("max_concurrency", self.max_concurrency, minimum=1, inclusive=True, whole=True)
        _number("max_attempts", self.max_attempts, minimum=1, inclusive=True, whole=True)
        _number(
            "timeout_seconds",
            self.timeout_seconds,
            minimum=0,
            inclusive=False,
            why=" (0 or less turns aiohttp's timeout off, and a server that never answers hangs the task)",
        )
        _number("backoff_seconds", self.backoff_seconds, minimum=0, inclusive=True)
        _number("max_backoff_seconds", self.max_backoff_seconds, minimum=0, inclusive=True)
        _number("max_retry_after_seconds", self.max_retry_after_seconds, minimum=0, inclusive=True)
        _number("max_body_bytes", self.max_body_bytes, minimum=1, inclusive=True, whole=True)
        if not all(
            isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(part, str) for part in pair)
            for pair in self.headers
        ):
            raise FetchSettingError(
                "headers", f"headers must be (name, value) pairs of strings, got {self.headers!r}"
            )
        for name, value in self.headers:
            if HEADER_CONTROL_CHARACTERS.search(name + value):  # the value is not shown: a secret
                raise FetchSettingError(
                    "headers",
                    f"header {name!r} holds a control character (a trailing line break?), which no "
                    "HTTP header may hold, and aiohttp would refuse it at every request; remove it",
                )

    def url(self, resource_id: str) -> str:
        """The URL fetched for `resource_id`, as it is sent: `base_url` and `path_template` as
        yarl normalizes them, and the id percent-quoted whole (`/` too). The id is put in after the
        normalizing, and the URL sent as it is (`URL(..., encoded=True)`): given the whole text,
        yarl decodes `%3B`, `%26` and `%3D` in a path back to `;`, `&` and `=`, at which a server
        may cut the path (`;jsessionid=`) or the id."""
        normalized = str(URL(self.base_url.rstrip("/") + self.path_template.format(id=_ID_MARKER)))
        return normalized.replace(_ID_MARKER, quote(resource_id, safe=""))


@dataclass
class FetchResult:
    """The JSON of every id fetched, and why each other id failed (after its last attempt).
    `api_failed` holds the failed ids whose failure says nothing about the id itself: the API was
    unavailable (a 408, 429, 500, 502, 503 or 504, a timeout or a connection error after every attempt;
    any other 5xx; a TLS or malformed-response error; a body that is not JSON, such as a maintenance
    page or a login page reached by a redirect; a redirect loop or a bad redirect) or refused our
    credentials (401, 403, 407). The other failed ids are the id's own: a 404 or another 4xx."""

    found: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    api_failed: set[str] = field(default_factory=set)


class _Retry(Exception):
    """A failed attempt worth retrying, and how long the server asked us to wait (None: back off)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


class _Failed(Exception):
    """A failed attempt that another attempt would not fix; the message is the id's reason."""


class _ApiFailed(_Failed):
    """A `_Failed` that says nothing about the id: the API's fault, not the id's."""


def ids_started(config: FetchConfig) -> int:
    """How many ids `fetch_all` has under way at once, at most (see the module docstring)."""
    return max(MIN_IDS_STARTED, IDS_STARTED_PER_SLOT * config.max_concurrency)


# The bytes of an error answer read, of which the failure keeps the first 200 characters.
ERROR_BODY_BYTES = 800


async def _body_within(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of `response`, read in chunks; an answer larger than `limit` bytes (by its
    Content-Length, or as it arrives) fails its id as the API's fault, unread past the limit."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise _ApiFailed(f"an answer of {declared} bytes, more than max_body_bytes ({limit})")
    body = bytearray()
    async for chunk in response.content.iter_chunked(2**16):
        body += chunk
        if len(body) > limit:
            raise _ApiFailed(f"an answer of more than max_body_bytes ({limit}) bytes")
    return bytes(body)


def backoff_seconds(config: FetchConfig, retry: int, *, jitter: float) -> float:
    """The wait before retry number `retry` (from 1) without a `Retry-After`; `jitter` in [0, 1)."""
    exponent = min(retry - 1, 64)  # 2**1100 does not fit a float; the cap is reached long before
    return min(config.max_backoff_seconds, config.backoff_seconds * 2**exponent * (1 + jitter / 2))


def _resolvable(url: URL) -> bool:
    """Whether `url`'s host is a name a resolver accepts: yarl takes "a..b", a 64-letter label or
    "xn--zz", and then its `host` or socket.getaddrinfo raised UnicodeError (the IDNA codec)."""
    try:
        (url.host or "").encode("idna")
        (url.raw_host or "").encode("idna")
    except UnicodeError:
        return False
    return True


# The start of a URL whose authority holds user information (`user:password@`), scheme or not.
_USERINFO = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*@")


def _redirect_target(url: URL, location: str | None, status: int) -> URL:
    """The absolute URL a redirect from `url` points at (`location` may be relative)."""
    if location is None:
        raise _ApiFailed(f"HTTP {status}: a redirect without a Location header, from {url}")
    # aiohttp refuses a request with both an Authorization header and credentials in its URL, with a
    # ValueError that ended the whole fetch; and a redirect has no business handing us credentials.
    # Checked first, on the text: the location is not quoted, as it holds a password, and the
    # messages below quote it (a redirect to ftp://user:password@host, or to no URL at all).
    if _USERINFO.match(location.lstrip()):
        raise _ApiFailed(
            f"HTTP {status}: a redirect from {url} to a URL with a user name or password in it, "
            "which is not followed"
        )
    try:
        named = URL(location)
        target = url.join(named)
    except ValueError as error:
        raise _ApiFailed(f"HTTP {status}: a redirect to {location!r}, which is not a URL") from error
    # raw_host: yarl's host decodes a punycode label, and raises UnicodeError for one like "xn--zz".
    # A scheme without a host (`http:///x`) is no http(s) URL, though yarl joins it as a path.
    if target.scheme not in ("http", "https") or not target.raw_host or (named.scheme and not named.raw_host):
        raise _ApiFailed(f"HTTP {status}: a redirect to {location!r}, which is not an http(s) URL")
    if target.raw_user is not None or target.raw_password is not None:  # as above, once parsed
        raise _ApiFailed(
            f"HTTP {status}: a redirect from {url} to a URL with a user name or password in it, "
            "which is not followed"
        )
    if not _resolvable(target):
        raise _ApiFailed(f"HTTP {status}: a redirect to {location!r}, whose host is not a valid host name")
    return target


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


def _usable(resource_id: object) -> bool:
    """Whether `resource_id` can be put in a URL: a non-empty string UTF-8 can encode (a lone
    surrogate such as "\\ud800" cannot)."""
    if not isinstance(resource_id, str) or not resource_id:
        return False
    try:
        resource_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _dot_segment(resource_id: str, url: str) -> str | None:
    """Why `url` (`resource_id`'s) cannot be fetched, or None: an id "." or ".." that stands as a
    path segment is removed by URL normalization (yarl's, and any server's), so the URL would name
    another resource (`/merchants/..` is `/`)."""
    if resource_id not in (".", "..") or URL(url).path == URL(url, encoded=True).path:
        return None
    return f"the id {resource_id!r} is a dot segment: {url} would fetch {URL(url)}"


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _strict_json(text: str) -> Any:
    """`text` as JSON (RFC 8259): Python's decoder also takes NaN, Infinity and -Infinity, which
    are not JSON; readers of the quarantine's JSON payload refuse them (JavaScript's JSON.parse, Go,
    serde_json) or read null (jq 1.6)."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def _finite_float(text: str) -> float:
    """A JSON number as a float, refused when it is out of a float's range: `1e999` is valid JSON
    that Python reads as inf, which no JSON could then carry (the quarantine wrote `Infinity`)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of a float's range")
    return value


def _transient(error: BaseException) -> bool:
    """Whether a failed request is worth another attempt."""
    return isinstance(error, TRANSIENT_ERRORS) and not isinstance(error, PERMANENT_CONNECTION_ERRORS)


def _describe(error: BaseException) -> str:
    """Why an aiohttp error failed an id, on one line."""
    if isinstance(error, aiohttp.ClientResponseError) and error.message:
        return f"{type(error).__name__}: malformed HTTP response: {' '.join(error.message.split())}"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _without_header_values(text: str, headers: Iterable[tuple[str, str]]) -> str:
    """`text` (an error page's start) with each configured header's value, and the credentials
    after an auth scheme ("Bearer <token>"), replaced by `***`. An API that echoes the key it
    refused put it in the failure reason, which the lake's quarantine keeps and Airflow's log
    masking never sees. Values under 6 characters are left: they would mask ordinary words."""
    for _, value in headers:
        for secret in (value, value.partition(" ")[2].strip()):
            if len(secret) >= 6:
                text = text.replace(secret, "***")
    return text


async def fetch_all(config: FetchConfig, ids: Iterable[str]) -> FetchResult:
    """GET every id once (duplicates are fetched once). A 408, 429, 500, 502, 503 or 504, a timeout or a
    lost connection is retried; a 404 (the id does not exist), another 4xx or 5xx (a 501, a CDN's
    521), a body that is not JSON, a redirect loop (more than `MAX_REDIRECTS` requests) and any
    other aiohttp error (a malformed response) fail the id without retry, and an id "." or ".." in
    a path fails without a request (its URL would name another resource). Never raises for one id;
    the result names each id that failed, and why.
    Raises ValueError, before any request, when an id is not a non-empty string UTF-8 can encode."""
    unique = list(dict.fromkeys(ids))
    # Refused before any request: an id that fails once the others are in flight would leave them
    # running against a closed session.
    bad = [resource_id for resource_id in unique if not _usable(resource_id)]
    if bad:
        raise ValueError(
            f"ids must be non-empty strings; {len(bad)} are not, for example {bad[:3]!r} "
            "(an id must also be text UTF-8 can encode, with no lone surrogate such as '\\ud800')"
        )
    result = FetchResult()
    limiter = AsyncLimiter(1, 1 / config.rate_per_second)
    in_flight = asyncio.Semaphore(config.max_concurrency)
    timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
    loop = asyncio.get_running_loop()
    # A Retry-After speaks for the whole API, not one id: no request starts before this loop time.
    paused_until = 0.0

    async def take_a_turn() -> None:
        """Wait for the limiter, and for the API's pause; a turn taken during a pause that began
        while this request waited for the limiter is taken again after it, so the rate holds."""
        while True:
            while (pause := paused_until - loop.time()) > 0:
                await asyncio.sleep(pause)
            await limiter.acquire()
            if paused_until <= loop.time():
                return

    # No limit in aiohttp's pool (100 by default): `in_flight` is the bound. With a pool smaller
    # than max_concurrency the rest queued inside aiohttp, their timeout running, and timed out.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        # aiohttp sends a GET again, at once, when the server closes the connection before its
        # answer; that request would skip the limiter and `requests`, and make an attempt two
        # requests. Off, the lost connection is a retry of our own. There is no public switch
        # (aio-libs/aiohttp#10790); aiohttp's test client turns it off the same way.
        session._retry_connection = False

        async def request(url: URL, headers: CIMultiDict[str]) -> tuple[Any, URL | None]:
            """One HTTP request through the limiter: (the JSON, None), or (None, where it redirects)."""
            nonlocal paused_until
            await take_a_turn()
            result.requests += 1
            try:
                # Not aiohttp's redirects: it would send each hop without waiting for the limiter.
                async with session.get(url, headers=headers, allow_redirects=False) as response:
                    if response.status in REDIRECT_STATUSES:
                        location = response.headers.get("Location")
                        return None, _redirect_target(url, location, response.status)
                    if response.status in RETRY_STATUSES:
                        wait = retry_after_seconds(
                            response.headers.get("Retry-After"), cap=config.max_retry_after_seconds
                        )
                        if wait is not None:  # every id waits, not only this one
                            paused_until = max(paused_until, loop.time() + wait)
                        raise _Retry(f"HTTP {response.status}", wait)
                    if response.status == 404:
                        raise _Failed(NOT_FOUND)
                    if response.status not in ANSWER_STATUSES and response.status < 400:
                        # 300 Multiple Choices, 304, 202 Accepted...: a body that is no profile
                        raise _ApiFailed(
                            f"HTTP {response.status}: not an answer that holds a profile (200 or 203)"
                        )
                    if response.status >= 400:
                        # Only the start of an error page is kept: it is not read whole.
                        start = await response.content.read(ERROR_BODY_BYTES)
                        try:
                            body = start.decode(response.charset or "utf-8", errors="replace")
                        except LookupError:  # a charset that is no text encoding, such as base64
                            body = start.decode("utf-8", errors="replace")
                        failure = _Failed if response.status in ID_OWN_STATUSES else _ApiFailed
                        body = _without_header_values(body, config.headers)
                        raise failure(f"HTTP {response.status}: {body[:200]}")
                    data = await _body_within(response, config.max_body_bytes)
                    if not data.strip():  # the JSON of nothing would be read as null
                        raise _ApiFailed("not JSON: an empty body")
                    try:
                        return _strict_json(data.decode(response.charset or "utf-8")), None
                    # Not JSON, or not in its charset (a maintenance or login page); a charset that
                    # is no text encoding (LookupError: "base64"); nested deeper than Python recurses.
                    except (ValueError, LookupError, RecursionError) as error:
                        raise _ApiFailed(f"not JSON: {error}") from error
            except (TimeoutError, aiohttp.ClientError) as error:
                if isinstance(error, TimeoutError):  # its message is empty
                    raise _Retry(f"TimeoutError: no answer within {config.timeout_seconds:g} s") from error
                if _transient(error):
                    raise _Retry(f"{type(error).__name__}: {error}") from error
                reason = _describe(error)
                log.warning("GET %s failed without retry: %s", url, reason)
                raise _ApiFailed(reason) from error

        async def attempt(resource_id: str) -> Any:
            async with in_flight:
                url = URL(config.url(resource_id), encoded=True)
                headers = CIMultiDict(config.headers)
                for _ in range(MAX_REDIRECTS):
                    payload, target = await request(url, headers)
                    if target is None:
                        return payload
                    if target.origin() != url.origin():
                        # None of the configured headers goes to another origin (scheme, host or
                        # port): aiohttp drops only Authorization, Cookie and Proxy-Authorization,
                        # and an API key in another header (X-Api-Key) went to the other host, or
                        # in clear text on a hop from https to http.
                        headers = CIMultiDict()
                    url, last = target, url
                raise _ApiFailed(
                    f"TooManyRedirects: {MAX_REDIRECTS} redirects in a row (a redirect loop?), "
                    f"the last from {last}"
                )

        async def fetch_one(resource_id: str) -> None:
            if (why := _dot_segment(resource_id, config.url(resource_id))) is not None:
                result.failed[resource_id] = why  # the id's own: no request could fetch it
                return
            for number in range(1, config.max_attempts + 1):
                try:
                    result.found[resource_id] = await attempt(resource_id)
                    return
                except _Retry as retry:
                    if number == config.max_attempts:
                        result.failed[resource_id] = f"{retry} after {number} attempts"
                        result.api_failed.add(resource_id)
                        return
                    result.retries += 1
                    if retry.wait is None:
                        await asyncio.sleep(backoff_seconds(config, number, jitter=random.random()))
                    # else: the next request waits for the API's pause (take_a_turn)
                except _Failed as failure:
                    result.failed[resource_id] = str(failure)
                    if isinstance(failure, _ApiFailed):
                        result.api_failed.add(resource_id)
                    return

        # A task per id, all at once, held about 2 KB each (200 MB for 100,000 ids) and took
        # seconds to cancel; at most ids_started(config) are under way, the next one starts when
        # one ends. The task group cancels the others if one raises.
        started = asyncio.Semaphore(ids_started(config))
        try:
            async with asyncio.TaskGroup() as group:
                for resource_id in unique:
                    await started.acquire()
                    task = group.create_task(fetch_one(resource_id))
                    task.add_done_callback(lambda _: started.release())
        except BaseExceptionGroup as errors:
            # Raised as it is, not in a group: a bug's error, or the exception a signal handler
            # raised inside a fetch (Airflow's AirflowTaskTimeout), which its caller catches by type.
            raise errors.exceptions[0] from None
    log.info(
        "fetched %d of %d ids from %s in %d requests (%d retries, %d failed, %d of them the API's fault)",
        len(result.found),
        len(unique),
        config.base_url,
        result.requests,
        result.retries,
        len(result.failed),
        len(result.api_failed),
    )
    return result
