"""The settings the features' correctness depends on win over every layer of configuration, on the
test session's real local Spark."""

from __future__ import annotations

import logging

import pytest

from featurelake.spark_session import build_spark_session

pytestmark = pytest.mark.integration

# What docs/features.md promises: these values whatever any layer of configuration asks for.
REQUIRED = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.files.ignoreCorruptFiles": "false",
    "spark.sql.files.ignoreMissingFiles": "false",
    "spark.sql.caseSensitive": "false",
}


def test_required_settings_win_over_overrides_with_a_warning(spark, caplog) -> None:
    asked = {
        "spark.sql.session.timeZone": "America/New_York",
        "spark.sql.ansi.enabled": "false",
        "spark.sql.parquet.outputTimestampType": "INT96",
        "spark.sql.files.ignoreCorruptFiles": "true",
        "spark.sql.files.ignoreMissingFiles": "true",
        "spark.sql.caseSensitive": "true",
    }
    try:
        with caplog.at_level(logging.WARNING, logger="featurelake.spark_session"):
            session = build_spark_session("required-conf", master="local[2]", overrides=asked)
        assert {key: session.conf.get(key) for key in asked} == REQUIRED
        # the session's dates are UTC's: 23:30 UTC is still that day
        row = session.sql("SELECT to_date(TIMESTAMP '2026-09-10 23:30:00+00:00') AS day").first()
        assert row["day"].isoformat() == "2026-09-10"
        for key, value in asked.items():
            assert f"Ignoring {key}={value}" in caplog.text
    finally:
        for key, value in REQUIRED.items():
            spark.conf.set(key, value)


def test_the_same_values_asked_for_raise_no_warning(spark, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="featurelake.spark_session"):
        build_spark_session("required-conf", master="local[2]", overrides={"spark.sql.ansi.enabled": "True"})
    assert "Ignoring" not in caplog.text
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"
