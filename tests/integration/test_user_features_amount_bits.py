"""Amounts whose features came out differently by mode or from the oracle: group sums of amounts
above 2**32 that tie in cents, and a largest amount of zero met as 0.0 and -0.0. Each lake is run in
full and incremental mode in the test session's local Spark; both must give the same bits, and
match the DuckDB oracle."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurelake.user_features_run import run_user_features
from tests.integration.test_user_features_job import assert_matches_oracle
from tests.oracle.edge_case_lake import CATEGORIES, write_categories, write_transactions_partition
from tests.oracle.user_features_duckdb import compute_user_features

pytestmark = pytest.mark.integration

DS = date(2026, 9, 10)
WINDOW_DAYS = 2
FLOAT_COLUMNS = ["total_spend", "avg_spend", "std_spend", "max_spend", "spend_7d", "last_amount"]


def _row(
    transaction_id: str, amount: float, hour: int, *, merchant_id: str = "m1", category_id: int = 1
) -> dict:
    return {
        "transaction_id": transaction_id,
        "user_id": "u1",
        "merchant_id": merchant_id,
        "category_id": category_id,
        "amount": amount,
        "currency": "USD",
        "transaction_ts": datetime.combine(DS, time(hour), UTC),
    }


def _features_by_mode(spark, tmp_path: Path, rows: list[dict]) -> dict[str, pd.DataFrame]:
    """The features of DS from a full run and from an incremental run (on a lake with no tile) of a
    lake holding `rows` on DS; both equal to the bit, signs of zero included, and to the oracle."""
    by_mode = {}
    for mode in ("full", "incremental"):
        lake = tmp_path / mode
        write_categories(lake, CATEGORIES)
        write_transactions_partition(lake, partition=DS, rows=rows)
        run_user_features(spark, ds=DS, lake=str(lake), window_days=WINDOW_DAYS, mode=mode)
        by_mode[mode] = pd.read_parquet(lake / "features" / "user_features" / f"date={DS.isoformat()}")
    full, incremental = by_mode["full"], by_mode["incremental"]
    pd.testing.assert_frame_equal(full, incremental, check_exact=True)
    for column in FLOAT_COLUMNS:
        assert np.signbit(full[column]).tolist() == np.signbit(incremental[column]).tolist(), column
    assert_matches_oracle(full, compute_user_features(lake=tmp_path / "full", ds=DS, window_days=WINDOW_DAYS))
    return by_mode


def test_group_sums_of_amounts_above_2_to_the_32_that_tie_in_cents_tie(spark, tmp_path: Path) -> None:
    """food holds 412335648552.49 + 95.23 and travel 412335648647.72: equal in cents, so food wins
    the tie. Amounts times 1e6 gave food 412335648647719984 micro-units against travel's
    412335648647720000 (a double holds no micro-units at that size), and travel won."""
    rows = [
        _row("t1", 412_335_648_552.49, 10, category_id=1),
        _row("t2", 95.23, 11, category_id=2),
        _row("t3", 412_335_648_647.72, 12, category_id=3),
    ]

    full = _features_by_mode(spark, tmp_path, rows)["full"].iloc[0]

    assert full["top_category_group"] == "food"
    assert full["total_spend"] == 824_671_297_295.44


@pytest.mark.parametrize("later_zero", [-0.0, 0.0], ids=["later_negative", "later_positive"])
def test_a_largest_amount_of_zero_is_positive_in_every_mode(spark, tmp_path: Path, later_zero: float) -> None:
    """0.0 and -0.0 at two merchants on one day: max compares them as equal and keeps the one it
    meets first, which was the later one in a full run (rows by time, latest first) and the one of
    the first merchant in an incremental run (tiles by merchant), so max_spend had a sign by mode.
    last_amount, the later zero, has no sign either (docs/features.md): exact copies that differ
    only there gave it the sign of whichever copy ranked first."""
    earlier_zero = -later_zero
    rows = [_row("t1", earlier_zero, 10, merchant_id="m1"), _row("t2", later_zero, 12, merchant_id="m2")]

    by_mode = _features_by_mode(spark, tmp_path, rows)

    for mode, features in by_mode.items():
        assert features["max_spend"].tolist() == [0.0], mode
        assert not np.signbit(features["max_spend"]).any(), mode
        assert features["last_amount"].tolist() == [0.0], mode
        assert not np.signbit(features["last_amount"]).any(), mode
