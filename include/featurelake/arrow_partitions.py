"""Date partitions written with pyarrow, for tasks that run without Spark: a partition's files are
replaced as a whole, so a retry leaves exactly the files of its last successful run."""

from __future__ import annotations

import shutil
import uuid
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def replace_partition(table: pa.Table, dataset: str, day: date, *, column: str = "date") -> Path:
    """Write `table` as the only file of `<dataset>/<column>=<day>/` (a local path): written beside
    it first, then swapped in by renames. An empty table leaves an empty partition directory."""
    root = Path(dataset.removeprefix("file://"))
    if "://" in str(root):
        raise ValueError(f"{dataset} is not a local path; this writer handles local lakes only")
    target = root / f"{column}={day.isoformat()}"
    staging = root / f".{target.name}.{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        if table.num_rows:
            pq.write_table(table, staging / "part-00000.parquet", compression="snappy")
        old = root / f".{target.name}.old-{uuid.uuid4().hex}"
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
