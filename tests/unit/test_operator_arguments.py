"""A task argument that no retry can change fails the task at once, naming the argument and its form:
a `ds` that is no date failed every retry with "Invalid isoformat string" (or, in the publish task, a
retryable error; the fetch task was the last to parse it so; the raw check looked for
`date=yesterday` on every retry, and advised landing data for it); an empty lake Variable sent the raw
check to `/raw/transactions/...` at the filesystem's root, retried; a `window_days` of 0 started a
Dask cluster, then failed every retry."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException


def operators(lake: str, **arguments: Any) -> dict[str, Any]:
    from featurelake_airflow.operators.dask_merchant_stats import DaskMerchantStatsOperator
    from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator
    from featurelake_airflow.operators.publish_online_features import PublishOnlineFeaturesOperator
    from featurelake_airflow.operators.raw_partition import RawPartitionCheckOperator
    from featurelake_airflow.operators.refresh_feature_view import RefreshFeatureViewOperator

    ds = arguments.get("ds", "2030-01-01")
    return {
        "raw": RawPartitionCheckOperator(task_id="raw", lake=lake, ds=ds),
        "publish": PublishOnlineFeaturesOperator(task_id="publish", lake=lake, ds=ds),
        "refresh": RefreshFeatureViewOperator(
            task_id="refresh", lake=lake, ds=ds, mode=arguments.get("mode", "incremental")
        ),
        "stats": DaskMerchantStatsOperator(
            task_id="stats", lake=lake, ds=ds, window_days=arguments.get("window_days", 30)
        ),
        "fetch": FetchMerchantProfilesOperator(task_id="fetch", lake=lake, ds=ds),
    }


@pytest.mark.parametrize("lake", ["", "  ", "file://"])
@pytest.mark.parametrize("task", ["raw", "publish", "refresh", "stats", "fetch"])
def test_an_empty_lake_fails_at_once_naming_the_variable(task: str, lake: str) -> None:
    with pytest.raises(
        AirflowFailException,
        match=rf"task {task}: the lake root is empty; set the Airflow Variable featurelake_lake",
    ):
        operators(lake)[task].execute({})


@pytest.mark.parametrize("task", ["raw", "publish", "refresh", "stats", "fetch"])
def test_a_ds_that_is_no_date_fails_at_once_naming_it(task: str, tmp_path) -> None:
    with pytest.raises(
        AirflowFailException, match=rf"task {task}: ds must be the run's date as YYYY-MM-DD.*'yesterday'"
    ):
        operators(str(tmp_path), ds="yesterday")[task].execute({})


@pytest.mark.parametrize("window_days", [0, "0", "abc", -3, True])
def test_a_window_that_is_no_whole_number_of_days_fails_before_a_cluster_starts(
    window_days, tmp_path
) -> None:
    with pytest.raises(AirflowFailException, match=r"task stats: window_days must be a whole number >= 1"):
        operators(str(tmp_path), window_days=window_days)["stats"].execute({})


def test_a_refresh_mode_that_is_none_fails_at_once(tmp_path) -> None:
    with pytest.raises(
        AirflowFailException, match=r"task refresh: mode must be one of incremental, full; got 'Full'"
    ):
        operators(str(tmp_path), mode="Full")["refresh"].execute({})
