"""One run of the user feature job: plan tiles, clean and quarantine raw rows, build tiles, combine
the window, write the features and report. Called by spark_jobs/user_features.py and bench/."""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from featurelake.lake import LakeLayout
from featurelake.partitioning import (
    delete_path,
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
    mark_transactions,
    plan_tile_build,
    quarantined_rows,
    read_raw_transactions,
    window_dates,
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
    log.info("ds=%s mode=%s window=%s days: building %d tile(s)", ds, mode, window_days, len(to_build))

    # The tiles and the quarantine each read the marked rows. Persisting them measured no faster
    # than marking twice on a 1 GiB driver (docs/benchmarks.md).
    marked = mark_transactions(read_raw_transactions(spark, layout.raw_transactions, to_build))
    # Both writes replace every date built, so a date left with no clean (or no invalid) rows holds
    # no stale tile (or quarantine). Should the run fail in between, the retry (any incremental run)
    # builds the missing tiles of its window.
    categories = spark.read.schema(CATEGORIES_SCHEMA).parquet(layout.raw_categories)
    write_partitioned(
        build_daily_tiles(marked, categories),
        layout.user_daily_tiles,
        ["date"],
        sort_within=["user_id", "merchant_id", "category_group"],
        shuffle=False,
        replace=to_build,
    )
    write_partitioned(
        quarantined_rows(marked),
        layout.quarantine_transactions,
        ["date"],
        sort_within=["transaction_id", "reason"],
        replace=to_build,
    )

    tiles = (
        spark.read.schema(TILE_SCHEMA)
        .option("basePath", layout.user_daily_tiles)
        .parquet(layout.user_daily_tiles)
    )
    output = LakeLayout.partition(layout.user_features, ds)
    groups = category_groups(tiles.where(F.col("date").between(F.lit(start), F.lit(ds))))
    if groups:
        features = combine_tiles(tiles, ds=ds, window_days=window_days, groups=groups)
        write_partitioned(
            features.withColumn("date", F.lit(ds)),
            layout.user_features,
            ["date"],
            sort_within=["user_id"],
            shuffle=False,
        )
    else:
        # No tile rows, so no user has a clean transaction in the window. An empty write would leave
        # an earlier run's rows in place, so the partition is removed instead.
        log.warning("no clean transactions in %s..%s: %s is left empty", start, ds, output)
        delete_path(spark, output)

    built = [F.lit(d) for d in to_build]
    quarantined = []
    if existing_date_partitions(spark, layout.quarantine_transactions) & set(to_build):
        quarantined = (
            spark.read.option("basePath", layout.quarantine_transactions)
            .parquet(layout.quarantine_transactions)
            .where(F.col("date").isin(built))
            .groupBy("reason")
            .count()
            .collect()
        )
    built_tiles = (
        tiles.where(F.col("date").isin(built))
        .agg(F.sum("transaction_count").alias("clean"), F.sum("duplicate_rows").alias("duplicates"))
        .first()
    )
    users = spark.read.parquet(output).count() if groups else 0
    by_reason = {row["reason"]: int(row["count"]) for row in sorted(quarantined, key=lambda r: r["reason"])}
    return FeatureRunReport(
        ds=ds.isoformat(),
        mode=mode,
        window_days=window_days,
        users_written=users,
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
