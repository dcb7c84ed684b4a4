"""The session a job builds under a real spark-submit, launched by SparkFeatureJobOperator on a local
master: the job's tuned base < the Spark connection's `conf` extra < the task's `conf`, with the
settings the results depend on kept whatever a layer asks for, read back with `spark.conf.get`
inside the job."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from featurelake_airflow.operators.spark_feature_job import SparkFeatureJobOperator
from tests.support import VENV_BIN

pytestmark = pytest.mark.integration

# Builds its session as the featurelake jobs do, and writes what the session holds.
APPLICATION = """
import json, sys
from featurelake.spark_session import build_spark_session

# a job's own session extension, as the view refresh adds Delta's (the classes need not exist:
# Spark logs a warning for an extension it cannot load, and the probe reads only the property)
spark = build_spark_session(
    "featurelake-conf-probe", overrides={"spark.sql.extensions": "org.example.JobExtension"}
)
keys = [
    "spark.sql.extensions",
    "spark.app.name",
    "spark.master",
    "spark.serializer",
    "spark.sql.shuffle.partitions",
    "spark.sql.session.timeZone",
    "spark.sql.ansi.enabled",
    "spark.executor.memory",
    "spark.executor.extraJavaOptions",
    "spark.dynamicAllocation.enabled",
]
report = {key: spark.conf.get(key, None) for key in keys}
open(sys.argv[1], "w").write(json.dumps(report))
spark.stop()
"""


def test_the_job_session_holds_base_connection_and_task_conf_in_that_order(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")  # spark-submit
    connection_conf = {
        "spark.log.level": "WARN",
        "spark.sql.shuffle.partitions": "7",
        "spark.executor.memory": "900m",
        # asked for by the connection, and ignored: the results depend on UTC and ANSI
        "spark.sql.session.timeZone": "America/New_York",
        "spark.sql.ansi.enabled": "false",
        # options of the connection's own for the executors: their JVMs still run in UTC
        "spark.executor.extraJavaOptions": "-Dfeaturelake.probe=connection",
        # the connection's session extensions: the job's own join them
        "spark.sql.extensions": "org.example.ConnectionExtension",
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_PRECEDENCE_TEST",
        json.dumps({"conn_type": "spark", "host": "local[2]", "extra": {"conf": connection_conf}}),
    )
    application = tmp_path / "probe.py"
    application.write_text(APPLICATION)
    report = tmp_path / "report.json"
    operator = SparkFeatureJobOperator(
        task_id="probe",
        conn_id="spark_precedence_test",
        application=str(application),
        application_args=[str(report)],
        name="featurelake-probe-2026-10-28",
        conf={"spark.sql.shuffle.partitions": "9"},
        report_path=str(report),
    )
    session = operator.execute(context={})
    assert session == {
        "spark.sql.extensions": "org.example.ConnectionExtension,org.example.JobExtension",
        "spark.app.name": "featurelake-probe-2026-10-28",  # the task's name, not the job's default
        "spark.master": "local[2]",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",  # the job's base
        "spark.sql.shuffle.partitions": "9",  # the task's conf over the connection's over the base
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.ansi.enabled": "true",
        "spark.executor.memory": "900m",  # the connection's
        "spark.executor.extraJavaOptions": "-Dfeaturelake.probe=connection -Duser.timezone=UTC",
        "spark.dynamicAllocation.enabled": None,  # never on a local master
    }
