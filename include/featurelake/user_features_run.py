"""One run of the user feature job: plan, validate and quarantine raw rows, build tiles, compute the
window (full: from raw; otherwise: from tiles), write the features and report. Called by
spark_jobs/user_features.py and bench/.

Every write goes to the run's staging directory first (`LakeLayout.staging`), and its partitions
replace the published ones only once that write has succeeded: a run that fails leaves the features
of `ds` as they were. The quarantine and tiles of the dates it builds are written first, and a run
that fails after them (in the features' combine, say) leaves them replaced by ones built from the
same raw data, which its retry builds again, the same bytes, before it writes the features."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from featurelake.lake import LakeLayout
from featurelake.partitioning import (
    DatePartitionListing,
    date_literal,
    date_partition_exists,
    delete_path,
    existing_date_partitions,
    hadoop_file_system,
    list_date_partitions,
    listed_date_partitions,
    literal_path,
    put_back_set_aside,
    read_partition_range,
    read_text,
    write_partitioned,
    write_text,
)
from featurelake.raw_contract_arrow import (
    FOOTER_READERS,
    contract_column_name,
    raw_contract_error,
    untyped_column_hint,
)
from featurelake.user_features import (
    RAW_DATA_COLUMNS,
    TEXT_COLUMNS,
    TILE_BUILT_MARKER,
    TILE_FORMAT,
    TILE_SCHEMA,
    FeatureRunReport,
    LookupFiles,
    build_daily_tiles,
    category_groups,
    check_categories,
    combine_tiles,
    lookup_category_groups,
    lookup_files,
    mark_transactions,
    plan_tile_build,
    quarantined_rows,
    read_categories,
    read_raw_transactions,
    repeated_transaction_keys,
    resume_plan,
    transaction_tiles,
    window_dates,
    with_quarantine_reason,
)

log = logging.getLogger(__name__)

STAGING_JOB = "user_features"


def remove_withdrawn_dates(
    spark: SparkSession,
    layout: LakeLayout,
    *,
    raw_dates: set[date],
    start: date,
    ds: date,
    tile_partitions: Mapping[date, Any],
) -> list[date]:
    """Remove the tiles and quarantine of the window's dates whose raw partition is gone (withdrawn
    by the producer since they were built), so that the window is combined from raw data that
    exists, as a full run computes it. `tile_partitions`: the tile dataset's partitions, as
    `listed_date_partitions` gave them. Returns those dates."""
    # The datasets built from raw data, each with its partitions.
    built_from_raw = {
        layout.user_daily_tiles: tile_partitions,
        layout.quarantine_transactions: listed_date_partitions(spark, layout.quarantine_transactions),
    }
    withdrawn = sorted(
        {
            day
            for partitions in built_from_raw.values()
            for day in partitions
            if start <= day <= ds and day not in raw_dates
        }
    )
    for day in withdrawn:
        for path in built_from_raw:
            if delete_path(spark, LakeLayout.partition(path, day)):
                log.warning(
                    "raw transactions of %s are gone (%s): removed %s, built from them",
                    day,
                    LakeLayout.partition(layout.raw_transactions, day),
                    LakeLayout.partition(path, day),
                )
    return withdrawn


def tile_sources(raw_files: Mapping[date, list[list[Any]]], categories: LookupFiles) -> dict[date, str]:
    """What each date's tile is built from, as the text of its TILE_BUILT_MARKER: the tile format
    (TILE_FORMAT), the data files of its raw partition (`raw_files`, from `list_date_partitions`)
    and of the categories lookup (the listing the run reads it from), from listings only."""
    return {
        day: json.dumps(
            {"tile_format": TILE_FORMAT, "raw_transactions": files, "categories": categories.fingerprint},
            separators=(",", ":"),
        )
        for day, files in raw_files.items()
    }


def rewritten_since_built(spark: SparkSession, layout: LakeLayout, sources: dict[date, str]) -> list[date]:
    """The dates whose tile was built from other raw files or another categories lookup than the lake
    holds now, or by code of another tile format (its marker differs from `sources`): re-landed
    data, a regenerated lake, or tiles older than the code. A marker with no text, or none (a tile
    built before markers named their sources), is of an older format too."""
    return sorted(
        day
        for day, source in sources.items()
        if read_text(spark, f"{LakeLayout.partition(layout.user_daily_tiles, day)}/{TILE_BUILT_MARKER}")
        != source
    )


@contextmanager
def explained_overflow(*, ds: date, window_days: int) -> Iterator[None]:
    """Spark's ARITHMETIC_OVERFLOW (ANSI mode) from the exact sums, as an error that says what
    overflowed and what to do: `MAX_ABS_AMOUNT` bounds each amount, not a user's sums."""
    from pyspark.errors import ArithmeticException

    try:
        yield
    except ArithmeticException as error:
        raise OverflowError(
            f"the features of {ds} overflow the job's exact sums: a user's amounts in the "
            f"{window_days}-day window (or on one day) add up to more than 9.2e12 in absolute value, "
            "or their squares to more than 1e26 (the sums are exact integers of micro-units, "
            "docs/features.md). Each amount is within MAX_ABS_AMOUNT, but their sums are not: correct "
            "or remove the rows with the largest amounts in raw/transactions of the window's dates "
            "(re-land those dates), and rerun. "
            f"Spark said: {str(error).splitlines()[0]}"
        ) from error


