"""Per-merchant statistics over a window of raw transactions, with Dask: the job for data larger than
memory. The client lists the window's date partitions (files of other dates are never opened) and
checks their files against the data contract from their Parquet footers
(`featurelake.raw_contract_arrow`), failing with an error that names each offending path. Then each
task reads a piece of a raw file (`PIECE_BYTES` of row groups), cast to the contract's types, and
stages its valid rows as Parquet under a staging directory, by merchant bucket (a hash of
merchant_id) and date. Then one task per bucket aggregates its dates one at a time, keeping running
sums and each merchant's distinct users. A task holds one piece of a raw partition, or one date of
one bucket plus those running totals, so the window can be many times the workers' memory.

Why not Dask's own shuffle by merchant: it puts all of a merchant's rows into one partition, and card
data is skewed (on the benchmark lake one merchant has 13% of the rows). That partition outgrew the
workers: at 40M rows, workers of 1 and 2 GiB were restarted by their nannies (docs/benchmarks.md).
The staging is the same exchange through the lake, with the date as a second key.

The output directory is replaced as a whole: the run writes it beside its place under a hidden name
(`.date=<ds>.<random>`, which readers and partition listings ignore) and swaps it in by renames, so
a reader sees the previous output or the new one (or, between the two renames, no directory), and a
failed run leaves the previous one.

A row counts when it is valid by the data contract (docs/data-contract.md: non-empty transaction_id
and user_id, an amount that is neither null nor NaN, a transaction_ts whose UTC date is the
partition's date, text that is UTF-8) and has a non-empty merchant_id, and exact copies of a row count once. (Two
different versions of one transaction_id both count: the user feature job quarantines them, this job
only reports how many rows it read and counted.) Columns per merchant:

| column | definition |
|---|---|
| merchant_id | |
| stats_date | ds |
| transaction_count | distinct valid rows |
| unique_users | distinct user_id |
| total_amount, avg_amount | sum and mean of amount |
| refund_share | share of transactions with amount < 0 |
| active_days | distinct dates with a transaction |
"""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from featurelake.arrow_partitions import hidden_sibling, refuse_glob_characters, remove_leftovers, swap_in
from featurelake.lake import MAX_ABS_AMOUNT, window_start
from featurelake.raw_contract_arrow import (
    TEXT_IS_UTF8,
    TEXT_IS_UTF8_FIELD,
    RawFooter,
    RawPiece,
    RawWindow,
    list_raw_window,
    raw_contract_error,
    raw_pieces,
    raw_window_problems,
    read_raw_footers,
    read_raw_piece,
)
from featurelake.synthetic import TRANSACTIONS_SCHEMA

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

STATS_SCHEMA = pa.schema(
    [
        ("merchant_id", pa.string()),
        ("stats_date", pa.date32()),
        ("transaction_count", pa.int64()),
        ("unique_users", pa.int64()),
        ("total_amount", pa.float64()),
        ("avg_amount", pa.float64()),
        ("refund_share", pa.float64()),
        ("active_days", pa.int64()),
    ]
)

# Every raw column (exact copies are whole-row copies) and the partition's date.
_COLUMNS = [*TRANSACTIONS_SCHEMA.names, "date"]

# pandas 3's default string dtype, which pandas 2.3 has too (the lock keeps pandas 2 for pyspark):
# Arrow-backed strings. pandas 2 otherwise reads Parquet strings as Python objects: the window then
# took 3.2x the memory as frames, and the job 1.2x the time (docs/benchmarks.md).
ARROW_STRING = pd.StringDtype("pyarrow", na_value=np.nan)


def read_parquet_frame(
    path: str, *, columns: list[str] | None = None, filesystem: Any = None
) -> pd.DataFrame:
    """A Parquet file or directory as a pandas frame whose strings are `ARROW_STRING`, under pandas 2
    and 3 alike."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=columns, filesystem=filesystem)
    return table.to_pandas(types_mapper={pa.string(): ARROW_STRING, pa.large_string(): ARROW_STRING}.get)


@dataclass
class MerchantStatsReport:
    ds: str
    window_days: int
    merchants: int
    rows_read: int
    rows_counted: int
    output_path: str
    buckets: int


def empty_merchant_stats() -> pd.DataFrame:
    """A statistics frame with no merchant, typed like the output."""
    return pd.DataFrame({field.name: pd.Series(dtype=field.type.to_pandas_dtype()) for field in STATS_SCHEMA})


def _day_partials(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One date's rows of a bucket: per-merchant counts and sums, and the distinct (merchant, user)
    pairs. Exact copies share their date, so dropping them here drops every copy."""
    rows = rows.drop_duplicates()
    merchant = rows["merchant_id"]
    partials = pd.DataFrame(
        {
            "transaction_count": rows.groupby(merchant).size(),
            "total_amount": rows["amount"].groupby(merchant).sum(),
            "refunds": (rows["amount"] < 0).groupby(merchant).sum(),
            "active_days": 1,
        }
    )
    return partials, rows[["merchant_id", "user_id"]].drop_duplicates()


