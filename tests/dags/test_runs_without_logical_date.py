"""A manual run without a logical date (Airflow 3 lets the trigger form, the REST API and the CLI
leave it out) has no `ds`: the daily DAGs say so at once, and do not retry or run anything else."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from featurelake.synthetic import generate_lake
from tests.support import PROJECT_ROOT


@pytest.fixture(scope="module")
def dag_bag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag


@pytest.mark.parametrize("dag_id", ["user_features_daily", "merchant_profiles_daily"])
def test_a_run_without_logical_date_fails_once_naming_the_cause(
    dag_bag, dag_id: str, tmp_path, monkeypatch, capfd
) -> None:
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=date(2026, 10, 27), end=date(2026, 10, 28), users=20, seed=1)
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(lake))
    dag = dag_bag.get_dag(dag_id)
    for task in dag.tasks:  # a retry, if any, comes at once rather than after minutes
        monkeypatch.setattr(task, "retry_delay", timedelta(0))
        monkeypatch.setattr(task, "retry_exponential_backoff", 0)

    run = dag.test(logical_date=None)

    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert str(run.state) == "failed"
    check = tis["check_raw_partition"]
    assert (str(check.state), check.try_number) == ("failed", 1), "no retry: a retry cannot find a date"
    assert {str(ti.state) for task_id, ti in tis.items() if task_id != "check_raw_partition"} == {
        "upstream_failed"
    }
    assert f"of {dag_id} has no logical date, so it names no day to process" in capfd.readouterr().out


def test_a_run_with_a_logical_date_checks_that_days_partition(dag_bag, tmp_path, monkeypatch) -> None:
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=date(2026, 10, 28), end=date(2026, 10, 28), users=20, seed=1)
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(lake))
    dag = dag_bag.get_dag("user_features_daily").partial_subset(
        ["check_raw_partition"], include_downstream=False
    )

    run = dag.test(logical_date=datetime(2026, 10, 28, tzinfo=UTC))

    (check,) = run.get_task_instances()
    assert str(check.state) == "success"
    assert check.xcom_pull(task_ids="check_raw_partition") == {
        "partition": f"{lake}/raw/transactions/date=2026-10-28",
        "files": 1,
    }


@pytest.mark.parametrize(
    ("dag_id", "conf", "said"),
    [
        (
            "user_features_daily",
            {"windows_days": 30},
            "'windows_days', which are no params of user_features_daily",
        ),
        ("merchant_profiles_daily", {"mode": "rebuild"}, "its params: none"),
    ],
)
def test_a_run_config_key_that_is_no_param_fails_at_once(
    dag_bag, dag_id: str, conf: dict, said: str, tmp_path, monkeypatch, capfd
) -> None:
    """Airflow accepts a config key that names no param: a misspelt `windows_days` ran on the
    default window of 90 days without a word."""
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=date(2026, 10, 28), end=date(2026, 10, 28), users=20, seed=1)
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(lake))
    dag = dag_bag.get_dag(dag_id).partial_subset(["check_raw_partition"], include_downstream=False)

    run = dag.test(logical_date=datetime(2026, 10, 28, tzinfo=UTC), run_conf=conf)

    (check,) = run.get_task_instances()
    assert (str(check.state), check.try_number) == ("failed", 1), "no retry: the config does not change"
    assert said in capfd.readouterr().out


def test_a_run_config_of_the_dags_params_passes_the_check(dag_bag, tmp_path, monkeypatch) -> None:
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=date(2026, 10, 28), end=date(2026, 10, 28), users=20, seed=1)
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(lake))
    dag = dag_bag.get_dag("user_features_daily").partial_subset(
        ["check_raw_partition"], include_downstream=False
    )

    run = dag.test(
        logical_date=datetime(2026, 10, 28, tzinfo=UTC), run_conf={"window_days": 30, "mode": "full"}
    )

    (check,) = run.get_task_instances()
    assert str(check.state) == "success"


def test_one_merchant_profiles_fetch_runs_at_a_time(dag_bag) -> None:
    """Each fetch has its own rate limiter: overlapping backfill runs would multiply the API's rate."""
    task = dag_bag.get_dag("merchant_profiles_daily").get_task("fetch_merchant_profiles")
    assert task.max_active_tis_per_dag == 1
