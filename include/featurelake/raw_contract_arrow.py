"""The raw transactions data contract (docs/data-contract.md, `raw/transactions`) for a job that reads
the files with pyarrow: one listing of a window's date partitions gives their data files and the
entries no reader reads; each data file's footer gives its columns, their types and its row groups;
and the files are read in pieces of row groups, cast to the contract's types. The Spark feature job
checks the same rules through parquet-mr (`featurelake.user_features_run.check_raw_files`), and both
accept the same Parquet forms of each column (`RAW_ARROW_TYPES`, `RAW_PARQUET_TYPES`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from featurelake.lake import is_data_file
from featurelake.synthetic import TRANSACTIONS_SCHEMA

log = logging.getLogger(__name__)


def _is_text(arrow_type: pa.DataType, physical: str | None) -> bool:
    """Strings, as Parquet BINARY with or without the STRING annotation (pyarrow reads the latter as
    binary: the cast to string checks it is UTF-8), or as an Arrow dictionary of them (a file
    pyarrow wrote from a DictionaryArray, which it reads back as one), or as the view types a file's
    stored Arrow schema may name (Polars writes string_view), which Spark reads as any string."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return any(
        check(arrow_type)
        for check in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_string_view,
            pa.types.is_binary_view,
        )
    )


def _is_instant(arrow_type: pa.DataType, physical: str | None) -> bool:
    """A UTC instant: milliseconds or microseconds adjusted to UTC (any zone name: the instant is
    the same), or Spark's legacy INT96, which is UTC by convention and read as naive nanoseconds."""
    if not pa.types.is_timestamp(arrow_type):
        return False
    if physical == "INT96":
        return True
    return arrow_type.unit in ("ms", "us") and arrow_type.tz is not None


@dataclass(frozen=True)
class RawColumnType:
    """The types a raw column may have in a file: `contract`, as docs/data-contract.md names it,
    and `accepts(arrow_type, physical_type)`, given the Arrow type pyarrow reads it as and the
    Parquet physical type of the column (None for a nested one). Every accepted type casts to the
    contract's exactly (`read_raw_piece`)."""

    contract: str
    accepts: Callable[[pa.DataType, str | None], bool]


# The columns of the contract (user_features.RAW_DATA_COLUMNS, in its order) and the forms the feature
# job's RAW_PARQUET_TYPES accepts too. Refused: float32 or decimal amounts (float32 loses cents),
# unsigned or 64-bit category ids, timestamps without time zone or in nanoseconds, anything else.
RAW_ARROW_TYPES: dict[str, RawColumnType] = {
    "transaction_id": RawColumnType("string", _is_text),
    "user_id": RawColumnType("string", _is_text),
    "merchant_id": RawColumnType("string", _is_text),
    "category_id": RawColumnType(
        "int32", lambda arrow_type, _: arrow_type in (pa.int8(), pa.int16(), pa.int32())
    ),
    "amount": RawColumnType("float64", lambda arrow_type, _: arrow_type == pa.float64()),
    "currency": RawColumnType("string", _is_text),
    "transaction_ts": RawColumnType("timestamp[us, tz=UTC]", _is_instant),
}


