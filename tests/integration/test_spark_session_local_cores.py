"""The session builder sizes `local[*]` to the cores its driver JVM runs on, in a process of its own
pinned to one CPU (a new JVM: the test session's is already running)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SCRIPT = """
from featurelake.spark_session import build_spark_session

session = build_spark_session("local-cores", master="local[*]")
try:
    print(session.conf.get("spark.sql.shuffle.partitions"), session.conf.get("spark.default.parallelism"))
finally:
    session.stop()
"""


def test_local_all_cores_is_sized_to_the_cpus_the_driver_may_use() -> None:
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        pytest.fail(
            "this test pins the driver to one of two CPUs or more: it needs taskset (util-linux) and 2 CPUs"
        )
    # Pinned to one CPU, local[*] runs one core (the JVM's availableProcessors), whatever os.cpu_count() says.
    result = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert result.stdout.split()[-2:] == ["16", "2"]