@contextmanager
def explained_unreadable_tile(*, layout: LakeLayout, ds: date) -> Iterator[None]:
    """Spark's error for a tile file it cannot read (truncated, or not Parquet), as an error that
    names the file and says how to rebuild it: tiles are derived from raw data."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        yield
    except (Py4JJavaError, PySparkException) as error:
        tiles = re.escape("/".join(layout.user_daily_tiles.split("/")[-2:]))
        unreadable = re.compile(rf"reading file (\S*?/{tiles}/date=\d{{4}}-\d{{2}}-\d{{2}})/(\S+?\.parquet)")
        said = next((line for line in str(error).splitlines() if unreadable.search(line)), None)
        if said is None:
            raise
        partition, name = unreadable.search(said).groups()
        raise OSError(
            f"the tile file {partition}/{name} cannot be read (truncated, or not Parquet), so the "
            f"features of {ds} were not written; the published ones are as they were. Tiles are derived "
            "from raw data: rerun with --mode rebuild (the DAG param mode=rebuild), or delete "
            f"{partition} and rerun. Spark said: {said.removeprefix(': ').strip()}"
        ) from error


def raw_layout_problems(layout: LakeLayout, listing: DatePartitionListing) -> list[str]:
    """What `raw/transactions` holds besides `date=YYYY-MM-DD` directories and hidden names
    (`listing.stray`, from the run's listing of it), each as `<path>: <what is wrong>`: a file, or a
    directory such as `dt=2026-09-02/`, `2026-09-02/` or `date=2026-9-2/`, whose rows no run would
    read (its date is unknown), so they would be lost without a word."""
    return [
        f"{entry}: not a date=YYYY-MM-DD partition directory of {layout.raw_transactions}, so no run "
        "would read it; land its rows in the partition of their UTC date, or move it out"
        for entry in listing.stray
    ]


# The Parquet types a raw column may have (docs/data-contract.md): its physical type, then the
# logical types accepted with it (None: none). Spark reads these exactly; it refuses most others,
# but reads a float32 amount with float32's error (123456.78 as 123456.78125), and a timestamp
# without time zone as if it were UTC.
_STRING = {"BINARY": {None, "STRING", "ENUM"}}
RAW_PARQUET_TYPES: dict[str, dict[str, set[str | None]]] = {
    "transaction_id": _STRING,
    "user_id": _STRING,
    "merchant_id": _STRING,
    "category_id": {"INT32": {None, "INTEGER(8,true)", "INTEGER(16,true)", "INTEGER(32,true)"}},
    "amount": {"DOUBLE": {None}},
    "currency": _STRING,
    "transaction_ts": {"INT64": {"TIMESTAMP(MICROS,true)", "TIMESTAMP(MILLIS,true)"}, "INT96": {None}},
}
_CONTRACT_TYPES = {
    "transaction_id": "string",
    "user_id": "string",
    "merchant_id": "string",
    "category_id": "int32",
    "amount": "float64",
    "currency": "string",
    "transaction_ts": "timestamp[us, tz=UTC]",
}


def _column_problem(column: str, field: Any) -> str | None:
    """What is wrong with the Parquet `field` (a parquet-mr Type) of the raw column `column`, or None."""
    annotation = field.getLogicalTypeAnnotation()
    annotation = None if annotation is None else str(annotation.toString())
    physical = (
        str(field.asPrimitiveType().getPrimitiveTypeName().name()) if field.isPrimitive() else "a group"
    )
    repeated = str(field.getRepetition().name()) == "REPEATED"
    if not repeated and annotation in RAW_PARQUET_TYPES[column].get(physical, set()):
        return None
    found = " ".join(filter(None, ["repeated" if repeated else None, physical, annotation]))
    # parquet-mr's name for Parquet's null type
    untyped = untyped_column_hint(_CONTRACT_TYPES[column]) if annotation == "UNKNOWN" else ""
    return f"column {column} is {found}, where the contract has {_CONTRACT_TYPES[column]}{untyped}"


def raw_file_problems(spark: SparkSession, file: str, size: int) -> tuple[list[str], bool]:
    """What breaks the data contract in the raw data file `file` of `size` bytes, from its footer
    (read on the driver): not Parquet (empty, truncated, another format), a column missing, or a
    column of another type (`RAW_PARQUET_TYPES`). Names match as Spark's reader matches them,
    whatever their case; other columns are allowed (adding a column is compatible). Then whether
    the file holds a text column as plain BINARY (no STRING annotation), whose bytes Spark reads
    unchecked: its rows' text is checked for UTF-8 (`read_raw_transactions`)."""
    from py4j.protocol import Py4JJavaError

    if size == 0:
        return ["it is empty (0 bytes), not a Parquet file"], False
    jvm = spark.sparkContext._jvm
    try:
        reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(
            jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(
                jvm.org.apache.hadoop.fs.Path(file), spark.sparkContext._jsc.hadoopConfiguration()
            )
        )
        try:
            schema = reader.getFileMetaData().getSchema()
            named = [(str(schema.getFieldName(i)), schema.getType(i)) for i in range(schema.getFieldCount())]
        finally:
            reader.close()
    except Py4JJavaError as error:
        said = str(error.java_exception.toString()).splitlines()[0]
        if "ChecksumException" in said:
            # Hadoop's local file system checks a file against `.<name>.crc` beside it, a hidden
            # name no other reader looks at: a file re-landed by another tool keeps the old one.
            parent, _, name = file.rpartition("/")
            return [
                f"it does not match its checksum file {parent}/.{name}.crc, which Spark checks on a "
                "local lake: a checksum left by an earlier write of this name (pyarrow and the Dask "
                f"job read the file). Delete .{name}.crc if the file is the one to keep"
            ], False
        return [f"it cannot be read as Parquet (truncated, or another format: {said})"], False
    fields = dict(named)
    problems = []
    text_unchecked = False
    for column in RAW_DATA_COLUMNS:
        # more than one name of the column: Spark refuses to read it ("Found duplicate field(s)"),
        # naming neither the file nor a fix
        found, problem = contract_column_name([name for name, _ in named], column)
        if problem is None:
            problem = _column_problem(column, fields[found])
            if problem is None and column in TEXT_COLUMNS:
                text_unchecked |= fields[found].getLogicalTypeAnnotation() is None
        if problem:
            problems.append(problem)
    return problems, text_unchecked


def check_raw_files(
    spark: SparkSession,
    layout: LakeLayout,
    listing: DatePartitionListing,
    days: Iterable[date],
    *,
    ds: date,
    found: Sequence[str] = (),
) -> set[tuple[date, str]]:
    """Fail before the run of `ds` reads a row, naming each file and what is wrong with it, when a
    partition of `days` (the dates to read, as the run's `listing` of raw/transactions found them)
    holds an entry no reader would read (a file not named *.parquet, a subdirectory) or a data file
    that breaks the contract (`raw_file_problems`). Read as they are, a missing column would be
    nulls (every row quarantined under a wrong reason, or merchant_id, category_id or currency
    silently null), a float32 amount would lose cents, and a file Spark cannot read would fail the
    job naming no fix. `found`: problems found before (`raw_layout_problems`), named first.
    Returns (date, name) of each file that holds text as plain BINARY (`raw_file_problems`)."""
    days = sorted(days)
    problems = [*found] + [
        f"{entry} is {'a subdirectory' if entry.endswith('/') else 'not a .parquet file'}, which no reader reads"
        for day in days
        for entry in listing.unread[day]
    ]
    named = [(day, name, size) for day in days for name, size, _ in listing.files[day]]
    data_files = [
        (f"{LakeLayout.partition(layout.raw_transactions, day)}/{name}", size) for day, name, size in named
    ]
    # Footers are small reads, each a round trip to an object store: several at once.
    with ThreadPoolExecutor(max_workers=FOOTER_READERS, thread_name_prefix="raw-footer") as readers:
        checked = list(readers.map(lambda file: raw_file_problems(spark, *file), data_files))
    problems += [
        f"{file}: {problem}"
        for (file, _), (said, _) in zip(data_files, checked, strict=True)
        for problem in said
    ]
    if problems:
        raise raw_contract_error(
            problems,
            not_written=f"the features of {ds} were not written (the published ones are as they were)",
        )
    return {(day, name) for (day, name, _), (_, unchecked) in zip(named, checked, strict=True) if unchecked}


@contextmanager
def explained_unreadable_raw(*, layout: LakeLayout, ds: date) -> Iterator[None]:
    """Spark's error for a raw file it cannot read although its footer passed `check_raw_files` (a
    damaged data page), as an error that names the file, says what Spark found, and what to do."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        yield
    except (Py4JJavaError, PySparkException) as error:
        raw = re.escape("/".join(layout.raw_transactions.split("/")[-2:]))
        unreadable = re.compile(
            rf"reading file (\S*?/{raw}/date=\d{{4}}-\d{{2}}-\d{{2}})/(\S+?\.parquet)\.\s*(.*?)\s*(SQLSTATE|$)"
        )
        found = next((m for line in str(error).splitlines() if (m := unreadable.search(line))), None)
        if found is None:
            raise
        partition, name, said, _ = found.groups()
        if not said:  # FAILED_READ_FILE.NO_HINT: the cause is Java's
            said = next((line for line in str(error).splitlines() if line.startswith("Caused by: ")), "")
            said = said.removeprefix("Caused by: ").strip() + "." if said else ""
        raise ValueError(
            f"the raw file {partition}/{name} cannot be read (damaged, or not as the data contract "
            f"has it, docs/data-contract.md): {said or 'Spark gave no detail.'} So the features of "
            f"{ds} were not written (the published ones are as they were). Re-land that partition "
            "with intact Parquet files of the contract's columns and types, then rerun the task"
        ) from error


def put_back_set_aside_partitions(spark: SparkSession, layout: LakeLayout) -> None:
    """Publish again each partition that a run of any date, killed between the two renames of a
    swap (off a local filesystem: HDFS, S3A, NFS), left set aside in its staging directory
    (`partitioning.put_back_set_aside`). Before anything else of a run: its own staging directory
    is deleted before its writes, and a run of another date never writes into that one, so the
    partition was lost to every reader."""
    fs, root = hadoop_file_system(spark, layout.staging_root(STAGING_JOB))
    if not fs.exists(root):
        return
    for status in fs.listStatus(root):
        name = status.getPath().getName()
        if not status.isDirectory() or not name.startswith("date="):
            continue  # `_plans/`
        staged = LakeLayout(f"{layout.staging_root(STAGING_JOB)}/{name}")
        for staging, path in (
            (staged.quarantine_transactions, layout.quarantine_transactions),
            (staged.user_daily_tiles, layout.user_daily_tiles),
            (staged.user_features, layout.user_features),
        ):
            put_back_set_aside(spark, staging=staging, path=path)


def run_user_features(
    spark: SparkSession,
    *,
    ds: date,
    lake: str,
    window_days: int,
    mode: str,
    write_report: Callable[[FeatureRunReport], None] | None = None,
) -> FeatureRunReport:
    """Compute the features of `ds` (docs/features.md) and return the run's report. The run's plan
    is kept until `write_report` (the entry point's write of the report Airflow reads) has taken
    the report: a retry of a run that failed there plans what the run did, and reports the same."""
    layout = LakeLayout(lake)
    put_back_set_aside_partitions(spark, layout)
    start, _ = window_dates(ds, window_days)
    # One listing of the raw root and of the window's partitions gives the window's dates with data,
    # what each one holds, and what else lies there. Partitions outside the window are not listed:
    # on an object store each listing is a request, and the lake's history grows every day.
    raw_listing = list_date_partitions(spark, layout.raw_transactions, start=start, end=ds)
    raw_files = raw_listing.files
    # Before the date of ds is looked for: its rows landed in `dt=<ds>/` are named there. A window
    # partition holding only what no reader reads (`part-0.pq`, a subdirectory) is no date without
    # data: taken for one, its rows were left out of the window without a word, and its tile
    # removed as withdrawn. Either fails the run, and then every partition of the window is checked
    # too, so that one error names every offending path the producer has to fix.
    stray = raw_layout_problems(layout, raw_listing)
    unreadable = [day for day, entries in raw_listing.unread.items() if entries and not raw_files.get(day)]
    if stray or unreadable:
        check_raw_files(spark, layout, raw_listing, raw_listing.files, ds=ds, found=stray)
    raw_dates = {day for day, files in raw_files.items() if files}
    if ds not in raw_dates:
        raise FileNotFoundError(
            f"no raw transactions for {ds}: {LakeLayout.partition(layout.raw_transactions, ds)} is missing or "
            "empty. Land that day's data (or run `featurelake generate`) and retry the task."
        )
    window_raw_dates = sorted(d for d in raw_dates if start <= d <= ds)
    # The tile root is listed once, for both: on an object store each listing is a request.
    tile_partitions = listed_date_partitions(spark, layout.user_daily_tiles)
    withdrawn = remove_withdrawn_dates(
        spark, layout, raw_dates=raw_dates, start=start, ds=ds, tile_partitions=tile_partitions
    )
    # A tile written by a run holds its marker, even when its date had no clean row (tiles written
    # before markers existed hold data files).
    left = {day: directory for day, directory in tile_partitions.items() if day not in withdrawn}
    tile_dates = existing_date_partitions(
        spark, layout.user_daily_tiles, marker=TILE_BUILT_MARKER, start=start, end=ds, listed=left
    )
    # Listed before any raw row is read: data re-landed during the run is picked up by the next one.
    # The lookup is read from this very listing, so the tiles' markers name the files they came from.
    lookup = lookup_files(spark, layout.raw_categories)
    sources = tile_sources({d: raw_files[d] for d in window_raw_dates}, lookup)
    rewritten = rewritten_since_built(spark, layout, {d: sources[d] for d in sources if d in tile_dates})
    tile_dates -= set(rewritten)
    # Kept until the run succeeds: a retry of a failed run builds what that run would have built.
    plan_path = layout.run_plan(STAGING_JOB, ds)
    mode, resumed_tiles = resume_plan(read_text(spark, plan_path), mode=mode)
    mode, to_build = plan_tile_build(
        mode=mode, ds=ds, raw_dates=raw_dates, tile_dates=tile_dates, start=start
    )
    to_build = sorted(set(to_build) | (resumed_tiles & set(window_raw_dates)))
    # Said once the plan is known: a full run rebuilds the tile of ds alone, and reads no tile.
    for day in rewritten:
        log.warning(
            "the tile of %s is not current (its raw transactions or the categories lookup changed since "
            "it was built, or it is of another tile format): %s",
            day,
            "rebuilding it"
            if day in to_build
            else "this full run reads the raw data instead, and leaves it to the next run that combines tiles",
        )
    write_text(spark, plan_path, json.dumps({"mode": mode, "tiles": [d.isoformat() for d in to_build]}))
    # A date's tile and its quarantine come from one validation, so a run writes both for exactly the
    # dates it builds, and nothing of other dates. A full run also reads the window's other raw
    # dates, marking their rows to keep invalid rows and copies out of the features; their
    # quarantine is the business of the runs that build their tiles.
    read = window_raw_dates if mode == "full" else to_build
    log.info(
        "ds=%s mode=%s window=%s days: reading %d raw date(s), building the tile and quarantine of %d",
        ds,
        mode,
        window_days,
        len(read),
        len(to_build),
    )

    # Exactly the files listed (and fingerprinted) above, each checked before any row is read.
    text_unchecked = check_raw_files(spark, layout, raw_listing, read, ds=ds)
    read_files = {day: raw_files[day] for day in read}
    categories = read_categories(spark, layout.raw_categories, lookup)
    check_categories(categories, path=layout.raw_categories)
    # Each write goes here first, and replaces the published partitions only when it succeeded.
    staged = LakeLayout(layout.staging(STAGING_JOB, ds))
    delete_path(spark, staged.root)  # a killed run's leftovers
    rows = with_quarantine_reason(
        read_raw_transactions(
            spark,
            layout.raw_transactions,
            {day: [name for name, _, _ in files] for day, files in read_files.items()},
            text_unchecked=text_unchecked,
        )
    )
    # Small (transaction ids that occur twice), and read by every write below: persisted once, and
    # its measured size lets Spark broadcast it.
    repeated = repeated_transaction_keys(rows).persist()
    try:
        with (
            explained_overflow(ds=ds, window_days=window_days),
            explained_unreadable_tile(layout=layout, ds=ds),
            explained_unreadable_raw(layout=layout, ds=ds),
        ):
            log.info("%d (date, transaction_id) keys occur on more than one raw row", repeated.count())
            marked = mark_transactions(rows, repeated)
            # Pruned to the built dates' raw files, with the repeated keys of every date read.
            built = marked.where(F.col("date").isin([date_literal(d) for d in to_build]))
            # Every write replaces the dates it covers, so a date left with no clean (or no invalid)
            # rows holds no stale tile (or quarantine), and a retry writes the same bytes.
            write_partitioned(
                quarantined_rows(built),
                layout.quarantine_transactions,
                ["date"],
                sort_within=["transaction_id", "reason"],
                replace=to_build,
                staging=staged.quarantine_transactions,
            )
            write_partitioned(
                build_daily_tiles(built, categories),
                layout.user_daily_tiles,
                ["date"],
                sort_within=["user_id", "merchant_id", "category_group"],
                # one date: AQE coalesces it into one task; several: one task per date
                shuffle=len(to_build) > 1,
                replace=to_build,
                staging=staged.user_daily_tiles,
                marker=TILE_BUILT_MARKER,
                marker_text=sources,
            )
            # Defined after the tile write: Spark lists the files when the read is defined.
            # Only the window's partitions: a read of the root would list every tile ever built.
            tiles = read_partition_range(spark, layout.user_daily_tiles, start, ds, schema=TILE_SCHEMA)
            if mode == "full":
                # From raw in one pass: every clean row as a tile of its own, already clustered by
                # user. Adding them up per day first would only cost an aggregate: at this sparsity a
                # daily tile holds about one transaction.
                features = combine_tiles(
                    transaction_tiles(marked, categories, latest_per_day=False),
                    ds=ds,
                    window_days=window_days,
                    groups=lookup_category_groups(categories),
                    clustered_by_user=True,
                )
            else:
                window_tiles = tiles.where(F.col("date").between(date_literal(start), date_literal(ds)))
                features = combine_tiles(
                    window_tiles, ds=ds, window_days=window_days, groups=category_groups(window_tiles)
                )
            write_partitioned(
                features.withColumn("date", date_literal(ds)),
                layout.user_features,
                ["date"],
                sort_within=["user_id"],
                shuffle=False,
                # With no clean row in the window there is nothing to write, and the date is left empty.
                replace=[ds],
                staging=staged.user_features,
            )
    finally:
        repeated.unpersist()
        delete_path(spark, staged.root)

    output = LakeLayout.partition(layout.user_features, ds)
    users = (
        # literal: a lake under `lake[1]` is not a pattern that matches `lake1`
        spark.read.parquet(literal_path(output)).count()
        if date_partition_exists(spark, layout.user_features, ds)
        else 0
    )
    if not users:
        log.warning("no clean transactions in %s..%s: %s is left empty", start, ds, output)
    by_reason = _quarantined_by_reason(spark, layout, to_build)
    built_tiles = (
        tiles.where(F.col("date").isin([date_literal(d) for d in to_build]))
        .agg(F.sum("transaction_count").alias("clean"), F.sum("duplicate_rows").alias("duplicates"))
        .first()
    )
    report = FeatureRunReport(
        ds=ds.isoformat(),
        mode=mode,
        window_days=window_days,
        users_written=users,
        raw_dates_read=len(read),
        tiles_built=[d.isoformat() for d in to_build],
        clean_transactions_in_built_tiles=int(built_tiles["clean"] or 0),
        duplicate_rows_dropped=int(built_tiles["duplicates"] or 0),
        quarantined_rows=sum(by_reason.values()),
        quarantined_by_reason=by_reason,
        output_path=output,
    )
    if write_report is not None:
        write_report(report)
    delete_path(spark, plan_path)
    return report


def _quarantined_by_reason(spark: SparkSession, layout: LakeLayout, dates: list[date]) -> dict[str, int]:
    """The rows quarantined on `dates` (the built tiles' dates, whose quarantine partitions the run
    has swapped in), by reason. One listing of the quarantine root; only those dates' partitions are
    looked into: the window's others are not this run's to count."""
    if not dates:
        return {}
    start, end = min(dates), max(dates)
    listed = listed_date_partitions(spark, layout.quarantine_transactions)
    written = existing_date_partitions(
        spark, layout.quarantine_transactions, start=start, end=end, listed=listed
    )
    if not written & set(dates):
        return {}
    counts = (
        read_partition_range(spark, layout.quarantine_transactions, start, end, listed=listed)
        .where(F.col("date").isin([date_literal(d) for d in dates]))
        .groupBy("reason")
        .count()
        .collect()
    )
    return {row["reason"]: int(row["count"]) for row in sorted(counts, key=lambda r: r["reason"])}
