"""Delta-table materialized views of a date-partitioned feature dataset.

The view `<lake>/views/<name>_latest` holds one row per entity: its newest feature row on or before
the date of the last refresh (`feature_date` says how old it is). It is a real Delta table, written
with delta-rs (`deltalake`), which Spark reads through its file list (`spark_read_delta_files`) or,
where the delta-spark jars are installed, with `format("delta")`.

Two refreshes give the same table:
- full: rebuild from every partition on or before `as_of` (or on or before the view's newest
  `feature_date`, when later: a full refresh of an older date never takes the view back in time),
  one date at a time (memory holds one row per entity, not the whole history), and overwrite the
  table in one commit, which fails if another writer committed meanwhile (or created the table,
  for a first build);
- incremental: MERGE one date's partition on the entity column. A matched row is replaced only by a
  row of the same or a later feature date, and a new entity is inserted. So a rerun gives the same
  rows, and a backfill of an older date never replaces newer rows. A rerun of a date whose partition
  was rewritten without some entities also takes back those entities' rows of that date: each gets
  its newest row of an earlier partition, or is deleted if it has none (the same MERGE, one commit).

Both read a partition as the serving path does (`partition_dataset`: its data files, the union of
their columns), and refuse one whose rows' `feature_date` is not its date, or that holds an entity
twice or a null one: the full refresh orders rows by partition, the MERGE by feature date.

The columns of a full refresh are the union of every partition's columns (oldest first; a column a
partition lacks is null in its rows); a column whose type changed between partitions is refused.
An incremental refresh keeps the view's columns: a partition with a column more or less than the
view, or another type, is refused, saying to refresh in full; but a view column the partition lacks
is null when the view's rows of its newest feature date already are (a dropped column, after that
full refresh), or when no view row of the partition's date or earlier holds a value there (a column
added after that date): `_may_lack`. A view column with no type yet (null in every row so far) that
the rows read give one is not a schema change: the view is rebuilt in full, once.

`refresh_view` then vacuums the table: it deletes the data files that left it longer ago than its
`delta.deletedFileRetentionDuration` (7 days by default), so the directory does not keep a copy of
the table per refresh.

A refresh given a `run_key` (the Airflow task instance) records it in its commit, with a digest of
the feature partitions it read (`COMMIT_METADATA`). A retry of a run killed or failed after that
commit finds it as the table's newest commit, with the same inputs, and reports it instead of
committing again (`committed_refresh`): the same table, history and report as a run never
interrupted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from featurelake.lake import LakeLayout, local_path
from featurelake.offline_features import (
    arrow_filesystem,
    feature_dates,
    features_path_error,
    partition_dataset,
)

log = logging.getLogger(__name__)

REFRESH_MODES = ("incremental", "full")

# The commitInfo key under which a refresh records its run (a JSON object; `committed_refresh`).
COMMIT_METADATA = "featurelake.refresh"
# Commits that change no row: a retry looks past them for the refresh it repeats.
_MAINTENANCE_OPERATIONS = frozenset({"VACUUM START", "VACUUM END"})


class ConcurrentCommitError(RuntimeError):
    """Another writer committed to the view while a refresh ran, and Delta's conflict check refused
    the refresh's commit: nothing of it was committed. Run it again (Airflow's retry does)."""


# delta-rs's conflict checker's messages (its CommitFailedError also covers other failures)
_CONFLICTS = ("concurrent", "changed since last commit")


@contextmanager
def _committing(view_path: str) -> Iterator[None]:
    """Name the view and the remedy when delta-rs refuses a commit for a concurrent one: its own
    message names neither, and advises Snapshot Isolation, which would let a refresh commit over
    another writer's rows."""
    from deltalake.exceptions import CommitFailedError

    try:
        yield
    except CommitFailedError as error:
        if not any(conflict in str(error).lower() for conflict in _CONFLICTS):
            raise
        raise ConcurrentCommitError(
            f"{view_path}: another writer committed to the view while this refresh ran, and Delta's "
            f"conflict check refused this refresh's commit ({str(error).splitlines()[0]}); nothing of it "
            "was committed. Run the refresh again (Airflow's retry does): it refreshes the table as "
            "it is now"
        ) from error


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
    deleted: int = 0


