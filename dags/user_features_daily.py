"""
### user_features_daily

Computes the user feature set for one UTC day of transactions.

1. **check_raw_partition** fails, naming the path, when `raw/transactions/date={{ ds }}` has not landed,
   and at once, without retrying, in a run triggered without a logical date (it names no day) or
   with a config key that is no param of the DAG (a misspelt param, which Airflow would ignore).
2. **compute_user_features** runs `spark_jobs/user_features.py` through spark-submit on the
   `spark_default` connection: it validates and quarantines bad rows, builds the day's per-user tile,
   computes the W-day window (from the tiles, or from raw on a first run or with `mode=full`), and
   replaces `features/user_features/date={{ ds }}/`.
   Its XCom is the job's report (users written, tiles built, rows quarantined by reason).
3. **publish_online_features** loads that partition into the Redis online store of the
   `featurelake_online` connection (one node, a ketama ring of nodes, or a Redis Cluster), keyed by
   user; the store keeps the later feature date, so a backfill never replaces newer features, and
   a rerun removes the records of that date whose user the corrected partition no longer holds.
   It first checks that the partition holds as many rows as the job reported writing, so a
   partition it cannot see (a lake on storage the Spark cluster does not share with this worker)
   fails the task instead of removing the date's records.
4. **compute_merchant_stats** runs a Dask job on the `dask_default` connection (a scheduler, or an
   in-process LocalCluster): per-merchant statistics over the last 30 days of raw transactions,
   staged through the lake in merchant hash buckets, into `features/merchant_stats/date={{ ds }}/`.
5. **choose_view_engine** picks who refreshes the Delta table `views/user_features_latest` (each
   user's newest features): **refresh_user_features_view** with delta-rs in the worker, or
   **refresh_user_features_view_spark** with delta-spark on the `spark_default` connection, when
   that connection loads Delta's session extension (or `view_engine=spark`). Either MERGEs the
   day's partition, or rebuilds in full with `view_refresh=full`.

Each run covers exactly one day (`CronDataIntervalTimetable`), so a backfill or a rerun of a date
replaces only that date's features (and rewrites the tile and quarantine of its date, and of window
dates with no tile yet, from the same raw data; docs/features.md). The lake root is the Airflow Variable `featurelake_lake`.
Params: `window_days` (W), `mode` (`auto`, `full`, `incremental` or `rebuild`; docs/features.md),
`view_refresh` (`incremental` or `full`) and `view_engine` (`auto`, `deltalake` or `spark`;
docs/materialized-views.md).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from featurelake_airflow.operators.dask_merchant_stats import DaskMerchantStatsOperator
from featurelake_airflow.operators.publish_online_features import PublishOnlineFeaturesOperator
from featurelake_airflow.operators.raw_partition import RawPartitionCheckOperator
from featurelake_airflow.operators.refresh_feature_view import RefreshFeatureViewOperator
from featurelake_airflow.operators.spark_feature_job import SparkFeatureJobOperator
from featurelake_airflow.operators.view_engine import ChooseViewEngineOperator

SPARK_JOBS = Path(__file__).resolve().parents[1] / "spark_jobs"
# The lake root as the jobs take it (`LakeLayout` drops a trailing slash): the report paths below are
# joined to it, and `s3://bucket/lake/` + `/_metrics` names another key than the job writes.
LAKE = "{{ var.value.featurelake_lake.rstrip('/') }}"

with DAG(
    dag_id="user_features_daily",
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
    params={
        "window_days": Param(
            90, type="integer", minimum=1, maximum=3650, description="window length W in days"
        ),
        "mode": Param(
            "auto", enum=["auto", "full", "incremental", "rebuild"], description="how the window is built"
        ),
        "view_refresh": Param(
            "incremental",
            enum=["incremental", "full"],
            description="how views/user_features_latest is refreshed: MERGE the day, or rebuild",
        ),
        "view_engine": Param(
            "auto",
            enum=["auto", "deltalake", "spark"],
            description="who refreshes the view: delta-rs, delta-spark, or auto (Spark when the "
            "Spark connection loads Delta's session extension)",
        ),
    },
    tags=["featurelake", "features", "spark", "dask", "online-store", "delta"],
) as dag:
    check_raw_partition = RawPartitionCheckOperator(
        task_id="check_raw_partition",
        lake=LAKE,
        dataset="transactions",
        ds="{{ ds }}",
    )

    compute_user_features = SparkFeatureJobOperator(
        task_id="compute_user_features",
        conn_id="spark_default",
        application=str(SPARK_JOBS / "user_features.py"),
        name="featurelake-user-features-{{ ds }}",
        application_args=[
            "--ds",
            "{{ ds }}",
            "--lake",
            LAKE,
            "--window-days",
            "{{ params.window_days | int }}",
            "--mode",
            "{{ params.mode }}",
        ],
        report_path=LAKE + "/_metrics/user_features/date={{ ds }}.json",
        execution_timeout=timedelta(hours=2),
        # Runs of other dates share the window's tiles: a backfill's runs (whose --max-active-runs
        # is independent of the DAG's) and the daily run take turns here.
        max_active_tis_per_dag=1,
    )

    publish_online_features = PublishOnlineFeaturesOperator(
        task_id="publish_online_features",
        lake=LAKE,
        ds="{{ ds }}",
        view="user_features",
        online_conn_id="featurelake_online",
        # the partition must hold the rows the job's report says it wrote, or nothing is published
        report_task_id="compute_user_features",
    )

    choose_view_engine = ChooseViewEngineOperator(
        task_id="choose_view_engine",
        engine="{{ params.view_engine }}",
        deltalake_task_id="refresh_user_features_view",
        spark_task_id="refresh_user_features_view_spark",
        spark_conn_id="spark_default",
    )

    refresh_user_features_view = RefreshFeatureViewOperator(
        task_id="refresh_user_features_view",
        lake=LAKE,
        ds="{{ ds }}",
        view="user_features",
        mode="{{ params.view_refresh }}",
        max_active_tis_per_dag=1,  # one writer at a time on the view's Delta table
    )

    refresh_user_features_view_spark = SparkFeatureJobOperator(
        task_id="refresh_user_features_view_spark",
        conn_id="spark_default",
        application=str(SPARK_JOBS / "refresh_feature_view.py"),
        name="featurelake-refresh-user-features-latest-{{ ds }}",
        application_args=[
            "--ds",
            "{{ ds }}",
            "--lake",
            LAKE,
            "--view",
            "user_features",
            "--mode",
            "{{ params.view_refresh }}",
        ],
        report_path=LAKE + "/_metrics/user_features_latest/date={{ ds }}.json",
        max_active_tis_per_dag=1,
    )

    compute_merchant_stats = DaskMerchantStatsOperator(
        task_id="compute_merchant_stats",
        lake=LAKE,
        ds="{{ ds }}",
        window_days=30,
        dask_conn_id="dask_default",
        execution_timeout=timedelta(hours=2),
        # Two runs of one date (a backfill rerun overlapping the daily run) would share its staging
        # directory in the lake: runs take turns here too.
        max_active_tis_per_dag=1,
    )

    check_raw_partition >> compute_user_features >> [publish_online_features, choose_view_engine]
    choose_view_engine >> [refresh_user_features_view, refresh_user_features_view_spark]
    check_raw_partition >> compute_merchant_stats


if __name__ == "__main__":
    dag.test()
