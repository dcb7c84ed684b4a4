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

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

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

CATEGORIES_SCHEMA = T.StructType(
    [
        T.StructField("category_id", T.IntegerType()),
        T.StructField("category_name", T.StringType()),
        T.StructField("category_group", T.StringType()),
    ]
)

# One row per (user, date): everything the window features need, and nothing that grows with the
# window except the merchant set (exact distinct counts need the set itself).
TILE_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("transaction_count", T.LongType(), False),
        T.StructField("amount_micros", T.LongType(), False),
        T.StructField("amount_micros_squared", T.DecimalType(38, 0), False),
        T.StructField("amount_max", T.DoubleType(), False),
        T.StructField("last_transaction_ts", T.TimestampType(), False),
        T.StructField("last_transaction_id", T.StringType(), False),
        T.StructField("last_amount", T.DoubleType(), False),
        T.StructField("merchants", T.ArrayType(T.StringType(), False), False),
        T.StructField(
            "category_group_micros",
            T.ArrayType(
                T.StructType(
                    [
                        T.StructField("category_group", T.StringType(), False),
                        T.StructField("amount_micros", T.LongType(), False),
                    ]
                ),
                False,
            ),
            False,
        ),
        T.StructField("duplicate_rows", T.LongType(), False),
        T.StructField("date", T.DateType(), False),
    ]
)

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

QUARANTINE_REASONS = (
    "missing_transaction_id",
    "missing_user_id",
    "missing_amount",
    "nan_amount",
    "missing_transaction_ts",
    "date_mismatch",
    "conflicting_duplicate",
)


def window_dates(ds: date, window_days: int) -> tuple[date, date]:
    """The inclusive date range [ds - (W-1), ds] of a run. Later partitions never count."""
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    return ds - timedelta(days=window_days - 1), ds


def plan_tile_build(
    *, mode: str, ds: date, raw_dates: set[date], tile_dates: set[date], start: date
) -> tuple[str, list[date]]:
    """Resolve mode `auto` and pick the dates whose tiles a run for `ds` (re)builds.

    full: every raw date of the window. incremental: ds plus the window's raw dates with no tile.
    auto: incremental when the window already has a tile, else full.

    Incremental always rebuilds the tile of ds itself, so a rerun after the day's raw data was
    re-landed picks the new data up.
    """
    if mode not in ("auto", "full", "incremental"):
        raise ValueError(f"mode must be auto, full or incremental, got {mode!r}")
    in_window = {d for d in raw_dates if start <= d <= ds}
    if mode == "auto":
        mode = "incremental" if any(start <= d <= ds for d in tile_dates) else "full"
    if mode == "full":
        return mode, sorted(in_window)
    return mode, sorted({ds} | (in_window - tile_dates))


def _empty(column: str) -> Column:
    return F.col(column).isNull() | (F.col(column) == F.lit(""))


def quarantine_reason() -> Column:
    """The first rule a raw row breaks, or null for a valid row (order as in docs/data-contract.md)."""
    return (
        F.when(_empty("transaction_id"), "missing_transaction_id")
        .when(_empty("user_id"), "missing_user_id")
        .when(F.col("amount").isNull(), "missing_amount")
        .when(F.isnan("amount"), "nan_amount")
        .when(F.col("transaction_ts").isNull(), "missing_transaction_ts")
        .when(F.to_date("transaction_ts") != F.col("date"), "date_mismatch")
    )


@dataclass(frozen=True)
class CleanedTransactions:
    """Raw rows split into clean rows (one per transaction) and quarantined rows with a reason."""

    clean: DataFrame
    """RAW_DATA_COLUMNS + date + duplicate_copies (extra identical copies dropped for this row)."""
    quarantined: DataFrame
    """RAW_DATA_COLUMNS + reason + date."""
    distinct_rows: DataFrame
    """The persisted distinct valid rows both are read from; see release()."""

    def release(self) -> None:
        """Free the persisted rows once both outputs are written."""
        self.distinct_rows.unpersist()


