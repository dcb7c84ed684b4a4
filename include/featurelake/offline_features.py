"""Read feature records from the lake's feature partitions: the layered cache's compute-on-miss
layer, which answers from the newest materialized date when neither the local cache nor Redis holds
an entity."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from featurelake.feature_records import FeatureRecord, entity_keys, records_from_batches, text_id
from featurelake.lake import LakeLayout, is_data_file, iso_day, local_path
from featurelake.partitioning import require_date

log = logging.getLogger(__name__)


def arrow_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of `location` (a local path or a URI) and the path on it. A `file:`
    URI's path is taken as it is written, as the writers, fsspec and Hadoop take it: pyarrow's own
    parsing decodes `%20` and cuts the path at `?` or `#`, so it read another directory than the
    one written (and found nothing), and refused a path with a space. A `file:` URI not of the form
    `file:///absolute/path` is refused (`lake.local_path`)."""
    if location.startswith("file:"):
        path = local_path(location, what="the location", remedy="pass a local path or a file:/// URI")
        return pafs.LocalFileSystem(), str(path)
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), location


def features_path_error(features_path: str, *, is_file: bool = False) -> OSError:
    """The error for a features path that is no directory: one that does not exist where a dataset
    must (an incremental view refresh, of either engine: a mistyped path is not a dataset whose
    dates are all gone, and a refresh from it would take back the view's rows), or a file."""
    if is_file:
        return NotADirectoryError(
            f"{features_path} is a file, not a directory of date partitions: check the features path"
        )
    return FileNotFoundError(
        f"{features_path} does not exist: check the features path (a dataset whose partitions "
        "are all gone is still a directory)"
    )


def feature_dates(features_path: str) -> list[date]:
    """The dates of the `date=YYYY-MM-DD` partitions under a features dataset, sorted; none for a
    path that does not exist. A file there is refused (`features_path_error`)."""
    if not features_path:  # pyarrow lists nothing for '': as a lake with no partition
        raise ValueError(
            "the features path is empty: pass the feature dataset's directory or URI, such as "
            "LakeLayout(root).user_features"
        )
    filesystem, root = arrow_filesystem(features_path)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except NotADirectoryError as error:  # pyarrow's "Cannot list directory ..."
        raise features_path_error(features_path, is_file=True) from error
    dates = []
    for info in infos:
        name = info.base_name
        if info.type == pafs.FileType.Directory and name.startswith("date="):
            day = iso_day(name.removeprefix("date="))
            if day is None:
                raise ValueError(
                    f"{info.path} is not a partition of {features_path}: its partition directories "
                    "must be named date=YYYY-MM-DD. Move it out of the dataset (a backup or a copy "
                    "belongs elsewhere)"
                )
            dates.append(day)
    return sorted(dates)


def partition_dataset(
    partition: str,
    *,
    entity_column: str = "user_id",
    filesystem: Any = None,
    file_names: Sequence[str] | None = None,
) -> pads.Dataset:
    """The data files of one partition directory as one dataset: the files directly in it that
    `is_data_file` names (hidden `.`/`_` names, other files and subdirectories are skipped), in path
    order. Its columns are those of all the files, in order of first appearance: a file without a
    column reads as null there (pyarrow alone takes the first file's columns, and drops the others
    silently). Types that differ between files are widened (int32 and int64 to int64, a dictionary
    to its values, timestamps to UTC, as the format reads a naive one); any other disagreement is
    an error that names the partition, and so are entity ids typed as ints in one file and floats
    in another (1 would be keyed '1.0'). Entity ids stored as bytes (Parquet text without its UTF-8
    annotation) read as text; bytes that are not UTF-8 are an error that names the partition.
    `file_names`: the names of the files directly in the directory, when the caller has listed it,
    so that it is not listed again (a request on an object store)."""
    return _scanned_partition(
        partition, entity_column=entity_column, filesystem=filesystem, file_names=file_names
    )[0]


