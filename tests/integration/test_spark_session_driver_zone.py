"""The driver's JVM runs in UTC whatever the machine's zone, so a Python date reaches Spark as the
same day: in Pacific/Apia, which skipped 2011-12-30, `F.lit(date(2011, 12, 30))` went through
java.sql.Date in the JVM's default zone and became 2011-12-31 (a feature partition of the wrong
date, a range read of the wrong day)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import PROJECT_ROOT

pytestmark = pytest.mark.integration

# A JVM of its own, started in the skipped day's zone.
PROBE = """
import json
from datetime import date
from pyspark.sql import functions as F
from featurelake.spark_session import build_spark_session

spark = build_spark_session("featurelake-zone-probe", master="local[1]")
day = spark.range(1).select(F.lit(date(2011, 12, 30)).cast("string").alias("day")).first()["day"]
zone = spark.sparkContext._jvm.java.util.TimeZone.getDefault().getID()
print(json.dumps({"day": day, "zone": zone}))
spark.stop()
"""


def test_a_python_date_is_the_same_day_in_a_driver_started_in_a_zone_that_skipped_it() -> None:
    environment = {**os.environ, "TZ": "Pacific/Apia", "JAVA_TOOL_OPTIONS": "-Duser.timezone=Pacific/Apia"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=environment,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"day": "2011-12-30", "zone": "UTC"}
