"""Independent DuckDB answer to what the `user_features_latest` view must hold: each entity's row of
the newest `date=` partition on or before a date. Written from docs/materialized-views.md, sharing
no code with `include/featurelake/`: tests compare the Delta view with it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa


def latest_features(features: Path, as_of: date, *, entity_column: str = "user_id") -> pa.Table:
    """Each entity's newest row on or before `as_of` (the partition directory's date), sorted by
    entity, with the partitions' columns (null where a partition lacks one) and no partition column.
    Only `*.parquet` files not hidden (`.` or `_`) in `date=` directories count, as for every reader."""
    files = sorted(
        str(path)
        for path in features.glob("date=*/*.parquet")
        if not path.name.startswith((".", "_")) and date.fromisoformat(path.parent.name[5:]) <= as_of
    )
    if not files:
        raise AssertionError(f"no feature file on or before {as_of} under {features}")
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.sql(
            f"""
            SELECT * EXCLUDE (date, newest)
            FROM (
                SELECT *, row_number() OVER (PARTITION BY "{entity_column}" ORDER BY date DESC) AS newest
                FROM read_parquet(?, hive_partitioning = true, hive_types = {{'date': DATE}}, union_by_name = true)
            )
            WHERE newest = 1
            ORDER BY "{entity_column}"
            """,
            params=[files],
        ).to_arrow_table()
