"""A sandbox of the merchant profile API, for local runs, the demo and the tests: a real aiohttp
server that enforces a rate limit the way public APIs do (429 with `Retry-After` above `rate` requests
in any trailing second), fails about 1 in 10 ids once with a 503, answers 404 for unknown merchants,
and serves some profiles that break a rule (`featurelake.merchant_profiles.sandbox_profile`).

    featurelake merchant-api --port 8089 --rate 50
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from aiohttp import web

from featurelake.merchant_profiles import sandbox_fails_first, sandbox_profile
from featurelake.network_address import url_host

log = logging.getLogger(__name__)

PATH_TEMPLATE = "/merchants/{id}"
# The number of requests answered with 200 or 404, and of 429s. Counts, not a list of times: the
# `featurelake merchant-api` service runs for days.
SERVED = web.AppKey("served", int)
LIMITED = web.AppKey("limited", int)


def build_app(*, rate: int) -> web.Application:
    """The sandbox app. `app[SERVED]` counts the requests it answered with 200 or 404, and
    `app[LIMITED]` its 429s."""
    app = web.Application()
    window: deque[float] = deque()
    seen: set[str] = set()
    app[SERVED] = 0
    app[LIMITED] = 0

    async def merchant(request: web.Request) -> web.Response:
        now = time.monotonic()
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= rate:
            app[LIMITED] += 1
            return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "1"})
        window.append(now)
        merchant_id = request.match_info["merchant_id"]
        if sandbox_fails_first(merchant_id) and merchant_id not in seen:
            seen.add(merchant_id)
            return web.json_response({"error": "try again"}, status=503)
        app[SERVED] += 1
        profile = sandbox_profile(merchant_id)
        if profile is None:
            return web.json_response({"error": f"no merchant {merchant_id}"}, status=404)
        return web.json_response(profile)

    app.router.add_get("/merchants/{merchant_id}", merchant)
    return app


class SandboxServer:
    """The sandbox on 127.0.0.1:`port` in a background thread; a context manager. With `port` 0,
    the default, it binds a port the system picks (no other process can take that port between its
    choice and the bind); `port` and `base_url` say which once it has been entered."""

    def __init__(self, *, port: int = 0, rate: int = 50) -> None:
        self._port = port
        self.app = build_app(rate=rate)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="merchant-api", daemon=True)
        self._runner: web.AppRunner | None = None
        self._failed: BaseException | None = None

    @property
    def port(self) -> int:
        if self._port == 0:  # a URL built from it would name no server
            raise RuntimeError(
                "the sandbox picks its port when it starts: read it after entering the sandbox"
            )
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.app, access_log=None)
        try:
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self._port).start())
            self._port = self._runner.addresses[0][1]  # the one the system picked, for port 0
        except BaseException as error:  # a taken port: __enter__ raises it
            self._failed = error
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()
            return
        finally:
            self._started.set()
        self._loop.run_forever()

    def __enter__(self) -> SandboxServer:
        where = f"port {self._port}" if self._port else "a port of its choosing"
        self._thread.start()
        if not self._started.wait(timeout=10):
            raise TimeoutError(f"the merchant API sandbox did not start on {where} in 10 s")
        if self._failed is not None:
            self._thread.join(timeout=10)
            raise OSError(
                f"the merchant API sandbox could not serve on {where}: {self._failed}"
            ) from self._failed
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():  # closing a running loop raises
            self._loop.close()


def merchants_url(*, host: str, port: int) -> str:
    """The URL of the merchants on `host`:`port`, with `<id>` for the id; an IPv6 address in brackets
    (`http://::1:8089/...` names no server)."""
    return f"http://{url_host(host)}:{port}{PATH_TEMPLATE.replace('{id}', '<id>')}"


def serve_forever(
    *, port: int, rate: int, host: str = "127.0.0.1", serving: Callable[[str], None] | None = None
) -> None:
    """Serve the sandbox in the foreground until interrupted. `serving` is called with the URL of
    its merchants once the port is bound (aiohttp calls `print` after its sites have started), so
    nothing says it serves on a port it could not take; by default it logs that URL and the rate."""
    url = merchants_url(host=host, port=port)

    def started(_: str) -> None:
        if serving is None:
            log.info("merchant API sandbox on %s, %d requests/s", url, rate)
        else:
            serving(url)

    web.run_app(build_app(rate=rate), host=host, port=port, print=started)
