"""SparkFeatureJobOperator returns the report of its own submit, never one an earlier attempt left
(spark-submit itself is replaced by a stand-in that writes, or does not write, the report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from featurelake_airflow.operators.spark_feature_job import SparkFeatureJobOperator


@pytest.fixture
def operator(monkeypatch, tmp_path: Path) -> SparkFeatureJobOperator:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_REPORT_TEST", json.dumps({"conn_type": "spark", "host": "local[2]"})
    )
    return SparkFeatureJobOperator(
        task_id="compute",
        application="job.py",
        conn_id="spark_report_test",
        report_path=str(tmp_path / "_metrics" / "job" / "date=2026-09-10.json"),
        ship_library=False,
    )


def _submit_writing(report: dict | None):
    def submit(self: SparkFeatureJobOperator, context: object) -> None:
        if report is not None:
            Path(self.report_path).write_text(json.dumps(report))

    return submit


def test_the_report_of_this_submit_is_returned(monkeypatch, operator) -> None:
    Path(operator.report_path).parent.mkdir(parents=True)
    Path(operator.report_path).write_text(json.dumps({"attempt": 1}))
    monkeypatch.setattr(SparkSubmitOperator, "execute", _submit_writing({"attempt": 2}))
    assert operator.execute(context={}) == {"attempt": 2}


def test_a_stale_report_never_becomes_the_result(monkeypatch, operator) -> None:
    Path(operator.report_path).parent.mkdir(parents=True)
    Path(operator.report_path).write_text(json.dumps({"attempt": 1, "users_written": 99}))
    monkeypatch.setattr(SparkSubmitOperator, "execute", _submit_writing(None))
    with pytest.raises(FileNotFoundError, match=r"wrote no report at .*date=2026-09-10\.json"):
        operator.execute(context={})


class _TaskStateStore(dict):
    def set(self, key: str, value: str) -> None:
        self[key] = value


def test_a_durable_retry_that_reconnects_keeps_the_report_of_its_job(monkeypatch, operator) -> None:
    """The provider reconnects to the job an earlier attempt submitted (here: already finished),
    which wrote the report; only a fresh submit (submit_job) removes it."""
    operator.durable = True
    Path(operator.report_path).parent.mkdir(parents=True)
    Path(operator.report_path).write_text(json.dumps({"attempt": 1}))
    monkeypatch.setattr(SparkSubmitOperator, "execute", _submit_writing(None))
    context = {"task_state_store": _TaskStateStore({operator.external_id_key: "driver-20260910-0001"})}
    assert operator.execute(context=context) == {"attempt": 1}

    monkeypatch.setattr(SparkSubmitOperator, "submit_job", lambda self, context: "driver-20260910-0002")
    assert operator.submit_job(context) == "driver-20260910-0002"
    assert not Path(operator.report_path).exists()
