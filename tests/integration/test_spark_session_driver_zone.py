"""The driver's JVM runs in UTC whatever the machine's zone, so a Python date reaches Spark as the
same day: in Pacific/Apia, which skipped 2011-12-30, `F.lit(date(2011, 12, 30))` went through
java.sql.Date in the JVM's default zone and became 2011-12-31 (a feature partition of the wrong
date, a range read of the wrong day). The library's own date filters do not depend on it: they
are `date_literal`s, which hold in a session built elsewhere, in any zone."""

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


# A session not built by featurelake, its JVM left in the skipped day's zone.
RAW_READ_PROBE = """
import json, sys
from datetime import UTC, date, datetime
from pyspark.sql import SparkSession
from featurelake.user_features import read_raw_transactions
from tests.oracle.edge_case_lake import write_transactions_partition

lake, day = sys.argv[1], date(2011, 12, 30)
row = {"transaction_id": "t1", "user_id": "u1", "merchant_id": "m1", "category_id": 1, "amount": 1.0,
       "currency": "USD", "transaction_ts": datetime(2011, 12, 30, 12, tzinfo=UTC)}
path = write_transactions_partition(lake, partition=day, rows=[row])
spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
rows = read_raw_transactions(spark, f"{lake}/raw/transactions", {day: [path.name]}).collect()
zone = spark.sparkContext._jvm.java.util.TimeZone.getDefault().getID()
print(json.dumps({"dates": [str(r["date"]) for r in rows], "zone": zone}))
spark.stop()
"""


def test_the_raw_read_keeps_its_day_in_a_session_whose_jvm_skipped_it(tmp_path) -> None:
    """`F.lit(date(2011, 12, 30))` in the raw read's date filter was 2011-12-31 there: the day's
    rows were dropped without a word."""
    environment = {**os.environ, "TZ": "Pacific/Apia", "JAVA_TOOL_OPTIONS": "-Duser.timezone=Pacific/Apia"}
    result = subprocess.run(
        [sys.executable, "-c", RAW_READ_PROBE, str(tmp_path / "lake")],
        env=environment,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "dates": ["2011-12-30"],
        "zone": "Pacific/Apia",
    }
