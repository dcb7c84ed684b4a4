"""Load one date's feature partition from the lake into the Redis online store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from featurelake_airflow.hooks.online_store import OnlineStoreHook
from featurelake_airflow.lake_paths import lake_path
from featurelake_airflow.task_arguments import lake_root, run_date

# The run_id `airflow tasks test` gives the run it creates when the DAG has no run of the date
# (airflow.cli.commands.task_command); the run holds no XCom of the task's upstream tasks.
TASKS_TEST_RUN_PREFIX = "__airflow_temporary_run_"


class PublishOnlineFeaturesOperator(BaseOperator):
    """Write every row of `<lake>/features/<view>/date=<ds>/` to the online store, keyed by
    `entity_column`, then remove the store's records of `ds` whose entity that partition no longer
    holds (all of them when it is absent: no entity had data). The store keeps the later of two
    feature dates, so a backfill of an old date never replaces newer features, and a rerun leaves
    the store holding the date as the partition does. Returns the counts.

    `report_task_id` names the task of this run that wrote the partition; its XCom report's
    `report_rows_key` says how many rows it wrote. The partition this task reads must hold as many,
    or nothing is published or removed: a partition this worker cannot see (the lake Variable
    changed since that task, or a cluster wrote to storage this worker does not share) would
    otherwise read as absent, and remove every record of the date."""

    template_fields: Sequence[str] = ("lake", "ds", "view")
    ui_color = "#fbe3e4"

    def __init__(
        self,
        *,
        lake: str,
        ds: str,
        view: str = "user_features",
        entity_column: str = "user_id",
        online_conn_id: str = OnlineStoreHook.default_conn_name,
        report_task_id: str | None = None,
        report_rows_key: str = "users_written",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lake = lake
        self.ds = ds
        self.view = view
        self.entity_column = entity_column
        self.online_conn_id = online_conn_id
        self.report_task_id = report_task_id
        self.report_rows_key = report_rows_key

    def execute(self, context: Any) -> dict[str, Any]:
        day = run_date(self.ds, task_id=self.task_id)
        # The root as checked, stripped: a Variable with a trailing newline named a partition that
        # did not exist, which read as absent, and every record of the date was removed.
        lake = lake_root(self.lake, task_id=self.task_id)
        import redis

        from featurelake.lake import LakeLayout
        from featurelake.offline_features import partition_entities, partition_records

        location = LakeLayout.partition(LakeLayout(lake).features(self.view), day)
        partition = lake_path(location)
        if partition.exists():
            # An object-store path reads through Airflow's fsspec filesystem, with its connection's keys.
            filesystem, path = (
                (None, str(partition)) if isinstance(partition, Path) else (partition.fs, partition.path)
            )
            columns = {"entity_column": self.entity_column, "filesystem": filesystem}
            records = partition_records(path, feature_date=day, **columns)
            entities = partition_entities(path, **columns)
        else:
            # The feature job leaves the partition absent when no entity had data in the window: a
            # rerun that ends so takes back every record of the date that an earlier run published.
            self.log.warning(
                "%s does not exist (no entity had data in the window): nothing to write, and the "
                "store's records of %s are removed",
                location,
                self.ds,
            )
            records, entities = [], []
        if self.report_task_id is not None:
            self._check_rows_as_reported(context, location=location, rows=len(entities))
        with OnlineStoreHook(online_conn_id=self.online_conn_id).get_conn() as store:
            try:
                report = store.replace_date(self.view, day, records, entities)
            except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as error:
                # ConnectionErrors to redis-py, but no outage: every retry would be refused alike
                raise AirflowFailException(
                    f"publishing {self.view} of {self.ds} to {', '.join(store.every_node)}: a Redis node "
                    f"refuses the login and password of connection {self.online_conn_id!r} ({error}). "
                    "Set them to the ones the nodes expect, then clear this task. The store may hold "
                    "part of the date; the rerun publishes all of it again"
                ) from None
            except (redis.ConnectionError, redis.TimeoutError) as error:
                # redis-py names the node at most; say what was left and what a retry does
                raise type(error)(
                    f"publishing {self.view} of {self.ds} from {location} to {', '.join(store.every_node)}: "
                    f"a Redis node did not answer ({error}). The store may hold part of the date; "
                    "once the nodes answer, a retry publishes all of it again (records of the same "
                    "date are rewritten, later ones kept) and then removes the stale ones"
                ) from error
        self.log.info(
            "Published %d %s records for %s (%d kept: the store holds later dates); per node: %s",
            report.written,
            self.view,
            self.ds,
            report.kept_newer,
            report.by_node,
        )
        if report.removed_stale:
            self.log.warning(
                "Removed %d %s records of %s whose %s the partition no longer holds (a rerun with "
                "corrected data)",
                report.removed_stale,
                self.view,
                self.ds,
                self.entity_column,
            )
        if report.redirected:
            self.log.info(
                "%d keys were on Redis Cluster slots being moved, and were written through redirections",
                report.redirected,
            )
        return {
            "partition": location,
            "written": report.written,
            "kept_newer": report.kept_newer,
            "by_node": report.by_node,
            "redirected": report.redirected,
            "removed_stale": report.removed_stale,
        }

    def _check_rows_as_reported(self, context: Any, *, location: str, rows: int) -> None:
        """Fail, before any write and without retry, unless `location` holds the rows that the
        report of `report_task_id` in this run says it wrote: a retry reads the same report and the
        same partition (the job's files were closed before it reported), so only a rerun of that
        task, or a fixed Variable or storage, changes the outcome."""
        report = context["ti"].xcom_pull(task_ids=self.report_task_id)
        if not isinstance(report, dict) or not isinstance(report.get(self.report_rows_key), int):
            run_id = str(context["run_id"])
            if run_id.startswith(TASKS_TEST_RUN_PREFIX):
                # Clearing does nothing here: the run is gone when the command ends.
                advice = (
                    f"`airflow tasks test` ran this task alone, in a run of its own ({run_id}), as "
                    f"no run of the DAG for {self.ds} exists, so no {self.report_task_id!r} ran "
                    f"in it. Run the DAG for that date first (`airflow dags test {self.dag_id} "
                    f"{self.ds}`), or name a run that holds the report: `airflow tasks test "
                    f"{self.dag_id} {self.task_id} <run_id>`"
                )
            else:
                advice = f"Clear {self.report_task_id!r} and its downstream tasks to run it again"
            raise AirflowFailException(
                f"task {self.report_task_id!r} of this run left no report with an integer "
                f"{self.report_rows_key!r} in its XCom (it holds {report!r}), so whether {location} "
                f"is what it wrote cannot be checked. {advice}"
            )
        reported = report[self.report_rows_key]
        if rows != reported:
            raise AirflowFailException(
                f"task {self.report_task_id!r} reported {reported} rows written to "
                f"{report.get('output_path', 'its output')}, but {location} holds {rows}: this task "
                "reads another partition than the one it wrote. Check that the Variable "
                "featurelake_lake has not changed since that task ran, and that the Spark cluster "
                "writes the lake to storage this worker reads (a shared filesystem or an object "
                "store, not a path local to the cluster's machines). Nothing was published or "
                f"removed; clear {self.report_task_id!r} and its downstream tasks once they agree"
            )
