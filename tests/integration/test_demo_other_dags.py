"""The demo runs any DAG of the project that `--dag-id` names (here online_store_rebalance, on the
demo's private redis-server) and shows its tasks; the feature summary after the task table is
user_features_daily's output, which another DAG's run does not write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from featurelake_airflow import demo

pytestmark = pytest.mark.integration


def test_a_run_of_another_dag_ends_with_its_task_table(
    airflow_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", str(tmp_path / "lake"))
    monkeypatch.delenv("AIRFLOW_CONN_FEATURELAKE_ONLINE")  # the demo starts its own server

    assert demo.main(["--dag-id", "online_store_rebalance", "--date", "2026-10-28"]) == 0

    assert re.search(r"│ rebalance_online_store\s+│ success\s+│", capfd.readouterr().out)
