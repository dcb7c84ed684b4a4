"""The DuckDB oracle for user_features against the hand-computed edge-case lake (fast, no Spark)."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.oracle.edge_case_lake import write_edge_case_lake, write_transactions_partition
from tests.oracle.user_features_duckdb import (
    FEATURE_COLUMNS,
    QUARANTINE_COLUMNS,
    compute_user_features,
    quarantine,
)

RUNS = [
    pytest.param((date(2026, 10, 28), 90), id="default-window"),
    pytest.param((date(2024, 3, 1), 31), id="short-window-across-leap-day"),
]


@pytest.fixture(params=RUNS)
def edge_lake(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    ds, window_days = request.param
    expected = write_edge_case_lake(tmp_path, ds=ds, window_days=window_days)
    return tmp_path, expected


def _features(lake: Path, expected: dict[str, Any]) -> pd.DataFrame:
    return compute_user_features(lake=lake, ds=expected["ds"], window_days=expected["window_days"])


def _window_dates(expected: dict[str, Any]) -> list[date]:
    return [expected["ds"] - timedelta(days=n) for n in range(expected["window_days"])]


def _plain(value: Any) -> Any:
    """A pandas cell as a plain Python value: missing -> None, timestamps -> datetime."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value


def test_columns_and_dtypes(edge_lake: tuple[Path, dict[str, Any]]) -> None:
    lake, expected = edge_lake
    frame = _features(lake, expected)

    assert list(frame.columns) == FEATURE_COLUMNS
    assert str(frame["last_transaction_ts"].dtype.tz) == "UTC"
    assert frame["transaction_count"].dtype == "int64"
    assert frame["transaction_count_7d"].dtype == "int64"
    assert frame["unique_merchants"].dtype == "int64"
    assert frame["days_since_last_transaction"].dtype == "int32"
    for column in ("total_spend", "avg_spend", "std_spend", "max_spend", "spend_7d", "last_amount"):
        assert frame[column].dtype == "float64", column
    assert frame["user_id"].is_unique
    assert (frame["feature_date"].dt.date == expected["ds"]).all()


def test_exactly_the_expected_users(edge_lake: tuple[Path, dict[str, Any]]) -> None:
    lake, expected = edge_lake
    users = set(_features(lake, expected)["user_id"])

    assert users == set(expected["features"])
    assert users.isdisjoint(expected["absent_users"])


def test_feature_values_match_hand_computed(edge_lake: tuple[Path, dict[str, Any]]) -> None:
    lake, expected = edge_lake
    frame = _features(lake, expected).set_index("user_id", drop=False)

    for user, want in expected["features"].items():
        got = {column: _plain(frame.at[user, column]) for column in FEATURE_COLUMNS}
        got["feature_date"] = got["feature_date"].date()
        for column in FEATURE_COLUMNS:
            if isinstance(want[column], float):
                assert got[column] == pytest.approx(want[column], rel=1e-12, abs=1e-12), (user, column)
            else:
                assert got[column] == want[column], (user, column)


@pytest.mark.parametrize(
    ("user", "column", "value"),
    [
        pytest.param("u_window_edge", "total_spend", 15.0, id="window-edge-in-and-out"),
        pytest.param("u_seven_day_edge", "spend_7d", 7.0, id="seven-day-edge"),
        pytest.param("u_no_recent", "transaction_count_7d", 0, id="no-recent-count-zero"),
        pytest.param("u_single", "std_spend", None, id="single-transaction-null-std"),
        pytest.param("u_exact_duplicate", "transaction_count", 2, id="exact-duplicates-count-once"),
        pytest.param("u_conflicting_duplicate", "total_spend", 12.5, id="conflict-versions-dropped"),
        pytest.param("u_all_negative", "top_category_group", "travel", id="negative-sums-rank"),
        pytest.param("u_unknown_category", "top_category_group", "unknown", id="unknown-and-null-category"),
        pytest.param("u_null_merchant_only", "unique_merchants", 0, id="null-merchants-not-counted"),
        pytest.param("u_latest_tie", "last_amount", 11.0, id="latest-tie-greatest-id"),
        pytest.param("u_group_tie", "top_category_group", "food", id="group-tie-alphabetical"),
        pytest.param("u_group_tie_cents", "top_category_group", "food", id="group-tie-in-cents"),
        pytest.param("u_date_mismatch", "total_spend", 3.0, id="date-mismatch-excluded"),
        pytest.param("u_max_amount", "total_spend", 9e12, id="largest-valid-amount"),
    ],
)
def test_single_edge_case(edge_lake: tuple[Path, dict[str, Any]], user: str, column: str, value: Any) -> None:
    lake, expected = edge_lake
    frame = _features(lake, expected).set_index("user_id")

    assert _plain(frame.at[user, column]) == value
    assert expected["features"][user][column] == value  # the literal table agrees with the spot check