def inputs_digest(features_path: str, *, up_to: date) -> str:
    """A digest of the feature partitions on or before `up_to`: every file's path, size and
    modification time. A partition rewritten, added or removed changes it."""
    import hashlib

    import pyarrow.fs as pafs

    filesystem, root = arrow_filesystem(features_path)
    digest = hashlib.sha256()
    for day in feature_dates(features_path):
        if day > up_to:
            continue
        selector = pafs.FileSelector(LakeLayout.partition(root, day), recursive=True)
        for info in sorted(filesystem.get_file_info(selector), key=lambda info: info.path):
            digest.update(f"{info.path}\0{info.size}\0{info.mtime_ns}\n".encode())
    return digest.hexdigest()


def _commit_properties(run_key: str | None, features_path: str, **recorded: Any) -> Any:
    """The CommitProperties of a refresh: its run, for `committed_refresh` (none without a run key)."""
    from deltalake import CommitProperties

    if run_key is None:
        return None
    record = {
        "run_key": run_key,
        **recorded,
        "inputs": inputs_digest(features_path, up_to=date.fromisoformat(recorded["as_of"])),
    }
    return CommitProperties(custom_metadata={COMMIT_METADATA: json.dumps(record, sort_keys=True)})


def committed_refresh(
    view_path: str,
    features_path: str,
    *,
    run_key: str,
    ds: date,
    name: str = "",
    mode: str = "incremental",
) -> RefreshReport | None:
    """The report of the refresh for `ds` that the run `run_key` committed, when that commit is the
    table's newest (a vacuum aside), the feature partitions it read are unchanged, and it was a full
    one if `mode` is `full`: a retry of a run killed or failed after its commit. None otherwise (the
    retry refreshes; a rerun of the run with view_refresh=full rebuilds)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        view = DeltaTable(view_path)
    except TableNotFoundError:
        return None
    newest = next(
        (entry for entry in view.history(limit=20) if entry.get("operation") not in _MAINTENANCE_OPERATIONS),
        None,
    )
    if newest is None or COMMIT_METADATA not in newest:
        return None
    recorded = json.loads(newest[COMMIT_METADATA])
    if recorded.get("run_key") != run_key or recorded.get("ds") != ds.isoformat():
        return None
    if mode == "full" and recorded["mode"] != "full":
        log.info("%s: run %s committed an incremental refresh; rebuilding it in full", view_path, run_key)
        return None
    if inputs_digest(features_path, up_to=date.fromisoformat(recorded["as_of"])) != recorded["inputs"]:
        log.info("%s: the feature partitions changed since run %s committed; refreshing", view_path, run_key)
        return None
    version = int(newest["version"])
    rows = DeltaTable(view_path, version=version).to_pyarrow_dataset().count_rows()
    metrics = newest.get("operationMetrics") or {}
    counts = (
        {"inserted": rows}
        if recorded["mode"] == "full"
        else {
            "inserted": int(metrics.get("num_target_rows_inserted", 0)),
            "updated": int(metrics.get("num_target_rows_updated", 0)),
            "deleted": int(metrics.get("num_target_rows_deleted", 0)),
        }
    )
    log.warning(
        "%s: run %s already committed its refresh for %s (version %d), before it was killed or "
        "failed; reporting that commit instead of committing again",
        view_path,
        run_key,
        ds,
        version,
    )
    return RefreshReport(
        name, recorded["mode"], recorded["as_of"], int(recorded["dates_read"]), rows, version, **counts
    )


def _require_dataset(features_path: str) -> None:
    """Refuse a features path that is no directory (`features_path_error`)."""
    import pyarrow.fs as pafs

    filesystem, root = arrow_filesystem(features_path)
    found = filesystem.get_file_info(root).type
    if found != pafs.FileType.Directory:
        raise features_path_error(features_path, is_file=found == pafs.FileType.File)


def read_feature_partition(features_path: str, day: date, *, entity_column: str = "user_id") -> pa.Table:
    """One date's feature rows, without the partition column, read as the serving path reads them
    (`partition_dataset`): the data files directly in the partition, with the columns of all of
    them. pyarrow alone takes the first file's columns (dropping a column only a later file has),
    reads subdirectories, and fails on a writer's leftover that is not Parquet."""
    partition = LakeLayout.partition(features_path, day)
    table = partition_dataset(partition, entity_column=entity_column).to_table()
    table = table.drop_columns([c for c in ("date",) if c in table.column_names])
    if entity_column in table.column_names and pa.types.is_dictionary(table.schema.field(entity_column).type):
        # Its values, as the serving path reads them (a pandas `category` column is written so):
        # the entity checks (count_distinct has no dictionary kernel) and the MERGE key need them.
        ids = table[entity_column]
        table = table.set_column(
            table.schema.get_field_index(entity_column), entity_column, ids.cast(ids.type.value_type)
        )
    return table


