"""A DAG for test_spark_feature_job_rerun.py: one SparkFeatureJobOperator on the Spark connection
`spark_yarn_rerun`, whose report path is the run's conf `report`."""

from __future__ import annotations

from airflow.sdk import DAG

from featurelake_airflow.operators.spark_feature_job import SparkFeatureJobOperator

with DAG(dag_id="spark_feature_job_rerun", schedule=None, catchup=False) as dag:
    SparkFeatureJobOperator(
        task_id="compute_user_features",
        conn_id="spark_yarn_rerun",
        application="/jobs/user_features.py",
        application_args=["--report", "{{ dag_run.conf['report'] }}"],
        report_path="{{ dag_run.conf['report'] }}",
        ship_library=False,
        retries=0,
    )
