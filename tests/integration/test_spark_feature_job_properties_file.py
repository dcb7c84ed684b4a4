"""SparkFeatureJobOperator through real spark-submit on a local master: the driver options of the
properties file spark-submit loads (the operator's `properties_file`, or spark-defaults.conf in
$SPARK_CONF_DIR) reach the driver; the operator's launch default does not replace them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from featurelake_airflow.operators.spark_feature_job import SparkFeatureJobOperator
from tests.support import VENV_BIN

pytestmark = pytest.mark.integration

# Writes the report: the JVM system property the properties file sets, and the driver's collectors.
APPLICATION = """
import json, sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
jvm = spark.sparkContext._jvm
beans = jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
report = {
    "probe": jvm.java.lang.System.getProperty("featurelake.probe"),
    "collectors": sorted(bean.getName() for bean in beans),
}
open(sys.argv[1], "w").write(json.dumps(report))
spark.stop()
"""


@pytest.mark.parametrize("source", ["properties_file", "spark_conf_dir"])
def test_the_properties_file_driver_options_reach_the_driver(
    source: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")  # spark-submit
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_PROPERTIES_TEST", json.dumps({"conn_type": "spark", "host": "local[1]"})
    )
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    properties = conf_dir / "spark-defaults.conf"
    properties.write_text("spark.driver.extraJavaOptions  -Dfeaturelake.probe=from-the-file\n")
    if source == "spark_conf_dir":
        monkeypatch.setenv("SPARK_CONF_DIR", str(conf_dir))
    application = tmp_path / "probe.py"
    application.write_text(APPLICATION)
    report = tmp_path / "report.json"
    operator = SparkFeatureJobOperator(
        task_id="probe",
        conn_id="spark_properties_test",
        application=str(application),
        application_args=[str(report)],
        properties_file=str(properties) if source == "properties_file" else None,
        report_path=str(report),
        ship_library=False,
    )
    result = operator.execute(context={})
    assert result["probe"] == "from-the-file"
    # the file set the driver's options, so the launch default (the parallel collector) stays out
    assert result["collectors"] != ["PS MarkSweep", "PS Scavenge"]
