"""Refresh a Delta-table materialized view of a feature dataset, in full or with MERGE."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from airflow.sdk import BaseOperator

from featurelake_airflow.task_arguments import lake_root, one_of, run_date


class RefreshFeatureViewOperator(BaseOperator):
    """Refresh `<lake>/views/<view>_latest` from `<lake>/features/<view>/` for `ds`:
    `incremental` MERGEs the partition of `ds` (a missing table is built in full), `full` rebuilds
    from every partition on or before `ds`, or the view's newest feature date when later
    (featurelake.materialized_views); then vacuums the files the table left longer ago than its
    retention. Returns the counts. A retry of a task instance whose refresh was committed before it
    was killed or failed reports that commit and commits nothing more (the task instance is recorded
    in each commit).
    A local or `file://` lake; delta-rs also opens s3://, gs:// and az:// tables with credentials
    from its environment."""

    template_fields: Sequence[str] = ("lake", "ds", "view", "mode")
    ui_color = "#e3eefb"

    def __init__(
        self,
        *,
        lake: str,
        ds: str,
        view: str = "user_features",
        mode: str = "incremental",
        entity_column: str = "user_id",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lake = lake
        self.ds = ds
        self.view = view
        self.mode = mode
        self.entity_column = entity_column

    def execute(self, context: Any) -> dict[str, Any]:
        from featurelake.lake import LakeLayout
        from featurelake.materialized_views import REFRESH_MODES, refresh_view

        day = run_date(self.ds, task_id=self.task_id)
        mode = one_of(self.mode, REFRESH_MODES, name="mode", task_id=self.task_id)
        layout = LakeLayout(lake_root(self.lake, task_id=self.task_id).removeprefix("file://"))
        name = f"{self.view}_latest"
        report = refresh_view(
            layout.view(name),
            layout.features(self.view),
            ds=day,
            mode=mode,
            entity_column=self.entity_column,
            name=name,
            run_key=run_key(context),
        )
        self.log.info(
            "%s refresh of %s for %s: %d rows (%d inserted, %d updated, %d deleted), Delta version %d",
            report.mode,
            layout.view(name),
            self.ds,
            report.rows,
            report.inserted,
            report.updated,
            report.deleted,
            report.version,
        )
        return asdict(report)


def run_key(context: Any) -> str | None:
    """The task instance of `context` as `dag_id/run_id/task_id/map_index`, the same for each of its
    tries; None without one (an `execute` called outside Airflow)."""
    ti = context.get("ti") if context else None
    if ti is None:
        return None
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}"
