"""Every DAG imports cleanly, is configured deliberately, parses fast, and pulls in no heavy library."""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path

import pytest

from bench.dag_parse import probe_dag_file
from tests.support import PROJECT_ROOT

DAG_FILES = sorted((PROJECT_ROOT / "dags").glob("*.py"))
HEAVY_MODULES = ("pyspark", "dask", "distributed", "pandas", "deltalake", "pyarrow", "numpy")


@pytest.fixture(scope="module")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def test_dag_files_exist() -> None:
    assert DAG_FILES, "no DAG files under dags/"


def test_no_import_errors(dag_bag) -> None:
    assert dag_bag.import_errors == {}
    # Each DAG file defines a DAG that the DagBag finds: a file that defined none, or that discovery
    # skipped, passed this test and the checks of every loaded DAG below as long as one DAG loaded.
    files = [path.name for path in DAG_FILES]
    found = sorted({Path(dag.fileloc).name for dag in dag_bag.dags.values()})
    assert found == files, f"DAG files that gave no DAG: {sorted(set(files) - set(found))}"


def test_every_dag_has_tags_retries_and_docs(dag_bag) -> None:
    for dag_id, dag in dag_bag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert dag.catchup is False, f"{dag_id} should set catchup deliberately (False; backfill on demand)"
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} has retries={task.retries}, want >= 2"


def test_daily_dag_covers_exactly_one_day(dag_bag) -> None:
    from datetime import datetime

    from airflow.timetables.interval import CronDataIntervalTimetable

    sdk_timetable = dag_bag.dags["user_features_daily"].timetable
    timetable = CronDataIntervalTimetable(sdk_timetable.expression, timezone=sdk_timetable.timezone)
    interval = timetable.infer_manual_data_interval(run_after=datetime(2026, 10, 29, 5, tzinfo=UTC))
    assert (interval.end - interval.start).total_seconds() == 86400
    assert interval.start.isoformat() == "2026-10-28T00:00:00+00:00"


def test_daily_dag_offers_every_mode_of_the_job(dag_bag) -> None:
    """The DAG lists the modes literally (it must not import pyspark at parse time): keep it in step."""
    from featurelake.user_features import RUN_MODES

    mode = dag_bag.dags["user_features_daily"].params.get_param("mode")
    assert mode.schema["enum"] == list(RUN_MODES)
    assert mode.value == "auto"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_fast_without_heavy_imports(dag_file: Path) -> None:
    """In a fresh interpreter with airflow already imported, as in the DAG processor. The parse time is
    reported, not asserted (shared machines are noisy): bench/dag_parse.py measures it."""
    start = time.perf_counter()
    result = probe_dag_file(dag_file)
    heavy = [m for m in result["all_modules"] if m in HEAVY_MODULES]
    print(
        f"{dag_file.name}: parsed in {result['seconds']:.3f} s (process {time.perf_counter() - start:.1f} s)"
    )
    assert heavy == [], f"{dag_file.name} imports {heavy} at parse time; import them inside tasks"


def test_daily_dag_offers_every_view_engine_and_refresh_mode(dag_bag) -> None:
    """Listed literally in the DAG, like the job's modes: keep them in step with the library."""
    from featurelake.materialized_views import REFRESH_MODES
    from featurelake.materialized_views_spark import VIEW_ENGINES

    params = dag_bag.dags["user_features_daily"].params
    assert params.get_param("view_engine").schema["enum"] == list(VIEW_ENGINES)
    assert sorted(params.get_param("view_refresh").schema["enum"]) == sorted(REFRESH_MODES)


def test_writers_of_shared_state_take_turns_across_runs(dag_bag) -> None:
    """A backfill's runs overlap the daily run and each other (Airflow 3 applies a backfill's
    --max-active-runs apart from the DAG's max_active_runs). The tasks that rewrite what runs of other
    dates read or write (the window's tiles, the view's Delta table), or that two runs of one date
    would share (the Dask job's staging directory), run one at a time."""
    dag = dag_bag.dags["user_features_daily"]
    shared = {
        "compute_user_features",
        "compute_merchant_stats",
        "refresh_user_features_view",
        "refresh_user_features_view_spark",
    }
    limits = {task.task_id: task.max_active_tis_per_dag for task in dag.tasks if task.task_id in shared}
    assert limits == dict.fromkeys(shared, 1)
