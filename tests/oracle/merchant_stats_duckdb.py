"""An independent DuckDB computation of the Dask merchant statistics (docs/features.md,
`merchant_stats`), written from the definitions without reading the Dask job: the oracle of
tests/integration/test_merchant_stats.py and bench/merchant_stats.py."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd


def oracle(lake: Path, ds: date, window_days: int) -> pd.DataFrame:
    """The same statistics in DuckDB SQL, written apart from the Dask code."""
    start = ds - timedelta(days=window_days - 1)
    # Every `*.parquet` file of a `date=` directory except names starting with `.` or `_`, which the
    # data contract says readers ignore (a glob reads them); no file at all gives no merchant.
    files = sorted(
        str(path)
        for path in (lake / "raw" / "transactions").glob("date=*/*.parquet")
        if not path.name.startswith((".", "_"))
    )
    if not files:
        return pd.DataFrame(
            {
                "merchant_id": pd.Series(dtype=object),
                **{column: pd.Series(dtype="int64") for column in ("transaction_count", "unique_users")},
                **{
                    column: pd.Series(dtype="float64")
                    for column in ("total_amount", "avg_amount", "refund_share")
                },
                "active_days": pd.Series(dtype="int64"),
            }
        )
    files_sql = "[" + ", ".join("'" + file.replace("'", "''") + "'" for file in files) + "]"
    query = f"""
        WITH counted AS (
            SELECT DISTINCT transaction_id, user_id, merchant_id, category_id, amount, currency, transaction_ts, date
            FROM read_parquet({files_sql}, hive_partitioning = true)
            WHERE date BETWEEN DATE '{start}' AND DATE '{ds}'
              AND coalesce(transaction_id, '') <> '' AND coalesce(user_id, '') <> ''
              AND coalesce(merchant_id, '') <> '' AND amount IS NOT NULL AND NOT isnan(amount)
              -- contract rule 4a: finite, and at most 9e12 in absolute value
              AND isfinite(amount) AND abs(amount) <= 9e12
              -- contract rules 5 and 6: a timestamp, on the UTC date of its partition
              AND transaction_ts IS NOT NULL
              AND CAST(transaction_ts AT TIME ZONE 'UTC' AS DATE) = date
        )
        SELECT merchant_id, count(*) AS transaction_count, count(DISTINCT user_id) AS unique_users,
               sum(amount) AS total_amount, avg(amount) AS avg_amount,
               avg(CASE WHEN amount < 0 THEN 1.0 ELSE 0.0 END) AS refund_share,
               count(DISTINCT date) AS active_days
        FROM counted GROUP BY merchant_id ORDER BY merchant_id
    """
    return duckdb.sql(query).df()