def test_quarantine_reasons_and_counts(edge_lake: tuple[Path, dict[str, Any]]) -> None:
    lake, expected = edge_lake
    rows = quarantine(lake=lake, dates=_window_dates(expected))

    assert list(rows.columns) == QUARANTINE_COLUMNS
    assert rows["reason"].value_counts().to_dict() == expected["quarantine_counts"]
    got = Counter(
        (_plain(r.reason), _plain(r.transaction_id), _plain(r.user_id)) for r in rows.itertuples(index=False)
    )
    assert got == Counter(expected["quarantine_rows"])


def test_quarantine_keeps_the_conflicting_versions(edge_lake: tuple[Path, dict[str, Any]]) -> None:
    lake, expected = edge_lake
    rows = quarantine(lake=lake, dates=_window_dates(expected))

    conflicts = rows[rows["reason"] == "conflicting_duplicate"]
    assert sorted(conflicts["amount"]) == [40.0, 45.0, 45.0]  # each raw row, a version's copy too
    nan_rows = rows[rows["reason"] == "nan_amount"]
    assert math.isnan(nan_rows["amount"].iloc[0])
    # infinite, or beyond 9e12 in absolute value; unless an earlier rule already failed
    invalid = rows[(rows["reason"] == "invalid_amount")]
    assert sorted(invalid["amount"]) == [-math.inf, -1e13, 9.000000001e12, math.inf]


def test_quarantine_only_reads_the_requested_dates(edge_lake: tuple[Path, dict[str, Any]]) -> None:
    lake, expected = edge_lake
    rows = quarantine(lake=lake, dates=[expected["future_date"]])

    assert rows["reason"].value_counts().to_dict() == expected["future_quarantine_counts"]
    assert (rows["date"].dt.date == expected["future_date"]).all()


def test_later_partition_changes_nothing(edge_lake: tuple[Path, dict[str, Any]]) -> None:
    lake, expected = edge_lake
    before = _features(lake, expected)
    later = datetime.combine(expected["ds"] + timedelta(days=3), time(12), UTC)
    later_rows = [
        _row("t_late_1", "u_window_edge", 1_000.0, later),
        _row("t_late_2", "u_brand_new", 7.0, later),
        _row("t_edge_ds", "u_window_edge", 99.0, later),  # reuses an in-window transaction_id
    ]
    write_transactions_partition(lake, partition=later.date(), rows=later_rows)

    pd.testing.assert_frame_equal(_features(lake, expected), before)


def test_files_outside_the_window_are_not_read(edge_lake: tuple[Path, dict[str, Any]]) -> None:
    lake, expected = edge_lake
    before = _features(lake, expected)
    for partition in (
        expected["ds"] + timedelta(days=5),
        expected["ds"] - timedelta(expected["window_days"]),
    ):
        directory = lake / "raw" / "transactions" / f"date={partition.isoformat()}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "part-09999.parquet").write_bytes(b"not parquet")

    pd.testing.assert_frame_equal(_features(lake, expected), before)


def test_invalid_window_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="window_days must be >= 1, got 0"):
        compute_user_features(lake=tmp_path, ds=date(2026, 10, 28), window_days=0)


def test_missing_lake_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no categories lookup"):
        compute_user_features(lake=tmp_path / "nowhere", ds=date(2026, 10, 28))


def _row(transaction_id: str, user_id: str | None, amount: float | None, ts: datetime) -> dict[str, Any]:
    return {
        "transaction_id": transaction_id,
        "user_id": user_id,
        "merchant_id": "m99",
        "category_id": 1,
        "amount": amount,
        "currency": "USD",
        "transaction_ts": ts,
    }


_LATE_ROWS = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=4),  # days after ds
        st.sampled_from(["u_window_edge", "u_single", "u_refund", "u_new", "", None]),
        st.one_of(st.none(), st.floats(allow_infinity=False, min_value=-1e6, max_value=1e6)),
        st.sampled_from(["t_edge_ds", "t_single", "t_new", ""]),
    ),
    min_size=1,
    max_size=8,
)


def test_any_rows_after_ds_change_nothing(tmp_path: Path) -> None:
    ds = date(2026, 10, 28)
    write_edge_case_lake(tmp_path, ds=ds)
    before = compute_user_features(lake=tmp_path, ds=ds)

    @settings(max_examples=25, deadline=None)
    @given(late=_LATE_ROWS)
    def check(late: list[tuple[int, str | None, float | None, str]]) -> None:
        written: list[Path] = []
        try:
            for days_after, user_id, amount, transaction_id in late:
                ts = datetime.combine(ds + timedelta(days=days_after), time(12), UTC)
                row = _row(transaction_id, user_id, amount, ts)
                written.append(write_transactions_partition(tmp_path, partition=ts.date(), rows=[row]))
            pd.testing.assert_frame_equal(compute_user_features(lake=tmp_path, ds=ds), before)
        finally:
            for path in written:
                path.unlink()

    check()
