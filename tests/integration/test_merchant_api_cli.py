"""`featurelake merchant-api`, the sandbox the compose stack runs as a service: it listens on the
address it is given, so other containers can call it with `--host 0.0.0.0`."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from featurelake.local_redis import free_port

pytestmark = pytest.mark.integration


def test_the_sandbox_serves_on_every_address_it_is_told_to() -> None:
    port = free_port()
    featurelake = Path(sys.executable).with_name("featurelake")
    server = subprocess.Popen(
        [str(featurelake), "merchant-api", "--host", "0.0.0.0", "--port", str(port), "--rate", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        statuses: list[int] = []
        while time.monotonic() < deadline and not statuses:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/merchants/m000001", timeout=2) as reply:
                    statuses.append(reply.status)
            except urllib.error.HTTPError as error:  # the sandbox fails some requests with a 503 once
                statuses.append(error.code)
            except urllib.error.URLError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.2)
        assert statuses and statuses[0] in (200, 503), statuses
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=10)
    assert f"http://0.0.0.0:{port}/merchants/<id>" in output
