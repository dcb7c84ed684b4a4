"""Helpers shared by the test levels: free loopback ports and real spark-submit runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spark_submit(
    application: Path,
    *args: str,
    master: str = "local[2]",
    conf: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a real spark-submit and return its completed process (output captured). `env` is added
    to this process's environment."""
    command = [str(VENV_BIN / "spark-submit"), "--master", master]
    for key, value in {"spark.log.level": "WARN", **(conf or {})}.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(application), *args]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900
    )
