"""The raw transactions data contract (docs/data-contract.md, `raw/transactions`) as a job that reads
the files with pyarrow checks it before it reads a row: one listing of a window's date partitions
gives their data files and the entries no reader reads, and each data file's footer gives its
columns and their types. The Spark feature job checks the same rules through parquet-mr
(`featurelake.user_features_run.check_raw_files`); `RAW_ARROW_TYPES` says where the two differ."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from featurelake.lake import is_data_file

log = logging.getLogger(__name__)


def _is_text(arrow_type: pa.DataType, physical: str | None) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _is_instant_in_microseconds(arrow_type: pa.DataType, physical: str | None) -> bool:
    if physical == "INT96":  # Spark's legacy timestamps: UTC by convention, read as timestamp[ns]
        return pa.types.is_timestamp(arrow_type)
    return pa.types.is_timestamp(arrow_type) and arrow_type.unit == "us" and arrow_type.tz is not None


@dataclass(frozen=True)
class RawColumnType:
    """The types a raw column may have in a file: `contract`, as docs/data-contract.md names it,
    and `accepts(arrow_type, physical_type)`, the Arrow type pyarrow reads it as and the Parquet
    physical type of the column (None for a nested one)."""

    contract: str
    accepts: Callable[[pa.DataType, str | None], bool]


# The columns of the contract (user_features.RAW_DATA_COLUMNS, in its order) and the types this job
# reads exactly. Narrower than the feature job's RAW_PARQUET_TYPES, because Dask reads every file of
# a window as the types of its first file, and pyarrow reads some of Spark's types differently:
# - strings: plain BINARY (no STRING annotation), and ENUM, read as bytes, not text; an Arrow
#   dictionary type (a file pyarrow wrote from a DictionaryArray) is read as a pandas categorical,
#   and a categorical merchant_id gives every bucket every merchant (repeated, with 0 transactions);
# - category_id: int32 only: an int8 or int16 first file fails on a later file's id 1000 or 40000;
# - transaction_ts: microseconds only: a millisecond first file fails on a later microsecond;
#   any time zone (the job converts to UTC), and INT96.
RAW_ARROW_TYPES: dict[str, RawColumnType] = {
    "transaction_id": RawColumnType("string", _is_text),
    "user_id": RawColumnType("string", _is_text),
    "merchant_id": RawColumnType("string", _is_text),
    "category_id": RawColumnType("int32", lambda arrow_type, _: arrow_type == pa.int32()),
    "amount": RawColumnType("float64", lambda arrow_type, _: arrow_type == pa.float64()),
    "currency": RawColumnType("string", _is_text),
    "transaction_ts": RawColumnType("timestamp[us, tz=UTC]", _is_instant_in_microseconds),
}


@dataclass(frozen=True)
class RawFile:
    path: str  # as the caller named the dataset: a path or a URI
    fs_path: str  # the same, as its fsspec filesystem names it
    size: int  # bytes


@dataclass(frozen=True)
class RawWindow:
    """What the `date=` partitions of a window hold: `files`, the data files (`is_data_file`),
    sorted; `stray`, a description of each other entry that no reader reads (a file not named
    *.parquet, a subdirectory); `filesystem`, the fsspec filesystem of both."""

    files: list[RawFile]
    stray: list[str]
    filesystem: Any


def list_raw_window(raw_transactions: str, days: Iterable[str]) -> RawWindow:
    """One listing of each `date=<day>` partition of `days` under `raw_transactions` (a path or an
    fsspec URI): only those directories are listed. Names starting with `.` or `_` (temporary and
    marker files) are neither data nor stray. Dates without a partition are skipped; a missing
    `raw_transactions` raises FileNotFoundError."""
    import fsspec

    filesystem, root = fsspec.core.url_to_fs(raw_transactions)
    root = root.rstrip("/")
    if not filesystem.isdir(root):
        raise FileNotFoundError(raw_transactions)
    files, stray = [], []
    for day in days:
        directory = f"date={day}"
        if not filesystem.isdir(f"{root}/{directory}"):
            continue
        for info in filesystem.ls(f"{root}/{directory}", detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if name.startswith((".", "_")):
                continue
            path = f"{raw_transactions.rstrip('/')}/{directory}/{name}"
            if info["type"] == "directory":
                stray.append(f"{path} is a subdirectory, which no reader reads")
            elif info["type"] != "file" or not is_data_file(name):
                stray.append(f"{path} is not a .parquet file, which no reader reads")
            else:
                files.append(RawFile(path, f"{root}/{directory}/{name}", int(info["size"])))
    return RawWindow(sorted(files, key=lambda file: file.path), sorted(stray), filesystem)


def _parquet_type(column: Any) -> str:
    """A Parquet leaf column's physical type and logical annotation, such as `INT32 Int(bitWidth=8,
    isSigned=true)`."""
    logical = str(column.logical_type)
    if logical == "None":
        return column.physical_type
    # pyarrow's Timestamp text ends with its own writer flags, which say nothing about the data
    logical, flags, _ = logical.partition(", is_from_converted_type")
    return f"{column.physical_type} {logical}{')' if flags else ''}"


def raw_file_problems(filesystem: Any, path: str, size: int) -> list[str]:
    """What breaks the data contract in the raw data file `path` (as `filesystem` names it) of
    `size` bytes, from its footer: not Parquet (empty, truncated, another format), a column missing
    or repeated, or a column of a type `RAW_ARROW_TYPES` does not accept. Names match exactly, as
    pyarrow matches them; other columns are allowed (adding a column is compatible)."""
    import pyarrow.parquet as pq

    if size == 0:
        return ["it is empty (0 bytes), not a Parquet file"]
    with filesystem.open(path, "rb") as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowInvalid, OSError) as error:  # no magic bytes; a footer Thrift cannot decode
            return [f"it cannot be read as Parquet (truncated, or another format: {error})"]
        schema = parquet.schema_arrow
        leaves = {column.path: column for column in parquet.schema}
    problems = []
    for name, accepted in RAW_ARROW_TYPES.items():
        found = schema.get_all_field_indices(name)
        if not found:
            other = [field for field in schema.names if field.lower() == name.lower()]
            hint = f" (it has {', '.join(other)}: names must match exactly)" if other else ""
            problems.append(f"it has no column {name}{hint}")
        elif len(found) > 1:
            problems.append(f"it has {len(found)} columns named {name}")
        else:
            arrow_type = schema.field(found[0]).type
            leaf = leaves.get(name)
            if not accepted.accepts(arrow_type, None if leaf is None else leaf.physical_type):
                stored = f" (Parquet {_parquet_type(leaf)})" if leaf is not None else ""
                problems.append(
                    f"column {name} is {arrow_type}{stored}, where the contract has {accepted.contract}"
                )
    return problems


# Raw files whose footers `raw_window_problems` reads at once.
FOOTER_READERS = 8


def raw_window_problems(window: RawWindow) -> list[str]:
    """Every entry of `window` that breaks the data contract, each as `<path> <what is wrong>`: the
    stray entries, then each data file's `raw_file_problems`, in path order."""
    started = time.monotonic()

    def problems_of(file: RawFile) -> list[str]:
        return [
            f"{file.path}: {problem}"
            for problem in raw_file_problems(window.filesystem, file.fs_path, file.size)
        ]

    # Footers are small reads, each a round trip to an object store: several at once.
    with ThreadPoolExecutor(max_workers=FOOTER_READERS, thread_name_prefix="raw-footer") as readers:
        found = [problem for problems in readers.map(problems_of, window.files) for problem in problems]
    log.info("checked the footers of %d raw files in %.1f s", len(window.files), time.monotonic() - started)
    return [*window.stray, *found]
