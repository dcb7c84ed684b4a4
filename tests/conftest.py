"""Test-wide settings: airflow.env applied with a private AIRFLOW_HOME and SQLite database per session,
so tests never touch the developer's .airflow, and helpers shared by the three test levels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from featurelake.settings import PROJECT_ROOT, apply_settings
from tests.spark_class_archive import use_spark_class_archive

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


def pytest_configure(config: pytest.Config) -> None:
    """FEATURELAKE_TEST_SQL_ALCHEMY_CONN is one database, which pytest-xdist's workers would share:
    `dag.test()` of one worker deletes the other's run of the same date."""
    workers = getattr(config.option, "numprocesses", None)
    if os.environ.get("FEATURELAKE_TEST_SQL_ALCHEMY_CONN") and workers not in (None, 0):
        raise pytest.UsageError(
            "FEATURELAKE_TEST_SQL_ALCHEMY_CONN names one database, and the tests would run on "
            f"{workers} pytest-xdist workers sharing it: run them in one process "
            "(make test TEST_WORKERS=0, or pytest -n 0)"
        )


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


# `make test` runs the modules on two pytest-xdist workers, a module on one worker (`--dist
# loadfile`), in collection order. These modules took 40 s to 4 minutes each (`--durations`,
# 2026-12-06); started last, one of them would run alone on one core at the end. So they are
# collected first, longest first, and the short ones fill in around them.
LONGEST_MODULES = (
    "tests/integration/test_executors.py",
    "tests/integration/test_backfill_under_scheduler.py",
    "tests/integration/test_user_features_dag.py",
    "tests/integration/test_user_features_run.py",
    "tests/integration/test_bench_scripts.py",
    "tests/integration/test_user_features_bad_input.py",
    "tests/integration/test_user_features_modes.py",
    "tests/integration/test_user_features_job.py",
    "tests/integration/test_demo_daily_run.py",
    "tests/integration/test_online_store_slot_migration.py",
    "tests/integration/test_user_features_killed_run.py",
    "tests/dags/test_readme_backfill_commands.py",
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration, and every test with a migrated Airflow database
    (`airflow_db`), is an integration test, whether or not its module says so: `-m 'not
    integration'` ran two modules that start Redis servers, and the README's backfill commands."""
    for item in items:
        if item.nodeid.startswith("tests/integration/") or "airflow_db" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
    rank = {module: n for n, module in enumerate(LONGEST_MODULES)}
    items.sort(
        key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank))
    )  # stable: others keep their order


def pytest_collection_finish(session: pytest.Session) -> None:
    """Spark drivers start from a class-data-sharing archive (tests/spark_class_archive.py), dumped
    once, when the tests to run include integration tests: they start about a hundred. In `make
    test` each pytest-xdist worker collects every test and gets here; the other waits for the one
    that dumps."""
    if not any(item.get_closest_marker("integration") for item in session.items):
        return
    why_not = use_spark_class_archive(PROJECT_ROOT)
    if why_not:
        warnings.warn(why_not, pytest.PytestWarning, stacklevel=1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_TEST_HOME, ignore_errors=True)