def _scanned_partition(
    partition: str,
    *,
    entity_column: str,
    filesystem: Any = None,
    file_names: Sequence[str] | None = None,
) -> tuple[pads.Dataset, bool]:
    """`partition_dataset`, and whether a data file stores a string or binary view column (as its
    Arrow schema in the file says), which the dataset's schema, widened, does not show: from the
    footers read once, here."""
    if filesystem is None:
        filesystem, root = arrow_filesystem(partition)
    else:
        root = partition
        if not isinstance(filesystem, pafs.FileSystem):
            filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
    if file_names is None:
        file_names = [
            info.base_name
            for info in filesystem.get_file_info(pafs.FileSelector(root))
            if info.type == pafs.FileType.File
        ]
    files = sorted(f"{root.rstrip('/')}/{name}" for name in file_names if is_data_file(name))
    dataset = pads.dataset(files, format="parquet", filesystem=filesystem)
    if (
        len(files) < 2
        and not _holds_bytes(dataset.schema, entity_column)
        and not _holds_views(dataset.schema)
    ):
        return dataset, False
    physical = [fragment.physical_schema for fragment in dataset.get_fragments()]
    schemas = [_widened(schema, entity_column) for schema in physical]
    _check_entity_types(partition, schemas, entity_column)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as error:
        raise ValueError(
            f"{partition}: its data files disagree on a column's type ({error}); rewrite the partition "
            "with one type per column"
        ) from error
    dataset = pads.dataset(files, schema=schema, format="parquet", filesystem=filesystem)
    if any(_holds_bytes(schema, entity_column) for schema in physical):
        _check_utf8_ids(partition, dataset, entity_column)
    return dataset, any(_holds_views(schema) for schema in physical)


def _holds_bytes(schema: pa.Schema, entity_column: str) -> bool:
    """Whether `schema` types the entity column as bytes: Parquet text without its UTF-8
    annotation, as Impala and some Hive and Spark setups write it."""
    if entity_column not in schema.names:
        return False
    data_type = schema.field(entity_column).type
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return (
        pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
        or pa.types.is_binary_view(data_type)
    )


def _holds_views(schema: pa.Schema) -> bool:
    """Whether a column of `schema` is a string (or binary) view, as pyarrow writes back to a file
    read from one: Arrow has no filter kernel for them, so a read by id failed."""
    return any(pa.types.is_string_view(c.type) or pa.types.is_binary_view(c.type) for c in schema)


def _check_entity_types(partition: str, schemas: Sequence[pa.Schema], entity_column: str) -> None:
    """Files may type the entity column differently only where the ids keep their text (`str(id)`,
    the key): ints of any width, floats of any width, or strings. An int file read as floats would
    key user 1 as '1.0', which is not its key on any other day."""
    types = {
        schema.field(entity_column).type
        for schema in schemas
        if entity_column in schema.names and not pa.types.is_null(schema.field(entity_column).type)
    }
    kinds = (
        pa.types.is_integer,
        pa.types.is_floating,
        lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    )
    if len(types) < 2 or any(all(kind(t) for t in types) for kind in kinds):
        return
    raise ValueError(
        f"{partition}: its data files type the entity column {entity_column!r} as "
        f"{', '.join(sorted(map(str, types)))}, which key the same id as different text (1 and 1.0): "
        f"rewrite the partition with one type for {entity_column!r}"
    )


def _check_utf8_ids(partition: str, dataset: pads.Dataset, entity_column: str) -> None:
    """Read the entity column, stored as bytes, as text once: a publish fails before it writes."""
    try:
        for _ in dataset.to_batches(columns=[entity_column]):
            pass
    except pa.ArrowInvalid as error:
        raise ValueError(
            f"{partition}: its entity column {entity_column!r} is stored as bytes, and not all of them "
            f"are UTF-8 text ({error}); the store keys entities by text: write the ids as strings"
        ) from error


