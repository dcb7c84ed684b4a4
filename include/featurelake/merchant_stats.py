"""Per-merchant statistics over a window of raw transactions, with Dask: the job for data larger than
memory. Dask reads the window's date partitions lazily (the pruned ones are never opened), shuffles
rows by merchant so that each merchant's rows sit in one partition, and aggregates each partition
with pandas. Memory holds a few partitions at a time, and the shuffle spills to disk.

A row counts when it is valid by the data contract (non-empty transaction_id, user_id and
merchant_id, an amount that is neither null nor NaN), and exact copies of a row count once. (Two
different versions of one transaction_id both count: the user feature job quarantines them, this job
only reports how many rows it read and counted.) Columns per merchant:

| column | definition |
|---|---|
| merchant_id | |
| stats_date | ds |
| transaction_count | distinct valid rows |
| unique_users | distinct user_id |
| total_amount, avg_amount | sum and mean of amount |
| refund_share | share of transactions with amount < 0 |
| active_days | distinct dates with a transaction |
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from featurelake.synthetic import TRANSACTIONS_SCHEMA

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

STATS_SCHEMA = pa.schema(
    [
        ("merchant_id", pa.string()),
        ("stats_date", pa.date32()),
        ("transaction_count", pa.int64()),
        ("unique_users", pa.int64()),
        ("total_amount", pa.float64()),
        ("avg_amount", pa.float64()),
        ("refund_share", pa.float64()),
        ("active_days", pa.int64()),
    ]
)

# Every raw column (exact copies are whole-row copies) and the partition's date.
_COLUMNS = [*TRANSACTIONS_SCHEMA.names, "date"]


@dataclass
class MerchantStatsReport:
    ds: str
    window_days: int
    merchants: int
    rows_read: int
    rows_counted: int
    output_path: str


def merchant_stats_of_partition(rows: pd.DataFrame, *, ds: date) -> pd.DataFrame:
    """The statistics of every merchant whose rows are all in `rows` (one shuffled partition)."""
    if rows.empty:
        return pd.DataFrame(
            {field.name: pd.Series(dtype=field.type.to_pandas_dtype()) for field in STATS_SCHEMA}
        )
    rows = rows.drop_duplicates()  # exact copies sit in one partition: they share the merchant
    grouped = rows.groupby("merchant_id", sort=True)
    stats = pd.DataFrame(
        {
            "transaction_count": grouped.size(),
            "unique_users": grouped["user_id"].nunique(),
            "total_amount": grouped["amount"].sum(),
            "refund_share": grouped["amount"].apply(lambda a: float((a < 0).mean())),
            "active_days": grouped["date"].nunique(),
        }
    )
    stats["avg_amount"] = stats["total_amount"] / stats["transaction_count"]
    stats["stats_date"] = ds
    stats = stats.reset_index()
    return stats[[field.name for field in STATS_SCHEMA]].astype(
        {"transaction_count": "int64", "unique_users": "int64", "active_days": "int64"}
    )


def _valid(rows: pd.DataFrame) -> pd.DataFrame:
    def present(column: str) -> pd.Series:
        return rows[column].notnull() & (rows[column].astype("string") != "")

    keep = present("transaction_id") & present("user_id") & present("merchant_id") & rows["amount"].notnull()
    return rows[keep]


def compute_merchant_stats(
    client: Client, *, raw_transactions: str, output: str, ds: date, window_days: int = 30
) -> MerchantStatsReport:
    """Compute the window [ds - (W-1), ds] on the cluster of `client` and replace `output` (a
    directory: one Parquet file per shuffled partition). Later partitions never count."""
    import dask.dataframe as dd

    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    start = ds - timedelta(days=window_days - 1)
    days = [(start + timedelta(days=i)).isoformat() for i in range(window_days)]
    rows = dd.read_parquet(
        raw_transactions,
        columns=_COLUMNS,
        filters=[("date", "in", days)],
        dataset={"partitioning": "hive"},
        engine="pyarrow",
    )
    # The partition column arrives as a category; plain strings shuffle and compare simply.
    rows = rows.assign(date=rows["date"].astype("string"))
    valid = _valid(rows)
    by_merchant = valid.shuffle("merchant_id")
    meta = merchant_stats_of_partition(pd.DataFrame({c: pd.Series(dtype="object") for c in _COLUMNS}), ds=ds)
    stats = by_merchant.map_partitions(merchant_stats_of_partition, ds=ds, meta=meta)
    write = stats.to_parquet(
        output, write_index=False, overwrite=True, schema=STATS_SCHEMA, engine="pyarrow", compute=False
    )
    with client.as_current():
        # One graph: the raw files are read once for the counts, the statistics and the write.
        _, rows_read, rows_counted, merchants = dd.compute(
            write, rows.shape[0], valid.shape[0], stats.shape[0]
        )
    log.info(
        "merchant stats for %s (%d days): %d merchants from %d valid of %d rows -> %s",
        ds,
        window_days,
        merchants,
        rows_counted,
        rows_read,
        output,
    )
    return MerchantStatsReport(
        ds.isoformat(), window_days, int(merchants), int(rows_read), int(rows_counted), output
    )


def dask_client(address: str | None, **local_options: Any) -> Client:
    """A client of the scheduler at `address` (tcp://host:port), or of a new in-process
    LocalCluster when `address` is None or `local`: threads, no worker processes (worker processes
    started from inside an Airflow task re-import Airflow and fail; see the README)."""
    from distributed import Client

    if address in (None, "", "local"):
        # The dashboard cannot be switched off here; a free loopback port keeps it out of the way.
        options = {
            "processes": False,
            "n_workers": 1,
            "threads_per_worker": 2,
            "dashboard_address": "127.0.0.1:0",
        }
        # A client that starts its cluster owns it: closing the client stops the cluster.
        return Client(**{**options, **local_options}, set_as_default=False)
    return Client(address, set_as_default=False, timeout="30s")
