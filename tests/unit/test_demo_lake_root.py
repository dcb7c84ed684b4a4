"""The demo runner reads the run's output from the lake root the DAG wrote to, given as a path or a
`file://` URI (which `featurelake generate` and the DAG take too)."""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import pytest

from featurelake_airflow import demo

DAY = date(2026, 10, 28)


def _write_job_report(lake: Path, *, mode: str) -> None:
    """The feature job's report of DAY in `lake`, as the demo reads it after the run."""
    report = lake / "_metrics" / "user_features" / f"date={DAY.isoformat()}.json"
    report.parent.mkdir(parents=True)
    report.write_text(
        json.dumps(
            {
                "output_path": str(lake / "features" / "user_features"),
                "mode": mode,
                "tiles_built": [DAY.isoformat()],
                "quarantined_rows": 0,
                "quarantined_by_reason": {},
                "duplicate_rows_dropped": 0,
            }
        )
    )


def test_a_file_uri_lake_is_read_as_the_local_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_job_report(tmp_path, mode="incremental")
    seen: list[Path] = []
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", f"file://{tmp_path}")
    monkeypatch.setattr(demo, "run_dag", lambda dag_id, day: ("success", []))
    monkeypatch.setattr(demo, "feature_sample", lambda lake, day: (seen.append(lake), ([], []))[1])
    monkeypatch.setattr(demo, "pq_rows", lambda path: 0)
    monkeypatch.setattr(demo, "show_view", seen.append)
    monkeypatch.setattr(demo, "show_online_reads", lambda ids, conn, *, lake, day: seen.append(lake))

    assert demo.run_demo("user_features_daily", DAY, "{}") == 0
    assert seen == [tmp_path, tmp_path, tmp_path]


def test_an_object_store_lake_is_refused_before_the_dag_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", "s3://bucket/lake")
    monkeypatch.setattr(demo, "run_dag", lambda dag_id, day: pytest.fail("the DAG ran"))
    with pytest.raises(ValueError, match=r"the lake s3://bucket/lake is not a local path"):
        demo.run_demo("user_features_daily", DAY, "{}")


@pytest.mark.parametrize(
    ("connection", "shown"),
    [
        pytest.param('{"conn_type": "generic", "host": "local"}', "Dask (LocalCluster): ", id="local"),
        pytest.param(
            '{"conn_type": "generic", "host": "dask-scheduler", "port": 8786}',
            "Dask (scheduler tcp://dask-scheduler:8786): ",
            id="scheduler",
        ),
    ],
)
def test_the_merchant_stats_line_names_the_cluster_of_the_dask_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connection: str, shown: str
) -> None:
    # It said LocalCluster whatever AIRFLOW_CONN_DASK_DEFAULT named (airflow.env lets it be overridden).
    from rich.console import Console

    _write_job_report(tmp_path, mode="full")
    output = io.StringIO()
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_DASK_DEFAULT", connection)
    monkeypatch.setattr(demo, "console", Console(file=output, width=200))
    monkeypatch.setattr(demo, "run_dag", lambda dag_id, day: ("success", []))
    monkeypatch.setattr(demo, "feature_sample", lambda lake, day: ([], []))
    monkeypatch.setattr(demo, "pq_rows", lambda path: 7)
    monkeypatch.setattr(demo, "show_view", lambda lake: None)
    monkeypatch.setattr(demo, "show_online_reads", lambda ids, conn, *, lake, day: None)

    assert demo.run_demo("user_features_daily", DAY, "{}") == 0
    assert f"{shown}7 merchants' 30-day statistics" in output.getvalue()