def _widened(schema: pa.Schema, entity_column: str) -> pa.Schema:
    """`schema` with the types that hold the same values made one: a dictionary as its values, a
    string view as a large string, and a feature timestamp (naive, in UTC by the format, or in any
    zone) as a UTC one of its unit."""
    fields = []
    for column in schema:
        data_type = column.type
        if pa.types.is_dictionary(data_type):
            data_type = data_type.value_type
        if column.name == entity_column and pa.types.is_binary(data_type):
            data_type = pa.string()
        if column.name == entity_column and pa.types.is_large_binary(data_type):
            data_type = pa.large_string()
        if pa.types.is_string_view(data_type) or (
            column.name == entity_column and pa.types.is_binary_view(data_type)
        ):
            data_type = pa.large_string()  # a view holds as much text as a large string
        if pa.types.is_timestamp(data_type) and column.name != entity_column:
            data_type = pa.timestamp(data_type.unit, "UTC")
        fields.append(column.with_type(data_type))
    return pa.schema(fields)


def partition_records(
    partition: str,
    *,
    feature_date: date,
    entity_column: str = "user_id",
    entity_ids: Sequence[str] | None = None,
    filesystem: Any = None,
    batch_size: int = 10_000,
    file_names: Sequence[str] | None = None,
) -> Iterator[tuple[str, FeatureRecord]]:
    """(entity id, record) for the rows of one feature partition directory (of `entity_ids` only,
    when given: ids as the records key them, `str(id)`), streamed in batches. Its data files are
    read in path order (`partition_dataset`); a directory with no data file holds none.
    `filesystem`: a pyarrow or fsspec filesystem for URIs that pyarrow does not open itself.
    `file_names`: as for `partition_dataset`."""
    dataset, views = _scanned_partition(
        partition, entity_column=entity_column, filesystem=filesystem, file_names=file_names
    )
    if entity_column not in dataset.schema.names:
        if not dataset.files:
            return
        raise ValueError(f"{partition} has no entity column {entity_column!r}; it has {dataset.schema.names}")
    # the date is the record's own field; `date` is the partition column if a reader adds it
    exclude = ("feature_date", "date")
    # Checked before the first record, so that a publish fails before it writes any of them (a
    # type or a null met in a later batch would leave the store with part of the date).
    _check_feature_types(partition, dataset.schema, skip={entity_column, *exclude})
    where, wanted = None, None
    if entity_ids is None:
        _check_no_empty_entity(partition, dataset, entity_column, views=views)
    else:
        id_type = dataset.schema.field(entity_column).type
        if pa.types.is_dictionary(id_type):
            id_type = id_type.value_type
        text = pa.types.is_string(id_type) or pa.types.is_large_string(id_type)
        if text and not views:
            where = pc.field(entity_column).isin(list(entity_ids))
        elif text:
            # Files that store string views: pruning row groups by their statistics fails in Arrow
            # ("greater_equal has no kernel for (string, string_view)"), so rows are picked after.
            wanted = set(entity_ids)
        else:
            # The ids are the keys' text (str(1.0) is '1.0', where a cast writes '1'): compare
            # the rows' ids as text, as `records_from_batches` writes them. A null id is no key
            # (`isin` leaves them out of a text column too); it would fail the records. Nor is NaN
            # (str: 'nan'), which the publish refuses as it does null.
            where = pc.field(entity_column).is_valid()
            wanted = set(entity_ids) - ({"nan"} if pa.types.is_floating(id_type) else set())
    batches = dataset.to_batches(filter=where, batch_size=batch_size)
    if wanted is not None and where is None:
        batches = _rows_holding(batches, dataset.schema, entity_column, pa.array(sorted(wanted), id_type))
    elif wanted is not None and (typed := _typed_ids(id_type, wanted)) is not None:
        # Ints, floats and bools: the rows of the asked values are picked in Arrow, so that only
        # they become records. Not by the scan's filter: Parquet's statistics make pyarrow prune
        # row groups that hold the value (0.0 in one whose min is -0.0 and max 0.0; NaN).
        batches = _rows_holding(batches, dataset.schema, entity_column, typed)
    records = records_from_batches(
        batches,
        entity_column=entity_column,
        feature_date=feature_date,
        exclude=exclude,
    )
    if wanted is None:
        yield from records
    else:
        yield from ((entity, record) for entity, record in records if entity in wanted)