def _check_entities(table: pa.Table, entity_column: str, where: str) -> None:
    if entity_column not in table.column_names:
        raise ValueError(f"{where} has no {entity_column!r} column; columns: {table.column_names}")
    nulls = table[entity_column].null_count
    if nulls:
        raise ValueError(
            f"{where} has {nulls} row(s) with a null {entity_column!r}; a view row needs an entity. "
            "Fix the feature job's input or logic and rerun it for this date, then refresh the view"
        )
    if table.num_rows and pc.count_distinct(table[entity_column]).as_py() != table.num_rows:
        raise ValueError(
            f"{where} holds an {entity_column!r} more than once; a view needs one row per entity"
        )


def _check_feature_dates(table: pa.Table, day: date, where: str) -> pa.Table:
    """Refuse rows whose `feature_date` is not `day`, their partition's date: a full refresh takes
    an entity's row of the newest partition, a MERGE that of the newest feature date, and a rerun
    finds the rows of `day` by their feature date, so such rows gave two different views. Returns
    `table` with `feature_date` as a date: a writer such as pandas stores one as a timestamp, or a
    job as its ISO string, and the view compares it with dates."""
    if "feature_date" not in table.column_names:
        raise ValueError(
            f"{where} has no 'feature_date' column; a view row says there which date it is of. "
            f"Rerun the feature job for {day}, then refresh the view"
        )
    try:
        dates = table["feature_date"].cast(pa.date32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise ValueError(
            f"{where}: 'feature_date' is {table.schema.field('feature_date').type}, not a date ({error}). "
            f"Rerun the feature job for {day}, then refresh the view"
        ) from error
    wrong = pc.invert(pc.fill_null(pc.equal(dates, pa.scalar(day, pa.date32())), False))
    others = pc.filter(dates, wrong)
    if len(others):
        seen = sorted({str(value) for value in others.to_pylist()})
        raise ValueError(
            f"{where} has {len(others)} row(s) whose 'feature_date' is not {day} ({', '.join(seen[:3])}"
            f"{', ...' if len(seen) > 3 else ''}); a view takes an entity's newest row by both. "
            f"Rerun the feature job for {day} (a partition copied from another date keeps that "
            "date's rows), then refresh the view"
        )
    index = table.schema.get_field_index("feature_date")
    return table.set_column(index, table.schema.field(index).with_type(pa.date32()), dates)


def _delta_type(arrow_type: pa.DataType) -> pa.DataType:
    """The Arrow type a Delta table stores `arrow_type` as (Delta has no large_string, for one)."""
    from deltalake import Schema

    if pa.types.is_timestamp(arrow_type):
        # Delta holds microseconds, and write_deltalake truncates nanoseconds to them; but
        # Schema.from_arrow names a nanosecond type ("timestamp_nanos") that no write stores
        return pa.timestamp("us", "UTC" if arrow_type.tz else None)
    try:
        delta_schema = Schema.from_arrow(pa.schema([pa.field("c", arrow_type)]))
        return pa.schema(delta_schema.to_arrow()).field(0).type
    except Exception:  # a type Delta cannot hold: the write says so
        return arrow_type


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
        # Instants, whatever the unit or zone: a naive feature timestamp is UTC by the format, and a
        # partition of several files reads one as UTC (`offline_features._widened`), a partition of
        # one file as it is. Cast to the view's type (`_conform`).
        return True
    return a == b or _delta_type(a) == _delta_type(b)


def _unify_schemas(before: pa.Schema, rows: pa.Schema, where: str) -> pa.Schema:
    """The columns of `before` (the partitions read so far) then the new ones of `rows` (the
    partition `where`). A column that is null in every row so far takes the other's type."""
    fields = []
    for field in before:
        if field.name not in rows.names:
            fields.append(field.with_nullable(True))
            continue
        other = rows.field(field.name)
        if pa.types.is_null(field.type):
            fields.append(other.with_nullable(True))
        elif pa.types.is_null(other.type) or _same_type(field.type, other.type):
            fields.append(field)
        else:
            raise ValueError(
                f"{where}: column {field.name!r} is {other.type}, but {field.type} in the older "
                "partitions; a view column has one type. Rerun the feature job for the older dates "
                "so that every partition has the new type, then refresh the view in full"
            )
    older = {name.lower(): name for name in before.names}
    for name in rows.names:
        if name not in before.names and name.lower() in older:
            raise ValueError(
                f"{where}: column {name!r} differs only in case from {older[name.lower()]!r} of the older "
                "partitions; a Delta table's column names are case-insensitive, so a view cannot hold "
                "both. Rerun the feature job so that every partition names it alike, then refresh the view"
            )
    fields += [rows.field(name).with_nullable(True) for name in rows.names if name not in before.names]
    return pa.schema(fields)


def _nullable(table: pa.Table) -> pa.Table:
    """`table` with every column nullable. A writer marks a column NOT NULL when it knows it has no
    null (Spark, for a literal or a count): kept in the view's schema, from the oldest partition
    or the view's first build, a later partition's null in it failed every refresh in delta-rs,
    a full rebuild too, naming neither the partition nor the fix."""
    if all(field.nullable for field in table.schema):
        return table
    return table.cast(pa.schema([field.with_nullable(True) for field in table.schema]))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with the columns of `schema`, in its order and types; a column it lacks is null.
    Nanoseconds cast to a coarser timestamp are truncated, as write_deltalake stores them."""
    columns = [
        pc.cast(table[field.name], field.type, safe=not _truncates_nanoseconds(table, field))
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _truncates_nanoseconds(table: pa.Table, field: pa.Field) -> bool:
    source = table.schema.field(field.name).type
    return pa.types.is_timestamp(source) and source.unit == "ns" and pa.types.is_timestamp(field.type)


def schema_change_error(
    where: str,
    view_path: str,
    *,
    new: list[str],
    missing: list[str],
    changed: list[str],
    not_null: Sequence[str] = (),
) -> ValueError:
    """The error of an incremental refresh (either engine) whose partition `where` has columns the
    view lacks (`new`), lacks view columns (`missing`), has columns of another type (`changed`), or
    nulls in the view's NOT NULL columns (`not_null`). A changed type needs the older partitions
    rewritten first: a full refresh refuses a column typed otherwise in an older partition."""
    found = "; ".join(
        f"{what}: {', '.join(names)}"
        for what, names in (
            ("columns the view lacks", new),
            ("view columns it lacks", missing),
            ("columns of another type", changed),
            ("nulls in NOT NULL view columns", not_null),
        )
        if names
    )
    remedy = (
        "Rerun the feature job for the older dates so that every partition has the new type (a full "
        "refresh refuses a column whose type differs between partitions), then refresh the view in "
        "full (view_refresh=full)"
        if changed
        else "Refresh the view in full (view_refresh=full) to take the new schema"
    )
    return ValueError(
        f"{where} does not have the columns of the view {view_path} ({found}): the feature "
        f"definition changed, and an incremental refresh keeps the view's schema. {remedy}"
    )


def _fit_to_view(
    rows: pa.Table, view_schema: pa.Schema, where: str, view_path: str, *, allow_missing: bool = False
) -> pa.Table:
    """`rows` in the view's column order and types. Refuses a column the view lacks, one of another
    type, and (unless `allow_missing`: an older partition, whose rows a full refresh fills with
    nulls) a view column the partition lacks. A view column with no type yet (null in every row so
    far: Arrow's null type, Delta's void) takes the partition's, as a full refresh would
    (`_typed_void_columns`: the view is then rebuilt in full)."""
    new = [name for name in rows.column_names if name not in view_schema.names]
    missing = [] if allow_missing else [name for name in view_schema.names if name not in rows.column_names]
    changed = [
        f"{field.name} ({rows.schema.field(field.name).type}, the view's is {field.type})"
        for field in view_schema
        if field.name in rows.column_names
        and not pa.types.is_null(rows.schema.field(field.name).type)
        and not pa.types.is_null(field.type)
        and not _same_type(rows.schema.field(field.name).type, field.type)
    ]
    # A view built before its columns were made nullable (`_nullable`) may hold NOT NULL ones.
    not_null = [
        f"{field.name} (holds nulls, the view's column is NOT NULL)"
        for field in view_schema
        if not field.nullable and field.name in rows.column_names and rows[field.name].null_count
    ]
    if new or missing or changed or not_null:
        raise schema_change_error(
            where, view_path, new=new, missing=missing, changed=changed, not_null=not_null
        )
    schema = pa.schema(
        pa.field(field.name, _delta_type(rows.schema.field(field.name).type))
        if pa.types.is_null(field.type) and field.name in rows.column_names
        else field
        for field in view_schema
    )
    return _conform(rows, schema)


def _typed_void_columns(source: pa.Schema, view_schema: pa.Schema) -> list[str]:
    """The view's columns with no type yet (Delta's void) that `source` gives one."""
    return [
        field.name
        for field in view_schema
        if pa.types.is_null(field.type) and not pa.types.is_null(source.field(field.name).type)
    ]


def latest_per_entity(
    features_path: str, *, as_of: date, entity_column: str = "user_id"
) -> tuple[pa.Table, int]:
    """Each entity's newest row in the partitions on or before `as_of`, sorted by entity; and the
    number of dates read. Reads one date at a time, oldest first, each replacing its entities.
    The columns are those of every partition (`_unify_schemas`): null where a partition lacks one."""
    days = [d for d in feature_dates(features_path) if d <= as_of]
    if not days:
        raise FileNotFoundError(
            f"no feature partition on or before {as_of} under {features_path}; run the feature job first"
        )
    latest: pa.Table | None = None
    for day in days:
        rows = read_feature_partition(features_path, day, entity_column=entity_column)
        if rows.num_rows == 0:  # a date with no entity in its window is left empty
            continue
        where = LakeLayout.partition(features_path, day)
        _check_entities(rows, entity_column, where)
        rows = _nullable(_check_feature_dates(rows, day, where))
        if latest is None:
            latest = rows
            continue
        schema = _unify_schemas(latest.schema, rows.schema, where)
        latest, rows = _conform(latest, schema), _conform(rows, schema)
        kept = latest.filter(pc.invert(pc.is_in(latest[entity_column], value_set=rows[entity_column])))
        latest = pa.concat_tables([kept, rows])
    if latest is None:
        raise FileNotFoundError(
            f"the feature partitions on or before {as_of} under {features_path} are all empty: a full "
            "refresh never replaces a view with an empty table, and leaves it as it was. Check that the "
            "feature job wrote these dates with their entities (rerun it if not), then refresh again"
        )
    return latest.sort_by(entity_column), len(days)


def full_refresh_as_of(view_path: str, *, ds: date, newest_in_view: date | None) -> date:
    """The date a full refresh for `ds` rebuilds the view as of: `ds`, or the view's newest
    `feature_date` when later. A full refresh of an older date (a backfill with view_refresh=full)
    would otherwise drop the newer rows, and the next incremental refreshes, which MERGE one date
    each, would never bring back those of entities absent from their dates."""
    if newest_in_view is None or newest_in_view <= ds:
        return ds
    log.warning(
        "%s holds rows of %s, after %s: rebuilding it as of %s, so that it keeps them",
        view_path,
        newest_in_view,
        ds,
        newest_in_view,
    )
    return newest_in_view


def _newest_feature_date(view: Any) -> date | None:
    """The newest `feature_date` in a delta-rs DeltaTable, None when it has no row."""
    if "feature_date" not in pa.schema(view.schema().to_arrow()).names:
        return None
    dates = view.to_pyarrow_dataset().to_table(columns=["feature_date"])["feature_date"]
    # as a date: a view written before feature dates were read as dates may hold timestamps
    return pc.max(dates.cast(pa.date32())).as_py()


def refresh_full(
    view_path: str,
    features_path: str,
    *,
    as_of: date,
    entity_column: str = "user_id",
    name: str = "",
    run_key: str | None = None,
) -> RefreshReport:
    """Rebuild the view from every partition on or before `as_of` (`full_refresh_as_of`: or the
    view's newest feature date, when later) and overwrite it in one commit, which fails, to be
    retried, when another writer committed to the table since this refresh opened it. `run_key`
    and the run's date (`as_of` as given) are recorded in the commit (`committed_refresh`)."""
    ds = as_of  # the run's date: `as_of` may move on to the view's newest date below
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import TableNotFoundError

    try:
        view: DeltaTable | None = DeltaTable(view_path)
    except TableNotFoundError:
        view = None
    if view is not None:
        as_of = full_refresh_as_of(view_path, ds=as_of, newest_in_view=_newest_feature_date(view))
    table, dates_read = latest_per_entity(features_path, as_of=as_of, entity_column=entity_column)
    # An overwrite without a predicate is not checked against a concurrent commit that only added
    # files (an insert-only MERGE of the other engine): it would keep them, and their entities twice.
    # With one, delta-rs's conflict check fails the commit, against the version opened above. A
    # table that did not exist then is created, never overwritten: another writer may have built it
    # meanwhile, as of a later date.
    overwrite = {"mode": "overwrite", "schema_mode": "overwrite", "predicate": "true"}
    commit_properties = _commit_properties(
        run_key, features_path, ds=ds.isoformat(), mode="full", as_of=as_of.isoformat(), dates_read=dates_read
    )
    with _committing(view_path):
        write_deltalake(
            view if view is not None else view_path,
            table,
            **(overwrite if view is not None else {"mode": "error"}),
            name=name or None,
            commit_properties=commit_properties,
        )
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


def newest_rows_before(
    features_path: str,
    *,
    before: date,
    entities: pa.Array,
    entity_column: str,
    view_schema: pa.Schema,
    view_path: str,
) -> tuple[pa.Table, int]:
    """The newest row of each of `entities` in the partitions before `before`, fitted to the view's
    columns (null where an older partition lacks one), and the number of dates read. Reads newest
    date first and stops once every entity is found; an entity with no such row has none."""
    wanted = entities
    found: list[pa.Table] = []
    dates_read = 0
    for day in reversed([d for d in feature_dates(features_path) if d < before]):
        if len(wanted) == 0:
            break
        dates_read += 1
        rows = read_feature_partition(features_path, day, entity_column=entity_column)
        if rows.num_rows == 0:
            continue
        where = LakeLayout.partition(features_path, day)
        _check_entities(rows, entity_column, where)
        rows = _check_feature_dates(rows, day, where)
        wanted_here = wanted.cast(rows.schema.field(entity_column).type)
        rows = rows.filter(pc.is_in(rows[entity_column], value_set=wanted_here))
        if rows.num_rows:
            found.append(_fit_to_view(rows, view_schema, where, view_path, allow_missing=True))
            wanted = pc.filter(wanted, pc.invert(pc.is_in(wanted, value_set=rows[entity_column])))
    # permissive: a view column with no type yet may have one in some of them (`_fit_to_view`)
    table = pa.concat_tables(found, promote_options="permissive") if found else view_schema.empty_table()
    return table, dates_read


def _may_lack(view: Any, columns: list[str], ds: date) -> bool:
    """Whether a partition of `ds` may lack the view's `columns`, its rows then null there as a
    full refresh leaves them: each column was dropped (null in every row of the view's newest
    `feature_date`, as the full refresh as of a date without it keeps it), or added after `ds` (no
    row of `ds` or earlier holds a value in it). Otherwise every later incremental refresh of such a
    date would be refused, full refresh or not."""
    if not columns:
        return False
    table = view.to_pyarrow_dataset().to_table(columns=["feature_date", *columns])
    if not table.num_rows:
        return False
    dates = table["feature_date"]
    newest = pc.equal(dates, pc.max(dates))
    up_to_ds = pc.less_equal(dates, pa.scalar(ds, pa.date32()))
    for name in columns:
        held = pc.is_valid(table[name])
        dropped = not pc.any(pc.and_(newest, held)).as_py()
        added_after = not pc.any(pc.and_(up_to_ds, held)).as_py()
        if not (dropped or added_after):
            return False
    return True


def refresh_incremental(
    view_path: str,
    features_path: str,
    *,
    ds: date,
    entity_column: str = "user_id",
    name: str = "",
    run_key: str | None = None,
) -> RefreshReport:
    """MERGE the partition of `ds` into the view on `entity_column`: the later feature date wins and
    new entities are inserted. A view that does not exist yet is built in full.

    A rerun after the partition of `ds` was rewritten without some entities: their rows of `ds` in
    the view are replaced by their newest rows before `ds` (read back one date at a time until all
    are found), or deleted when they have none, in the same MERGE; so the view equals a full
    refresh. A partition whose columns differ from the view's is refused (refresh in full), but for
    view columns it may lack (`_may_lack`: dropped, or added after `ds`), null in its rows.
    `run_key` is recorded in the commit (`committed_refresh`)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        view = DeltaTable(view_path)
    except TableNotFoundError:
        log.info("%s is not a Delta table yet: building it in full as of %s", view_path, ds)
        return refresh_full(
            view_path, features_path, as_of=ds, entity_column=entity_column, name=name, run_key=run_key
        )
    partition = LakeLayout.partition(features_path, ds)
    if ds in feature_dates(features_path):
        rows = read_feature_partition(features_path, ds, entity_column=entity_column)
    else:
        # The feature job leaves the date absent when no entity had data in its window: its rows
        # in the view are taken back, as for an empty partition, so the view equals a full refresh.
        _require_dataset(features_path)
        log.warning(
            "%s does not exist (the feature job writes none when no entity had data in the window): "
            "the view's rows of %s are taken back",
            partition,
            ds,
        )
        rows = pa.table({})
    if rows.num_rows:
        _check_entities(rows, entity_column, partition)
        rows = _check_feature_dates(rows, ds, partition)
        # In the table's column order and types (a MERGE matches columns by name, and fails on a type
        # mismatch rather than cast); a schema change needs a full refresh.
        view_schema = pa.schema(view.schema().to_arrow())
        missing = [name for name in view_schema.names if name not in rows.column_names]
        rows = _fit_to_view(
            rows, view_schema, partition, view_path, allow_missing=_may_lack(view, missing, ds)
        )
    # The view's entities of `ds` that the partition no longer holds (a rerun after a rewrite).
    of_ds = view.to_pyarrow_dataset().to_table(
        columns=[entity_column], filter=pads.field("feature_date") == pa.scalar(ds, pa.date32())
    )[entity_column]
    gone = (
        pc.filter(of_ds, pc.invert(pc.is_in(of_ds, value_set=rows[entity_column])))
        if rows.num_rows
        else of_ds
    )
    if rows.num_rows == 0 and len(gone) == 0:
        log.warning("%s is empty (no entity in its window): nothing to merge", partition)
        return RefreshReport(
            name, "incremental", ds.isoformat(), 1, view.to_pyarrow_dataset().count_rows(), view.version()
        )
    dates_read = 1
    source = rows
    if len(gone):
        view_schema = pa.schema(view.schema().to_arrow())
        earlier, looked_back = newest_rows_before(
            features_path,
            before=ds,
            entities=gone,
            entity_column=entity_column,
            view_schema=view_schema,
            view_path=view_path,
        )
        dates_read += looked_back
        log.warning(
            "%s no longer holds %d %s(s) whose row of %s is in %s: %d take their newest earlier row "
            "(%d earlier dates read), %d are deleted",
            partition,
            len(gone),
            entity_column,
            ds,
            view_path,
            earlier.num_rows,
            looked_back,
            len(gone) - earlier.num_rows,
        )
        source = pa.concat_tables([rows, earlier], promote_options="permissive") if rows.num_rows else earlier
    # with entities gone, their earlier rows replace their rows of `ds`
    update_when = matched_update_predicate(
        view.schema().to_arrow().names, entity_column=entity_column, replacing=ds if len(gone) else None
    )
    untyped = _typed_void_columns(source.schema, pa.schema(view.schema().to_arrow()))
    if untyped:
        # Not a MERGE with merge_schema: delta-rs (1.6) then sets the column from the source on the
        # matched rows it does not update, newer rows included.
        log.warning(
            "%s: %s, with no type in %s yet (null in every row so far), have one in the rows read: "
            "rebuilding the view in full as of %s",
            partition,
            ", ".join(untyped),
            view_path,
            ds,
        )
        return refresh_full(
            view_path, features_path, as_of=ds, entity_column=entity_column, name=name, run_key=run_key
        )
    # quoted, as delta-spark's refresh quotes it: a name such as `user-id` is no SQL identifier
    quoted = sql_identifier(entity_column)
    merge = (
        view.merge(
            source,
            predicate=f"t.{quoted} = s.{quoted}",
            source_alias="s",
            target_alias="t",
            commit_properties=_commit_properties(
                run_key,
                features_path,
                ds=ds.isoformat(),
                mode="incremental",
                as_of=ds.isoformat(),
                dates_read=dates_read,
            ),
        )
        .when_matched_update_all(predicate=update_when)
        .when_not_matched_insert_all()
    )
    if len(gone) > source.num_rows - rows.num_rows:
        # entities with no row before `ds`; only added when needed, as it scans the whole table
        merge = merge.when_not_matched_by_source_delete(predicate=f"t.feature_date = '{ds.isoformat()}'")
    with _committing(view_path):
        metrics: dict[str, Any] = merge.execute()
    view = DeltaTable(view_path)
    total = view.to_pyarrow_dataset().count_rows()
    log.info("incremental refresh of %s with %s: %s", view_path, ds, metrics)
    return RefreshReport(
        name,
        "incremental",
        ds.isoformat(),
        dates_read,
        total,
        view.version(),
        inserted=int(metrics.get("num_target_rows_inserted", 0)),
        updated=int(metrics.get("num_target_rows_updated", 0)),
        deleted=int(metrics.get("num_target_rows_deleted", 0)),
    )


def matched_update_predicate(
    columns: Sequence[str],
    *,
    entity_column: str,
    replacing: date | None = None,
    uncomparable: Collection[str] = (),
) -> str:
    """When a MERGE updates a view row its source matched (SQL, for delta-rs and delta-spark alike):
    the source row is of a later feature date, or of the same date and differs in some other column
    of `columns` (the view's), so a rerun with the same rows updates none of them (every one was
    updated); or, with `replacing`, the view row is of that date and the source row earlier (it
    stands in for an entity the partition of `replacing` no longer holds). A column of
    `uncomparable` (one Spark cannot compare, such as a map) counts as changed."""
    changed = [
        # in parentheses: delta-rs's parser takes `a IS DISTINCT FROM b OR c` as `a IS DISTINCT FROM (b OR c)`
        "true"
        if column in uncomparable
        else f"(s.{sql_identifier(column)} IS DISTINCT FROM t.{sql_identifier(column)})"
        for column in columns
        if column not in (entity_column, "feature_date")
    ]
    same_date = "s.feature_date = t.feature_date" + (
        f" AND ({' OR '.join(changed)})" if changed else " AND false"
    )
    predicate = f"s.feature_date > t.feature_date OR ({same_date})"
    if replacing is not None:
        predicate += f" OR (t.feature_date = '{replacing.isoformat()}' AND s.feature_date < t.feature_date)"
    return predicate


def sql_identifier(column: str) -> str:
    """`column` quoted for a delta-rs predicate, in backticks, so that `user-id` or `user.id` names
    that column (unquoted, delta-rs's parser reads a subtraction or a field access). delta-rs
    cannot MERGE on a column whose name holds a backtick, quoted or not."""
    return f"`{column}`"


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
    run_key: str | None = None,
) -> RefreshReport:
    """Refresh the view for `ds` in `mode` (`incremental` or `full`). `run_key` names the run (an
    Airflow task instance): a retry of it whose refresh was already committed reports that commit
    (`committed_refresh`) and commits nothing more. A `file:` URI not of the form
    `file:///absolute/path` is refused before anything is read: delta-rs opens `file:rel` as `/rel`."""
    check_refresh_mode(mode)
    for location, what in ((view_path, "the view"), (features_path, "the features")):
        if location.startswith("file:"):
            local_path(location, what=what, remedy="pass a local path or a file:/// URI")
    done = (
        committed_refresh(view_path, features_path, run_key=run_key, ds=ds, name=name, mode=mode)
        if run_key is not None
        else None
    )
    if done is not None:
        report = done
    elif mode == "full":
        report = refresh_full(
            view_path, features_path, as_of=ds, entity_column=entity_column, name=name, run_key=run_key
        )
    else:
        report = refresh_incremental(
            view_path, features_path, ds=ds, entity_column=entity_column, name=name, run_key=run_key
        )
    vacuum_view(view_path)
    return report


def vacuum_view(view_path: str) -> int:
    """Delete the view's data files that left the table longer ago than its retention
    (`delta.deletedFileRetentionDuration`, 7 days by default), and files no version references
    (a write killed before its commit) older than that; the number of files listed. Each MERGE or
    overwrite leaves the files it replaced, a copy of the rewritten rows, that only a vacuum deletes.
    Time travel to versions within the retention still works; a vacuum that finds nothing commits
    nothing."""
    from deltalake import DeltaTable

    # full: list the directory too, not only the files removed since the last checkpoint, which
    # would miss those removed shortly before each checkpoint
    removed = DeltaTable(view_path).vacuum(dry_run=False, full=True)
    if removed:
        log.info("vacuumed %s: %d files older than its retention", view_path, len(removed))
    return len(removed)


def spark_read_delta_files(spark: Any, view_path: str) -> Any:
    """The view as a Spark DataFrame without the delta-spark jars: the Parquet files of the table's
    current version (never the directory, which also holds files of older versions). A version
    with no file (every row deleted) is an empty DataFrame with the table's columns."""
    from deltalake import DeltaTable

    table = DeltaTable(view_path)
    files = table.file_uris()
    if not files:  # spark.read.parquet() of no path cannot infer a schema, and fails
        from pyspark.sql.pandas.types import from_arrow_schema

        return spark.createDataFrame([], from_arrow_schema(pa.schema(table.schema().to_arrow())))
    return spark.read.parquet(*files)
