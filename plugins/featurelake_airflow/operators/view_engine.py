"""Choose the engine that refreshes a Delta materialized view: delta-rs in the Airflow worker, or
delta-spark on the Spark connection's cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.operators.branch import BaseBranchOperator

from featurelake_airflow.hooks.spark_connection import SparkConnectionConfHook


class ChooseViewEngineOperator(BaseBranchOperator):
    """Follow `deltalake_task_id` or `spark_task_id` and skip the other.

    `engine` is `deltalake`, `spark`, or `auto`: Spark when the Spark connection's `conf` loads
    Delta's session extension (`spark.sql.extensions`), which a cluster with the delta-spark jars
    is configured with; otherwise delta-rs (featurelake.materialized_views_spark.choose_view_engine).
    So moving the refresh onto a cluster is a connection change."""

    template_fields: Sequence[str] = ("engine",)
    ui_color = "#e3eefb"

    def __init__(
        self,
        *,
        engine: str = "auto",
        deltalake_task_id: str,
        spark_task_id: str,
        spark_conn_id: str = "spark_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.engine = engine
        self.deltalake_task_id = deltalake_task_id
        self.spark_task_id = spark_task_id
        self.spark_conn_id = spark_conn_id

    def choose_branch(self, context: Any) -> str:
        from featurelake.materialized_views_spark import choose_view_engine

        spark_conf = (
            SparkConnectionConfHook(conn_id=self.spark_conn_id).get_conn() if self.engine == "auto" else {}
        )
        choice = choose_view_engine(self.engine, spark_conf)
        self.log.info("refreshing the view with %s: %s", choice.engine, choice.reason)
        return self.spark_task_id if choice.engine == "spark" else self.deltalake_task_id
