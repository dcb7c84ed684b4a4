"""The user feature set: validation and quarantine of raw transactions, per-user daily tiles, and the
window features combined from tiles. Definitions: docs/features.md. Spark only; no Airflow.

Why tiles: a daily run over a 90-day window would otherwise re-read 89 days it has already seen.
Each day is aggregated once into per-user partial aggregates (a tile); the window is combined from W
tiles. Full and incremental runs share this code, so they give identical results.

Why amounts are summed as integers: floating-point addition is not associative, and the order in
which a Spark aggregate meets its inputs depends on how the input happens to be partitioned. Amounts
are carried as whole micro-units (1e-6) in 64-bit integers, and squares as decimal(38,0), so every
sum is exact and order-free: full and incremental runs, and reruns, give the same bits while using
Spark's native hash aggregates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from featurelake.lake import MAX_ABS_AMOUNT, window_start
from featurelake.partitioning import (
    date_literal,
    directory_entries,
    file_fingerprint,
    hadoop_file_system,
    literal_path,
)

log = logging.getLogger(__name__)

DEFAULT_WINDOW_DAYS = 90
RECENT_DAYS = 7
UNKNOWN_CATEGORY_GROUP = "unknown"

RAW_DATA_COLUMNS = (
    "transaction_id",
    "user_id",
    "merchant_id",
    "category_id",
    "amount",
    "currency",
    "transaction_ts",
)

RAW_TRANSACTIONS_SCHEMA = T.StructType(
    [
        T.StructField("transaction_id", T.StringType()),
        T.StructField("user_id", T.StringType()),
        T.StructField("merchant_id", T.StringType()),
        T.StructField("category_id", T.IntegerType()),
        T.StructField("amount", T.DoubleType()),
        T.StructField("currency", T.StringType()),
        T.StructField("transaction_ts", T.TimestampType()),
        T.StructField("date", T.DateType()),
    ]
)


# One row per (user, date, merchant, category group): a day's partial aggregates, flat, so that
# every later step reads and shuffles plain columns and merges them with hash aggregates. Exact
# distinct merchants and the top group come from the merchant and group keys themselves.
TILE_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("merchant_id", T.StringType(), True),
        T.StructField("category_group", T.StringType(), False),
        T.StructField("transaction_count", T.LongType(), False),
        T.StructField("amount_micros", T.LongType(), True),
        T.StructField("amount_micros_squared", T.DecimalType(38, 0), True),
        T.StructField("amount_max", T.DoubleType(), False),
        # Set on the one row that holds the user's latest transaction of the day, null elsewhere.
        T.StructField("day_last_transaction_ts", T.TimestampType(), True),
        T.StructField("day_last_amount", T.DoubleType(), True),
        T.StructField("duplicate_rows", T.LongType(), False),
        T.StructField("date", T.DateType(), False),
    ]
)

# The empty file in each tile partition a run has written, even one with no rows (a date with no
# clean transaction): planning tells a built date from a missing one by it.
TILE_BUILT_MARKER = "_BUILT"
# The version of what a tile holds, written in its marker: raise it with any change to the tiles'
# columns or to what they mean (their amount units, say), and every tile of another version is
# rebuilt by the next run that needs it, instead of being combined with the new ones. 2: the first
# named (exact cents above 2**32, 2026-12-06).
TILE_FORMAT = 2

MICROS_PER_UNIT = 1_000_000

FEATURE_COLUMNS = (
    "user_id",
    "feature_date",
    "total_spend",
    "avg_spend",
    "std_spend",
    "max_spend",
    "transaction_count",
    "unique_merchants",
    "last_transaction_ts",
    "days_since_last_transaction",
    "spend_7d",
    "transaction_count_7d",
    "last_amount",
    "top_category_group",
)

# The raw columns of text: a file may hold them as plain Parquet BINARY (the contract accepts it),
# whose bytes Spark reads as a string without checking they are UTF-8.
TEXT_COLUMNS = ("transaction_id", "user_id", "merchant_id", "currency")


RUN_MODES = ("auto", "full", "incremental", "rebuild")


def window_dates(ds: date, window_days: int) -> tuple[date, date]:
    """The inclusive date range [ds - (W-1), ds] of a run. Later partitions never count."""
    return window_start(ds, window_days), ds


def plan_tile_build(
    *, mode: str, ds: date, raw_dates: set[date], tile_dates: set[date], start: date
) -> tuple[str, list[date]]:
    """Resolve mode `auto` and pick the dates whose tiles a run for `ds` (re)builds.

    full: ds only. A full run computes the window from raw and reads no tile; it rebuilds the tile
    of ds, as every run does, so that a rerun of a date picks re-landed raw data up.
    incremental: ds plus the window's raw dates with no tile, then the window is combined from tiles.
    `tile_dates` are the dates whose tile a run has built (TILE_BUILT_MARKER), empty ones included,
    so that a date with no clean row is built once, not by every later run.
    rebuild: every raw date of the window, then the window is combined from tiles (after the raw
    data or the categories lookup of past dates changed).
    auto: incremental when the window already has a tile, else full.
    """
    if mode not in RUN_MODES:
        raise ValueError(f"mode must be one of {', '.join(RUN_MODES)}, got {mode!r}")
    in_window = {d for d in raw_dates if start <= d <= ds}
    if mode == "auto":
        mode = "incremental" if any(start <= d <= ds for d in tile_dates) else "full"
    if mode == "full":
        return mode, [ds]
    if mode == "rebuild":
        return mode, sorted(in_window | {ds})
    return mode, sorted({ds} | (in_window - tile_dates))


def resume_plan(saved: str | None, *, mode: str) -> tuple[str, set[date]]:
    """How a retry plans, given the `saved` plan (JSON) of the failed run for the same date: the
    mode to plan with (the failed run's, when the retry's is `auto`), and the tiles to build besides
    its own plan (the failed run's: it may have swapped some in, which the retry would take as
    built), so that the retry writes and reports what the failed run would have. With nothing
    saved, `mode` and no tiles."""
    if saved is None:
        return mode, set()
    try:
        plan = json.loads(saved)
        saved_mode, saved_dates = plan["mode"], {date.fromisoformat(d) for d in plan["tiles"]}
    except (ValueError, KeyError, TypeError) as error:
        log.warning("ignoring an unreadable plan of an earlier run (%s): %.200r", error, saved)
        return mode, set()
    return (saved_mode if mode == "auto" and saved_mode in RUN_MODES else mode), saved_dates


def _empty(column: str) -> Column:
    return F.col(column).isNull() | (F.col(column) == F.lit(""))


def quarantine_reason(*, check_text: bool = False) -> Column:
    """The first rule a raw row breaks, or null for a valid row (order as in docs/data-contract.md).
    A row's user_id must be UTF-8 (`invalid_utf8`): Spark reads text unchecked, and a feature row
    whose user_id is not UTF-8 fails every reader of the partition (pyarrow, DuckDB, the publish
    task), whatever the file's column type says. `check_text`: the rows carry `text_unchecked`
    (`read_raw_transactions`), true for the rows of a file that holds text as plain Parquet BINARY,
    whose other text columns must be UTF-8 too. (Every text column of every row cost about 1 s a
    7.5M-row scan on the benchmark lake; user_id alone about a quarter of that.)"""
    reason = (
        F.when(_empty("transaction_id"), "missing_transaction_id")
        .when(_empty("user_id"), "missing_user_id")
        .when(F.col("amount").isNull(), "missing_amount")
        .when(F.isnan("amount"), "nan_amount")
        # infinite, or too large to carry in micro-units (which would fail the job with CAST_OVERFLOW)
        .when(F.abs("amount") > F.lit(MAX_ABS_AMOUNT), "invalid_amount")
        .when(F.col("transaction_ts").isNull(), "missing_transaction_ts")
        .when(F.to_date("transaction_ts") != F.col("date"), "date_mismatch")
    )
    not_utf8 = ~F.is_valid_utf8("user_id")
    if check_text:
        others = reduce(lambda a, b: a | b, [~F.is_valid_utf8(c) for c in TEXT_COLUMNS if c != "user_id"])
        not_utf8 = not_utf8 | (F.col("text_unchecked") & others)
    return reason.when(not_utf8, "invalid_utf8")


# Every column but transaction_id and date: two rows of one (date, transaction_id) are versions of one
# transaction, exact copies when these are equal too.
_VERSION_COLUMNS = ("user_id", "merchant_id", "category_id", "amount", "currency", "transaction_ts")


def _equal_in_every_column(left: Callable[[str], Column], right: Callable[[str], Column]) -> Column:
    return reduce(lambda a, b: a & b, [left(c).eqNullSafe(right(c)) for c in _VERSION_COLUMNS])


def with_quarantine_reason(raw: DataFrame) -> DataFrame:
    """Raw rows plus `reason`: the first rule the row breaks (`quarantine_reason`), null when valid.
    Rows with `text_unchecked` (`read_raw_transactions`) are checked for text that is not UTF-8 too,
    and the column is dropped."""
    if "text_unchecked" not in raw.columns:
        return raw.withColumn("reason", quarantine_reason())
    return raw.withColumn("reason", quarantine_reason(check_text=True)).drop("text_unchecked")


def _transaction_key() -> Column:
    """A 64-bit hash of (date, transaction_id). Two transactions may share one; that only sends
    them through the exact comparison in `mark_transactions`, which tells them apart."""
    return F.xxhash64("date", "transaction_id")


def repeated_transaction_keys(rows: DataFrame) -> DataFrame:
    """`transaction_key` of every (date, transaction_id) on more than one raw row, valid or not:
    exact copies, conflicting versions, or a valid row and an invalid one. `rows` are raw rows
    (with or without `reason`).

    Every key on more than one valid row is among them, which is all `mark_transactions` needs:
    it decides validity before it compares versions, so a key that is repeated only because of an
    invalid row comes out as if it occurred once. Counting every row rather than the valid ones
    reads two columns (date, transaction_id) instead of the five that validity needs: measured on
    the benchmark lake, 2.9-3.2 s against 3.8 s warm, for the same 37,051 keys.

    One narrow hash aggregate on a 64-bit key. The keys are all but unique, so a map-side partial
    aggregate would merge nothing: the keys are shuffled first and counted once, on the side that
    already holds every row of a key. Repeats are rare, so the result is small: persist it and pass
    it to `mark_transactions`, which then sorts only the rows it names.
    """
    return (
        rows.select(_transaction_key().alias("transaction_key"))
        .repartition("transaction_key")
        .groupBy("transaction_key")
        .agg(F.count(F.lit(1)).alias("rows"))
        .where(F.col("rows") > 1)
        .select("transaction_key")
    )


def mark_transactions(rows: DataFrame, repeated_keys: DataFrame) -> DataFrame:
    """The validity verdict of every raw row: RAW_DATA_COLUMNS + date, plus `reason` (the first
    rule the row breaks, `conflicting_duplicate` for every version of a transaction_id that occurs
    with different content within one date, null for a clean row) and `is_copy` (an exact copy of a
    clean row already kept).

    `rows` come from `with_quarantine_reason`, `repeated_keys` from `repeated_transaction_keys` on
    the same rows (or any superset of the keys on more than one valid row). A row whose key is not
    repeated is final as it is, with no shuffle. Only the others are sorted: inside a (date,
    validity, transaction_id) group sorted by every other column, exact copies are adjacent (lag),
    and the group holds several versions exactly when its first and last rows differ. Validity is
    decided first, so an invalid copy never makes a valid row a conflicting version.
    """
    keyed = rows.withColumn("transaction_key", _transaction_key())
    once = keyed.join(repeated_keys, on="transaction_key", how="left_anti").select(
        *RAW_DATA_COLUMNS, "date", "reason", F.lit(False).alias("is_copy")
    )
    valid = F.col("reason").isNull()
    versions = Window.partitionBy("date", valid, "transaction_id").orderBy(*_VERSION_COLUMNS)
    whole_group = versions.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    is_copy = _equal_in_every_column(lambda c: F.lag(c).over(versions), F.col)
    several_versions = ~_equal_in_every_column(
        lambda c: F.first(c).over(whole_group), lambda c: F.last(c).over(whole_group)
    )
    repeated = keyed.join(repeated_keys, on="transaction_key", how="left_semi").select(
        *RAW_DATA_COLUMNS,
        "date",
        F.when(valid & several_versions, F.lit("conflicting_duplicate"))
        .otherwise(F.col("reason"))
        .alias("reason"),
        F.coalesce(is_copy, F.lit(False)).alias("is_copy"),
    )
    return once.unionByName(repeated)


def quarantined_rows(marked: DataFrame) -> DataFrame:
    """The rows to quarantine, RAW_DATA_COLUMNS + reason + date: every raw row with a reason, each
    copy of a conflicting version included. So every raw row is used, counted as a copy of a clean
    row (`duplicate_rows`), or quarantined: one version's copies were in neither count. Text that is
    not UTF-8 (`invalid_utf8`) is written with each invalid byte sequence as U+FFFD, so that the
    quarantine stays readable; the raw file keeps the bytes."""
    return marked.where(F.col("reason").isNotNull()).select(
        *[F.make_valid_utf8(c).alias(c) if c in TEXT_COLUMNS else F.col(c) for c in RAW_DATA_COLUMNS],
        "reason",
        "date",
    )


# Below 2**32 in absolute value, a double's error is under 0.25 micro-units, so the amount times 1e6,
# rounded, is its exact micro-units (for up to 6 decimals). Above, it is not: 412335648552.49 times
# 1e6 rounds to 412335648552489984, not ...490000, so group sums that tie in cents stop tying. There
# the error is under 0.1 cent up to MAX_ABS_AMOUNT, so the amount is rounded to whole cents first.
EXACT_MICROS_BELOW = 2.0**32
MICROS_PER_CENT = MICROS_PER_UNIT // 100


def amount_micros(column: str = "amount") -> Column:
    """The amount in whole micro-units (1e-6) as a long: exact for amounts with up to 6 decimals below
    2**32 (about 4.3e9) in absolute value, and for amounts with up to 2 decimals (the contract's) up to
    MAX_ABS_AMOUNT; above 2**32 a sub-cent fraction is rounded to the cent. Valid rows hold at most
    MAX_ABS_AMOUNT in absolute value, so the casts cannot overflow."""
    amount = F.col(column)
    return F.when(
        F.abs(amount) < F.lit(EXACT_MICROS_BELOW), F.round(amount * MICROS_PER_UNIT).cast("long")
    ).otherwise(F.round(amount * 100).cast("long") * F.lit(MICROS_PER_CENT))


def without_negative_zero(amount: Column) -> Column:
    """`amount` with -0.0 as 0.0. A max compares -0.0 and 0.0 as equal and keeps the one it met first,
    and the order it meets rows in differs between a full and an incremental run (and between
    reruns on a cluster), so the largest of the two zeros would have the sign of that order."""
    return F.when(amount == F.lit(0.0), F.lit(0.0)).otherwise(amount)


def transaction_tiles(marked: DataFrame, categories: DataFrame, *, latest_per_day: bool = True) -> DataFrame:
    """One tile-shaped row per clean row of `mark_transactions`, in TILE_SCHEMA's columns,
    hash-partitioned by user_id: the partial aggregates of a single transaction (an exact copy
    counts in `duplicate_rows` only). `combine_tiles` adds tiles up, so it gives the same bits over
    these rows as over the daily tiles `build_daily_tiles` aggregates them into.

    One shuffle, of the few columns the tiles need, by user_id: it serves a daily tile aggregate
    and a `combine_tiles(..., clustered_by_user=True)` of either. The categories lookup is small, so
    it is broadcast after the shuffle. The latest transaction of each user's day is picked with
    row_number over (transaction_ts desc, transaction_id desc), and only that row holds the
    `day_last_*` fields; the window's sort starts with a 64-bit hash of user_id, so that most rows
    compare on a number rather than on strings (the order of the partition keys does not change the
    result).

    `latest_per_day=False` marks only each user's latest transaction of all the rows, for a combine
    of the window straight from these rows (full mode). `combine_tiles` gives the same result: the
    window's latest transaction is the latest of its latest day. The window operator then handles
    one group per user instead of one per (user, date), most of which hold a single row.
    """
    lookup = categories.select("category_id", "category_group").dropDuplicates(["category_id"])
    rows = (
        marked.where(F.col("reason").isNull())
        .select(
            "user_id",
            "date",
            "merchant_id",
            "category_id",
            "transaction_id",
            "transaction_ts",
            "amount",
            "is_copy",
        )
        .repartition("user_id")
        .join(F.broadcast(lookup), on="category_id", how="left")
        .withColumn("category_group", F.coalesce("category_group", F.lit(UNKNOWN_CATEGORY_GROUP)))
        .withColumn("micros", F.when(~F.col("is_copy"), amount_micros()))
    )
    latest_group = ("date",) if latest_per_day else ()
    latest_first = Window.partitionBy(F.xxhash64("user_id"), "user_id", *latest_group).orderBy(
        F.col("transaction_ts").desc(), F.col("transaction_id").desc()
    )
    latest = F.row_number().over(latest_first) == 1
    micros_decimal = F.col("micros").cast("decimal(38,0)")
    is_copy = F.col("is_copy")
    return rows.select(
        "user_id",
        "merchant_id",
        "category_group",
        F.when(is_copy, F.lit(0)).otherwise(F.lit(1)).cast("long").alias("transaction_count"),
        F.col("micros").alias("amount_micros"),
        (micros_decimal * micros_decimal).cast("decimal(38,0)").alias("amount_micros_squared"),
        without_negative_zero(F.col("amount")).alias("amount_max"),
        F.when(latest, F.col("transaction_ts")).alias("day_last_transaction_ts"),
        F.when(latest, without_negative_zero(F.col("amount"))).alias("day_last_amount"),
        F.when(is_copy, F.lit(1)).otherwise(F.lit(0)).cast("long").alias("duplicate_rows"),
        "date",
    )


def build_daily_tiles(marked: DataFrame, categories: DataFrame) -> DataFrame:
    """Aggregate the clean rows of `mark_transactions` into daily tiles, in TILE_SCHEMA's columns:
    one row per (user_id, date, merchant_id, category_group), hash-partitioned by user_id (the
    `transaction_tiles` of the rows, added up per key). Exact copies are counted (`duplicate_rows`)
    and otherwise ignored."""
    tiles = (
        transaction_tiles(marked, categories)
        .groupBy("date", "user_id", "merchant_id", "category_group")
        .agg(
            F.sum("transaction_count").alias("transaction_count"),
            F.sum("amount_micros").alias("amount_micros"),
            F.sum("amount_micros_squared").cast("decimal(38,0)").alias("amount_micros_squared"),
            F.max("amount_max").alias("amount_max"),
            F.max("day_last_transaction_ts").alias("day_last_transaction_ts"),
            F.max("day_last_amount").alias("day_last_amount"),
            F.sum("duplicate_rows").alias("duplicate_rows"),
        )
    )
    return tiles.select(*TILE_SCHEMA.fieldNames())


_INTEGER_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def read_categories(spark: SparkSession, path: str, files: LookupFiles) -> DataFrame:
    """The categories lookup at `path`, checked against the contract (docs/data-contract.md,
    `raw/categories`) before it is used: `category_id` an integer, `category_group` a string,
    matched whatever their case. Read with the contract's schema forced on it, a lookup whose group
    column was named otherwise (`group`) read as nulls, and every user's top group was `unknown`
    without a word; an int64 `category_id`, as pandas writes it, failed with Spark's bare "Expected
    Spark type int, actual Parquet type INT64". An int64 id is taken when every id fits an int32.
    Of a directory, only the data files are read (`lake.is_data_file`), and any other entry but
    hidden names is refused, naming it: Spark read every file there, so a partial upload
    (`part-0.parquet.tmp`) failed the job with a bare "is not a Parquet file", and a `.bak` copy was
    read silently. `files` is the listing of `path` (`lookup_files`) the run took before: it reads
    the files its tiles' markers name. A lookup file that is not Parquet (empty, truncated) is
    refused naming the lookup and the fix: Spark's bare FAILED_READ_FILE named neither."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        found = spark.read.parquet(*files.paths)
    except (Py4JJavaError, PySparkException) as error:
        said = str(getattr(error, "java_exception", error)).strip().splitlines()[0].rstrip(".")
        raise ValueError(
            f"the categories lookup {path} cannot be read as Parquet (empty, truncated, or another "
            f"format; its files: {', '.join(files.paths)}): {said}. Re-land it as complete Parquet "
            "(raw/categories/part-00000.parquet, docs/data-contract.md), and rerun"
        ) from error
    types = {field.name.lower(): field.dataType for field in found.schema.fields}
    problems = []
    if not isinstance(types.get("category_id"), _INTEGER_TYPES):
        problems.append(f"category_id is {_shown_type(types.get('category_id'))}, not an integer")
    if not isinstance(types.get("category_group"), T.StringType):
        problems.append(f"category_group is {_shown_type(types.get('category_group'))}, not a string")
    if problems:
        raise ValueError(
            f"the categories lookup {path} does not have the contract's columns: {'; '.join(problems)} "
            f"(its columns: {', '.join(f'{f.name} {f.dataType.simpleString()}' for f in found.schema.fields)}). "
            "Write category_id as int32 and category_group as a string (docs/data-contract.md), and rerun"
        )
    if isinstance(types["category_id"], T.LongType):
        low, high = found.agg(F.min("category_id"), F.max("category_id")).first()
        if low is not None and not (low >= -(2**31) and high < 2**31):
            raise ValueError(
                f"the categories lookup {path} has a category_id outside int32 ({low}..{high}), the "
                "contract's type of category_id, which transactions join on: fix the lookup and rerun"
            )
    name = F.col("category_name").cast("string") if "category_name" in types else F.lit(None).cast("string")
    return found.select(
        F.col("category_id").cast("int").alias("category_id"),
        name.alias("category_name"),
        F.col("category_group").alias("category_group"),
    )


@dataclass(frozen=True)
class LookupFiles:
    """One listing of a lookup: the paths Spark reads, and what tells them apart without reading
    them (the `file_fingerprint` of each, as `list_date_partitions` gives a partition's files),
    which a tile's marker records."""

    paths: list[str]
    fingerprint: list[list[Any]]


def lookup_files(spark: SparkSession, path: str) -> LookupFiles:
    """The data files of the lookup at `path` (a file, or a directory of them), checked: a directory
    holding anything but data files and hidden names (`.`, `_`), or no data file, is refused, and so
    is a missing one (Spark's bare PATH_NOT_FOUND said neither what the path was for nor what to do)."""
    fs, directory = hadoop_file_system(spark, path)
    if not fs.exists(directory):
        raise FileNotFoundError(
            f"the categories lookup {path} does not exist: the job maps each transaction's "
            "category_id to its group there. Land it as raw/categories/part-00000.parquet "
            "(docs/data-contract.md; `featurelake generate` writes one), and rerun"
        )
    status = fs.getFileStatus(directory)
    if not status.isDirectory():  # one file, whatever its name (`to_parquet("raw/categories")`)
        return LookupFiles([literal_path(path)], [file_fingerprint(status)])
    data, stray = directory_entries(fs, directory)
    if stray or not data:
        found = (
            f"holds {', '.join(stray)}, which is not a *.parquet file" if stray else "holds no *.parquet file"
        )
        raise ValueError(
            f"the categories lookup {path} {found} (docs/data-contract.md, raw/categories). Move "
            "anything else out of it (a partial upload, a backup), keep the lookup's *.parquet "
            "files, and rerun"
        )
    return LookupFiles([literal_path(f"{path.rstrip('/')}/{name}") for name, _, _ in data], data)


def _shown_type(data_type: T.DataType | None) -> str:
    return "missing" if data_type is None else data_type.simpleString()


def check_categories(categories: DataFrame, *, path: str) -> None:
    """Fail, naming the lookup and what to fix, when the categories lookup cannot give transactions
    their groups (one small action on the lookup):
    - it holds no row, or a row with a null `category_id`, which no transaction joins;
    - it gives a `category_id` a null, empty or `unknown` group: `unknown` is the group of ids
      missing from the lookup (docs/data-contract.md);
    - it maps one `category_id` to several groups: none could be picked but by row order.
    Each of the first two made every user's top group `unknown`, or some, without a word. Identical
    repeated rows are harmless and pass."""
    unnamed_group = F.coalesce(F.col("category_group"), F.lit("")).isin("", UNKNOWN_CATEGORY_GROUP)
    per_id = categories.groupBy("category_id").agg(
        F.count(F.lit(1)).alias("rows"),
        F.sort_array(F.collect_set("category_group")).alias("groups"),
        F.max(unnamed_group).alias("unnamed"),
    )
    known = F.col("category_id").isNotNull()
    rows, null_ids, unnamed, clashes = per_id.agg(
        F.sum("rows"),
        F.sum(F.when(~known, F.col("rows"))),
        F.sort_array(F.collect_list(F.when(known & F.col("unnamed"), F.col("category_id")))),
        F.sort_array(
            F.collect_list(F.when(known & (F.size("groups") > 1), F.struct("category_id", "groups")))
        ),
    ).first()
    fix = "fix the lookup (docs/data-contract.md, raw/categories) and rerun"
    if not rows:
        raise ValueError(
            f"the categories lookup {path} holds no row: every top_category_group would be 'unknown'; {fix}"
        )
    if null_ids:
        raise ValueError(
            f"the categories lookup {path} has {null_ids} row(s) with a null category_id, which no "
            f"transaction can join; {fix}"
        )
    if unnamed:
        shown = ", ".join(str(i) for i in unnamed[:20]) + (
            f" and {len(unnamed) - 20} more" if len(unnamed) > 20 else ""
        )
        raise ValueError(
            f"the categories lookup {path} gives category_id {shown} a null, empty or "
            f"'{UNKNOWN_CATEGORY_GROUP}' category_group ('{UNKNOWN_CATEGORY_GROUP}' is the group of ids "
            f"missing from the lookup): give each id its group; {fix}"
        )
    if clashes:
        listed = "; ".join(f"{row['category_id']}: {', '.join(row['groups'])}" for row in clashes[:20])
        raise ValueError(
            f"the categories lookup {path} gives several category groups to category_id {listed}. "
            "category_id must be unique there: fix the lookup (one row per category_id) and rerun"
        )


def lookup_category_groups(categories: DataFrame) -> list[str]:
    """Every category group a tile built with this lookup can hold, sorted: the lookup's groups
    and `unknown` (an action on the small lookup)."""
    named = {row[0] for row in categories.select("category_group").distinct().collect() if row[0] is not None}
    return sorted(named | {UNKNOWN_CATEGORY_GROUP})


def category_groups(tiles: DataFrame) -> list[str]:
    """The category groups the tiles hold, sorted (an action: one scan of one dictionary column)."""
    return sorted(row[0] for row in tiles.select("category_group").distinct().collect())


def combine_tiles(
    tiles: DataFrame,
    *,
    ds: date,
    window_days: int = DEFAULT_WINDOW_DAYS,
    groups: list[str] | None = None,
    clustered_by_user: bool = False,
) -> DataFrame:
    """The window features for `ds` from the tiles of [ds-(W-1), ds]; tiles outside are ignored.

    One shuffle by user_id of a few flat columns (none with `clustered_by_user`, for tiles straight
    from `build_daily_tiles` or `transaction_tiles`) and one hash aggregate: exact integer sums, the
    distinct merchant count (which Spark plans inside the same clustering), and one sum per category
    group, from which the top group is picked. `groups` must hold every category group of the
    window's tiles (`category_groups`, computed when not given; extra groups do no harm): the job
    fails on a tile whose group is missing rather than pick a wrong top group. A transaction's date
    is the UTC date of its timestamp, so the latest transaction of the window is the latest of the
    per-day latest ones, and max_by over their timestamps picks it: no two days share a timestamp.
    The variance comes from exact integer sums: sum(x^2) - sum(x)^2 / n, its integer part in decimal
    arithmetic.
    """
    start, end = window_dates(ds, window_days)
    recent = F.col("date") >= date_literal(ds - timedelta(days=RECENT_DAYS - 1))
    in_window = tiles.where(F.col("date").between(date_literal(start), date_literal(end)))
    if groups is None:
        groups = category_groups(in_window)
    group_columns = [f"group_micros_{i}" for i in range(len(groups))]

    by_user = in_window if clustered_by_user else in_window.repartition("user_id")
    totals = by_user.groupBy("user_id").agg(
        F.sum("transaction_count").alias("n"),
        F.sum("amount_micros").alias("micros"),
        F.sum("amount_micros_squared").alias("micros_squared"),
        # tiles built before amount_max dropped the sign of a zero may hold -0.0
        F.max(without_negative_zero(F.col("amount_max"))).alias("max_spend"),
        F.max("day_last_transaction_ts").alias("last_transaction_ts"),
        # exact copies that differ only in the sign of a zero are one transaction: whichever copy
        # ranked first gave its sign, so a full and an incremental run could disagree
        without_negative_zero(F.max_by("day_last_amount", "day_last_transaction_ts")).alias("last_amount"),
        F.sum(F.when(recent, F.col("amount_micros")).otherwise(F.lit(0))).alias("micros_7d"),
        F.sum(F.when(recent, F.col("transaction_count")).otherwise(F.lit(0))).alias("transaction_count_7d"),
        F.countDistinct("merchant_id").alias("unique_merchants"),
        F.count(F.when(~F.col("category_group").isin(groups), F.lit(1))).alias("unlisted_group_rows"),
        # null for a group the user has no transaction in
        *[
            F.sum(F.when(F.col("category_group") == F.lit(group), F.col("amount_micros"))).alias(column)
            for group, column in zip(groups, group_columns, strict=True)
        ],
    )
    # The largest exact sum (so 0.10 + 0.20 ties with 0.30); on a tie the alphabetically smallest
    # group, which has the smallest index in the sorted `groups`, so the largest negated index.
    no_group = F.lit(None).cast("struct<micros:bigint,rank:int>")
    candidates = [
        F.when(F.col(column).isNotNull(), F.struct(F.col(column).alias("micros"), F.lit(-i).alias("rank")))
        for i, column in enumerate(group_columns)
    ]
    # greatest skips nulls and needs two arguments; with no groups at all there are no rows either
    top_index = F.greatest(*candidates, no_group) if candidates else no_group
    group_names = F.array(*[F.lit(group) for group in groups]) if groups else F.array().cast("array<string>")

    n = F.col("n")
    # n * sum(x^2) - sum(x)^2 can exceed decimal(38,0) when every sum fits (9e12 and 1.00: 1.62e38),
    # so it is divided by n exactly first. With sum(x) = n*q + r (q = sum(x) div n, |r| < n):
    # sum(x^2) - sum(x)^2/n = (sum(x^2) - n*q*q - 2*q*r) - r*r/n, whose first part is an exact
    # integer between 0 and sum(x^2), and whose last part is below n.
    quotient = F.expr("micros div n")
    remainder = F.col("micros") - quotient * n
    q = quotient.cast("decimal(38,0)")
    exact_part = F.col("micros_squared") - n.cast("decimal(38,0)") * q * q - 2 * q * remainder
    n_double = n.cast("double")
    variance_numerator = exact_part.cast("double") - remainder.cast("double") ** 2 / n_double
    unit = F.lit(float(MICROS_PER_UNIT))
    features = totals.select(
        "user_id",
        date_literal(ds).alias("feature_date"),
        (F.col("micros").cast("double") / unit).alias("total_spend"),
        (F.col("micros").cast("double") / n / unit).alias("avg_spend"),
        F.when(
            n >= 2,
            F.sqrt(variance_numerator / (n_double - 1.0)) / unit,
        ).alias("std_spend"),
        "max_spend",
        n.alias("transaction_count"),
        "unique_merchants",
        "last_transaction_ts",
        F.datediff(date_literal(ds), F.to_date("last_transaction_ts")).alias("days_since_last_transaction"),
        (F.col("micros_7d").cast("double") / unit).alias("spend_7d"),
        F.col("transaction_count_7d").cast("long").alias("transaction_count_7d"),
        "last_amount",
        F.coalesce(
            # null when every group is listed; otherwise the job fails rather than pick a wrong group
            F.assert_true(
                F.col("unlisted_group_rows") == 0,
                "a tile holds a category group missing from the groups passed to combine_tiles; "
                "pass every group of the window's tiles (category_groups)",
            ).cast("string"),
            F.element_at(group_names, -top_index.getField("rank") + 1),
        ).alias("top_category_group"),
    )
    return features.select(*FEATURE_COLUMNS)


@dataclass
class FeatureRunReport:
    """What one run of the feature job did; written as JSON for the Airflow task to return."""

    ds: str
    mode: str
    window_days: int
    users_written: int
    # Raw dates read and validated: the window's in full mode, otherwise the dates of tiles_built.
    raw_dates_read: int = 0
    tiles_built: list[str] = field(default_factory=list)
    # The counts below are those of the dates of tiles_built, whose tiles and quarantine the run
    # wrote, in every mode.
    clean_transactions_in_built_tiles: int = 0
    # Exact copies of clean rows.
    duplicate_rows_dropped: int = 0
    quarantined_rows: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    output_path: str = ""


def read_raw_transactions(
    spark: SparkSession,
    path: str,
    files: Mapping[date, Sequence[str]],
    *,
    text_unchecked: Collection[tuple[date, str]] = (),
) -> DataFrame:
    """The raw transactions in exactly `files`: {date: names of the data files of its partition}, as
    the run listed them (`list_date_partitions`, whose names are `is_data_file`'s). Nothing else is
    opened: no other date's files, no file of another name (`notes.csv`, `part-0.crc`), no file in a
    subdirectory of a partition, so a run reads the files its tiles' markers name. With
    `text_unchecked` ((date, name) of the files whose footers show text as plain BINARY,
    `check_raw_files`), the rows carry `text_unchecked`, true for those files' rows, so that
    `with_quarantine_reason` checks their text is UTF-8."""
    named = [(day, name) for day, names in sorted(files.items()) for name in names]
    if not named:
        raise ValueError("no raw files to read; pass at least one date with a data file")
    unchecked = set(text_unchecked)

    def read(group: list[tuple[date, str]]) -> DataFrame:
        return (
            spark.read.schema(RAW_TRANSACTIONS_SCHEMA)
            .option("basePath", path)
            .parquet(
                *[literal_path(f"{path.rstrip('/')}/date={day.isoformat()}/{name}") for day, name in group]
            )
            .where(F.col("date").isin([date_literal(day) for day in sorted({day for day, _ in group})]))
        )

    if not unchecked:
        return read(named)
    groups = [([f for f in named if f not in unchecked], False), ([f for f in named if f in unchecked], True)]
    parts = [read(group).withColumn("text_unchecked", F.lit(flag)) for group, flag in groups if group]
    return reduce(DataFrame.unionByName, parts)
