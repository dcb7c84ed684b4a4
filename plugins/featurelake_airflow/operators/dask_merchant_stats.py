"""Per-merchant statistics over a window of raw transactions, on a Dask cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from airflow.sdk import BaseOperator

from featurelake_airflow.hooks.dask_cluster import DaskClusterHook
from featurelake_airflow.task_arguments import lake_root, run_date, whole_number
from featurelake_airflow.task_process import child_processes_allowed


class DaskMerchantStatsOperator(BaseOperator):
    """Compute `<lake>/features/merchant_stats/date=<ds>/` from the raw transactions of the W days
    up to `ds` on the connection's Dask cluster (featurelake.merchant_stats), replacing that date's
    output only. Returns the counts. When Airflow stops the task (marked failed or success in the UI,
    its run stopped), `on_kill` closes the Dask client, so the scheduler drops the run's queued
    tasks at once and `execute` ends."""

    template_fields: Sequence[str] = ("lake", "ds", "window_days")
    ui_color = "#fdf3d7"

    def __init__(
        self,
        *,
        lake: str,
        ds: str,
        window_days: int | str = 30,
        dask_conn_id: str = DaskClusterHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lake = lake
        self.ds = ds
        self.window_days = window_days
        self.dask_conn_id = dask_conn_id
        self._client: Any = None  # the running execute's Dask client, for on_kill
        self._killed = False

    def execute(self, context: Any) -> dict[str, Any]:
        from featurelake.lake import LakeLayout
        from featurelake.merchant_stats import compute_merchant_stats

        day = run_date(self.ds, task_id=self.task_id)
        window_days = whole_number(self.window_days, name="window_days", task_id=self.task_id)
        layout = LakeLayout(lake_root(self.lake, task_id=self.task_id).removeprefix("file://"))
        hook = DaskClusterHook(dask_conn_id=self.dask_conn_id)
        address = hook.scheduler_address()
        spawns_workers = False
        if address is None:
            local = hook.local_cluster_options()
            spawns_workers = local["processes"]
            self.log.info(
                "Dask: a LocalCluster of %d workers (%s), %d threads each, memory limit %s",
                local["n_workers"],
                "each a process of its own" if spawns_workers else "inside the task process",
                local["threads_per_worker"],
                local.get("memory_limit", "auto"),
            )
        else:
            self.log.info("Dask scheduler: %s", address)
        # Local worker processes are spawned as children of the task process.
        with (
            child_processes_allowed() if spawns_workers else contextlib.nullcontext(),
            hook.get_conn() as client,
        ):
            self._client, self._killed = client, False
            try:
                report = compute_merchant_stats(
                    client,
                    raw_transactions=layout.raw_transactions,
                    output=LakeLayout.partition(layout.merchant_stats, day),
                    staging=layout.staging("merchant_stats", day),
                    ds=day,
                    window_days=window_days,
                )
            except Exception as error:
                if self._killed:  # the client was closed under the job: say why, not "cancelled"
                    raise RuntimeError(
                        f"merchant stats of {day} stopped: Airflow stopped this task, and the Dask "
                        f"client was closed ({type(error).__name__}). Its output partition was "
                        "left as it was"
                    ) from error
                raise
            finally:
                self._client = None
        self.log.info(
            "%d merchants from %d valid of %d raw rows -> %s",
            report.merchants,
            report.rows_counted,
            report.rows_read,
            report.output_path,
        )
        return asdict(report)

    def on_kill(self) -> None:
        """Close the running job's Dask client. Airflow calls this from the task process's SIGTERM
        handler (the task marked failed or success, its run stopped), then sends SIGKILL 5 s later
        if the process still runs. A closed client makes the scheduler drop the job's queued tasks
        at once (tasks already running on a worker finish, as Dask cannot stop a running task), and
        `execute` ends with an error that says so. Before, the handler did nothing: the job ran on
        until the SIGKILL."""
        client = self._client
        if client is None or client.status != "running":
            return  # no job running, or its client is already closing
        self._killed = True
        self.log.info("Stopping: closing the Dask client, so the scheduler drops this run's queued tasks")
        client.close()
