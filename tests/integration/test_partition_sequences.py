"""Partitioning cases found by model-based random sequences of writes, reads and reruns."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest

from featurelake.partitioning import existing_date_partitions, read_partition_range, write_partitioned

pytestmark = pytest.mark.integration

DAY = date(2026, 3, 1)


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("value", ["20260301", "2026-W09-7"])
def test_staged_write_refuses_values_only_fromisoformat_takes_for_dates(spark, tmp_path: Path, value) -> None:
    # date.fromisoformat takes both for 2026-03-01: the replaced date=2026-03-01 was removed and
    # date=<value> swapped in, which listings took for 2026-03-01 and pruned reads failed on.
    path, staging = str(tmp_path / "events"), str(tmp_path / "_staging" / "events")
    write_partitioned(spark.createDataFrame([(DAY, 1)], "date date, value int"), path, ["date"])
    before = _digest(tmp_path / "events")
    rows = spark.createDataFrame([(value, 2)], "date string, value int")

    with pytest.raises(ValueError, match=rf"have a date value that is not a date \('{value}'"):
        write_partitioned(rows, path, ["date"], replace=[DAY], staging=staging)

    assert _digest(tmp_path / "events") == before


def test_a_directory_named_by_a_compact_date_is_not_a_partition(spark, tmp_path: Path) -> None:
    path = tmp_path / "events"
    write_partitioned(spark.createDataFrame([(DAY, 1)], "date date, value int"), str(path), ["date"])
    (path / "date=20260302").mkdir()
    (path / "date=20260302" / "part-0.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"date=20260302 is not a partition of .*date=YYYY-MM-DD"):
        existing_date_partitions(spark, str(path))


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param("date date, key string, value int", id="date-first"),
        pytest.param("key string, value int", id="no-date-column"),
    ],
)
def test_range_read_of_a_dataset_not_written_yet_is_empty(spark, tmp_path: Path, schema) -> None:
    # Without a schema the error says to pass one; with it, the read failed with PATH_NOT_FOUND.
    path = str(tmp_path / "never-written")
    df = read_partition_range(spark, path, DAY, date(2026, 3, 3), schema=schema)
    assert df.count() == 0
    assert df.columns == ["key", "value", "date"]
    assert dict(df.dtypes)["date"] == "date"
