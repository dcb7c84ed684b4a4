"""Small feature partitions with every case a materialized view meets, shared by the delta-rs and
delta-spark view tests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

D1, D2, D3 = date(2026, 10, 26), date(2026, 10, 27), date(2026, 10, 28)
SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("feature_date", pa.date32()),
        ("total_spend", pa.float64()),
        ("std_spend", pa.float64()),
        ("transaction_count", pa.int64()),
        ("last_transaction_ts", pa.timestamp("us", tz="UTC")),
        ("top_category_group", pa.string()),
    ]
)


def write_partition(features: Path, day: date, users: dict[str, float]) -> None:
    """One date's feature partition: a row per user, with `total_spend` from `users`."""
    partition = features / f"date={day.isoformat()}"
    partition.mkdir(parents=True)
    rows = {
        "user_id": list(users),
        "feature_date": [day] * len(users),
        "total_spend": list(users.values()),
        "std_spend": [None if spend < 0 else spend / 3 for spend in users.values()],
        "transaction_count": [int(abs(spend)) for spend in users.values()],
        "last_transaction_ts": [datetime(day.year, day.month, day.day, 12, tzinfo=UTC)] * len(users),
        "top_category_group": ["food"] * len(users),
    }
    pq.write_table(pa.table(rows, schema=SCHEMA), partition / "part-00000.snappy.parquet")


def write_feature_partitions(root: Path) -> Path:
    """Three dates: `a` every day, `b` only on D1 (left the window), `c` on D1 and D3, `d` new on
    D3, `e` only on D2, `n` with a null std and a negative spend."""
    write_partition(root, D1, {"a": 1.0, "b": 2.0, "c": 3.0})
    write_partition(root, D2, {"a": 11.0, "e": 15.0, "n": -4.5})
    write_partition(root, D3, {"a": 21.0, "c": 23.0, "d": 24.0})
    return root


def rows_of(view: Path) -> list[dict]:
    """A Delta table's rows, by user."""
    return DeltaTable(str(view)).to_pyarrow_table().sort_by("user_id").to_pylist()


WANT_AS_OF_D3 = {
    "a": (D3, 21.0),
    "b": (D1, 2.0),
    "c": (D3, 23.0),
    "d": (D3, 24.0),
    "e": (D2, 15.0),
    "n": (D2, -4.5),
}
