"""Directories replaced as a whole, for tasks that run without Spark: a new version is written beside
the directory under a hidden name (`.<name>.<random>`, which readers and partition listings skip) and
swapped in by renames, so a retry leaves exactly the files of its last successful run. Used for date
partitions written with pyarrow (`replace_partition`) and for the Dask job's output."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import uuid
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from featurelake.lake import local_path

log = logging.getLogger(__name__)


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
    parent, slash, name = path.rstrip("/").rpartition("/")
    return f"{parent}{slash}.{name}.{label}"


def remove_leftovers(output: str) -> None:
    """Delete what a run killed before it ended may have left beside `output`: its hidden
    `.<name>.*` siblings (a new output being written, or the previous one being swapped out).
    A run killed between the two renames of `swap_in` left no `output`, and the previous one
    aside as `.<name>.old-*`: that one is put back, as the killed run never replaced it."""
    import fsspec

    filesystem, target = fsspec.core.url_to_fs(output)
    refuse_glob_characters(filesystem, target, output)
    parent, name = target.rstrip("/").rsplit("/", 1)
    if not filesystem.isdir(parent):
        return
    leftovers = [
        info["name"]
        for info in filesystem.ls(parent, detail=True)
        if info["name"].rstrip("/").rsplit("/", 1)[-1].startswith(f".{name}.")
    ]
    if not filesystem.exists(target):
        previous = [p for p in leftovers if p.rstrip("/").rsplit("/", 1)[-1].startswith(f".{name}.old-")]
        if len(previous) > 1:
            raise ValueError(
                f"{output} is missing and {len(previous)} previous versions of it lie beside it "
                f"({', '.join(sorted(previous))}): runs interrupted while they swapped it in. Rename "
                f"the one to keep to {name} (or delete them all if none is), then rerun"
            )
        if previous:
            log.warning(
                "%s: putting back the previous output %s, set aside by a run that was killed",
                output,
                previous[0],
            )
            filesystem.mv(previous[0], target, recursive=True)
            leftovers.remove(previous[0])
    for leftover in leftovers:
        filesystem.rm(leftover, recursive=True)


def swap_in(staged: str, output: str) -> None:
    """Replace the directory `output` by the directory `staged` (its hidden sibling). On a local
    Linux filesystem the two are exchanged in one atomic rename (`renameat2` with
    `RENAME_EXCHANGE`), and the previous output, now under the hidden name, is deleted: a reader
    sees the old output or the new one, never a mix nor no directory, however the run ends (a
    listing that spans the exchange reads the old directory as it is emptied, and finds it empty:
    read again, as `offline_features.read_offline_features` does).
    Elsewhere, by two renames: the previous output is renamed aside (`.<name>.old-*`), `staged`
    takes its place, then the previous output is deleted. Between the two renames there is, for
    an instant, no directory; if the second rename fails, the previous output is put back, and if
    the run is killed there, the next run puts it back (`remove_leftovers`). On an object store a
    "rename" copies, so only the failed-run guarantee holds there."""
    import fsspec

    filesystem, target = fsspec.core.url_to_fs(output)
    staged_path = fsspec.core.url_to_fs(staged)[1]
    refuse_glob_characters(filesystem, target, output)
    had_output = filesystem.exists(target)
    if had_output and "file" in _protocols(filesystem) and exchange_paths(staged_path, target):
        filesystem.rm(staged_path, recursive=True)  # the previous output
        return
    old = fsspec.core.url_to_fs(hidden_sibling(output, f"old-{uuid.uuid4().hex}"))[1]
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


def refuse_glob_characters(filesystem: object, path: str, location: str) -> None:
    """fsspec expands `[`, `*` and `?` in the paths given to a recursive `mv` or `rm` as a glob on
    every filesystem but the local one (s3fs, gcsfs and adlfs among them): a swap moved or deleted
    the files of a look-alike directory (`lake1` for `lake[1]`). Such a path is refused first, by
    every caller of a recursive `mv` or `rm` (`path` on `filesystem`, given as `location`)."""
    if "file" in _protocols(filesystem):
        return
    found = sorted({character for character in "[*?" if character in path})
    if found:
        raise ValueError(
            f"{location} holds {' and '.join(repr(c) for c in found)}, which fsspec reads as a glob "
            "pattern on this filesystem: a swap of this directory could move or delete another "
            "one's files. Choose a lake location and dataset names without [, * or ?"
        )


def _protocols(filesystem: object) -> tuple[str, ...]:
    protocol = getattr(filesystem, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


# No standard-library call exchanges two paths, and no well-kept package wraps renameat2 (Linux
# 3.15+, glibc 2.28+): ctypes calls glibc's.
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange_paths(first: str, second: str) -> bool:
    """Swap two local paths in one atomic rename; False where the system or the filesystem has no
    such rename (not Linux, an old kernel, NFS), for the caller to rename twice instead."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot exchange {first} and {second}: {os.strerror(code)}")
