"""The session builder on a real JVM: a local driver it launches itself runs with its launch options."""

from __future__ import annotations

import pytest

from featurelake.spark_session import driver_collectors

pytestmark = pytest.mark.integration


def test_a_local_driver_it_launches_runs_its_master_the_parallel_collector_and_utc(spark) -> None:
    assert driver_collectors(spark) == ["PS MarkSweep", "PS Scavenge"]
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    # the master asked for, not the local[*] the launcher sets by default
    assert spark.sparkContext.master == "local[2]"
