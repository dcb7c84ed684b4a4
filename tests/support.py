"""Helpers shared by the test levels: free loopback ports, real spark-submit runs, Redis clients and
emptied Redis servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from featurelake.local_redis import free_port

__all__ = ["PROJECT_ROOT", "VENV_BIN", "emptied_redis_nodes", "free_port", "redis_client", "spark_submit"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


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


def redis_client(address: str):
    """A plain redis-py client of one server, `host:port`; close it (or use it as a context manager)."""
    import redis

    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port))


def emptied_redis_nodes(*servers) -> list[str]:
    """host:port of pytest-redis server fixtures, each emptied (FLUSHALL) first."""
    import redis

    nodes = []
    for server in servers:
        client = redis.Redis(host=server.host, port=server.port)
        try:
            client.flushall()
        finally:
            client.close()
        nodes.append(f"{server.host}:{server.port}")
    return nodes
