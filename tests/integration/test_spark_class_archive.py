"""The tests' Spark drivers map their classes from the session's class-data-sharing archive
(tests/spark_class_archive.py): a real spark-submit, its JVM's class loading logged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.spark_class_archive import ARCHIVE_OPTION
from tests.support import spark_submit

pytestmark = pytest.mark.integration

JOB = """
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
assert spark.range(10).selectExpr("sum(id)").first()[0] == 45
spark.stop()
"""


def test_a_spark_driver_loads_its_classes_from_the_archive(tmp_path: Path) -> None:
    options = os.environ.get("SPARK_SUBMIT_OPTS", "")
    assert ARCHIVE_OPTION in options, f"SPARK_SUBMIT_OPTS has no archive: {options!r}"
    job = tmp_path / "sum.py"
    job.write_text(JOB)
    class_log = tmp_path / "classes.log"
    run = spark_submit(
        job,
        conf={"spark.ui.enabled": "false"},
        env={"SPARK_SUBMIT_OPTS": f"{options} -Xlog:class+load=info:file={class_log}"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    loads = {
        line.split("]")[-1].split(" source: ")[0].strip(): line.split(" source: ")[-1]
        for line in class_log.read_text().splitlines()
        if " source: " in line
    }
    assert loads["org.apache.spark.SparkContext"] == "shared objects file (top)", loads.get(
        "org.apache.spark.SparkContext"
    )
    from_archive = sum(source == "shared objects file (top)" for source in loads.values())
    from_jars = sum(source.startswith("file:") or source.startswith("jar:") for source in loads.values())
    assert from_archive > 5 * from_jars, (from_archive, from_jars)
