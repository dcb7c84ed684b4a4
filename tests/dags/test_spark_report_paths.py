"""Each Spark task of user_features_daily looks for the job's report where the job writes it, for
every spelling of the lake Variable: the job takes its root through `LakeLayout`, which drops a
trailing slash, and on an object store `lake//_metrics` is another key than `lake/_metrics` (a job
that succeeded would then fail its task for want of a report, and so would every retry)."""

from __future__ import annotations

from datetime import date

import pytest

from featurelake.lake import LakeLayout
from tests.support import PROJECT_ROOT

DS = date(2026, 10, 28)


@pytest.fixture(scope="module")
def daily_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag("user_features_daily")


@pytest.mark.parametrize("lake", ["s3://bucket/lake/", "s3://bucket/lake", "/srv/lake/", "/srv/lake"])
@pytest.mark.parametrize(
    ("task_id", "job"),
    [
        ("compute_user_features", "user_features"),
        ("refresh_user_features_view_spark", "user_features_latest"),
    ],
)
def test_the_task_reads_the_report_where_the_job_writes_it(
    daily_dag, lake: str, task_id: str, job: str
) -> None:
    task = daily_dag.get_task(task_id)
    context = {
        "var": {"value": {"featurelake_lake": lake}},
        "ds": DS.isoformat(),
        "params": {"window_days": 90, "mode": "auto", "view_refresh": "incremental"},
    }
    arguments = task.render_template(task.application_args, context)
    job_lake = arguments[arguments.index("--lake") + 1]

    assert task.render_template(task.report_path, context) == LakeLayout(job_lake).run_metrics(job, DS)
    assert LakeLayout(job_lake).root == lake.rstrip("/")


@pytest.mark.parametrize("window_days", [30, 30.0, 1e2])
def test_a_whole_window_written_as_a_decimal_reaches_the_job_as_an_integer(daily_dag, window_days) -> None:
    """Airflow's param schema takes 30.0 (and 1e2) as an integer, from the CLI, the REST API or a
    backfill's conf: rendered as '30.0', the job's argument parser refused it after spark-submit had
    started, on every retry."""
    task = daily_dag.get_task("compute_user_features")
    context = {
        "var": {"value": {"featurelake_lake": "/srv/lake"}},
        "ds": DS.isoformat(),
        "params": {"window_days": window_days, "mode": "auto", "view_refresh": "incremental"},
    }
    arguments = task.render_template(task.application_args, context)
    assert arguments[arguments.index("--window-days") + 1] == str(int(window_days))
