"""Test-wide settings: airflow.env applied with a private AIRFLOW_HOME and SQLite database per session,
so tests never touch the developer's .airflow, and helpers shared by the three test levels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from featurelake.settings import PROJECT_ROOT, apply_settings

_TEST_HOME = Path(tempfile.mkdtemp(prefix="featurelake-test-airflow-"))
apply_settings(
    overrides={
        "AIRFLOW_HOME": str(_TEST_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": os.environ.get(
            "FEATURELAKE_TEST_SQL_ALCHEMY_CONN", f"sqlite:///{_TEST_HOME}/airflow.db?timeout=60"
        ),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        # Never the machine's own Redis: a test that runs the DAG starts its servers and points this
        # at them; one that forgets fails on a closed port instead of writing to a shared server.
        "AIRFLOW_CONN_FEATURELAKE_ONLINE": '{"conn_type": "redis", "host": "127.0.0.1", "port": 1}',
    }
)
# spark-submit and the airflow CLI come from the venv running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """A migrated Airflow metadata database for this test session."""
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    yield _TEST_HOME


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_TEST_HOME, ignore_errors=True)
