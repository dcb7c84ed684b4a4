"""Read feature records from the lake's feature partitions: the layered cache's compute-on-miss
layer, which answers from the newest materialized date when neither the local cache nor Redis holds
an entity."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from featurelake.feature_records import FeatureRecord, entity_keys, records_from_batches
from featurelake.lake import LakeLayout, is_data_file, iso_day

log = logging.getLogger(__name__)


def arrow_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of `location` (a local path or a URI) and the path on it."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), location


def feature_dates(features_path: str) -> list[date]:
    """The dates of the `date=YYYY-MM-DD` partitions under a features dataset, sorted."""
    filesystem, root = arrow_filesystem(features_path)
    infos = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
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
    partition: str, *, entity_column: str = "user_id", filesystem: Any = None
) -> pads.Dataset:
    """The data files of one partition directory as one dataset: the files directly in it that
    `is_data_file` names (hidden `.`/`_` names, other files and subdirectories are skipped), in path
    order. Its columns are those of all the files, in order of first appearance: a file without a
    column reads as null there (pyarrow alone takes the first file's columns, and drops the others
    silently). Types that differ between files are widened (int32 and int64 to int64, a dictionary
    to its values, timestamps to UTC, as the format reads a naive one); any other disagreement is
    an error that names the partition."""
    if filesystem is None:
        filesystem, root = arrow_filesystem(partition)
    else:
        root = partition
        if not isinstance(filesystem, pafs.FileSystem):
            filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
    files = sorted(
        info.path
        for info in filesystem.get_file_info(pafs.FileSelector(root))
        if info.type == pafs.FileType.File and is_data_file(info.base_name)
    )
    dataset = pads.dataset(files, format="parquet", filesystem=filesystem)
    if len(files) < 2:
        return dataset
    schemas = [_widened(fragment.physical_schema, entity_column) for fragment in dataset.get_fragments()]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as error:
        raise ValueError(
            f"{partition}: its data files disagree on a column's type ({error}); rewrite the partition "
            "with one type per column"
        ) from error
    return pads.dataset(files, schema=schema, format="parquet", filesystem=filesystem)


def _widened(schema: pa.Schema, entity_column: str) -> pa.Schema:
    """`schema` with the types that hold the same values made one: a dictionary as its values, and
    a feature timestamp (naive, in UTC by the format, or in any zone) as a UTC one of its unit."""
    fields = []
    for column in schema:
        data_type = column.type
        if pa.types.is_dictionary(data_type):
            data_type = data_type.value_type
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
) -> Iterator[tuple[str, FeatureRecord]]:
    """(entity id, record) for the rows of one feature partition directory (of `entity_ids` only,
    when given: ids as the records key them, `str(id)`), streamed in batches. Its data files are
    read in path order (`partition_dataset`); a directory with no data file holds none.
    `filesystem`: a pyarrow or fsspec filesystem for URIs that pyarrow does not open itself."""
    dataset = partition_dataset(partition, entity_column=entity_column, filesystem=filesystem)
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
        _check_no_empty_entity(partition, dataset, entity_column)
    else:
        id_type = dataset.schema.field(entity_column).type
        if pa.types.is_dictionary(id_type):
            id_type = id_type.value_type
        if pa.types.is_string(id_type) or pa.types.is_large_string(id_type):
            where = pc.field(entity_column).isin(list(entity_ids))
        else:
            # The ids are the keys' text (str(1.0) is '1.0', where a cast writes '1'): compare
            # the rows' ids as text, as `records_from_batches` writes them. A null id is no key
            # (`isin` leaves them out of a text column too); it would fail the records.
            where = pc.field(entity_column).is_valid()
            wanted = set(entity_ids)
    records = records_from_batches(
        dataset.to_batches(filter=where, batch_size=batch_size),
        entity_column=entity_column,
        feature_date=feature_date,
        exclude=exclude,
    )
    if wanted is None:
        yield from records
    else:
        yield from ((entity, record) for entity, record in records if entity in wanted)


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


def _check_no_empty_entity(partition: str, dataset: pads.Dataset, entity_column: str) -> None:
    empty = pc.field(entity_column).is_null()
    id_type = dataset.schema.field(entity_column).type
    if pa.types.is_dictionary(id_type):
        id_type = id_type.value_type
    if pa.types.is_string(id_type) or pa.types.is_large_string(id_type):
        empty = empty | (pc.field(entity_column) == "")
    count = dataset.count_rows(filter=empty)
    if count:
        raise ValueError(
            f"{partition}: {count} feature rows have an empty {entity_column!r}; they cannot be keyed"
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


def read_offline_features(
    features_path: str, entity_ids: Sequence[str], *, as_of: date, entity_column: str = "user_id"
) -> dict[str, FeatureRecord]:
    """The records of `entity_ids` in the newest partition on or before `as_of` (ids it lacks are
    left out). Reads one partition, filtered on the entity column."""
    candidates = [d for d in feature_dates(features_path) if d <= as_of]
    if not candidates or not entity_ids:
        return {}
    day = candidates[-1]
    partition = LakeLayout.partition(features_path, day)
    records = dict(
        partition_records(partition, feature_date=day, entity_column=entity_column, entity_ids=entity_ids)
    )
    log.info("computed %d of %d records from %s", len(records), len(entity_ids), partition)
    return records
