"""Partitioned Parquet on Spark: idempotent partition writes, pruned range reads, per-partition and
per-key (hash) processing. The seed's Pattern 1, done so reruns and backfills are safe."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)


def date_range(start: date, end: date) -> list[date]:
    """Every date from start to end, both included."""
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start}); pass start <= end")
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


def write_partitioned(
    df: DataFrame,
    path: str,
    partition_cols: Sequence[str],
    *,
    sort_within: Sequence[str] = (),
    shuffle: bool = True,
    replace: Iterable[date] = (),
) -> None:
    """Write `df` as Parquet under `path`, partitioned by `partition_cols`, replacing only the
    partitions present in `df` (dynamic partition overwrite): a rerun of one date leaves every other
    date's files untouched.

    `sort_within` sorts rows inside each file, which makes the output of a deterministic input
    deterministic and helps min/max statistics skip row groups.

    `shuffle=False` writes each task's rows where they are, sorted within the task: one file per task
    and partition value. Use it when `df` is already clustered by the partition columns (an
    aggregate over date-clustered rows) or holds one partition value (a day's features), where a
    shuffle by the partition columns would funnel every row through one task.

    `replace` names dates of the (single, date) partition column whose partitions are removed before
    the write. A dynamic overwrite leaves a partition alone when `df` has no rows for it, so a date
    whose new data is empty would keep an earlier write's files; listed dates end up holding exactly
    `df`'s rows, or nothing. A write that fails after the removal leaves them empty, not stale.
    """
    if not partition_cols:
        raise ValueError("write_partitioned needs at least one partition column, got none")
    missing = [c for c in partition_cols if c not in df.columns]
    if missing:
        raise ValueError(f"partition columns {missing} are not in the DataFrame (columns: {df.columns})")
    replaced = sorted(set(replace))
    if replaced and len(partition_cols) != 1:
        raise ValueError(f"replace needs exactly one (date) partition column, got {list(partition_cols)}")
    for day in replaced:
        delete_path(df.sparkSession, f"{path}/{partition_cols[0]}={day.isoformat()}")
    out = df.repartition(*partition_cols) if shuffle else df
    if sort_within or not shuffle:
        out = out.sortWithinPartitions(*partition_cols, *sort_within)
    (
        out.write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy(*partition_cols)
        .parquet(path)
    )


def read_partition_range(
    spark: SparkSession,
    path: str,
    start: date,
    end: date,
    *,
    partition_col: str = "date",
    schema: StructType | None = None,
) -> DataFrame:
    """Read the date partitions of `path` in [start, end] only.

    The filter is on the partition column, so Spark prunes directories before listing files
    (`PartitionFilters` in the plan) and never opens files outside the range. `basePath` keeps
    the partition column in the result.
    """
    from pyspark.sql import functions as F

    if end < start:
        raise ValueError(f"end ({end}) is before start ({start}); pass start <= end")
    reader = spark.read.option("basePath", path)
    if schema is not None:
        reader = reader.schema(schema)
    df = reader.parquet(path)
    return df.where(F.col(partition_col).between(F.lit(start), F.lit(end)))


def hadoop_file_system(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """(Hadoop FileSystem, Hadoop Path) for `path`, through the JVM, so that any URI Spark reads and
    writes (local, HDFS, S3A, ABFS, GCS) works the same."""
    hadoop_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path


def _holds_parquet(fs: Any, directory: Any) -> bool:
    return any(child.getPath().getName().endswith(".parquet") for child in fs.listStatus(directory))


def existing_date_partitions(spark: SparkSession, path: str, *, partition_col: str = "date") -> set[date]:
    """The date partitions under `path` that hold at least one data file, from a listing only."""
    fs, hadoop_path = hadoop_file_system(spark, path)
    if not fs.exists(hadoop_path):
        return set()
    found: set[date] = set()
    prefix = f"{partition_col}="
    for status in fs.listStatus(hadoop_path):
        name = status.getPath().getName()
        if status.isDirectory() and name.startswith(prefix) and _holds_parquet(fs, status.getPath()):
            found.add(date.fromisoformat(name[len(prefix) :]))
    return found


def date_partition_exists(spark: SparkSession, path: str, day: date, *, partition_col: str = "date") -> bool:
    """Whether the partition of `day` under `path` holds at least one data file: a listing of that
    one directory, where `existing_date_partitions` lists every partition."""
    fs, hadoop_path = hadoop_file_system(spark, f"{path}/{partition_col}={day.isoformat()}")
    return bool(fs.exists(hadoop_path)) and _holds_parquet(fs, hadoop_path)


def delete_path(spark: SparkSession, path: str) -> bool:
    """Remove a file or directory tree through Hadoop's FileSystem (any URI Spark writes to);
    False when there was nothing to remove."""
    fs, target = hadoop_file_system(spark, path)
    return bool(fs.exists(target) and fs.delete(target, True))


def process_by_partition(
    spark: SparkSession,
    *,
    input_path: str,
    output_path: str,
    dates: Iterable[date],
    transform: Callable[[DataFrame, date], DataFrame],
    partition_col: str = "date",
) -> list[date]:
    """Run `transform` over each date partition of `input_path` on its own, writing each result to
    the same date partition of `output_path` with dynamic overwrite.

    Each date is read with a pruned read and replaced as a whole (`write_partitioned`'s `replace`):
    a date whose result is empty is left empty, not holding an earlier run's rows. So the function
    is idempotent: running a date twice gives the same output, and a failure part-way leaves
    finished dates complete. Returns the dates processed. A date with no input data (no partition,
    or one emptied since) is skipped and logged, and its output partition, derived from input that
    is gone, is removed.
    """
    from pyspark.sql import functions as F

    available = existing_date_partitions(spark, input_path, partition_col=partition_col)
    done: list[date] = []
    for day in sorted(set(dates)):
        if day not in available:
            stale = f"{output_path.rstrip('/')}/{partition_col}={day.isoformat()}"
            removed = delete_path(spark, stale)
            log.warning(
                "No data in partition %s=%s under %s; skipped%s",
                partition_col,
                day,
                input_path,
                f", and removed its earlier output {stale}" if removed else "",
            )
            continue
        part = read_partition_range(spark, input_path, day, day, partition_col=partition_col)
        result = transform(part.drop(partition_col), day).withColumn(partition_col, F.lit(day))
        write_partitioned(result, output_path, [partition_col], replace=[day])
        done.append(day)
        log.info("Processed %s=%s into %s", partition_col, day, output_path)
    return done


def apply_per_key(
    df: DataFrame,
    *,
    key: str,
    fn: Callable[[pd.DataFrame], pd.DataFrame],
    schema: StructType | str,
    num_partitions: int | None = None,
) -> DataFrame:
    """Hash-repartition `df` by `key`, then run the pandas function `fn` once per key value.

    Every row of one key lands in one task (hash partitioning), so `fn` sees the whole group. The
    result schema is explicit: Spark cannot infer what a pandas function returns.
    """
    from pyspark.sql import functions as F

    if key not in df.columns:
        raise ValueError(f"key column {key!r} is not in the DataFrame (columns: {df.columns})")
    partitioned = df.repartition(num_partitions, F.col(key)) if num_partitions else df.repartition(F.col(key))
    return partitioned.groupBy(key).applyInPandas(fn, schema=schema)
