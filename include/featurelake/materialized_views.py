"""Delta-table materialized views of a date-partitioned feature dataset.

The view `<lake>/views/<name>_latest` holds one row per entity: its newest feature row on or before
the date of the last refresh (`feature_date` says how old it is). It is a real Delta table, written
with delta-rs (`deltalake`), which Spark reads through its file list (`spark_read_delta_files`) or,
where the delta-spark jars are installed, with `format("delta")`.

Two refreshes give the same table:
- full: rebuild from every partition on or before `as_of`, one date at a time (memory holds one row
  per entity, not the whole history), and overwrite the table in one commit;
- incremental: MERGE one date's partition on the entity column. A matched row is replaced only by a
  row of the same or a later feature date, and a new entity is inserted. So a rerun gives the same
  rows, and a backfill of an older date never replaces newer rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from featurelake.lake import LakeLayout
from featurelake.offline_features import feature_dates

log = logging.getLogger(__name__)

REFRESH_MODES = ("incremental", "full")


@dataclass
class RefreshReport:
    """What one refresh did. `rows` is the table's row count after it; `version` its Delta version."""

    view: str
    mode: str
    as_of: str
    dates_read: int
    rows: int
    version: int
    inserted: int = 0
    updated: int = 0


def read_feature_partition(features_path: str, day: date) -> pa.Table:
    """One date's feature rows, without the partition column."""
    table = pads.dataset(LakeLayout.partition(features_path, day), format="parquet").to_table()
    return table.drop_columns([c for c in ("date",) if c in table.column_names])


def _check_entities(table: pa.Table, entity_column: str, where: str) -> None:
    if entity_column not in table.column_names:
        raise ValueError(f"{where} has no {entity_column!r} column; columns: {table.column_names}")
    if table.num_rows and pc.count_distinct(table[entity_column]).as_py() != table.num_rows:
        raise ValueError(
            f"{where} holds an {entity_column!r} more than once; a view needs one row per entity"
        )


def latest_per_entity(
    features_path: str, *, as_of: date, entity_column: str = "user_id"
) -> tuple[pa.Table, int]:
    """Each entity's newest row in the partitions on or before `as_of`, sorted by entity; and the
    number of dates read. Reads one date at a time, oldest first, each replacing its entities."""
    days = [d for d in feature_dates(features_path) if d <= as_of]
    if not days:
        raise FileNotFoundError(
            f"no feature partition on or before {as_of} under {features_path}; run the feature job first"
        )
    latest: pa.Table | None = None
    for day in days:
        rows = read_feature_partition(features_path, day)
        if rows.num_rows == 0:  # a date with no entity in its window is left empty
            continue
        _check_entities(rows, entity_column, LakeLayout.partition(features_path, day))
        if latest is None:
            latest = rows
            continue
        kept = latest.filter(pc.invert(pc.is_in(latest[entity_column], value_set=rows[entity_column])))
        latest = pa.concat_tables([kept, rows.select(latest.column_names).cast(latest.schema)])
    if latest is None:
        raise FileNotFoundError(
            f"the feature partitions on or before {as_of} under {features_path} are all empty"
        )
    return latest.sort_by(entity_column), len(days)


def refresh_full(
    view_path: str, features_path: str, *, as_of: date, entity_column: str = "user_id", name: str = ""
) -> RefreshReport:
    """Rebuild the view from every partition on or before `as_of` and overwrite it (one commit)."""
    from deltalake import DeltaTable, write_deltalake

    table, dates_read = latest_per_entity(features_path, as_of=as_of, entity_column=entity_column)
    write_deltalake(view_path, table, mode="overwrite", schema_mode="overwrite", name=name or None)
    version = DeltaTable(view_path).version()
    log.info(
        "full refresh of %s as of %s: %d rows from %d dates, version %d",
        view_path,
        as_of,
        table.num_rows,
        dates_read,
        version,
    )
    return RefreshReport(
        name, "full", as_of.isoformat(), dates_read, table.num_rows, version, inserted=table.num_rows
    )


def refresh_incremental(
    view_path: str, features_path: str, *, ds: date, entity_column: str = "user_id", name: str = ""
) -> RefreshReport:
    """MERGE the partition of `ds` into the view on `entity_column`: the later feature date wins and
    new entities are inserted. A view that does not exist yet is built in full."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        view = DeltaTable(view_path)
    except TableNotFoundError:
        log.info("%s is not a Delta table yet: building it in full as of %s", view_path, ds)
        return refresh_full(view_path, features_path, as_of=ds, entity_column=entity_column, name=name)
    if ds not in feature_dates(features_path):
        raise FileNotFoundError(
            f"{LakeLayout.partition(features_path, ds)} does not exist: run the feature job for {ds} first, "
            "or refresh the view in full"
        )
    rows = read_feature_partition(features_path, ds)
    if rows.num_rows == 0:
        log.warning(
            "%s is empty (no entity in its window): nothing to merge", LakeLayout.partition(features_path, ds)
        )
        return RefreshReport(
            name, "incremental", ds.isoformat(), 1, view.to_pyarrow_dataset().count_rows(), view.version()
        )
    _check_entities(rows, entity_column, LakeLayout.partition(features_path, ds))
    # In the table's column order and types (a MERGE matches columns by name, and fails on a type
    # mismatch rather than cast).
    target_schema = pa.schema(view.schema().to_arrow())
    rows = rows.select(target_schema.names).cast(target_schema)
    metrics: dict[str, Any] = (
        view.merge(
            rows,
            predicate=f"t.{entity_column} = s.{entity_column}",
            source_alias="s",
            target_alias="t",
        )
        .when_matched_update_all(predicate="s.feature_date >= t.feature_date")
        .when_not_matched_insert_all()
        .execute()
    )
    view = DeltaTable(view_path)
    total = view.to_pyarrow_dataset().count_rows()
    log.info("incremental refresh of %s with %s: %s", view_path, ds, metrics)
    return RefreshReport(
        name,
        "incremental",
        ds.isoformat(),
        1,
        total,
        view.version(),
        inserted=int(metrics.get("num_target_rows_inserted", 0)),
        updated=int(metrics.get("num_target_rows_updated", 0)),
    )


def check_refresh_mode(mode: str) -> None:
    """Refuse a refresh mode other than `incremental` or `full`, naming both (both engines use it)."""
    if mode not in REFRESH_MODES:
        raise ValueError(f"refresh mode must be one of {', '.join(REFRESH_MODES)}, got {mode!r}")


def refresh_view(
    view_path: str,
    features_path: str,
    *,
    ds: date,
    mode: str = "incremental",
    entity_column: str = "user_id",
    name: str = "",
) -> RefreshReport:
    """Refresh the view for `ds` in `mode` (`incremental` or `full`)."""
    check_refresh_mode(mode)
    if mode == "full":
        return refresh_full(view_path, features_path, as_of=ds, entity_column=entity_column, name=name)
    return refresh_incremental(view_path, features_path, ds=ds, entity_column=entity_column, name=name)


def spark_read_delta_files(spark: Any, view_path: str) -> Any:
    """The view as a Spark DataFrame without the delta-spark jars: the Parquet files of the table's
    current version (never the directory, which also holds files of older versions)."""
    from deltalake import DeltaTable

    return spark.read.parquet(*DeltaTable(view_path).file_uris())