# The most (merchant, user) pairs deduplicated at once. pandas hashes every user id of the frame it
# deduplicates, about 190 bytes a distinct id at the peak: a bucket of 6M pairs whose users were
# nearly all distinct took 1.1 GiB above its 172 MiB of pairs in one drop_duplicates
# (docs/benchmarks.md). Sliced by merchant, a slice's peak is that of its own pairs.
PAIRS_PER_SLICE = 500_000


def distinct_pairs(pairs: pd.DataFrame, *, slice_pairs: int = PAIRS_PER_SLICE) -> pd.DataFrame:
    """`pairs` (merchant_id, user_id) without repeats, deduplicated a slice of merchants at a time
    (about `slice_pairs` pairs each; a merchant's pairs are all in one slice, so a merchant with
    more than that makes a larger slice)."""
    slices = -(-len(pairs) // slice_pairs)
    if slices <= 1:
        return pairs.drop_duplicates(ignore_index=True)
    merchants, _ = pd.factorize(pairs["merchant_id"])  # few distinct values: cheap to hash
    slice_of = merchants % slices
    order = np.argsort(slice_of, kind="stable")
    ends = np.cumsum(np.bincount(slice_of, minlength=slices))
    del merchants, slice_of
    starts = ends - np.diff(ends, prepend=0)
    parts = [
        pairs.take(order[start:end]).drop_duplicates()
        for start, end in zip(starts, ends, strict=True)
        if end > start
    ]
    del order
    return pd.concat(parts, ignore_index=True)


def merchant_stats_of_days(days: Iterable[pd.DataFrame], *, ds: date) -> pd.DataFrame:
    """The statistics of every merchant whose rows are all in `days` (one frame per date, each holding
    all of that date's rows of these merchants). Memory holds one date's rows plus, per merchant,
    running sums and its distinct users, so a merchant with a large share of the window (card data is
    skewed: on the benchmark lake one merchant has 13% of the rows) needs no more than its users."""
    totals: pd.DataFrame | None = None
    pairs: list[pd.DataFrame] = []
    pending = 0
    deduplicated = 0
    for rows in days:
        if rows.empty:
            continue
        partials, day_pairs = _day_partials(rows)
        totals = partials if totals is None else totals.add(partials, fill_value=0)
        pairs.append(day_pairs)
        pending += len(day_pairs)
        if pending > 2 * deduplicated + 500_000:  # amortized: each pair is re-deduplicated O(1) times
            pairs = [distinct_pairs(_concat_and_clear(pairs))]
            pending = deduplicated = len(pairs[0])
    if totals is None:
        return empty_merchant_stats()
    users = distinct_pairs(_concat_and_clear(pairs))["merchant_id"].value_counts()
    stats = totals.sort_index()
    count = stats["transaction_count"].astype("int64")
    out = pd.DataFrame(
        {
            "merchant_id": stats.index.astype(object),
            "stats_date": ds,
            "transaction_count": count.to_numpy(),
            "unique_users": users.reindex(stats.index).astype("int64").to_numpy(),
            "total_amount": stats["total_amount"].to_numpy(),
            "avg_amount": (stats["total_amount"] / count).to_numpy(),
            "refund_share": (stats["refunds"] / count).to_numpy(),
            "active_days": stats["active_days"].astype("int64").to_numpy(),
        }
    )
    return out[[field.name for field in STATS_SCHEMA]]


def _concat_and_clear(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One frame of `frames`, which is emptied: the parts are freed as soon as they are copied."""
    frame = pd.concat(frames, ignore_index=True)
    frames.clear()
    return frame


def valid_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that count: valid by the data contract's rules 1-7 and 4a (non-empty transaction_id
    and user_id; amount neither null nor NaN, finite and at most MAX_ABS_AMOUNT in absolute value;
    transaction_ts not null and on the UTC date of the row's `date`, the partition's, as
    `YYYY-MM-DD`; every text value UTF-8, as `TEXT_IS_UTF8` says), with a non-empty merchant_id."""

    def present(column: str) -> pd.Series:
        # Not `astype("string") != ""`: under pandas 2 that copies the Arrow strings into one Python
        # object each, 2-3x the piece's memory at its peak. A null's length is NaN, not > 0.
        return rows[column].notnull() & (rows[column].str.len() > 0)

    keep = present("transaction_id") & present("user_id") & present("merchant_id") & rows["amount"].notnull()
    keep &= rows[TEXT_IS_UTF8].to_numpy(dtype=bool)  # rule 7
    keep &= rows["amount"].abs() <= MAX_ABS_AMOUNT  # rule 4a; also false for NaN and infinities
    # Rules 5 and 6: the UTC day of transaction_ts is the partition's date. A null ts is NaT, which
    # equals nothing. A raw partition holds one date, so each distinct date is parsed once.
    codes, dates = pd.factorize(rows["date"])
    partition_day = np.asarray(dates, dtype=object).astype("datetime64[D]")[codes]
    ts = rows["transaction_ts"]
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    keep &= ts.notnull().to_numpy() & (ts.to_numpy().astype("datetime64[D]") == partition_day)
    return rows[keep]


# The most a staging task reads of a raw file at once (uncompressed row groups; a larger row group
# is read whole). A task's memory peaks at about 6x the uncompressed bytes it reads, above the
# ~190 MiB a worker holds before its first task: pieces of 256 MiB (`raw_contract_arrow.PIECE_BYTES`)
# took a worker past 1 GiB on a day of 4M rows (tests/integration/test_merchant_stats_memory.py).
PIECE_BYTES = 64 * 2**20
# The most uncompressed bytes of one date that a bucket gets on average: a bucket task holds one
# date of its bucket at a time, and a short window of large days gave each bucket up to 1 GiB of a
# date (window_days=1: one bucket for a day of up to 4 `BUCKET_UNIT_BYTES`).
BUCKET_DAY_BYTES = 64 * 2**20

# Units of raw data (`bucket_units`) per staging bucket by default. Each staging task writes a file
# per (bucket, date) it holds rows of, read by its own step of a bucket task, so more buckets mean
# more small files; fewer mean more distinct (merchant, user) pairs held per task. On the 10M-row
# benchmark lake (120 dates of one file each), 120 buckets took 78 s and 30 took 32 s
# (docs/benchmarks.md).
DATES_PER_BUCKET = 4
# A date counts one unit per this many uncompressed bytes, and at least one.
BUCKET_UNIT_BYTES = 256 * 2**20


# The most uncompressed bytes of the whole window that a bucket gets on average. A bucket task holds
# each distinct (merchant, user) pair of its dates, at most one per row: 128 MiB of the contract's
# rows (about 58 bytes each uncompressed) is about 2.3M rows. 8 days of 1.5M rows whose users were
# drawn from 10M (nearly a new pair per row) gave each of 2 buckets 6M pairs, and workers of 1 GiB
# were restarted by their nannies (docs/benchmarks.md).
BUCKET_WINDOW_BYTES = 128 * 2**20


def default_bucket_count(units: int, *, largest_day_bytes: int = 0, window_bytes: int = 0) -> int:
    """Staging buckets for a window of `units` (`bucket_units`): one per DATES_PER_BUCKET, and at
    least enough that a bucket gets at most BUCKET_DAY_BYTES of the largest date
    (`largest_day_bytes`, uncompressed) and BUCKET_WINDOW_BYTES of the whole window
    (`window_bytes`, uncompressed) on average."""
    return max(
        1,
        -(-units // DATES_PER_BUCKET),
        -(-largest_day_bytes // BUCKET_DAY_BYTES),
        -(-window_bytes // BUCKET_WINDOW_BYTES),
    )


def day_bytes(days: Iterable[str], row_group_bytes: Iterable[Iterable[int]]) -> dict[str, int]:
    """{date: the uncompressed bytes of its row groups}, from each data file's date and the sizes
    of its row groups; a date whose files hold no row group is left out."""
    by_day: dict[str, int] = {}
    for day, sizes in zip(days, row_group_bytes, strict=True):
        sizes = list(sizes)
        if sizes:
            by_day[day] = by_day.get(day, 0) + sum(sizes)
    return by_day


def bucket_units(by_day: Mapping[str, int]) -> int:
    """What the default bucket count is sized by, from each date's uncompressed bytes (`day_bytes`):
    per date with rows, one unit per BUCKET_UNIT_BYTES, at least one. By dates, not by files or
    pieces: a writer that splits a day into many small files (Spark's 200 shuffle partitions) gave
    as many buckets per file as per date, and each staging task of those files wrote a file per
    bucket: the staged files grew with the square of the files per day."""
    return sum(max(1, -(-size // BUCKET_UNIT_BYTES)) for size in by_day.values())


def merchant_bucket(merchant_ids: pd.Series, buckets: int) -> pd.Series:
    """The staging bucket of each merchant id: a hash that every process computes alike."""
    hashes = pd.util.hash_pandas_object(merchant_ids, index=False).to_numpy()
    return pd.Series((hashes % buckets).astype("int32"), index=merchant_ids.index)


_STAGE_COUNTS_META = pd.DataFrame(
    {"rows_read": pd.Series(dtype="int64"), "rows_valid": pd.Series(dtype="int64")}
)


def stage_partition(
    rows: pd.DataFrame, *, staging: str, buckets: int, partition_info: dict | None = None
) -> pd.DataFrame:
    """Write the valid rows of one piece of a raw partition (`raw_piece_frame`, partition `n` of the
    read) to `staging/bucket=<b>/date=<d>/part-<n>-0.parquet` (one file per bucket and date that get
    rows) and return its counts. Reading and staging are one task, so a worker holds a piece only
    while it stages it."""
    import fsspec
    import pyarrow.parquet as pq

    number = (partition_info or {}).get("number", 0)
    valid = valid_rows(rows)
    if len(valid):
        # One pq.write_table per (bucket, date), the directories' values left out of the files, as
        # pq.write_to_dataset would write them: its dataset writer took about 4x the memory (on a
        # 15 MiB partition of 100k rows, 100 MiB against 32 MiB more RSS), which small workers
        # (a few hundred MB) did not have.
        table = pa.Table.from_pandas(valid.drop(columns=["date", TEXT_IS_UTF8]), preserve_index=False)
        groups = valid.groupby([merchant_bucket(valid["merchant_id"], buckets), valid["date"]], sort=True)
        filesystem, root = fsspec.core.url_to_fs(staging)
        for (bucket, day), positions in groups.indices.items():
            directory = f"{root}/bucket={bucket}/date={day}"
            filesystem.makedirs(directory, exist_ok=True)
            with filesystem.open(f"{directory}/part-{number}-0.parquet", "wb") as staged:
                pq.write_table(table.take(positions), staged)
        del table, groups
    # Arrow keeps freed buffers for reuse; a worker that stages or aggregates one partition after
    # another would hold them between tasks.
    pa.default_memory_pool().release_unused()
    return pd.DataFrame({"rows_read": [len(rows)], "rows_valid": [len(valid)]})


def merchant_stats_of_bucket(bucket: int, *, staging: str, ds: date) -> pd.DataFrame:
    """The statistics of the merchants of one staged bucket, read one date at a time (a bucket no
    row fell into is empty)."""
    import fsspec

    filesystem, root = fsspec.core.url_to_fs(f"{staging}/bucket={bucket}")
    if not filesystem.exists(root):
        return empty_merchant_stats()
    day_dirs = sorted(
        info["name"] for info in filesystem.ls(root, detail=True) if info["type"] == "directory"
    )
    columns = [c for c in _COLUMNS if c != "date"]  # the date is the directory's, the same for all rows

    def days() -> Iterator[pd.DataFrame]:
        for day_dir in day_dirs:
            yield read_parquet_frame(day_dir, columns=columns, filesystem=filesystem)

    stats = merchant_stats_of_days(days(), ds=ds)
    pa.default_memory_pool().release_unused()  # as after staging
    return stats


def check_raw_window(window: RawWindow, footers: list[RawFooter], *, ds: date, output: str) -> None:
    """Fail, naming each offending path and what is wrong with it, when the window's partitions
    break the data contract (`raw_window_problems`: an entry no reader reads, a data file that is
    not Parquet, lacks a column or holds one of a type the contract does not accept). Read as they
    were, such files were skipped without a word, read as nulls or with float32's cents, cast to
    the first file's types, or failed a task with an error that named no fix."""
    problems = raw_window_problems(window, footers)
    if problems:
        raise raw_contract_error(
            problems,
            not_written=f"the merchant stats of {ds} were not written (the previous output, {output}, is as it was)",
        )


def check_ds_landed(window: RawWindow, *, raw_transactions: str, ds: date, output: str) -> None:
    """Fail, naming the partition, when `ds` itself has no data file in `window`: its partition is
    missing or holds only hidden and marker files (it has not landed). Other dates of the window
    may have none (the lake's first days). Run alone (not after the DAG's check_raw_partition),
    the job otherwise wrote the stats of ds from the window's other dates, as if ds had no
    transaction; the user feature job fails the same way."""
    if not any(file.day == ds.isoformat() for file in window.files):
        partition = f"{raw_transactions.rstrip('/')}/date={ds.isoformat()}"
        raise FileNotFoundError(
            f"no raw transactions for {ds}: {partition} is missing or holds no *.parquet file (only "
            "names starting with . or _, which readers ignore: it has not landed). Land that day's "
            "data (or run `featurelake generate`) and retry the task; the merchant stats of "
            f"{ds} were not written (the previous output, {output}, is as it was)"
        )


def raw_piece_frame(piece: RawPiece) -> pd.DataFrame:
    """The rows of `piece` (`read_raw_piece`: the contract's columns and types, and `TEXT_IS_UTF8`)
    as a pandas frame with `ARROW_STRING` strings, and its partition's `date`."""
    return _raw_frame(read_raw_piece(piece, flag_utf8=True), piece.day)


def _raw_frame(table: pa.Table, day: str) -> pd.DataFrame:
    frame = table.to_pandas(types_mapper={pa.string(): ARROW_STRING, pa.large_string(): ARROW_STRING}.get)
    frame["date"] = pd.Series(day, index=frame.index, dtype=ARROW_STRING)
    return frame


_WORKER_CHECK = "_worker_check"


def worker_check_token(*, raw_transactions: str, staging: str) -> str:
    """Run on a worker by `check_workers`: the token that the client wrote to `staging`, read as this
    worker sees it. Raises FileNotFoundError when the worker does not see `raw_transactions` or the
    token."""
    import fsspec

    filesystem, root = fsspec.core.url_to_fs(raw_transactions)
    if not filesystem.isdir(root):
        raise FileNotFoundError(f"no directory {raw_transactions}")
    filesystem, root = fsspec.core.url_to_fs(staging)
    marker = f"{root.rstrip('/')}/{_WORKER_CHECK}"
    if not filesystem.exists(marker):
        raise FileNotFoundError(f"no file {staging.rstrip('/')}/{_WORKER_CHECK}, which this run wrote")
    return filesystem.cat_file(marker).decode()


def check_workers(client: Client, *, raw_transactions: str, staging: str) -> None:
    """Fail before any task is sent when a worker of `client`'s cluster cannot import featurelake or
    does not see `raw_transactions` and `staging` as this process does. Otherwise such a worker dies
    unpickling its first task (the job then waits for workers until the task's timeout) or fails it
    on a file that exists, or stages rows where no other worker reads them."""
    import fsspec

    token = uuid.uuid4().hex
    filesystem, root = fsspec.core.url_to_fs(staging)
    filesystem.makedirs(root, exist_ok=True)
    filesystem.pipe_file(f"{root.rstrip('/')}/{_WORKER_CHECK}", token.encode())
    answers = client.run(
        worker_check_token, raw_transactions=raw_transactions, staging=staging, on_error="return"
    )
    problems = []
    for worker, answer in sorted(answers.items()):
        if type(answer) is Exception:  # what Dask returns when the worker could not load the function
            problems.append(f"{worker}: {answer}")
        elif isinstance(answer, BaseException):
            problems.append(f"{worker}: {type(answer).__name__}: {answer}")
        elif answer != token:
            problems.append(
                f"{worker}: reads another run's check file in {staging} (a run of the same date "
                "started meanwhile, or the worker sees another directory at that path)"
            )
    if problems:
        raise RuntimeError(
            f"Dask worker(s) of {client.scheduler.address} cannot run the merchant stats job: "
            f"{'; '.join(problems)}. Every worker must import featurelake (install the project, or "
            "put its include/ directory on the workers' PYTHONPATH) and reach the lake at the same "
            f"path as the Airflow task ({raw_transactions}, on storage they share)"
        )


def remove_tree(path: str) -> None:
    """Delete a directory (local or any fsspec URI) if it exists; off the local filesystem, a path
    fsspec would read as a glob is refused first (`refuse_glob_characters`)."""
    import fsspec

    filesystem, local_path = fsspec.core.url_to_fs(path)
    refuse_glob_characters(filesystem, local_path, path)
    if filesystem.exists(local_path):
        filesystem.rm(local_path, recursive=True)


def compute_merchant_stats(
    client: Client,
    *,
    raw_transactions: str,
    output: str,
    staging: str,
    ds: date,
    window_days: int = 30,
    buckets: int | None = None,
) -> MerchantStatsReport:
    """Compute the window [ds - (W-1), ds] on the cluster of `client` and replace `output` (a
    directory: one Parquet file per bucket). Later partitions never count, and files of dates
    outside the window are never opened.

    The new output is written to a hidden sibling of `output` (`.<name>.<random>`) and swapped in by
    renames once complete (`swap_in`): until then readers see the previous output, and a failed run
    leaves it as it was. Hidden siblings that a killed run left are deleted first.

    `staging` is a scratch directory every worker reaches (in the lake); it is emptied first, so a
    retry of a killed run starts clean, and removed at the end, whether the run succeeds or fails.
    Before that, the window's raw files are checked against the data contract on this client
    (`check_raw_window`), the partition of `ds` must hold a data file (`check_ds_landed`), and
    every worker is checked (`check_workers`). `buckets`: see `default_bucket_count`."""
    import dask
    import dask.dataframe as dd
    from distributed import futures_of, wait

    # bool is an int, and 0 read as "the default": a negative count failed a staging task with a
    # bare OverflowError (out of bounds for uint64)
    if buckets is not None and (isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1):
        raise ValueError(f"buckets must be a whole number >= 1, or None for the default, got {buckets!r}")
    start = window_start(ds, window_days)
    days = [(start + timedelta(days=i)).isoformat() for i in range(window_days)]
    # Listed and read by the job, not by Dask's read_parquet: its discovery under raw_transactions
    # read the schema of any first file, whatever its date, and it read every file as the types of
    # the first one (an int8 category_id there failed the job on a later id of 1000).
    window = list_raw_window(raw_transactions, days)
    footers = read_raw_footers(window)
    check_raw_window(window, footers, ds=ds, output=output)
    check_ds_landed(window, raw_transactions=raw_transactions, ds=ds, output=output)
    pieces = raw_pieces(window, footers, max_bytes=PIECE_BYTES)
    run_id = uuid.uuid4().hex
    rows = None
    if pieces:
        meta = _raw_frame(TRANSACTIONS_SCHEMA.append(TEXT_IS_UTF8_FIELD).empty_table(), "")
        rows = dd.from_map(raw_piece_frame, pieces, meta=meta, enforce_metadata=False)
    bucket_count = buckets
    if bucket_count is None:
        by_day = day_bytes(
            [file.day for file in window.files], [footer.row_group_bytes for footer in footers]
        )
        bucket_count = default_bucket_count(
            bucket_units(by_day),
            largest_day_bytes=max(by_day.values(), default=0),
            window_bytes=sum(by_day.values()),
        )
    remove_tree(staging)
    remove_leftovers(output)
    new_output = hidden_sibling(output, run_id)
    try:
        check_workers(client, raw_transactions=raw_transactions, staging=staging)
        with client.as_current():
            rows_read = rows_counted = 0
            if rows is not None:
                counts = rows.map_partitions(
                    stage_partition,
                    staging=staging,
                    buckets=bucket_count,
                    meta=_STAGE_COUNTS_META,
                    # keys of this run only: the cluster must stage again, not reuse the results that
                    # a failed run's persisted tasks (still referenced by its traceback) hold
                    token=f"stage-partition-{run_id}",
                ).persist()
                # Every staging task ends, done or failed, before a failure propagates: a task still
                # running on a worker when another one failed would otherwise write its bucket files
                # after the staging directory was removed below (or into a retry's).
                staged = futures_of(counts)
                wait(staged)
                totals = counts.sum().compute()
                rows_read, rows_counted = int(totals["rows_read"]), int(totals["rows_valid"])
                # Forget the staging tasks' results before any bucket task reads the staged files.
                # While this client held them, a worker lost in the bucket phase made the scheduler
                # run its staging tasks again: they rewrote files that bucket tasks were reading
                # (ArrowInvalid, "magic bytes not found") and wrote after the staging was removed.
                client.cancel(staged)
                del counts, staged
            meta = empty_merchant_stats()
            # stats_date holds datetime.date objects, which Parquet stores as date32; Dask's string
            # conversion would turn them into text.
            with dask.config.set({"dataframe.convert-string": False}):
                stats = dd.from_map(
                    merchant_stats_of_bucket,
                    range(bucket_count),
                    staging=staging,
                    ds=ds,
                    meta=meta,
                    enforce_metadata=False,
                )
            write = stats.to_parquet(
                new_output, write_index=False, schema=STATS_SCHEMA, engine="pyarrow", compute=False
            )
            _, merchants = dd.compute(write, stats.shape[0])
            swap_in(new_output, output)
    finally:
        # a failed run too: its staging is a copy of the window's valid rows
        remove_tree(new_output)
        remove_tree(staging)
    log.info(
        "merchant stats for %s (%d days): %d merchants from %d valid of %d rows, %d buckets -> %s",
        ds,
        window_days,
        merchants,
        rows_counted,
        rows_read,
        bucket_count,
        output,
    )
    return MerchantStatsReport(
        ds.isoformat(), window_days, int(merchants), int(rows_read), int(rows_counted), output, bucket_count
    )


# How long a client tries to reach a Dask scheduler (Dask's duration format).
DEFAULT_SCHEDULER_TIMEOUT = "30s"


def collect_unclosed_clients() -> None:
    """Collect the garbage now, before a Client starts. A Client left to the garbage collector (one
    whose connection failed in `__init__`) closes itself in `__del__`, which takes distributed's
    process-wide LoopRunner lock; when the collector runs inside another Client's start, which holds
    that lock, the process hangs for good (seen in a test run: `Client.__del__` under
    `LoopRunner._start_unlocked`, distributed 2026.8.0)."""
    gc.collect()


class DaskTLSSettingsMissing(ValueError):
    """A tls:// scheduler address, and this process has no Dask TLS settings for a client."""


class DaskProtocolMissing(ValueError):
    """A scheduler address whose protocol this process cannot speak (ucx:// without its package)."""


def dask_client(
    address: str | None, *, connect_timeout: str = DEFAULT_SCHEDULER_TIMEOUT, **local_options: Any
) -> Client:
    """A client of the scheduler at `address` (tcp://host:port), reached within `connect_timeout`,
    or of a new LocalCluster when `address` is None or `local`. `local_options` go to the
    LocalCluster; by default it is one worker of two threads in this process (`processes=False`).
    Worker processes (`processes=True`) are spawned, and started from an Airflow task they need the
    operator's `child_processes_allowed()` block."""
    from distributed import Client

    collect_unclosed_clients()
    if address in (None, "", "local"):
        # The dashboard cannot be switched off here; a free loopback port keeps it out of the way.
        options = {
            "processes": False,
            "n_workers": 1,
            "threads_per_worker": 2,
            "dashboard_address": "127.0.0.1:0",
        }
        # A client that starts its cluster owns it: closing the client stops the cluster.
        return Client(**{**options, **local_options}, set_as_default=False)
    _check_client_can_connect(address)
    return Client(address, set_as_default=False, timeout=connect_timeout)


def _check_client_can_connect(address: str) -> None:
    """Refuse, before a Client exists, an address this process cannot connect to whatever the
    scheduler does: a protocol without its connector (ucx:// without distributed-ucxx), or tls://
    when dask.config names no CA file or client certificate. A Client fails in `__init__` on
    either (a TypeError), and the half-made Client's `__del__` then waits out twice the connect
    timeout: a task that had failed held its process for 60 s more."""
    from distributed.comm.addressing import parse_address
    from distributed.comm.registry import get_backend
    from distributed.security import Security

    scheme, _ = parse_address(address)
    try:
        get_backend(scheme).get_connector()
    except TypeError as error:
        raise DaskProtocolMissing(
            f"this process cannot open the {scheme}:// connection to {address} ({error})"
        ) from error
    if scheme != "tls":
        return
    tls = Security().get_tls_config_for_role("client")
    if not (tls.get("ca_file") and tls.get("cert")):
        raise DaskTLSSettingsMissing(
            f"the scheduler {address} uses TLS, and this process has no TLS settings for Dask: set "
            "distributed.comm.tls.ca-file, .client.cert and .client.key (or "
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, __CLIENT__CERT, __CLIENT__KEY)"
        )
