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
from featurelake.lake import LakeLayout

log = logging.getLogger(__name__)


def feature_dates(features_path: str) -> list[date]:
    """The dates of the `date=YYYY-MM-DD` partitions under a features dataset, sorted."""
    filesystem, root = (
        pafs.FileSystem.from_uri(features_path)
        if "://" in features_path
        else (pafs.LocalFileSystem(), features_path)
    )
    infos = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    dates = []
    for info in infos:
        name = info.base_name
        if info.type == pafs.FileType.Directory and name.startswith("date="):
            try:
                dates.append(date.fromisoformat(name.removeprefix("date=")))
            except ValueError:
                raise ValueError(
                    f"{info.path} is not a partition of {features_path}: its partition directories "
                    "must be named date=YYYY-MM-DD. Move it out of the dataset (a backup or a copy "
                    "belongs elsewhere)"
                ) from None
    return sorted(dates)


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
    when given: ids as the records key them, `str(id)`), streamed in batches. A directory with no
    data file holds none. `filesystem`: a pyarrow or fsspec filesystem for URIs that pyarrow does
    not open itself."""
    dataset = pads.dataset(partition, format="parquet", filesystem=filesystem)
    if entity_column not in dataset.schema.names:
        if not dataset.files:
            return
        raise ValueError(f"{partition} has no entity column {entity_column!r}; it has {dataset.schema.names}")
    where, wanted = None, None
    if entity_ids is not None:
        id_type = dataset.schema.field(entity_column).type
        if pa.types.is_dictionary(id_type):
            id_type = id_type.value_type
        if pa.types.is_string(id_type) or pa.types.is_large_string(id_type):
            where = pc.field(entity_column).isin(list(entity_ids))
        else:
            # The ids are the keys' text (str(1.0) is '1.0', where a cast writes '1'): compare
            # the rows' ids as text, as `records_from_batches` writes them.
            wanted = set(entity_ids)
    records = records_from_batches(
        dataset.to_batches(filter=where, batch_size=batch_size),
        entity_column=entity_column,
        feature_date=feature_date,
        # the date is the record's own field; `date` is the partition column if a reader adds it
        exclude=("feature_date", "date"),
    )
    if wanted is None:
        yield from records
    else:
        yield from ((entity, record) for entity, record in records if entity in wanted)


def partition_entities(
    partition: str, *, entity_column: str = "user_id", filesystem: Any = None
) -> pa.ChunkedArray:
    """The entity ids of one feature partition directory, as text (as `partition_records` gives
    them), read from the entity column alone. A directory with no data file holds none."""
    dataset = pads.dataset(partition, format="parquet", filesystem=filesystem)
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
