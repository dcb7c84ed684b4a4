"""Directories replaced as a whole, for tasks that run without Spark: a new version is written beside
the directory under a hidden name (`.<name>.<random>`, which readers and partition listings skip) and
swapped in by renames, so a retry leaves exactly the files of its last successful run. Used for date
partitions written with pyarrow (`replace_partition`) and for the Dask job's output."""

from __future__ import annotations

import shutil
import uuid
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from featurelake.lake import local_path


def replace_partition(table: pa.Table, dataset: str, day: date, *, column: str = "date") -> Path:
    """Write `table` as the only file of `<dataset>/<column>=<day>/` (a local path): written beside
    it first, then swapped in by renames (`swap_in`). An empty table leaves an empty partition
    directory."""
    root = local_path(dataset, what="the dataset", remedy="this writer handles local lakes only")
    target = root / f"{column}={day.isoformat()}"
    remove_leftovers(str(target))
    staging = Path(hidden_sibling(str(target), uuid.uuid4().hex))
    staging.mkdir(parents=True)
    try:
        if table.num_rows:
            pq.write_table(table, staging / "part-00000.parquet", compression="snappy")
        swap_in(str(staging), str(target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def hidden_sibling(path: str, label: str) -> str:
    """`<parent>/.<name>.<label>` for `path` = `<parent>/<name>` (a local path or an fsspec URI)."""
    parent, name = path.rstrip("/").rsplit("/", 1)
    return f"{parent}/.{name}.{label}"


def remove_leftovers(output: str) -> None:
    """Delete what a run killed before it ended may have left beside `output`: its hidden
    `.<name>.*` siblings (a new output being written, or the previous one being swapped out)."""
    import fsspec

    filesystem, target = fsspec.core.url_to_fs(output)
    parent, name = target.rstrip("/").rsplit("/", 1)
    if not filesystem.isdir(parent):
        return
    for info in filesystem.ls(parent, detail=True):
        if info["name"].rstrip("/").rsplit("/", 1)[-1].startswith(f".{name}."):
            filesystem.rm(info["name"], recursive=True)


def swap_in(staged: str, output: str) -> None:
    """Replace the directory `output` by the directory `staged` (its hidden sibling), by renames:
    the previous output is renamed aside, `staged` takes its place, then the previous output is
    deleted. On a local filesystem each rename is atomic, so a reader sees the old output or the
    new one, never a mix (between the renames, for an instant, no directory); if the second rename
    fails, the previous output is put back. On an object store a "rename" copies, so only the
    failed-run guarantee holds there."""
    import fsspec

    filesystem, target = fsspec.core.url_to_fs(output)
    staged_path = fsspec.core.url_to_fs(staged)[1]
    old = fsspec.core.url_to_fs(hidden_sibling(output, f"old-{uuid.uuid4().hex}"))[1]
    had_output = filesystem.exists(target)
    if had_output:
        filesystem.mv(target, old, recursive=True)
    try:
        filesystem.mv(staged_path, target, recursive=True)
    except BaseException:
        if had_output and not filesystem.exists(target):
            filesystem.mv(old, target, recursive=True)
        raise
    if had_output:
        filesystem.rm(old, recursive=True)
