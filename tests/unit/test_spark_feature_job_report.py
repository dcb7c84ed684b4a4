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


def test_a_second_execute_submits_what_the_first_did(monkeypatch, tmp_path: Path) -> None:
    """The merged conf, the credentials file and the library zip are this submit's only: the
    operator's own arguments are back after it, so a second execute does not ship the library
    twice or take the first submit's merged conf for the task's own."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_REPORT_TEST",
        json.dumps(
            {
                "conn_type": "spark",
                "host": "local[2]",
                "extra": {"conf": {"spark.hadoop.fs.s3a.secret.key": "s3cr3t"}},
            }
        ),
    )
    operator = SparkFeatureJobOperator(
        task_id="compute",
        application="job.py",
        conn_id="spark_report_test",
        conf={"spark.sql.shuffle.partitions": "8"},
        py_files="deps.zip",
        report_path=str(tmp_path / "report.json"),
    )
    submits: list[dict] = []

    def submit(self: SparkFeatureJobOperator, context: object) -> None:
        submits.append(
            {
                "conf": dict(self.conf),
                "py_files": [Path(p).name for p in self.py_files.split(",")],
                "properties_file": Path(self.properties_file).name,
            }
        )
        Path(self.report_path).write_text(json.dumps({"attempt": len(submits)}))

    monkeypatch.setattr(SparkSubmitOperator, "execute", submit)
    assert operator.execute(context={}) == {"attempt": 1}
    assert operator.execute(context={}) == {"attempt": 2}

    assert submits[0] == submits[1]
    assert submits[0]["py_files"] == ["deps.zip", "featurelake.zip"]
    assert submits[0]["properties_file"] == "spark.properties"
    assert "spark.hadoop.fs.s3a.secret.key" not in submits[0]["conf"]
    assert submits[0]["conf"]["spark.sql.shuffle.partitions"] == "8"
    assert operator.conf == {"spark.sql.shuffle.partitions": "8"}
    assert operator.py_files == "deps.zip"
    assert operator.properties_file is None
