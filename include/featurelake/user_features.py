"""The user feature set: validation and quarantine of raw transactions, per-user daily tiles, and the
window features combined from tiles. Definitions: docs/features.md. Spark only; no Airflow.

Why tiles: a daily run over a 90-day window would otherwise re-read 89 days it has already seen.
Each day is aggregated once into per-user partial aggregates (a tile); the window is combined from W
tiles. Full and incremental runs share this code, so they give identical results.

Why sums are taken over sorted arrays: floating-point addition is not associative, and the order in
which a Spark aggregate meets its inputs depends on how the input happens to be partitioned. Summing
in a fixed order (transactions by id within a tile, tiles by date within the window) makes every run
give the same bits whether its tiles came from disk or were just computed.
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
        T.StructField("amount_sum", T.DoubleType(), False),
        T.StructField("amount_m2", T.DoubleType(), False),
        T.StructField("amount_max", T.DoubleType(), False),
        T.StructField("last_transaction_ts", T.TimestampType(), False),
        T.StructField("last_transaction_id", T.StringType(), False),
        T.StructField("last_amount", T.DoubleType(), False),
        T.StructField("merchants", T.ArrayType(T.StringType(), False), False),
        T.StructField(
            "category_group_sums",
            T.ArrayType(
                T.StructType(
                    [
                        T.StructField("category_group", T.StringType(), False),
                        T.StructField("amount_cents", T.LongType(), False),
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
    grouped: DataFrame
    """The persisted (date, transaction_id) grouping both are read from; see release()."""

    def release(self) -> None:
        """Free the persisted grouping once both outputs are written."""
        self.grouped.unpersist()


def clean_transactions(raw: DataFrame) -> CleanedTransactions:
    """Validate raw rows and deduplicate: exact duplicates count once, and every version of a
    transaction_id that occurs with different content within one date is quarantined."""
    classified = raw.withColumn("reason", quarantine_reason())
    invalid = classified.where(F.col("reason").isNotNull())
    # Both outputs read the grouped versions; keep them rather than group twice.
    versions = (
        classified.where(F.col("reason").isNull())
        .groupBy("date", "transaction_id")
        .agg(
            F.collect_set(F.struct(*RAW_DATA_COLUMNS)).alias("versions"),
            F.count(F.lit(1)).alias("copies"),
        )
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    clean = versions.where(F.size("versions") == 1).select(
        *(F.col("versions")[0][c].alias(c) for c in RAW_DATA_COLUMNS),
        "date",
        (F.col("copies") - 1).alias("duplicate_copies"),
    )
    conflicting = (
        versions.where(F.size("versions") > 1)
        .select("date", F.explode("versions").alias("v"))
        .select(
            *(F.col("v")[c].alias(c) for c in RAW_DATA_COLUMNS),
            F.lit("conflicting_duplicate").alias("reason"),
            "date",
        )
    )
    quarantined = invalid.select(*RAW_DATA_COLUMNS, "reason", "date").unionByName(conflicting)
    return CleanedTransactions(clean=clean, quarantined=quarantined, grouped=versions)


def build_daily_tiles(clean: DataFrame, categories: DataFrame) -> DataFrame:
    """Aggregate clean transactions into one tile per (user_id, date), in TILE_SCHEMA's columns.

    The categories lookup is small, so it is broadcast: the join costs no shuffle of the
    transactions. The latest transaction of each tile is picked with row_number over
    (transaction_ts desc, transaction_id desc).
    """
    lookup = categories.select("category_id", "category_group").dropDuplicates(["category_id"])
    latest_first = Window.partitionBy("user_id", "date").orderBy(
        F.col("transaction_ts").desc(), F.col("transaction_id").desc()
    )
    rows = (
        clean.join(F.broadcast(lookup), on="category_id", how="left")
        .withColumn("category_group", F.coalesce("category_group", F.lit(UNKNOWN_CATEGORY_GROUP)))
        .withColumn("recency_rank", F.row_number().over(latest_first))
    )
    per_day = rows.groupBy("user_id", "date").agg(
        F.array_sort(
            F.collect_list(
                F.struct(
                    "transaction_id",
                    "amount",
                    "category_group",
                    (F.col("amount").cast("decimal(18,2)") * 100).cast("long").alias("cents"),
                )
            )
        ).alias("txns"),
        F.max("amount").alias("amount_max"),
        F.max(
            F.when(F.col("recency_rank") == 1, F.struct("transaction_ts", "transaction_id", "amount"))
        ).alias("latest"),
        F.array_sort(F.collect_set("merchant_id")).alias("merchants"),
        F.sum("duplicate_copies").alias("duplicate_rows"),
    )
    ordered_sum = "aggregate({arr}, CAST(0 AS DOUBLE), (acc, x) -> acc + x.amount)"
    with_sums = per_day.withColumn("transaction_count", F.size("txns").cast("long")).withColumn(
        "amount_sum", F.expr(ordered_sum.format(arr="txns"))
    )
    return with_sums.select(
        "user_id",
        "transaction_count",
        "amount_sum",
        F.expr(
            "aggregate(txns, CAST(0 AS DOUBLE),"
            " (acc, x) -> acc + pow(x.amount - amount_sum / transaction_count, 2))"
        ).alias("amount_m2"),
        "amount_max",
        F.col("latest.transaction_ts").alias("last_transaction_ts"),
        F.col("latest.transaction_id").alias("last_transaction_id"),
        F.col("latest.amount").alias("last_amount"),
        "merchants",
        F.expr(
            "transform(array_sort(array_distinct(transform(txns, x -> x.category_group))),"
            " g -> named_struct('category_group', g, 'amount_cents',"
            " aggregate(filter(txns, x -> x.category_group = g), CAST(0 AS BIGINT), (acc, x) -> acc + x.cents)))"
        ).alias("category_group_sums"),
        F.col("duplicate_rows").cast("long").alias("duplicate_rows"),
        "date",
    )


def combine_tiles(tiles: DataFrame, *, ds: date, window_days: int = DEFAULT_WINDOW_DAYS) -> DataFrame:
    """The window features for `ds` from the tiles of [ds-(W-1), ds]; tiles outside are ignored.

    Variance is combined exactly from per-tile (count, sum, M2) with Chan's parallel formula, which
    stays accurate where sum-of-squares minus square-of-sum would cancel.
    """
    start, end = window_dates(ds, window_days)
    recent_start = ds - timedelta(days=RECENT_DAYS - 1)
    in_window = tiles.where(F.col("date").between(F.lit(start), F.lit(end)))
    per_user = in_window.groupBy("user_id").agg(
        F.array_sort(
            F.collect_list(
                F.struct(
                    "date",
                    "transaction_count",
                    "amount_sum",
                    "amount_m2",
                    "amount_max",
                    F.struct("last_transaction_ts", "last_transaction_id", "last_amount").alias("latest"),
                    "category_group_sums",
                )
            )
        ).alias("t"),
        F.size(F.array_distinct(F.flatten(F.collect_list("merchants"))))
        .cast("long")
        .alias("unique_merchants"),
    )
    totals = per_user.select(
        "user_id",
        "t",
        "unique_merchants",
        F.expr("aggregate(t, CAST(0 AS BIGINT), (acc, x) -> acc + x.transaction_count)").alias("n"),
        F.expr("aggregate(t, CAST(0 AS DOUBLE), (acc, x) -> acc + x.amount_sum)").alias("total_spend"),
        F.expr("array_max(transform(t, x -> x.latest))").alias("latest"),
        F.expr(f"filter(t, x -> x.date >= DATE'{recent_start.isoformat()}')").alias("recent"),
        # Per category group, the sum in cents over the window (exact, so 0.10 + 0.20 ties with 0.30);
        # then the largest sum, ties to the alphabetically smallest group.
        F.expr(
            """
            array_sort(
              transform(
                array_distinct(flatten(transform(t, x -> transform(x.category_group_sums, g -> g.category_group)))),
                grp -> named_struct(
                  'category_group', grp,
                  'amount_cents', aggregate(
                    flatten(transform(t, x -> filter(x.category_group_sums, g -> g.category_group = grp))),
                    CAST(0 AS BIGINT), (acc, g) -> acc + g.amount_cents))),
              (l, r) -> CASE
                WHEN l.amount_cents > r.amount_cents THEN -1
                WHEN l.amount_cents < r.amount_cents THEN 1
                WHEN l.category_group < r.category_group THEN -1
                WHEN l.category_group > r.category_group THEN 1
                ELSE 0 END
            )[0].category_group
            """
        ).alias("top_category_group"),
    )
    mean = F.col("total_spend") / F.col("n")
    m2 = F.expr(
        "aggregate(t, CAST(0 AS DOUBLE), (acc, x) -> acc + x.amount_m2"
        " + x.transaction_count * pow(x.amount_sum / x.transaction_count - total_spend / n, 2))"
    )
    features = totals.select(
        "user_id",
        F.lit(ds).alias("feature_date"),
        "total_spend",
        mean.alias("avg_spend"),
        F.when(F.col("n") >= 2, F.sqrt(m2 / (F.col("n") - 1))).alias("std_spend"),
        F.expr("array_max(transform(t, x -> x.amount_max))").alias("max_spend"),
        F.col("n").alias("transaction_count"),
        "unique_merchants",
        F.col("latest.last_transaction_ts").alias("last_transaction_ts"),
        F.datediff(F.lit(ds), F.to_date("latest.last_transaction_ts")).alias("days_since_last_transaction"),
        F.expr("aggregate(recent, CAST(0 AS DOUBLE), (acc, x) -> acc + x.amount_sum)").alias("spend_7d"),
        F.expr("aggregate(recent, CAST(0 AS BIGINT), (acc, x) -> acc + x.transaction_count)").alias(
            "transaction_count_7d"
        ),
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
