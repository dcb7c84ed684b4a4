"""A DAG for test_publish_checks_the_job_report.py: its first task stands for the Spark feature job.
It writes the users of the run's conf to the conf's lake and returns the conf's report, as the job's
task returns the report it read; then the publish task of user_features_daily, as that DAG wires
it, publishes from the lake of the Variable featurelake_lake."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import DAG, get_current_context, task

from featurelake_airflow.operators.publish_online_features import PublishOnlineFeaturesOperator

with DAG(dag_id="publish_checks_the_job_report", schedule=None, catchup=False) as dag:

    @task(task_id="compute_user_features")
    def compute() -> object:
        context = get_current_context()
        conf = context["dag_run"].conf
        if conf["users"]:
            partition = Path(conf["written_lake"]) / "features" / "user_features" / f"date={context['ds']}"
            partition.mkdir(parents=True)
            table = pa.table({"user_id": conf["users"], "total_spend": [10.0] * len(conf["users"])})
            pq.write_table(table, partition / "part-0.parquet")
        return conf["report"]

    compute() >> PublishOnlineFeaturesOperator(
        task_id="publish",
        lake="{{ var.value.featurelake_lake }}",
        ds="{{ ds }}",
        report_task_id="compute_user_features",
        retries=2,  # as in user_features_daily, at once: a check's failure must not be retried
        retry_delay=timedelta(0),
    )
