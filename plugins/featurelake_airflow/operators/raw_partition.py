"""Fail fast, with the path in the message, when a run's raw partition has not landed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from featurelake_airflow.lake_paths import checked_lake_path
from featurelake_airflow.task_arguments import lake_root, run_date


class RawPartitionCheckOperator(BaseOperator):
    """Check that `<lake>/raw/<dataset>/date=<ds>/` holds at least one Parquet file that readers see
    (not a hidden `.`/`_` name, which is still being written or a marker), and no empty (0-byte)
    one, which an upload in flight or a failed one leaves.

    Returns the partition path and its file count. Retries give late data time to land.

    A run without a logical date (Airflow 3 lets a manual trigger leave it out) has no `ds`, so it
    names no partition: the task fails at once, without retrying, and says how to trigger the run.
    So does a run whose config holds a key that is no param of the DAG (a misspelt param), a `ds`
    that is no date (it names no partition either), and a partition landed as a file, not a directory.
    """

    template_fields: Sequence[str] = ("lake", "dataset", "ds")
    ui_color = "#e8f4ea"

    def __init__(self, *, lake: str, ds: str, dataset: str = "transactions", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lake = lake
        self.ds = ds
        self.dataset = dataset

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        # Checked before rendering: `{{ ds }}` is undefined in such a run, and a retry cannot help.
        if context.get("logical_date") is None:
            raise AirflowFailException(
                f"run {context['run_id']} of {self.dag_id} has no logical date, so it names no day to "
                f"process: trigger {self.dag_id} with a logical date (the trigger form's Logical date, "
                f"or `airflow dags trigger {self.dag_id} --logical-date YYYY-MM-DD`), or backfill the dates"
            )
        self._check_run_conf(context)
        super().render_template_fields(context, jinja_env)

    def _check_run_conf(self, context: Any) -> None:
        """Fail at once, without retrying, when the run's config holds a key that is no param of
        the DAG: Airflow accepts it, and a misspelt `windows_days` left the run on the default
        window without a word. This is the first task of the DAGs that use it."""
        dag_run = context.get("dag_run")
        conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
        declared = set(self.dag.params) if self.dag is not None else set()
        unknown = sorted(str(key) for key in conf if key not in declared)
        if unknown:
            known = ", ".join(sorted(declared)) or "none"
            raise AirflowFailException(
                f"run {context['run_id']} of {self.dag_id} was given the config key(s) "
                f"{', '.join(map(repr, unknown))}, which are no params of {self.dag_id} (its params: "
                f"{known}), so they would be ignored. Trigger the run again with the params' names, "
                "or without a config"
            )

    def execute(self, context: Any) -> dict[str, Any]:
        from featurelake.lake import is_data_file

        # A ds that is no date names no partition: no retry can find it, nor should the message
        # advise landing data for it.
        day = run_date(self.ds, task_id=self.task_id).isoformat()
        lake = lake_root(self.lake, task_id=self.task_id)
        partition = f"{lake.rstrip('/')}/raw/{self.dataset}/date={day}"
        directory = checked_lake_path(partition)
        if directory.is_file():  # iterdir()'s bare NotADirectoryError, on every retry
            raise AirflowFailException(
                f"raw partition {partition} is a file where the partition's directory belongs. Move "
                f"it to {partition}/part-00000.parquet (docs/data-contract.md), then clear this task"
            )
        listed = (
            sorted(p for p in directory.iterdir() if is_data_file(p.name) and p.is_file())
            if directory.exists()
            else []
        )
        # A file of zero bytes is no Parquet file: an upload in flight, or one that failed.
        empty = [p.name for p in listed if p.stat().st_size == 0]
        files = [p.name for p in listed if p.name not in empty]
        if not files or empty:
            found = (
                f"holds empty (0-byte) files, which are no Parquet: {', '.join(empty)}"
                if empty
                else "is missing or holds no .parquet files"
            )
            raise FileNotFoundError(
                f"raw partition {partition} {found} (names starting with . or _ are "
                "in-flight or markers, and do not count). Land the "
                f"{self.dataset} data for {day} there, each file complete (locally: `featurelake "
                f"generate --start {day} --end {day} --lake {self.lake} ...`), then clear this "
                "task to retry."
            )
        self.log.info("Found %d Parquet file(s) in %s", len(files), partition)
        return {"partition": partition, "files": len(files)}