def clean_transactions(raw: DataFrame) -> CleanedTransactions:
    """Validate raw rows and deduplicate: exact duplicates count once, and every version of a
    transaction_id that occurs with different content within one date is quarantined.

    One shuffle, by (date, transaction_id): the exact-duplicate grouping (by every column) and the
    version count per transaction_id both run inside it.
    """
    classified = raw.withColumn("reason", quarantine_reason())
    invalid = classified.where(F.col("reason").isNotNull())
    distinct_rows = (
        classified.where(F.col("reason").isNull())
        .repartition("date", "transaction_id")
        .groupBy(*RAW_DATA_COLUMNS, "date")
        .agg(F.count(F.lit(1)).alias("copies"))
        .withColumn("versions", F.count(F.lit(1)).over(Window.partitionBy("date", "transaction_id")))
        # Both outputs read these rows; keep them rather than shuffle the raw rows twice.
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    clean = distinct_rows.where(F.col("versions") == 1).select(
        *RAW_DATA_COLUMNS, "date", (F.col("copies") - 1).alias("duplicate_copies")
    )
    conflicting = distinct_rows.where(F.col("versions") > 1).select(
        *RAW_DATA_COLUMNS, F.lit("conflicting_duplicate").alias("reason"), "date"
    )
    quarantined = invalid.select(*RAW_DATA_COLUMNS, "reason", "date").unionByName(conflicting)
    return CleanedTransactions(clean=clean, quarantined=quarantined, distinct_rows=distinct_rows)


def amount_micros(column: str = "amount") -> Column:
    """The amount in whole micro-units (1e-6) as a long: exact for amounts with up to 6 decimals."""
    return F.round(F.col(column) * MICROS_PER_UNIT).cast("long")


def build_daily_tiles(clean: DataFrame, categories: DataFrame) -> DataFrame:
    """Aggregate clean transactions into one tile per (user_id, date), in TILE_SCHEMA's columns.

    The categories lookup is small, so it is broadcast: the join costs no shuffle of the
    transactions. The latest transaction of each tile is picked with row_number over
    (transaction_ts desc, transaction_id desc); the aggregate then reuses the window's partitioning
    and sort order, so the tile costs one shuffle.
    """
    lookup = categories.select("category_id", "category_group").dropDuplicates(["category_id"])
    latest_first = Window.partitionBy("user_id", "date").orderBy(
        F.col("transaction_ts").desc(), F.col("transaction_id").desc()
    )
    rows = (
        clean.join(F.broadcast(lookup), on="category_id", how="left")
        .withColumn("category_group", F.coalesce("category_group", F.lit(UNKNOWN_CATEGORY_GROUP)))
        .withColumn("micros", amount_micros())
        .withColumn("recency_rank", F.row_number().over(latest_first))
    )
    is_latest = F.col("recency_rank") == 1
    per_day = rows.groupBy("user_id", "date").agg(
        F.count(F.lit(1)).alias("transaction_count"),
        F.sum("micros").alias("amount_micros"),
        F.sum(F.col("micros").cast("decimal(38,0)") * F.col("micros").cast("decimal(38,0)")).alias(
            "amount_micros_squared"
        ),
        F.max("amount").alias("amount_max"),
        F.max(F.when(is_latest, F.col("transaction_ts"))).alias("last_transaction_ts"),
        F.max(F.when(is_latest, F.col("transaction_id"))).alias("last_transaction_id"),
        F.max(F.when(is_latest, F.col("amount"))).alias("last_amount"),
        F.array_sort(F.collect_set("merchant_id")).alias("merchants"),
        F.collect_list(F.struct("category_group", "micros")).alias("group_micros"),
        F.sum("duplicate_copies").alias("duplicate_rows"),
    )
    return per_day.select(
        "user_id",
        "transaction_count",
        "amount_micros",
        F.col("amount_micros_squared").cast("decimal(38,0)").alias("amount_micros_squared"),
        "amount_max",
        "last_transaction_ts",
        "last_transaction_id",
        "last_amount",
        "merchants",
        F.expr(
            "transform(array_sort(array_distinct(transform(group_micros, x -> x.category_group))),"
            " g -> named_struct('category_group', g, 'amount_micros',"
            " aggregate(filter(group_micros, x -> x.category_group = g), CAST(0 AS BIGINT),"
            " (acc, x) -> acc + x.micros)))"
        ).alias("category_group_micros"),
        F.col("duplicate_rows").cast("long").alias("duplicate_rows"),
        "date",
    )


def combine_tiles(tiles: DataFrame, *, ds: date, window_days: int = DEFAULT_WINDOW_DAYS) -> DataFrame:
    """The window features for `ds` from the tiles of [ds-(W-1), ds]; tiles outside are ignored.

    The tiles are shuffled once, by user_id; the per-user aggregate, the per-(user, group) totals,
    the window that ranks groups, and the join between them all reuse that partitioning.
    The variance comes exactly from integer sums: n * sum(x^2) - sum(x)^2 in decimal arithmetic.
    """
    start, end = window_dates(ds, window_days)
    recent = F.col("date") >= F.lit(ds - timedelta(days=RECENT_DAYS - 1))
    by_user = tiles.where(F.col("date").between(F.lit(start), F.lit(end))).repartition("user_id")

    totals = by_user.groupBy("user_id").agg(
        F.sum("transaction_count").alias("n"),
        F.sum("amount_micros").alias("micros"),
        F.sum("amount_micros_squared").alias("micros_squared"),
        F.max("amount_max").alias("max_spend"),
        F.max(F.struct("last_transaction_ts", "last_transaction_id", "last_amount")).alias("latest"),
        F.sum(F.when(recent, F.col("amount_micros")).otherwise(F.lit(0))).alias("micros_7d"),
        F.sum(F.when(recent, F.col("transaction_count")).otherwise(F.lit(0))).alias("transaction_count_7d"),
        F.size(F.array_distinct(F.flatten(F.collect_list("merchants"))))
        .cast("long")
        .alias("unique_merchants"),
    )
    # The largest sum per category group (exact, so 0.10 + 0.20 ties with 0.30), ties to the
    # alphabetically smallest group.
    group_rank = Window.partitionBy("user_id").orderBy(F.col("group_micros").desc(), F.col("category_group"))
    top_group = (
        by_user.select("user_id", F.explode("category_group_micros").alias("g"))
        .groupBy("user_id", F.col("g.category_group").alias("category_group"))
        .agg(F.sum("g.amount_micros").alias("group_micros"))
        .withColumn("rank", F.row_number().over(group_rank))
        .where(F.col("rank") == 1)
        .select("user_id", F.col("category_group").alias("top_category_group"))
    )

    n = F.col("n")
    micros = F.col("micros").cast("decimal(38,0)")
    variance_numerator = n.cast("decimal(38,0)") * F.col("micros_squared") - micros * micros
    unit = F.lit(float(MICROS_PER_UNIT))
    features = totals.join(top_group, on="user_id", how="inner").select(
        "user_id",
        F.lit(ds).alias("feature_date"),
        (F.col("micros").cast("double") / unit).alias("total_spend"),
        (F.col("micros").cast("double") / n / unit).alias("avg_spend"),
        F.when(
            n >= 2,
            F.sqrt(variance_numerator.cast("double") / (n.cast("double") * (n - 1).cast("double"))) / unit,
        ).alias("std_spend"),
        "max_spend",
        n.alias("transaction_count"),
        "unique_merchants",
        F.col("latest.last_transaction_ts").alias("last_transaction_ts"),
        F.datediff(F.lit(ds), F.to_date("latest.last_transaction_ts")).alias("days_since_last_transaction"),
        (F.col("micros_7d").cast("double") / unit).alias("spend_7d"),
        F.col("transaction_count_7d").cast("long").alias("transaction_count_7d"),
        F.col("latest.last_amount").alias("last_amount"),
        "top_category_group",
    )
    return features.select(*FEATURE_COLUMNS)


@dataclass
class FeatureRunReport:
    """What one run of the feature job did; written as JSON for the Airflow task to return."""

    ds: str
    mode: str
    window_days: int
    users_written: int
    tiles_built: list[str] = field(default_factory=list)
    clean_transactions_in_built_tiles: int = 0
    duplicate_rows_dropped: int = 0
    quarantined_rows: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    output_path: str = ""


def read_raw_transactions(spark: SparkSession, path: str, days: list[date]) -> DataFrame:
    """The raw transactions of the given dates only (a pruned read: other dates' files are never opened)."""
    if not days:
        raise ValueError("no dates to read; pass at least one date")
    return (
        spark.read.schema(RAW_TRANSACTIONS_SCHEMA)
        .option("basePath", path)
        .parquet(path)
        .where(F.col("date").isin([F.lit(d) for d in days]))
    )
