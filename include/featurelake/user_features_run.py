"""One run of the user feature job: plan, validate and quarantine raw rows, build tiles, compute the
window (full: from raw; otherwise: from tiles), write the features and report. Called by
spark_jobs/user_features.py and bench/."""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from featurelake.lake import LakeLayout
from featurelake.partitioning import (
    date_partition_exists,
    existing_date_partitions,
    hadoop_file_system,
    write_partitioned,
)
from featurelake.user_features import (
    CATEGORIES_SCHEMA,
    TILE_SCHEMA,
    FeatureRunReport,
    build_daily_tiles,
    category_groups,
    combine_tiles,
    lookup_category_groups,
    mark_transactions,
    plan_tile_build,
    quarantined_rows,
    read_raw_transactions,
    repeated_transaction_keys,
    transaction_tiles,
    window_dates,
    with_quarantine_reason,
)

log = logging.getLogger(__name__)


def run_user_features(
    spark: SparkSession, *, ds: date, lake: str, window_days: int, mode: str
) -> FeatureRunReport:
    layout = LakeLayout(lake)
    start, _ = window_dates(ds, window_days)
    raw_dates = existing_date_partitions(spark, layout.raw_transactions)
    if ds not in raw_dates:
        raise FileNotFoundError(
            f"no raw transactions for {ds}: {LakeLayout.partition(layout.raw_transactions, ds)} is missing or "
            "empty. Land that day's data (or run `featurelake generate`) and retry the task."
        )
    tile_dates = existing_date_partitions(spark, layout.user_daily_tiles)
    mode, to_build = plan_tile_build(
        mode=mode, ds=ds, raw_dates=raw_dates, tile_dates=tile_dates, start=start
    )
    # A date's tile and its quarantine come from one validation, so a run writes both for exactly the
    # dates it builds, and nothing of other dates. A full run also reads the window's other raw
    # dates, marking their rows to keep invalid rows and copies out of the features; their
    # quarantine is the business of the runs that build their tiles.
    read = sorted(d for d in raw_dates if start <= d <= ds) if mode == "full" else to_build
    log.info(
        "ds=%s mode=%s window=%s days: reading %d raw date(s), building the tile and quarantine of %d",
        ds,
        mode,
        window_days,
        len(read),
        len(to_build),
    )

    categories = spark.read.schema(CATEGORIES_SCHEMA).parquet(layout.raw_categories)
    rows = with_quarantine_reason(read_raw_transactions(spark, layout.raw_transactions, read))
    # Small (transaction ids that occur twice), and read by every write below: persisted once, and
    # its measured size lets Spark broadcast it.
    repeated = repeated_transaction_keys(rows).persist()
    try:
        log.info("%d (date, transaction_id) keys occur on more than one raw row", repeated.count())
        marked = mark_transactions(rows, repeated)
        # Pruned to the built dates' raw files, with the repeated keys of every date read.
        built = marked.where(F.col("date").isin([F.lit(d) for d in to_build]))
        # Every write replaces the dates it covers, so a date left with no clean (or no invalid)
        # rows holds no stale tile (or quarantine), and a retry writes the same bytes.
        write_partitioned(
            quarantined_rows(built),
            layout.quarantine_transactions,
            ["date"],
            sort_within=["transaction_id", "reason"],
            replace=to_build,
        )
        write_partitioned(
            build_daily_tiles(built, categories),
            layout.user_daily_tiles,
            ["date"],
            sort_within=["user_id", "merchant_id", "category_group"],
            # one date: AQE coalesces it into one task; several: one task per date
            shuffle=len(to_build) > 1,
            replace=to_build,
        )
        # Defined after the tile write: Spark lists the files when the read is defined.
        tiles = (
            spark.read.schema(TILE_SCHEMA)
            .option("basePath", layout.user_daily_tiles)
            .parquet(layout.user_daily_tiles)
        )
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
            window_tiles = tiles.where(F.col("date").between(F.lit(start), F.lit(ds)))
            features = combine_tiles(
                window_tiles, ds=ds, window_days=window_days, groups=category_groups(window_tiles)
            )
        write_partitioned(
            features.withColumn("date", F.lit(ds)),
            layout.user_features,
            ["date"],
            sort_within=["user_id"],
            shuffle=False,
            # With no clean row in the window there is nothing to write, and the date is left empty.
            replace=[ds],
        )
    finally:
        repeated.unpersist()

    output = LakeLayout.partition(layout.user_features, ds)
    users = (
        spark.read.parquet(output).count() if date_partition_exists(spark, layout.user_features, ds) else 0
    )
    if not users:
        log.warning("no clean transactions in %s..%s: %s is left empty", start, ds, output)
    quarantined = []
    if existing_date_partitions(spark, layout.quarantine_transactions) & set(to_build):
        quarantined = (
            spark.read.option("basePath", layout.quarantine_transactions)
            .parquet(layout.quarantine_transactions)
            .where(F.col("date").isin([F.lit(d) for d in to_build]))
            .groupBy("reason")
            .count()
            .collect()
        )
    built_tiles = (
        tiles.where(F.col("date").isin([F.lit(d) for d in to_build]))
        .agg(F.sum("transaction_count").alias("clean"), F.sum("duplicate_rows").alias("duplicates"))
        .first()
    )
    by_reason = {row["reason"]: int(row["count"]) for row in sorted(quarantined, key=lambda r: r["reason"])}
    return FeatureRunReport(
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


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small file through Hadoop's FileSystem, so any lake URI Spark writes to works."""
    fs, target = hadoop_file_system(spark, path)
    stream = fs.create(target, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()
