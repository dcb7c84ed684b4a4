"""A small hand-written raw lake with every edge case of the user_features contract, one user per case.

`write_edge_case_lake` writes it under `lake` for a run date `ds` and returns the expected job output,
computed by hand and written here as literals, so that tests can pin the oracle (and the Spark job) to it.

Users (all dates are relative to ds; W is the window):
- u_window_edge: one row on ds-(W-1) (in), one on ds-W (out), one on ds, one after ds (never counts).
- u_old_only / u_future_only: rows only on ds-W / only after ds; absent.
- u_seven_day_edge: ds-6 at 00:00 is in the 7-day window, ds-7 at 23:59:59.999999 is not.
- u_no_recent: nothing in the last 7 days, so spend_7d 0.0 and transaction_count_7d 0.
- u_single: exactly one transaction, so std_spend is null.
- u_exact_duplicate: exact duplicate rows, in the same file and across two files of one partition.
- u_conflicting_duplicate: one transaction_id with two amounts, one of them delivered twice (all three
  raw rows quarantined), and one clean row.
- u_invalid_twin: a clean row and an invalid row (NaN amount) with the same transaction_id: the clean
  row counts as it is, neither a conflicting version nor a copy, and only the invalid one is quarantined.
- u_all_negative: only refunds; every sum is negative and the least negative group wins.
- u_refund: a purchase and its refund cancel out within one category group.
- u_unknown_category: category_id missing from the lookup and null category_id both map to 'unknown'.
- u_null_merchant / u_null_merchant_only: null merchant_id is not counted by unique_merchants.
- u_latest_tie: two transactions at the same latest timestamp; the greatest transaction_id wins.
- u_group_tie: an exact tie between group sums; the alphabetically smallest group wins.
- u_group_tie_cents: 0.10 + 0.20 against 0.30: a tie in cents, although not in float64 arithmetic.
- u_date_mismatch: valid rows at 00:00:00 and 23:59:59.999999 UTC, plus a row whose ts falls on another
  UTC day than its directory (quarantined).
- u_invalid_only: only invalid rows (null and empty transaction_id, null, NaN, infinite and too large
  amounts, null ts, date mismatch); absent.
- u_max_amount: one transaction of exactly the largest valid amount, 9e12.
- Rows with a null or empty user_id, one of them also with a NaN amount (the first failing check wins).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TRANSACTIONS_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("user_id", pa.string()),
        ("merchant_id", pa.string()),
        ("category_id", pa.int32()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("transaction_ts", pa.timestamp("us", tz="UTC")),
    ]
)

CATEGORIES_SCHEMA = pa.schema(
    [("category_id", pa.int32()), ("category_name", pa.string()), ("category_group", pa.string())]
)

CATEGORIES = [
    (1, "groceries", "food"),
    (2, "restaurants", "food"),
    (3, "flights", "travel"),
    (4, "hotels", "travel"),
    (5, "electronics", "shopping"),
    (6, "books", "shopping"),
]

UNKNOWN_CATEGORY_ID = 999
MIN_WINDOW_DAYS = 31  # the deepest in-window row besides the window edge is ds-30


def write_edge_case_lake(lake: Path, *, ds: date, window_days: int = 90) -> dict[str, Any]:
    """Write the edge-case lake under `lake` and return the expected output for run date `ds`.

    The returned dict has `ds`, `window_days`, `features` (user_id -> {column: value} for every
    FEATURE_COLUMN), `absent_users`, `quarantine_counts` and `quarantine_rows` (Counter-ready tuples
    of (reason, transaction_id, user_id)) for the window's partitions, and `future_date` with
    `future_quarantine_counts` for the partition after ds.
    """
    if window_days < MIN_WINDOW_DAYS:
        raise ValueError(
            f"window_days must be >= {MIN_WINDOW_DAYS} for the edge-case lake, got {window_days}"
        )
    if (Path(lake) / "raw").exists():
        raise FileExistsError(f"{lake}/raw already exists; write the edge-case lake into an empty directory")
    w = window_days

    def at(days_ago: int, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
        """A UTC timestamp on the day `days_ago` before ds (negative: after ds)."""
        return datetime.combine(ds - timedelta(days=days_ago), time(hour, minute, second, micro), UTC)

    rows: list[dict[str, Any]] = []

    def tx(
        transaction_id: str | None,
        user_id: str | None,
        merchant_id: str | None,
        category_id: int | None,
        amount: float | None,
        ts: datetime | None,
        *,
        partition_days_ago: int | None = None,
        file: int = 0,
    ) -> None:
        """Add one raw row to file `file` of its partition: the UTC date of ts, or ds - partition_days_ago."""
        partition = ts.date() if partition_days_ago is None else ds - timedelta(days=partition_days_ago)
        rows.append(
            {
                "transaction_id": transaction_id,
                "user_id": user_id,
                "merchant_id": merchant_id,
                "category_id": category_id,
                "amount": amount,
                "currency": "USD",
                "transaction_ts": ts,
                "_partition": partition,
                "_file": file,
            }
        )

    # Window edges and the partition after ds.
    tx("t_edge_first", "u_window_edge", "m01", 1, 10.00, at(w - 1, 10))
    tx("t_edge_out", "u_window_edge", "m01", 1, 1000.00, at(w, 10))
    tx("t_edge_ds", "u_window_edge", "m02", 5, 5.00, at(0, 9))
    tx("t_edge_future", "u_window_edge", "m02", 5, 500.00, at(-1, 9))
    tx("t_old_only", "u_old_only", "m03", 1, 30.00, at(w, 12))
    tx("t_future_only", "u_future_only", "m03", 1, 30.00, at(-1, 12))
    tx("t_future_null_amount", "u_future_only", "m03", 1, None, at(-1, 13))

    # The 7-day window [ds-6, ds].
    tx("t_7d_in", "u_seven_day_edge", "m04", 2, 7.00, at(6, 0))
    tx("t_7d_out", "u_seven_day_edge", "m04", 2, 70.00, at(7, 23, 59, 59, 999_999))
    tx("t_norecent_1", "u_no_recent", "m05", 3, 50.00, at(8, 14))
    tx("t_norecent_2", "u_no_recent", "m05", 4, 25.00, at(30, 14))
    tx("t_single", "u_single", "m06", 4, 42.42, at(10, 11, 30))

    # Duplicates: exact ones count once, conflicting ones are quarantined.
    tx("t_dup_1", "u_exact_duplicate", "m07", 3, 20.00, at(3, 12))
    tx("t_dup_1", "u_exact_duplicate", "m07", 3, 20.00, at(3, 12))
    tx("t_dup_2", "u_exact_duplicate", "m07", 3, 30.00, at(3, 13))
    tx("t_dup_2", "u_exact_duplicate", "m07", 3, 30.00, at(3, 13), file=1)
    tx("t_conflict", "u_conflicting_duplicate", "m08", 2, 40.00, at(2, 8))
    tx("t_conflict", "u_conflicting_duplicate", "m08", 2, 45.00, at(2, 8))
    tx("t_conflict", "u_conflicting_duplicate", "m08", 2, 45.00, at(2, 8), file=1)  # a copy of a version
    tx("t_conflict_ok", "u_conflicting_duplicate", "m08", 2, 12.50, at(2, 9))
    tx("t_twin", "u_invalid_twin", "m19", 2, 8.00, at(5, 16))
    tx("t_twin", "u_invalid_twin", "m19", 2, math.nan, at(5, 16))

    # Refunds.
    tx("t_neg_1", "u_all_negative", "m09", 1, -15.00, at(5, 10))
    tx("t_neg_2", "u_all_negative", "m09", 3, -5.00, at(20, 10))
    tx("t_refund_buy", "u_refund", "m10", 5, 100.00, at(4, 10))
    tx("t_refund_back", "u_refund", "m10", 5, -100.00, at(1, 10))
    tx("t_refund_food", "u_refund", "m11", 1, 25.00, at(1, 9))

    # Categories and merchants.
    tx("t_unknown_cat", "u_unknown_category", "m12", UNKNOWN_CATEGORY_ID, 30.00, at(6, 10))
    tx("t_null_cat", "u_unknown_category", "m12", None, 15.00, at(6, 11))
    tx("t_known_cat", "u_unknown_category", "m12", 1, 40.00, at(6, 12))
    tx("t_nullm_1", "u_null_merchant", None, 5, 9.50, at(12, 10))
    tx("t_nullm_2", "u_null_merchant", "m13", 5, 0.50, at(12, 11))
    tx("t_nullm_3", "u_null_merchant", None, 5, 1.00, at(13, 11))
    tx("t_nullmo", "u_null_merchant_only", None, 2, 3.00, at(1, 10))

    # Tie-breaks.
    tx("t_tie_a", "u_latest_tie", "m14", 1, 22.00, at(1, 15))
    tx("t_tie_b", "u_latest_tie", "m14", 1, 11.00, at(1, 15))
    tx("t_tie_z", "u_latest_tie", "m14", 1, 99.00, at(2, 15))  # greatest id, but not the latest ts
    tx("t_gtie_travel", "u_group_tie", "m15", 3, 25.00, at(9, 10))
    tx("t_gtie_food_1", "u_group_tie", "m15", 1, 12.50, at(9, 11))
    tx("t_gtie_food_2", "u_group_tie", "m15", 2, 12.50, at(9, 12))
    tx("t_gtie_shop", "u_group_tie", "m15", 5, 5.00, at(9, 13))
    tx("t_cents_travel_1", "u_group_tie_cents", "m16", 3, 0.10, at(11, 10))
    tx("t_cents_travel_2", "u_group_tie_cents", "m16", 4, 0.20, at(11, 11))
    tx("t_cents_food", "u_group_tie_cents", "m16", 1, 0.30, at(11, 12))

    # UTC day boundaries and a row filed under the wrong date.
    tx("t_utc_midnight", "u_date_mismatch", "m17", 1, 1.00, at(1, 0))
    tx("t_utc_last_us", "u_date_mismatch", "m17", 1, 2.00, at(1, 23, 59, 59, 999_999))
    tx("t_mismatch", "u_date_mismatch", "m17", 1, 500.00, at(2, 23, 30), partition_days_ago=1)

    # Invalid rows, in check order.
    tx(None, "u_invalid_only", "m18", 1, None, at(3, 9))  # also a null amount: the first check wins
    tx("", "u_invalid_only", "m18", 1, 1.00, at(3, 10))
    tx("t_null_user", None, "m18", 1, 10.00, at(3, 11))
    tx("t_empty_user", "", "m18", 1, 10.00, at(3, 12))
    tx("t_order_check", None, "m18", 1, math.nan, at(3, 13))  # missing_user_id before nan_amount
    tx("t_null_amount", "u_invalid_only", "m18", 1, None, at(3, 14))
    tx("t_nan_amount", "u_invalid_only", "m18", 1, math.nan, at(3, 15))
    tx("t_inf_amount", "u_invalid_only", "m18", 1, math.inf, at(3, 15, 30))
    tx("t_neg_inf_amount", "u_invalid_only", "m18", 1, -math.inf, at(3, 15, 40))
    tx("t_huge_amount", "u_invalid_only", "m18", 1, 9.000000001e12, at(3, 15, 50))
    tx("t_neg_huge_amount", "u_invalid_only", "m18", 1, -1e13, at(3, 15, 52))
    tx(None, "u_invalid_only", "m18", 1, math.inf, at(3, 15, 55))  # missing_transaction_id first
    tx("t_null_ts", "u_invalid_only", "m18", 1, 5.00, None, partition_days_ago=3)
    tx("t_invalid_mismatch", "u_invalid_only", "m18", 1, 5.00, at(4, 10), partition_days_ago=3)

    # The largest valid amount: in micro-units 9e18, within a 64-bit integer.
    tx("t_max_amount", "u_max_amount", "m20", 6, 9e12, at(4, 11))

    _write_transactions(lake, rows)
    write_categories(lake)

    def features(**values: Any) -> dict[str, Any]:
        return {"feature_date": ds, **values}

    expected_features = {
        "u_window_edge": features(
            total_spend=15.0,
            avg_spend=7.5,
            std_spend=3.5355339059327378,
            max_spend=10.0,
            transaction_count=2,
            unique_merchants=2,
            last_transaction_ts=at(0, 9),
            days_since_last_transaction=0,
            spend_7d=5.0,
            transaction_count_7d=1,
            last_amount=5.0,
            top_category_group="food",
        ),
        "u_seven_day_edge": features(
            total_spend=77.0,
            avg_spend=38.5,
            std_spend=44.54772721475249,
            max_spend=70.0,
            transaction_count=2,
            unique_merchants=1,
            last_transaction_ts=at(6, 0),
            days_since_last_transaction=6,
            spend_7d=7.0,
            transaction_count_7d=1,
            last_amount=7.0,
            top_category_group="food",
        ),
        "u_no_recent": features(
            total_spend=75.0,
            avg_spend=37.5,
            std_spend=17.67766952966369,
            max_spend=50.0,
            transaction_count=2,
            unique_merchants=1,
            last_transaction_ts=at(8, 14),
            days_since_last_transaction=8,
            spend_7d=0.0,
            transaction_count_7d=0,
            last_amount=50.0,
            top_category_group="travel",
        ),
        "u_single": features(
            total_spend=42.42,
            avg_spend=42.42,
            std_spend=None,
            max_spend=42.42,
            transaction_count=1,
            unique_merchants=1,
            last_transaction_ts=at(10, 11, 30),
            days_since_last_transaction=10,
            spend_7d=0.0,
            transaction_count_7d=0,
            last_amount=42.42,
            top_category_group="travel",
        ),
        "u_exact_duplicate": features(
            total_spend=50.0,
            avg_spend=25.0,
            std_spend=7.0710678118654755,
            max_spend=30.0,
            transaction_count=2,
            unique_merchants=1,
            last_transaction_ts=at(3, 13),
            days_since_last_transaction=3,
            spend_7d=50.0,
            transaction_count_7d=2,
            last_amount=30.0,
            top_category_group="travel",
        ),
        "u_invalid_twin": features(
            total_spend=8.0,
            avg_spend=8.0,
            std_spend=None,
            max_spend=8.0,
            transaction_count=1,
            unique_merchants=1,
            last_transaction_ts=at(5, 16),
            days_since_last_transaction=5,
            spend_7d=8.0,
            transaction_count_7d=1,
            last_amount=8.0,
            top_category_group="food",
        ),
        "u_conflicting_duplicate": features(
            total_spend=12.5,
            avg_spend=12.5,
            std_spend=None,
            max_spend=12.5,
            transaction_count=1,
            unique_merchants=1,
            last_transaction_ts=at(2, 9),
            days_since_last_transaction=2,
            spend_7d=12.5,
            transaction_count_7d=1,
            last_amount=12.5,
            top_category_group="food",
        ),
        "u_all_negative": features(
            total_spend=-20.0,
            avg_spend=-10.0,
            std_spend=7.0710678118654755,
            max_spend=-5.0,
            transaction_count=2,
            unique_merchants=1,
            last_transaction_ts=at(5, 10),
            days_since_last_transaction=5,
            spend_7d=-15.0,
            transaction_count_7d=1,
            last_amount=-15.0,
            top_category_group="travel",  # -5 beats -15
        ),
        "u_refund": features(
            total_spend=25.0,
            avg_spend=8.333333333333334,
            std_spend=101.03629710818451,
            max_spend=100.0,
            transaction_count=3,
            unique_merchants=2,
            last_transaction_ts=at(1, 10),
            days_since_last_transaction=1,
            spend_7d=25.0,
            transaction_count_7d=3,
            last_amount=-100.0,
            top_category_group="food",  # shopping nets to 0
        ),
        "u_unknown_category": features(
            total_spend=85.0,
            avg_spend=28.333333333333332,
            std_spend=12.583057392117917,
            max_spend=40.0,
            transaction_count=3,
            unique_merchants=1,
            last_transaction_ts=at(6, 12),
            days_since_last_transaction=6,
            spend_7d=85.0,
            transaction_count_7d=3,
            last_amount=40.0,
            top_category_group="unknown",  # 30 (id 999) + 15 (null id) beats food 40
        ),
        "u_null_merchant": features(
            total_spend=11.0,
            avg_spend=3.6666666666666665,
            std_spend=5.057996968497839,
            max_spend=9.5,
            transaction_count=3,
            unique_merchants=1,
            last_transaction_ts=at(12, 11),
            days_since_last_transaction=12,
            spend_7d=0.0,
            transaction_count_7d=0,
            last_amount=0.5,
            top_category_group="shopping",
        ),
        "u_null_merchant_only": features(
            total_spend=3.0,
            avg_spend=3.0,
            std_spend=None,
            max_spend=3.0,
            transaction_count=1,
            unique_merchants=0,
            last_transaction_ts=at(1, 10),
            days_since_last_transaction=1,
            spend_7d=3.0,
            transaction_count_7d=1,
            last_amount=3.0,
            top_category_group="food",
        ),
        "u_latest_tie": features(
            total_spend=132.0,
            avg_spend=44.0,
            std_spend=47.94788837894741,
            max_spend=99.0,
            transaction_count=3,
            unique_merchants=1,
            last_transaction_ts=at(1, 15),
            days_since_last_transaction=1,
            spend_7d=132.0,
            transaction_count_7d=3,
            last_amount=11.0,  # t_tie_b > t_tie_a at the same ts
            top_category_group="food",
        ),
        "u_group_tie": features(
            total_spend=55.0,
            avg_spend=13.75,
            std_spend=8.2915619758885,
            max_spend=25.0,
            transaction_count=4,
            unique_merchants=1,
            last_transaction_ts=at(9, 13),
            days_since_last_transaction=9,
            spend_7d=0.0,
            transaction_count_7d=0,
            last_amount=5.0,
            top_category_group="food",  # food 25 ties travel 25
        ),
        "u_group_tie_cents": features(
            total_spend=0.6,
            avg_spend=0.2,
            std_spend=0.1,
            max_spend=0.3,
            transaction_count=3,
            unique_merchants=1,
            last_transaction_ts=at(11, 12),
            days_since_last_transaction=11,
            spend_7d=0.0,
            transaction_count_7d=0,
            last_amount=0.3,
            top_category_group="food",  # travel 0.10 + 0.20 ties food 0.30 in cents
        ),
        "u_max_amount": features(
            total_spend=9e12,
            avg_spend=9e12,
            std_spend=None,
            max_spend=9e12,
            transaction_count=1,
            unique_merchants=1,
            last_transaction_ts=at(4, 11),
            days_since_last_transaction=4,
            spend_7d=9e12,
            transaction_count_7d=1,
            last_amount=9e12,
            top_category_group="shopping",
        ),
        "u_date_mismatch": features(
            total_spend=3.0,
            avg_spend=1.5,
            std_spend=0.7071067811865476,
            max_spend=2.0,
            transaction_count=2,
            unique_merchants=1,
            last_transaction_ts=at(1, 23, 59, 59, 999_999),
            days_since_last_transaction=1,
            spend_7d=3.0,
            transaction_count_7d=2,
            last_amount=2.0,
            top_category_group="food",
        ),
    }
    quarantine_rows = [
        ("missing_transaction_id", None, "u_invalid_only"),
        ("missing_transaction_id", "", "u_invalid_only"),
        ("missing_transaction_id", None, "u_invalid_only"),
        ("missing_user_id", "t_null_user", None),
        ("missing_user_id", "t_empty_user", ""),
        ("missing_user_id", "t_order_check", None),
        ("missing_amount", "t_null_amount", "u_invalid_only"),
        ("nan_amount", "t_nan_amount", "u_invalid_only"),
        ("nan_amount", "t_twin", "u_invalid_twin"),
        ("invalid_amount", "t_inf_amount", "u_invalid_only"),
        ("invalid_amount", "t_neg_inf_amount", "u_invalid_only"),
        ("invalid_amount", "t_huge_amount", "u_invalid_only"),
        ("invalid_amount", "t_neg_huge_amount", "u_invalid_only"),
        ("missing_transaction_ts", "t_null_ts", "u_invalid_only"),
        ("date_mismatch", "t_mismatch", "u_date_mismatch"),
        ("date_mismatch", "t_invalid_mismatch", "u_invalid_only"),
        ("conflicting_duplicate", "t_conflict", "u_conflicting_duplicate"),
        ("conflicting_duplicate", "t_conflict", "u_conflicting_duplicate"),
        ("conflicting_duplicate", "t_conflict", "u_conflicting_duplicate"),
    ]
    return {
        "ds": ds,
        "window_days": window_days,
        "features": {user: {"user_id": user, **values} for user, values in expected_features.items()},
        "absent_users": ["u_old_only", "u_future_only", "u_invalid_only"],
        "quarantine_counts": {
            "missing_transaction_id": 3,
            "missing_user_id": 3,
            "missing_amount": 1,
            "nan_amount": 2,
            "invalid_amount": 4,
            "missing_transaction_ts": 1,
            "date_mismatch": 2,
            "conflicting_duplicate": 3,
        },
        "quarantine_rows": quarantine_rows,
        "future_date": ds + timedelta(days=1),
        "future_quarantine_counts": {"missing_amount": 1},
    }


def write_transactions_partition(lake: Path, *, partition: date, rows: list[dict[str, Any]]) -> Path:
    """Write `rows` (dicts with the contract's columns) as one file of the partition `date=partition`."""
    directory = Path(lake) / "raw" / "transactions" / f"date={partition.isoformat()}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"part-{len(list(directory.glob('*.parquet'))):05d}.parquet"
    columns = {name: [row[name] for row in rows] for name in TRANSACTIONS_SCHEMA.names}
    pq.write_table(pa.table(columns, schema=TRANSACTIONS_SCHEMA), path)
    return path


def transactions_table(rows: list[dict[str, Any]], **columns: pa.Array | None) -> pa.Table:
    """`rows` (dicts with the contract's columns) in the contract's types, with some columns
    replaced by the arrays of `columns` (None drops one): a file that breaks the contract."""
    names, arrays = [], []
    for field in TRANSACTIONS_SCHEMA:
        array = columns.get(field.name, pa.array([row[field.name] for row in rows], field.type))
        if array is not None:
            names.append(field.name)
            arrays.append(array)
    return pa.table(arrays, names=names)


def _write_transactions(lake: Path, rows: list[dict[str, Any]]) -> None:
    files: dict[tuple[date, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        files[(row.pop("_partition"), row.pop("_file"))].append(row)
    # Sorted, so that file n of a partition is written as part-0000n.
    for (partition, _), file_rows in sorted(files.items()):
        write_transactions_partition(lake, partition=partition, rows=file_rows)


def write_categories(lake: Path, rows: list[tuple[int, str, str]] = CATEGORIES) -> None:
    """Write the categories lookup: (category_id, category_name, category_group) rows."""
    directory = Path(lake) / "raw" / "categories"
    directory.mkdir(parents=True, exist_ok=True)
    ids, names, groups = zip(*rows, strict=True)
    table = pa.table(
        {"category_id": list(ids), "category_name": list(names), "category_group": list(groups)},
        schema=CATEGORIES_SCHEMA,
    )
    pq.write_table(table, directory / "part-00000.parquet")
