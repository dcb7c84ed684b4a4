from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One real local Spark session (2 cores) for the library tests, built like the jobs build theirs."""
    from featurelake.spark_session import build_spark_session

    # py4j logs from finalizers after pytest closed its capture streams; keep it to warnings.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    session = build_spark_session("featurelake-tests", master="local[2]")
    try:
        yield session
    finally:
        session.stop()
