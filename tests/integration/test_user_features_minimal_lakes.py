"""Minimal lakes found by differential testing of run_user_features against the DuckDB oracle: each
one is run in full and incremental mode in the test session's local Spark, and both must equal the
oracle and the hand-computed values."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd
import pytest

from featurelake.user_features_run import run_user_features
from tests.integration.test_user_features_job import assert_matches_oracle
from tests.oracle.edge_case_lake import CATEGORIES, write_categories, write_transactions_partition
from tests.oracle.user_features_duckdb import compute_user_features

pytestmark = pytest.mark.integration

DS = date(2026, 9, 10)
WINDOW_DAYS = 2


def _row(transaction_id: str, amount: float, day: date, hour: int, *, category_id: int = 1) -> dict:
    return {
        "transaction_id": transaction_id,
        "user_id": "u1",
        "merchant_id": "m1",
        "category_id": category_id,
        "amount": amount,
        "currency": "USD",
        "transaction_ts": datetime.combine(day, time(hour), UTC),
    }


def _features(lake: Path) -> pd.DataFrame:
    return pd.read_parquet(lake / "features" / "user_features" / f"date={DS.isoformat()}")


def _full_and_incremental(spark, tmp_path: Path, write_lake) -> pd.DataFrame:
    """The features of DS from a full run and from an incremental run on a copy with no tile: they
    must be identical, and match the oracle."""
    by_mode = {}
    for mode in ("full", "incremental"):
        lake = tmp_path / mode
        write_lake(lake)
        run_user_features(spark, ds=DS, lake=str(lake), window_days=WINDOW_DAYS, mode=mode)
        by_mode[mode] = _features(lake)
    pd.testing.assert_frame_equal(by_mode["full"], by_mode["incremental"], check_exact=True)
    got = by_mode["full"]
    assert_matches_oracle(got, compute_user_features(lake=tmp_path / "full", ds=DS, window_days=WINDOW_DAYS))
    return got


def test_the_largest_valid_amount_with_another_transaction(spark, tmp_path: Path) -> None:
    """9e12 (the largest valid amount) and 1.00: every sum fits (9e18 + 1e6 micro-units, and squares
    8.1e37 + 1e12), but n * sum(x^2) = 1.62e38 does not fit decimal(38,0). The job failed with
    NUMERIC_VALUE_OUT_OF_RANGE on a lake the contract calls valid."""

    def write_lake(lake: Path) -> None:
        write_categories(lake, CATEGORIES)
        rows = [_row("t1", 9e12, DS, 10), _row("t2", 1.00, DS, 11)]
        write_transactions_partition(lake, partition=DS, rows=rows)

    got = _full_and_incremental(spark, tmp_path, write_lake)
    row = got.iloc[0]
    assert row["total_spend"] == 9_000_000_000_001.0
    assert row["avg_spend"] == 4_500_000_000_000.5
    assert row["std_spend"] == pytest.approx(6_363_961_030_678.2206, rel=1e-15)


def test_std_of_a_purchase_and_its_refund_at_the_largest_amount(spark, tmp_path: Path) -> None:
    """A purchase of 7e12 and its refund on the next day: sum 0, sum of squares 9.8e37 (fits), and
    the numerator n * sum(x^2) - sum(x)^2 = 1.96e38 does not fit decimal(38,0)."""

    def write_lake(lake: Path) -> None:
        write_categories(lake, CATEGORIES)
        yesterday = DS - timedelta(days=1)
        write_transactions_partition(lake, partition=yesterday, rows=[_row("t1", 7e12, yesterday, 10)])
        write_transactions_partition(lake, partition=DS, rows=[_row("t2", -7e12, DS, 10)])

    got = _full_and_incremental(spark, tmp_path, write_lake)
    row = got.iloc[0]
    assert row["total_spend"] == 0.0
    assert row["std_spend"] == pytest.approx(7e12 * 2**0.5, rel=1e-15)


def test_an_identical_repeated_row_of_the_lookup_is_harmless(spark, tmp_path: Path) -> None:
    """The same lookup row twice: the oracle joined the transaction to both and doubled its sums."""

    def write_lake(lake: Path) -> None:
        write_categories(lake, [(1, "groceries", "food"), (1, "groceries", "food"), (3, "flights", "travel")])
        rows = [_row("t1", 10.00, DS, 10, category_id=1), _row("t2", 4.00, DS, 11, category_id=3)]
        write_transactions_partition(lake, partition=DS, rows=rows)

    row = _full_and_incremental(spark, tmp_path, write_lake).iloc[0]
    assert (row["total_spend"], row["transaction_count"], row["top_category_group"]) == (14.0, 2, "food")


def test_a_transaction_id_reused_on_two_dates_counts_twice(spark, tmp_path: Path) -> None:
    """docs/features.md ("Combining"): an id reused on two dates is two transactions in every feature.
    The oracle counted distinct ids, so one transaction with no std_spend."""

    def write_lake(lake: Path) -> None:
        write_categories(lake, CATEGORIES)
        yesterday = DS - timedelta(days=1)
        write_transactions_partition(lake, partition=yesterday, rows=[_row("t1", 10.00, yesterday, 10)])
        write_transactions_partition(lake, partition=DS, rows=[_row("t1", 5.00, DS, 10)])

    row = _full_and_incremental(spark, tmp_path, write_lake).iloc[0]
    assert (row["total_spend"], row["transaction_count"], row["transaction_count_7d"]) == (15.0, 2, 2)
    assert row["std_spend"] == pytest.approx(3.5355339059327378, rel=1e-12)


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_sums_beyond_the_exact_range_fail_naming_the_cause(spark, tmp_path: Path, mode: str) -> None:
    """Two valid amounts of 9e12 and -9e12: the sum of their squares in micro-units (1.62e38) is past
    decimal(38,0). The run fails, as the exact sums require, with an error that says what overflowed
    and what to do, not Spark's ARITHMETIC_OVERFLOW alone; and it publishes nothing."""
    lake = tmp_path / "lake"
    write_categories(lake, CATEGORIES)
    write_transactions_partition(
        lake, partition=DS, rows=[_row("t1", 9e12, DS, 10), _row("t2", -9e12, DS, 11)]
    )

    with pytest.raises(OverflowError) as failed:
        run_user_features(spark, ds=DS, lake=str(lake), window_days=WINDOW_DAYS, mode=mode)

    message = " ".join(str(failed.value).split())
    assert f"features of {DS}" in message
    assert "more than 9.2e12 in absolute value, or their squares to more than 1e26" in message
    assert "correct or remove the rows with the largest amounts" in message
    assert not (lake / "features" / "user_features" / f"date={DS.isoformat()}").exists()
