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

from tests.support import PortTaken, free_port, port_taken_line, retried_on_taken_port

pytestmark = pytest.mark.integration


def test_the_sandbox_serves_on_every_address_it_is_told_to() -> None:
    featurelake = Path(sys.executable).with_name("featurelake")

    def start() -> tuple[subprocess.Popen, int, int]:
        """The server, its port and the status of its first answer."""
        port = free_port("0.0.0.0")  # where it binds, which covers 127.0.0.1 too
        server = subprocess.Popen(
            [str(featurelake), "merchant-api", "--host", "0.0.0.0", "--port", str(port), "--rate", "100"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if server.poll() is not None:
                    output = server.stdout.read()
                    if taken := port_taken_line(output):
                        raise PortTaken(taken)
                    pytest.fail(f"featurelake merchant-api exited at start: {output}")
                try:
                    url = f"http://127.0.0.1:{port}/merchants/m000001"
                    with urllib.request.urlopen(url, timeout=2) as reply:
                        return server, port, reply.status
                except urllib.error.HTTPError as error:  # the sandbox fails some requests with a 503 once
                    return server, port, error.code
                except OSError:  # not listening yet, or another process took the port and does not answer
                    assert time.monotonic() < deadline, "featurelake merchant-api did not answer in 30 s"
                    time.sleep(0.2)
        except BaseException:
            server.terminate()
            server.communicate(timeout=10)
            raise

    server, port, status = retried_on_taken_port(start, what="featurelake merchant-api")
    try:
        assert status in (200, 503), status
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=10)
    assert f"http://0.0.0.0:{port}/merchants/<id>" in output


def test_a_taken_port_is_named_without_a_traceback() -> None:
    import socket

    featurelake = Path(sys.executable).with_name("featurelake")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(featurelake), "merchant-api", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert f"cannot listen on 127.0.0.1:{port}" in message and "pass another --port" in message
    assert "Traceback" not in result.stderr
    # it said where it served before it had bound the port
    assert "merchant API sandbox on" not in result.stdout + result.stderr


def test_a_rate_below_one_is_refused() -> None:
    featurelake = Path(sys.executable).with_name("featurelake")
    result = subprocess.run(
        [str(featurelake), "merchant-api", "--rate", "0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "at least 1 request per second" in " ".join(result.stderr.split())


def test_the_in_process_sandbox_names_a_taken_port() -> None:
    """SandboxServer, as the tests and the demo start it: a taken port raises at once with its
    reason, rather than a TimeoutError that says only that the sandbox did not start in 10 s."""
    import socket

    from featurelake.merchant_api import SandboxServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = SandboxServer(port=port)
        with pytest.raises(OSError, match=f"could not serve on port {port}: .*address already in use"):
            server.__enter__()
    assert not server._thread.is_alive()


def test_the_in_process_sandbox_picks_its_port_as_it_binds() -> None:
    """With no port, SandboxServer binds one the system picks, so no other process can take it
    between its choice and the bind; a port read before that would name no server, so it raises."""
    from featurelake.merchant_api import SandboxServer

    server = SandboxServer()
    with pytest.raises(RuntimeError, match="read it after entering the sandbox"):
        server.base_url  # noqa: B018
    with server:
        assert server.port > 0
        try:
            with urllib.request.urlopen(f"{server.base_url}/merchants/m000001", timeout=5) as reply:
                status = reply.status
        except urllib.error.HTTPError as error:  # the sandbox fails some requests with a 503 once
            status = error.code
    assert status in (200, 503)
