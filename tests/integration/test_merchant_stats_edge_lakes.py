"""Minimal lakes that a differential fuzz of the Dask merchant statistics job against its DuckDB
oracle found wrong, one per defect: a failed run whose other staging tasks were still running, and
raw files that the data contract says readers ignore."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import featurelake.merchant_stats as merchant_stats
from featurelake.merchant_stats import compute_merchant_stats, dask_client
from featurelake.synthetic import TRANSACTIONS_SCHEMA
from tests.oracle.merchant_stats_duckdb import oracle

pytestmark = pytest.mark.integration

DS = date(2026, 8, 20)


def write_day(
    lake: Path, day: date, rows: list[tuple[str, str, str, float]], name: str = "part-00000.parquet"
) -> None:
    """One raw file of `day` with rows (transaction_id, user_id, merchant_id, amount) at noon UTC."""
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    directory = lake / "raw" / "transactions" / f"date={day}"
    directory.mkdir(parents=True, exist_ok=True)
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    table = pa.table(
        {
            "transaction_id": pa.array(columns[0], pa.string()),
            "user_id": pa.array(columns[1], pa.string()),
            "merchant_id": pa.array(columns[2], pa.string()),
            "category_id": pa.array([1] * len(rows), pa.int32()),
            "amount": pa.array(columns[3], pa.float64()),
            "currency": pa.array(["USD"] * len(rows), pa.string()),
            "transaction_ts": pa.array([noon] * len(rows), pa.timestamp("us", tz="UTC")),
        },
        schema=TRANSACTIONS_SCHEMA,
    )
    pq.write_table(table, directory / name)


REAL_STAGE = merchant_stats.stage_partition
SLOW_STARTED, SLOW_DONE = threading.Event(), threading.Event()


# How long partition 1 waits for the failed run to remove its staging directory before staging.
# A run that waits for its staging tasks never removes it meanwhile, so this wait is the test's cost.
STAGING_REMOVAL_PATIENCE = 3.0


def stage_second_slowly_fail_first(rows, *, staging: str, buckets: int, partition_info: dict | None = None):
    """Fails Dask partition 0 once partition 1 has started, and stages partition 1 once the run has
    removed its staging directory (or after STAGING_REMOVAL_PATIENCE s): it is still staging when the
    other partition fails, however slowly the failure reaches the client (a fixed 1 s sleep let a
    run that did not wait pass on a busy machine). A module-level function: Dask tokenizes what it
    maps."""
    if (partition_info or {}).get("number") == 0:
        assert SLOW_STARTED.wait(30)
        raise OSError("cannot stage the first date")
    SLOW_STARTED.set()
    deadline = time.monotonic() + STAGING_REMOVAL_PATIENCE
    while Path(staging).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        return REAL_STAGE(rows, staging=staging, buckets=buckets, partition_info=partition_info)
    finally:
        SLOW_DONE.set()


def test_a_failed_run_waits_for_its_other_staging_tasks_before_removing_the_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging a raw partition fails while another partition is being staged. The run raised at
    once and removed its staging directory, and the other task, still running on a worker thread,
    then wrote its bucket files into it: a copy of valid rows left in `_staging/` for good, or
    staged into the next run's directory."""
    lake = tmp_path / "lake"
    write_day(lake, DS - timedelta(days=1), [("t1", "u0000001", "m00001", 1.0)])
    write_day(lake, DS, [("t2", "u0000001", "m00001", 2.0)])
    staging = tmp_path / "staging"
    SLOW_STARTED.clear()
    SLOW_DONE.clear()
    monkeypatch.setattr(merchant_stats, "stage_partition", stage_second_slowly_fail_first)
    with dask_client("local") as client, pytest.raises(OSError, match="cannot stage the first date"):
        compute_merchant_stats(
            client,
            raw_transactions=str(lake / "raw" / "transactions"),
            output=str(tmp_path / "merchant_stats" / f"date={DS}"),
            staging=str(staging),
            ds=DS,
            window_days=2,
        )
    assert SLOW_DONE.wait(30)
    assert not staging.exists(), sorted(str(path.relative_to(staging)) for path in staging.rglob("*"))


def test_the_oracle_ignores_hidden_and_marker_parquet_files(tmp_path: Path) -> None:
    """docs/data-contract.md: readers ignore names starting with `.` or `_` in a date directory,
    whatever their suffix. The oracle globbed `*/*.parquet` and counted them."""
    lake = tmp_path / "lake"
    write_day(lake, DS, [("t1", "u0000001", "m00001", 1.0)])
    write_day(lake, DS, [("t2", "u0000002", "m00001", 5.0)], name=".part-00001.parquet")
    write_day(lake, DS, [("t3", "u0000003", "m00002", 7.0)], name="_temporary.parquet")
    got = oracle(lake, DS, 1)
    assert got["merchant_id"].tolist() == ["m00001"]
    assert got[["transaction_count", "unique_users", "total_amount"]].values.tolist() == [[1, 1, 1.0]]
    with dask_client("local") as client:
        report = compute_merchant_stats(
            client,
            raw_transactions=str(lake / "raw" / "transactions"),
            output=str(tmp_path / "merchant_stats" / f"date={DS}"),
            staging=str(tmp_path / "staging"),
            ds=DS,
            window_days=1,
        )
    assert (report.merchants, report.rows_read, report.rows_counted) == (1, 1, 1)


def test_the_oracle_of_a_lake_without_a_landed_file_is_empty(tmp_path: Path) -> None:
    """Partitions that have not landed (only marker files) or are empty: no merchant, where the
    oracle's glob found no file and DuckDB raised."""
    lake = tmp_path / "lake"
    (lake / "raw" / "transactions" / f"date={DS}").mkdir(parents=True)
    (lake / "raw" / "transactions" / f"date={DS}" / "_SUCCESS").write_bytes(b"")
    (lake / "raw" / "transactions" / f"date={DS - timedelta(days=1)}").mkdir()
    got = oracle(lake, DS, 2)
    assert got.empty
    assert {"merchant_id", "transaction_count", "total_amount", "active_days"} <= set(got.columns)