def _typed_ids(id_type: pa.DataType, entity_ids: Iterable[str]) -> pa.Array | None:
    """The values of an int, float or bool entity column whose text (`str`, as the keys hold it)
    is one of `entity_ids`; None for another type (its rows all become records, compared as text)."""
    if pa.types.is_integer(id_type):
        parse: Any = int
    elif pa.types.is_floating(id_type):
        parse = float
    elif pa.types.is_boolean(id_type):
        parse = {"True": True, "False": False}.__getitem__
    else:
        return None
    values = []
    for entity in entity_ids:
        try:
            value = parse(entity)
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
        if str(value) == entity and value == value:  # its own text ('7', not '07'); not NaN
            values.append(value)
    # Converted as one array, not an Arrow scalar per id (a million ids took seconds).
    if pa.types.is_integer(id_type):
        bits, signed = id_type.bit_width, pa.types.is_signed_integer(id_type)
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2**bits)
        return pa.array([value for value in values if low <= value < high], id_type)  # out of range: no row
    # a narrower float holds the float64's nearest value, as the column's rows do (beyond its range, inf)
    return pa.array(values, pa.float64() if pa.types.is_floating(id_type) else id_type).cast(id_type)


def _rows_holding(
    batches: Iterator[pa.RecordBatch], schema: pa.Schema, entity_column: str, values: pa.Array
) -> Iterator[pa.RecordBatch]:
    """The rows of `batches` whose entity is one of `values` (compared bit for bit: 0.0 is not -0.0).
    Filtered as a dataset of the batches, which has no statistics to prune by, and which builds the
    lookup of `values` once (`pc.is_in` on each batch built it again: 80 ms a batch for a million)."""
    reader = pa.RecordBatchReader.from_batches(schema, batches)
    return pads.dataset(reader).to_batches(filter=pc.field(entity_column).isin(values))


def _writable(data_type: pa.DataType) -> bool:
    """Whether the online format holds values of this Arrow type (`plain_value`: null, bool, int,
    float, str, date, timestamp)."""
    if pa.types.is_dictionary(data_type):
        return _writable(data_type.value_type)
    return any(
        check(data_type)
        for check in (
            pa.types.is_null,
            pa.types.is_boolean,
            pa.types.is_integer,
            pa.types.is_floating,
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_string_view,
            pa.types.is_date,
            pa.types.is_timestamp,
        )
    )


def _check_feature_types(partition: str, schema: pa.Schema, *, skip: set[str]) -> None:
    for column in schema:
        if column.name not in skip and not _writable(column.type):
            raise TypeError(
                f"{partition}: feature column {column.name!r} is of type {column.type}; the online "
                "format takes null, bool, int, float, str, date and timestamp columns: convert it to "
                "one of them (a duration to seconds, a decimal to a float, say)"
            )


def _check_no_empty_entity(partition: str, dataset: pads.Dataset, entity_column: str, *, views: bool) -> None:
    """Fail when a row's entity is null, '' or NaN. `views`: whether a data file stores string
    views (`_scanned_partition`)."""
    empty = pc.field(entity_column).is_null()
    id_type = dataset.schema.field(entity_column).type
    if pa.types.is_dictionary(id_type):
        id_type = id_type.value_type
    text = pa.types.is_string(id_type) or pa.types.is_large_string(id_type)
    if text and views:
        # Not by a filter: Arrow cannot prune by a string view file's statistics (see partition_records).
        count = sum(
            batch.column(0).null_count + (pc.sum(pc.equal(batch.column(0), "")).as_py() or 0)
            for batch in dataset.to_batches(columns=[entity_column])
        )
    else:
        count = dataset.count_rows(filter=empty | (pc.field(entity_column) == "") if text else empty)
    if pa.types.is_floating(id_type):
        # NaN marks a missing id as null does (polars and Spark keep it apart). Counted from the
        # column, not by a filter: Parquet's min/max statistics leave NaN out, so pyarrow's
        # row-group pruning drops the very row groups that hold it.
        count += sum(
            pc.sum(pc.is_nan(batch.column(0))).as_py() or 0
            for batch in dataset.to_batches(columns=[entity_column])
        )
    if count:
        raise ValueError(
            f"{partition}: {count} feature rows have an empty {entity_column!r} (null, '' or NaN); "
            "they cannot be keyed: drop those rows or give them ids, and publish again"
        )


