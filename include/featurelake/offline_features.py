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
            dates.append(date.fromisoformat(name.removeprefix("date=")))
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
    when given), streamed in batches. `filesystem`: a pyarrow or fsspec filesystem for URIs that
    pyarrow does not open itself."""
    dataset = pads.dataset(partition, format="parquet", filesystem=filesystem)
    where = None if entity_ids is None else pc.field(entity_column).isin(list(entity_ids))
    yield from records_from_batches(
        dataset.to_batches(filter=where, batch_size=batch_size),
        entity_column=entity_column,
        feature_date=feature_date,
        # the date is the record's own field; `date` is the partition column if a reader adds it
        exclude=("feature_date", "date"),
    )


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