@dataclass(frozen=True)
class RawFile:
    path: str  # as the caller named the dataset: a path or a URI
    size: int  # bytes
    day: str  # its partition's date, YYYY-MM-DD


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
    fsspec URI): only those directories are listed, one request each. Names starting with `.` or
    `_` (temporary and marker files) are neither data nor stray; a file named as a partition is a
    stray. Dates without a partition are skipped; a missing `raw_transactions` raises
    FileNotFoundError."""
    import fsspec

    filesystem, root = fsspec.core.url_to_fs(raw_transactions)
    root = root.rstrip("/")
    if not filesystem.isdir(root):
        raise FileNotFoundError(
            f"no directory {raw_transactions}: the lake holds no raw transactions. Land them there (or "
            "run `featurelake generate`), and check that the lake's location (in Airflow, the Variable "
            "featurelake_lake) is the lake, as the task's machine reaches it"
        )
    files, stray = [], []
    for day in days:
        directory = f"date={day}"
        try:
            listed = filesystem.ls(f"{root}/{directory}", detail=True)
        except FileNotFoundError:
            continue
        # The listing of a file is the file itself. Both names are in the filesystem's own form:
        # `url_to_fs` gave `root` in it, and listings give names in it.
        if (
            len(listed) == 1
            and listed[0]["type"] != "directory"
            and listed[0]["name"].rstrip("/") == f"{root}/{directory}"
        ):
            stray.append(
                f"{raw_transactions.rstrip('/')}/{directory} is a file where a partition directory "
                "belongs, which no reader reads"
            )
            continue
        for info in listed:
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if name.startswith((".", "_")):
                continue
            path = f"{raw_transactions.rstrip('/')}/{directory}/{name}"
            if info["type"] == "directory":
                stray.append(f"{path} is a subdirectory, which no reader reads")
            elif info["type"] != "file" or not is_data_file(name):
                stray.append(f"{path} is not a .parquet file, which no reader reads")
            else:
                files.append(RawFile(path, int(info["size"]), day))
    return RawWindow(sorted(files, key=lambda file: file.path), sorted(stray), filesystem)


def untyped_column_hint(contract: str) -> str:
    """What to say of a column stored with Parquet's null type (no type at all): pandas and pyarrow
    write one for a column whose every value is null, unless told its type."""
    return (
        f" (stored with no type, as pandas and pyarrow write a column whose every value is null: give "
        f"the writer its type, {contract}, in a pyarrow schema or with pandas' astype, even when "
        "every value is null)"
    )


def raw_contract_error(problems: list[str], *, not_written: str) -> ValueError:
    """The error of both jobs for raw files that break the data contract: `not_written` (what the
    job did not write, and what was kept), the first 20 `problems` and how many more, and what to do."""
    more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
    return ValueError(
        f"raw transactions break the data contract (docs/data-contract.md), so {not_written}: "
        f"{'; '.join(problems[:20])}{more}. Re-land those partitions with only Parquet files named "
        "*.parquet that hold every column of the contract with its type (a file still being "
        "written, or one to keep there unread, needs a name starting with . or _), then rerun the task"
    )


@dataclass(frozen=True)
class RawFooter:
    """What a raw data file's footer says: `problems` with the contract (none: the file may be
    read); `columns`, {contract column: its name in the file}, as names match whatever their case
    (as Spark matches them); `row_group_bytes`, the uncompressed size of each row group."""

    problems: list[str]
    columns: dict[str, str]
    row_group_bytes: list[int]


def _parquet_type(column: Any) -> str:
    """A Parquet leaf column's physical type and logical annotation, such as `INT32 Int(bitWidth=8,
    isSigned=true)`."""
    logical = str(column.logical_type)
    if logical == "None":
        return column.physical_type
    # pyarrow's Timestamp text ends with its own writer flags, which say nothing about the data
    logical, flags, _ = logical.partition(", is_from_converted_type")
    return f"{column.physical_type} {logical}{')' if flags else ''}"


def read_raw_footer(filesystem: Any, path: str, size: int) -> RawFooter:
    """The footer of the raw data file `path` (as `filesystem` names it) of `size` bytes, and what
    in it breaks the data contract: not Parquet (empty, truncated, another format), a column
    missing or there twice (names compared whatever their case), or a column of a type
    `RAW_ARROW_TYPES` does not accept. Other columns are allowed (adding a column is compatible)."""
    import pyarrow.parquet as pq

    if size == 0:
        return RawFooter(["it is empty (0 bytes), not a Parquet file"], {}, [])
    with filesystem.open(path, "rb") as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowInvalid, OSError) as error:  # no magic bytes; a footer Thrift cannot decode
            return RawFooter(
                [f"it cannot be read as Parquet (truncated, or another format: {error})"], {}, []
            )
        schema = parquet.schema_arrow
        leaves = {column.path: column for column in parquet.schema}
        metadata = parquet.metadata
        row_group_bytes = [metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)]
    problems, columns = [], {}
    for name, accepted in RAW_ARROW_TYPES.items():
        found, problem = contract_column_name(schema.names, name)
        if problem:
            problems.append(problem)
            continue
        columns[name] = found
        arrow_type = schema.field(found).type
        leaf = leaves.get(found)
        if not accepted.accepts(arrow_type, None if leaf is None else leaf.physical_type):
            stored = f" (Parquet {_parquet_type(leaf)})" if leaf is not None else ""
            contract = accepted.contract
            if pa.types.is_null(arrow_type):
                contract += untyped_column_hint(accepted.contract)
            problems.append(f"column {found} is {arrow_type}{stored}, where the contract has {contract}")
    return RawFooter(problems, columns, row_group_bytes)


def contract_column_name(names: Sequence[str], column: str) -> tuple[str, None] | tuple[None, str]:
    """The name of the contract's `column` among a file's column `names`, matched whatever their
    case (as Spark matches them), or what is wrong: it is missing, or more than one name matches.
    Both jobs' footer checks use it."""
    found = [name for name in names if name.lower() == column]
    if not found:
        return None, f"it has no column {column}"
    if len(found) > 1:
        return None, f"it has {len(found)} columns named {column} ({', '.join(found)}), whatever their case"
    return found[0], None


# Raw files whose footers are read at once (`read_raw_footers`; the Spark job's `check_raw_files`).
FOOTER_READERS = 8


def read_raw_footers(window: RawWindow) -> list[RawFooter]:
    """The footer of each data file of `window`, in its order (`read_raw_footer`)."""
    started = time.monotonic()
    # Footers are small reads, each a round trip to an object store: several at once.
    with ThreadPoolExecutor(max_workers=FOOTER_READERS, thread_name_prefix="raw-footer") as readers:
        footers = list(
            readers.map(
                lambda file: read_raw_footer(window.filesystem, _filesystem_path(file.path), file.size),
                window.files,
            )
        )
    log.info("read the footers of %d raw files in %.1f s", len(window.files), time.monotonic() - started)
    return footers


def _filesystem_path(path: str) -> str:
    import fsspec

    return fsspec.core.url_to_fs(path)[1]


def raw_window_problems(window: RawWindow, footers: list[RawFooter]) -> list[str]:
    """Every entry of `window` that breaks the data contract, each as `<path> <what is wrong>`: the
    stray entries, then each data file's problems (`footers`, in the order of `window.files`)."""
    found = [
        f"{file.path}: {problem}"
        for file, footer in zip(window.files, footers, strict=True)
        for problem in footer.problems
    ]
    return [*window.stray, *found]


# The most a task reads of a raw file at once (uncompressed row groups; a larger row group is read
# whole): a day's partition is usually one file, which a large day would otherwise bring whole into
# one worker. The size Dask's read_parquet aims at as well.
PIECE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class RawPiece:
    """Consecutive row groups of one raw data file, read by one task (`read_raw_piece`)."""

    path: str  # a path or a URI, as RawFile.path
    day: str
    row_groups: tuple[int, ...]
    columns: tuple[tuple[str, str], ...]  # (contract column, its name in the file), RawFooter.columns


def raw_pieces(window: RawWindow, footers: list[RawFooter], *, max_bytes: int) -> list[RawPiece]:
    """The data files of `window` (whose `footers` found no problem) as pieces of consecutive row
    groups of at most `max_bytes` uncompressed (a larger row group is a piece of its own), so a task
    holds a bounded share of a large file. A file without row groups (no rows) is skipped."""
    pieces = []
    for file, footer in zip(window.files, footers, strict=True):
        columns = tuple(footer.columns.items())
        group: list[int] = []
        held = 0
        for index, size in enumerate(footer.row_group_bytes):
            if group and held + size > max_bytes:
                pieces.append(RawPiece(file.path, file.day, tuple(group), columns))
                group, held = [], 0
            group.append(index)
            held += size
        if group:
            pieces.append(RawPiece(file.path, file.day, tuple(group), columns))
    return pieces


TEXT_IS_UTF8 = "text_is_utf8"
"""The column `read_raw_piece(..., flag_utf8=True)` adds: false on a row that held a text value
that is not UTF-8 (data contract rule 7), read as null."""
TEXT_IS_UTF8_FIELD = pa.field(TEXT_IS_UTF8, pa.bool_(), nullable=False)


def read_raw_piece(
    piece: RawPiece, columns: Sequence[str] | None = None, *, flag_utf8: bool = False
) -> pa.Table:
    """The rows of `piece` in the contract's columns and types (`TRANSACTIONS_SCHEMA`), or in
    `columns` of them alone (in that order): each column read by its name in the file and cast
    exactly (an int8 category_id to int32, milliseconds and INT96 to microseconds, binary to UTF-8
    strings, a dictionary to its strings). A text value that is not UTF-8 (a plain `BINARY` column
    holds any bytes, and a writer can break a `STRING` one) is read as null and logged with its file
    and column; with `flag_utf8`, a last column TEXT_IS_UTF8 says which rows held one. A file that
    cannot be read although its footer passed (a damaged page) raises a ValueError that names it."""
    import fsspec
    import pyarrow.parquet as pq

    wanted = [TRANSACTIONS_SCHEMA.field(name) for name in (columns or TRANSACTIONS_SCHEMA.names)]
    filesystem, path = fsspec.core.url_to_fs(piece.path)
    names = dict(piece.columns)
    try:
        with filesystem.open(path, "rb") as handle:
            # INT96 in microseconds, truncated as Spark reads it: as nanoseconds (pyarrow's default)
            # a value with nanoseconds failed the cast, and 9999-12-31 (a sentinel) wrapped to 1816.
            table = pq.ParquetFile(handle, coerce_int96_timestamp_unit="us").read_row_groups(
                list(piece.row_groups), columns=[names[field.name] for field in wanted], use_threads=False
            )
        arrays = []
        utf8 = None
        for field in wanted:
            column = table.column(names[field.name])
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            if pa.types.is_timestamp(column.type) and column.type.tz is None:  # INT96: UTC by convention
                column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
            if pa.types.is_string(field.type):
                column, valid = _utf8_text(column)
                if valid is not None:
                    log.warning(
                        "%s (row groups %s): %d %s values are not UTF-8 (data contract rule 7), read as null",
                        piece.path,
                        list(piece.row_groups),
                        len(valid) - pc.sum(valid).as_py(),
                        field.name,
                    )
                    utf8 = valid if utf8 is None else pc.and_(utf8, valid)
            arrays.append(column.cast(field.type))
    except (OSError, pa.ArrowException) as error:
        raise ValueError(
            f"the raw file {piece.path} could not be read (row groups {list(piece.row_groups)}): "
            f"{error}. Its footer passed the data contract's checks (docs/data-contract.md): unless "
            "this was a passing storage error (then retry the task), a data page is damaged. "
            "Re-land that partition, then rerun the task"
        ) from error
    if not flag_utf8:
        return pa.Table.from_arrays(arrays, schema=pa.schema(wanted))
    flag = pa.chunked_array([pa.repeat(True, table.num_rows)]) if utf8 is None else utf8
    return pa.Table.from_arrays([*arrays, flag], schema=pa.schema([*wanted, TEXT_IS_UTF8_FIELD]))


def _utf8_text(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray | None]:
    """A text column (string, binary or their large and view kinds) as strings, each value that is
    not UTF-8 as null; and which values were UTF-8, a null counting as one (None when all were, the
    common case). Arrow's cast to string checks each chunk once; only a chunk that fails it is
    checked value by value."""
    large = pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type)
    # 32-bit offsets stay 32-bit: no copy of them to check the bytes.
    as_binary, as_string = (pa.large_binary(), pa.large_string()) if large else (pa.binary(), pa.string())
    texts, flags = [], []
    for chunk in column.chunks:
        as_bytes = chunk.cast(as_binary)
        try:
            texts.append(as_bytes.cast(as_string))  # the cast checks the bytes are UTF-8
            flags.append(None)
        except pa.ArrowInvalid:
            valid = pa.array([_is_utf8(value) for value in as_bytes.to_pylist()], pa.bool_())
            texts.append(pc.if_else(valid, as_bytes, None).cast(as_string))
            flags.append(valid)
    text = pa.chunked_array(texts, as_string)
    if all(flag is None for flag in flags):
        return text, None
    filled = [pa.repeat(True, len(t)) if flag is None else flag for flag, t in zip(flags, texts, strict=True)]
    return text, pa.chunked_array(filled, pa.bool_())


def _is_utf8(value: bytes | None) -> bool:
    if value is None:
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