def partition_entities(
    partition: str, *, entity_column: str = "user_id", filesystem: Any = None
) -> pa.ChunkedArray:
    """The entity ids of one feature partition directory, as text (as `partition_records` gives
    them), read from the entity column alone. A directory with no data file holds none."""
    dataset = partition_dataset(partition, entity_column=entity_column, filesystem=filesystem)
    if entity_column not in dataset.schema.names:
        if not dataset.files:
            return pa.chunked_array([], pa.string())
        raise ValueError(f"{partition} has no entity column {entity_column!r}; it has {dataset.schema.names}")
    return pa.chunked_array([entity_keys(dataset.to_table(columns=[entity_column])[entity_column])])


READ_ATTEMPTS = 5
"""Reads of the newest partition `read_offline_features` makes before it gives up on a writer that
keeps replacing it."""


def read_offline_features(
    features_path: str, entity_ids: Sequence[str], *, as_of: date, entity_column: str = "user_id"
) -> dict[str, FeatureRecord]:
    """The records of `entity_ids` in the newest partition on or before `as_of` (ids it lacks are
    left out). Reads one partition, filtered on the entity column. A partition that a writer swaps
    in while it is read (`arrow_partitions.swap_in`, Spark's staged write) is read again, so the
    records come from one whole version of it, the previous or the new. The ids are text, as the
    online store's keys hold them (`str(id)`), whatever the column's type: any other is refused."""
    if isinstance(entity_ids, (str, bytes)):
        raise TypeError(
            f"read_offline_features() takes a sequence of entity ids, got the string {entity_ids!r}; "
            f"pass a list such as [{entity_ids!r}]"
        )
    # Checked before anything is read: an int matched no row of an int column (its rows are keyed
    # '7'), and failed on a text one with an Arrow error that named no id.
    entity_ids = [text_id(entity, taken_by="read_offline_features()") for entity in entity_ids]
    # A datetime or a string did not compare with the partitions' dates, naming neither.
    as_of = require_date(as_of, name="as_of")
    failure: Exception | None = None
    for attempt in range(1, READ_ATTEMPTS + 1):
        candidates = [d for d in feature_dates(features_path) if d <= as_of]
        if not candidates or not entity_ids:
            return {}
        day = candidates[-1]
        partition = LakeLayout.partition(features_path, day)
        before = _partition_version(partition)
        try:
            records = dict(
                partition_records(
                    partition,
                    feature_date=day,
                    entity_column=entity_column,
                    entity_ids=entity_ids,
                    # the files of the version just listed: the read is checked against it
                    file_names=None if before is None else _file_names(before),
                )
            )
        except (OSError, ValueError, TypeError, pa.ArrowException) as error:
            # A file listed in the previous version and deleted since, or the previous version's
            # schema with the new one's files: an error of the partition only if it did not change.
            if before is not None and _partition_version(partition) == before:
                raise
            failure = error
        else:
            if before is not None and _partition_version(partition) == before:
                log.info("computed %d of %d records from %s", len(records), len(entity_ids), partition)
                return records
        log.info("%s changed while it was read (attempt %d of %d)", partition, attempt, READ_ATTEMPTS)
    raise RuntimeError(
        f"{partition} changed or vanished while it was read, {READ_ATTEMPTS} times in a row: a writer "
        "keeps replacing it; read it again once that writer is done"
    ) from failure


def _file_names(version: tuple[Any, ...]) -> list[str]:
    """The names of the files in a partition's version (`_partition_version`)."""
    return [name for name, kind, _, _ in version[1] if kind == pafs.FileType.File]


def _partition_version(partition: str) -> tuple[Any, ...] | None:
    """What changes when a writer replaces a partition directory: its modification time and its
    files' names, sizes and modification times (None when there is no such directory)."""
    filesystem, root = arrow_filesystem(partition)
    info = filesystem.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        return None
    files = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return info.mtime_ns, sorted((f.base_name, f.type, f.size, f.mtime_ns) for f in files)
