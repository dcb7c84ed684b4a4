"""
### merchant_profiles_daily

Enriches the lake with the profile of every merchant seen on one UTC day, fetched from an HTTP API
(the `merchant_api` connection; locally, `featurelake merchant-api` serves a sandbox of it).

1. **check_raw_partition** fails, naming the path, when `raw/transactions/date={{ ds }}` has not landed,
   and at once, without retrying, in a run triggered without a logical date (it names no day) or
   with a config key that is no param of the DAG (a misspelt param, which Airflow would ignore).
2. **fetch_merchant_profiles** fetches the day's distinct merchants with aiohttp at the connection's
   rate limit (aiolimiter; retries on 408, 429, 500, 502, 503 and 504), validates the profiles on a
   thread pool and enriches them on a process pool, and replaces `raw/merchant_profiles/date={{ ds }}/`. Profiles that
   could not be fetched or broke a rule go to `quarantine/merchant_profiles/date={{ ds }}/` with the
   reason, and are counted in the task's XCom.

A rerun or backfill of a date replaces that date's two partitions only. See docs/merchant-profiles.md.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable

from featurelake_airflow.operators.fetch_merchant_profiles import FetchMerchantProfilesOperator
from featurelake_airflow.operators.raw_partition import RawPartitionCheckOperator

LAKE = "{{ var.value.featurelake_lake }}"

with DAG(
    dag_id="merchant_profiles_daily",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "featurelake",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
    },
    tags=["featurelake", "enrichment", "http"],
) as dag:
    check_raw_partition = RawPartitionCheckOperator(
        task_id="check_raw_partition", lake=LAKE, dataset="transactions", ds="{{ ds }}"
    )
    # One fetch at a time, backfills included: each holds its own rate limiter, so overlapping
    # runs would call the API at a multiple of the connection's rate_per_second.
    fetch_merchant_profiles = FetchMerchantProfilesOperator(
        task_id="fetch_merchant_profiles",
        lake=LAKE,
        ds="{{ ds }}",
        http_conn_id="merchant_api",
        max_active_tis_per_dag=1,
    )

    check_raw_partition >> fetch_merchant_profiles


if __name__ == "__main__":
    dag.test()
