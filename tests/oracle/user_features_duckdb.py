"""Independent DuckDB implementation of the `user_features` job, written from the raw data contract.

It is a test oracle: integration tests compare the Spark job's output with `compute_user_features`, and
`bench/feature_job.py` times the same SQL on the same files. It deliberately shares no code with
`include/featurelake/` or `spark_jobs/`.

Decisions where the contract leaves room:
- Validity is checked first, then exact duplicates (all columns and the partition date equal) collapse to
  one row, then a transaction_id left with several different versions in one date has every distinct
  version quarantined as `conflicting_duplicate`, one quarantine row per raw row (a version's exact
  copies too, so that every raw row is used, counted as a copy of a clean row, or quarantined).
- A transaction is a (date, transaction_id): an id reused on two dates counts as two transactions, as
  docs/features.md says ("Combining"), since repeats are detected within one date partition only.
- `top_category_group` ranks groups on exact cent sums (DECIMAL), so 0.10 + 0.20 ties with 0.30; the
  feature columns themselves are DOUBLE sums, as the contract types them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd

FEATURE_COLUMNS: list[str] = [
    "user_id",
    "feature_date",
    "total_spend",
    "avg_spend",
    "std_spend",
    "max_spend",
    "transaction_count",
    "unique_merchants",
    "last_transaction_ts",
    "days_since_last_transaction",
    "spend_7d",
    "transaction_count_7d",
    "last_amount",
    "top_category_group",
]

RAW_COLUMNS: list[str] = [
    "transaction_id",
    "user_id",
    "merchant_id",
    "category_id",
    "amount",
    "currency",
    "transaction_ts",
]

QUARANTINE_COLUMNS: list[str] = [*RAW_COLUMNS, "date", "reason"]

# Rows of the date partitions in [$first_date, $last_date], each with the first failing validity reason
# (NULL when valid), then the clean rows: valid, exact duplicates collapsed, conflicting versions removed.
# DuckDB prunes the partition directories on the `date` filter, so only those files are read.
_CLEANING_CTES = """
raw AS (
    SELECT transaction_id, user_id, merchant_id, category_id, amount, currency, transaction_ts, date
    FROM read_parquet(
        $transactions_glob,
        hive_partitioning = true,
        hive_types = {'date': DATE}
    )
    WHERE date BETWEEN $first_date AND $last_date
),
checked AS (
    SELECT
        *,
        CASE
            WHEN transaction_id IS NULL OR transaction_id = '' THEN 'missing_transaction_id'
            WHEN user_id IS NULL OR user_id = '' THEN 'missing_user_id'
            WHEN amount IS NULL THEN 'missing_amount'
            WHEN isnan(amount) THEN 'nan_amount'
            -- infinite, or beyond 9e12 in absolute value (the contract's bound)
            WHEN isinf(amount) OR abs(amount) > 9e12 THEN 'invalid_amount'
            WHEN transaction_ts IS NULL THEN 'missing_transaction_ts'
            WHEN CAST(transaction_ts AT TIME ZONE 'UTC' AS DATE) <> date THEN 'date_mismatch'
        END AS reason
    FROM raw
),
valid AS (
    SELECT DISTINCT * EXCLUDE (reason)
    FROM checked
    WHERE reason IS NULL
),
conflicting AS (
    SELECT date, transaction_id
    FROM valid
    GROUP BY date, transaction_id
    HAVING count(*) > 1
),
clean AS (
    SELECT *
    FROM valid
    ANTI JOIN conflicting USING (date, transaction_id)
)
"""

USER_FEATURES_SQL = f"""
WITH {_CLEANING_CTES},
categorised AS (
    SELECT clean.*, coalesce(categories.category_group, 'unknown') AS category_group
    FROM clean
    -- Identical repeated rows of the lookup are harmless (the contract): one row per id and group.
    LEFT JOIN (
        SELECT DISTINCT category_id, category_group
        FROM read_parquet($categories_path, hive_partitioning = false)
    ) AS categories USING (category_id)
),
group_spend AS (
    -- Exact cent sums, so that ties between groups are real ties and not float rounding.
    SELECT user_id, category_group, sum(CAST(amount AS DECIMAL(18, 2))) AS spend
    FROM categorised
    GROUP BY user_id, category_group
),
top_group AS (
    SELECT user_id, first(category_group ORDER BY spend DESC, category_group ASC) AS top_category_group
    FROM group_spend
    GROUP BY user_id
),
per_user AS (
    SELECT
        user_id,
        CAST($ds AS DATE) AS feature_date,
        sum(amount) AS total_spend,
        avg(amount) AS avg_spend,
        -- count(*) = the distinct count: `clean` has one row per (date, transaction_id); the join adds none.
        CASE WHEN count(*) >= 2 THEN stddev_samp(amount) END AS std_spend,
        -- + 0.0 turns a -0.0 into 0.0 (docs/features.md: a feature is never -0.0); sums and means
        -- start from 0.0, so they never give -0.0.
        max(amount) + 0.0 AS max_spend,
        count(*) AS transaction_count,
        count(DISTINCT merchant_id) AS unique_merchants,
        max(transaction_ts) AS last_transaction_ts,
        CAST(
            CAST($ds AS DATE) - CAST(max(transaction_ts) AT TIME ZONE 'UTC' AS DATE) AS INTEGER
        ) AS days_since_last_transaction,
        coalesce(sum(amount) FILTER (WHERE date >= $week_start), 0.0) AS spend_7d,
        count(*) FILTER (WHERE date >= $week_start) AS transaction_count_7d,
        -- The latest transaction; on equal timestamps the greatest transaction_id; a zero as 0.0.
        arg_max(amount, (transaction_ts, transaction_id)) + 0.0 AS last_amount
    FROM categorised
    GROUP BY user_id
)
SELECT per_user.*, top_group.top_category_group
FROM per_user
JOIN top_group USING (user_id)
ORDER BY user_id
"""

QUARANTINE_SQL = f"""
WITH {_CLEANING_CTES}
SELECT * EXCLUDE (reason), reason
FROM checked
WHERE reason IS NOT NULL AND list_contains($dates, date)
UNION ALL
SELECT checked.* EXCLUDE (reason), 'conflicting_duplicate' AS reason
FROM checked
SEMI JOIN conflicting USING (date, transaction_id)
WHERE checked.reason IS NULL AND list_contains($dates, date)
ORDER BY date, reason, transaction_id NULLS FIRST, amount NULLS FIRST
"""


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection whose session time zone is UTC, as the features are defined in UTC."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _transactions_glob(lake: Path) -> str:
    root = Path(lake) / "raw" / "transactions"
    if not root.is_dir():
        raise FileNotFoundError(f"no raw transactions under {root}; is {lake} a featurelake lake root?")
    return str(root / "date=*" / "*.parquet")


def _date_partition_params(lake: Path, dates: Iterable[date]) -> dict:
    """The SQL parameters that select the given date partitions of the raw transactions."""
    wanted = sorted(set(dates))
    if not wanted:
        raise ValueError("dates must name at least one partition date")
    return {
        "transactions_glob": _transactions_glob(lake),
        "first_date": wanted[0],
        "last_date": wanted[-1],
        "dates": wanted,
    }


def compute_user_features(
    *, lake: Path, ds: date, window_days: int = 90, con: duckdb.DuckDBPyConnection | None = None
) -> pd.DataFrame:
    """The `user_features` rows for run date `ds`, from the date partitions [ds-(window_days-1), ds].

    One row per user with a valid transaction in the window, sorted by user_id, columns `FEATURE_COLUMNS`.
    Pass `con` to reuse a connection (the benchmark does); it must have TimeZone set to UTC.
    """
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    categories_path = Path(lake) / "raw" / "categories" / "part-00000.parquet"
    if not categories_path.is_file():
        raise FileNotFoundError(f"no categories lookup at {categories_path}")
    params = {
        "transactions_glob": _transactions_glob(lake),
        "categories_path": str(categories_path),
        "first_date": ds - timedelta(days=window_days - 1),
        "last_date": ds,
        "week_start": ds - timedelta(days=6),
        "ds": ds,
    }
    frame = (con or connect()).execute(USER_FEATURES_SQL, params).df()
    return frame[FEATURE_COLUMNS]


def quarantine(
    *, lake: Path, dates: Iterable[date], con: duckdb.DuckDBPyConnection | None = None
) -> pd.DataFrame:
    """The invalid rows of the given date partitions, with the raw columns, `date` and `reason`.

    `reason` is the first failing validity check, or `conflicting_duplicate` for every valid raw row
    (each copy too) of a transaction_id that occurs with differing content within one date.
    """
    frame = (con or connect()).execute(QUARANTINE_SQL, _date_partition_params(lake, dates)).df()
    return frame[QUARANTINE_COLUMNS]


DUPLICATE_ROWS_SQL = f"""
WITH {_CLEANING_CTES}
SELECT
    (SELECT count(*) FROM checked ANTI JOIN conflicting USING (date, transaction_id)
     WHERE reason IS NULL AND list_contains($dates, date))
    - (SELECT count(*) FROM clean WHERE list_contains($dates, date)) AS duplicate_rows
"""


def duplicate_rows(*, lake: Path, dates: Iterable[date], con: duckdb.DuckDBPyConnection | None = None) -> int:
    """How many raw rows of the given date partitions are exact copies of a clean row: valid rows of
    transaction_ids with a single version, beyond the first of each."""
    return int(
        (con or connect()).execute(DUPLICATE_ROWS_SQL, _date_partition_params(lake, dates)).fetchone()[0]
    )
