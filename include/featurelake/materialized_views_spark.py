"""The materialized views of `featurelake.materialized_views`, refreshed by Spark with delta-spark:
for a cluster whose Spark has the Delta jars, where the view is too large for one process.

The table, its rows and both refreshes are the same as delta-rs's (docs/materialized-views.md):
- full: each entity's newest row on or before `as_of`, or on or before the view's newest
  `feature_date` when later (a window function over those feature partitions only), overwriting
  the table in one commit;
- incremental: MERGE the partition of `ds` on the entity column; a matched row is replaced only by
  a row of the same or a later feature date, and a new entity is inserted; the view's rows of `ds`
  whose entity the partition no longer holds (a rerun after a rewrite) take that entity's newest
  earlier row, or are deleted;
- a full refresh takes the columns of every partition it reads (Parquet's mergeSchema), and refuses
  a column whose type changed between them, naming the partition; an incremental refresh refuses a
  partition whose columns differ from the view's; both refuse rows whose `feature_date` is not
  their partition's date;
- `refresh_view` then vacuums the table (the files it left longer ago than its retention).
Either engine can refresh a table the other wrote: both write the Delta protocol delta-rs writes.

Spark needs the delta-spark jars (`delta_spark_package()`: the pip package delta-spark holds only
the Python side) and the session properties `DELTA_SPARK_SESSION_CONF`. `require_delta_spark` fails
with what to set when the jars are missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from importlib.metadata import version
from typing import TYPE_CHECKING

from featurelake.lake import LakeLayout
from featurelake.materialized_views import (
    RefreshReport,
    check_refresh_mode,
    full_refresh_as_of,
    matched_update_predicate,
    schema_change_error,
)
from featurelake.offline_features import features_path_error
from featurelake.partitioning import (
    date_literal,
    date_partition_exists,
    existing_date_partitions,
    hadoop_file_system,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType

log = logging.getLogger(__name__)

# Delta's session extension (MERGE, table commands) and catalog, as delta-spark's docs set them.
DELTA_SPARK_SESSION_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
DELTA_SPARK_EXTENSION = DELTA_SPARK_SESSION_CONF["spark.sql.extensions"]

# The Scala version of the pyspark wheel's jars (pyspark 4 is built for Scala 2.13 only).
SCALA_BINARY_VERSION = "2.13"


def delta_spark_package() -> str:
    """Maven coordinates of the delta-spark jar for the installed delta-spark Python package and
    pyspark, named as delta-spark's own `configure_spark_with_delta_pip` names them: the artifact
    carries the Spark major.minor it is built for (`delta-spark_4.2_2.13`). The unsuffixed
    `delta-spark_2.13` is built for the release's default Spark alone (4.2 for delta-spark 4.4),
    and with another pyspark it loads classes built for another Spark."""
    spark = ".".join(version("pyspark").split(".")[:2])
    return f"io.delta:delta-spark_{spark}_{SCALA_BINARY_VERSION}:{version('delta-spark')}"


class DeltaSparkMissingError(RuntimeError):
    """Spark runs without the delta-spark jars."""


def require_delta_spark(spark: SparkSession) -> None:
    """Fail, saying what to configure, unless the driver can load delta-spark's classes."""
    from py4j.java_gateway import JavaClass

    if not isinstance(spark.sparkContext._jvm.io.delta.tables.DeltaTable, JavaClass):  # type: ignore[union-attr]
        raise DeltaSparkMissingError(
            "the delta-spark jars are not on Spark's classpath (class io.delta.tables.DeltaTable not "
            f"found). Add them in the Spark connection's conf: spark.jars.packages={delta_spark_package()} "
            "(needs Maven Central or a mirror in spark.jars.repositories), or spark.jars=<the local "
            "delta-spark and delta-storage jars>; or refresh the view with delta-rs (view_engine=deltalake)."
        )


def _check_one_row_per_entity(rows: DataFrame, keys: list[str], where: str) -> None:
    from pyspark.sql import functions as F

    if rows.where(F.col(keys[0]).isNull()).limit(1).count():
        raise ValueError(
            f"{where} has rows with a null {keys[0]!r}; a view row needs an entity. Fix the feature "
            "job's input or logic and rerun it for the date, then refresh the view"
        )
    repeated = rows.groupBy(*keys).count().where(F.col("count") > 1).limit(1).collect()
    if repeated:
        raise ValueError(
            f"{where} holds {keys[0]!r} {repeated[0][keys[0]]!r} more than once; a view needs one row "
            "per entity and date"
        )


def _check_feature_dates(rows: DataFrame, features_path: str, *, day: date | None = None) -> DataFrame:
    """Refuse rows whose `feature_date` is not their partition's date (`day`, or their `date`
    column), as delta-rs's refresh does: a full refresh takes an entity's row of the newest
    partition, a MERGE that of the newest feature date, and a rerun finds the rows of a date by
    their feature date, so such rows gave two different views. Names the oldest such partition.
    Returns `rows` with `feature_date` as a date, as delta-rs does: a writer such as pandas stores
    one as a timestamp (of midnight), or a job as its ISO string. Before, Spark compared a
    timestamp's text (`2026-10-28 00:00:00`) with the date and refused every row, and kept a string
    as a string, which a view delta-rs wrote, of dates, then refused as a changed type."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    partition_date = F.col("date") if day is None else date_literal(day)
    where = features_path if day is None else LakeLayout.partition(features_path, day)
    if "feature_date" not in rows.columns:
        raise ValueError(
            f"{where} has no 'feature_date' column; a view row says there which date it is of. "
            "Rerun the feature job for its dates, then refresh the view"
        )
    found = rows.schema["feature_date"].dataType
    column = F.col("feature_date")
    if isinstance(found, T.DateType):
        as_date = column
    elif isinstance(found, (T.TimestampType, T.TimestampNTZType)):
        # A date only at midnight, as delta-rs's cast to date32 takes a timestamp.
        as_date = F.when(F.date_trunc("day", column) == column, F.to_date(column))
    elif isinstance(found, T.StringType):
        as_date = F.expr("try_cast(`feature_date` AS DATE)")
    else:
        raise ValueError(
            f"{where}: 'feature_date' is {found.simpleString()}, not a date. Rerun the feature job "
            "for its dates, then refresh the view"
        )
    rows = rows.withColumn("_feature_day", as_date)
    wrong = (
        rows.select(
            partition_date.alias("_partition"),
            F.col("_feature_day"),
            F.col("feature_date").cast("string").alias("_found"),
        )
        .where(
            F.col("_feature_day").isNull()
            | (F.col("_feature_day").cast("string") != partition_date.cast("string"))
        )
        .groupBy("_partition")
        .agg(
            F.count(F.lit(1)).alias("_rows"),
            F.sort_array(F.collect_set("_found")).alias("_seen"),
            F.max(F.col("_found").isNull()).alias("_null"),
        )
        .orderBy("_partition")
        .limit(1)
        .collect()
    )
    if wrong:
        first = wrong[0]
        seen = [*first["_seen"], *(["null"] if first["_null"] else [])]
        partition = LakeLayout.partition(features_path, first["_partition"])
        raise ValueError(
            f"{partition} has {first['_rows']} row(s) whose 'feature_date' is not {first['_partition']} "
            f"({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}); a view takes an entity's newest "
            f"row by both. Rerun the feature job for {first['_partition']} (a partition copied from "
            "another date keeps that date's rows), then refresh the view"
        )
    return rows.withColumn("feature_date", F.col("_feature_day")).drop("_feature_day")


def _partition_rows(spark: SparkSession, features_path: str, ds: date) -> DataFrame:
    """The rows of the partition of `ds`, with the columns of all its files (null where a file
    lacks one, as delta-rs reads a partition), refused when their `feature_date` is not `ds`."""
    rows = spark.read.option("mergeSchema", "true").parquet(LakeLayout.partition(features_path, ds))
    return _check_feature_dates(rows, features_path, day=ds)


def _read_features(spark: SparkSession, features_path: str, days: list[date]) -> DataFrame:
    """The partitions of `days` (never the others: a later partition's new column or new type must
    not change an older refresh, as with delta-rs), with the columns of all of them (null where a
    partition lacks one). A column whose type changed between them is refused, naming the partition."""
    paths = [LakeLayout.partition(features_path, day) for day in sorted(days)]
    reader = spark.read.option("basePath", features_path).option("mergeSchema", "true")
    try:
        rows = reader.parquet(*paths)
    except Exception as error:
        if "CANNOT_MERGE" not in str(error):
            raise
        raise _changed_type_error(spark, paths) from error
    return _check_feature_dates(rows, features_path)


def _changed_type_error(spark: SparkSession, paths: list[str]) -> ValueError:
    """The error delta-rs's full refresh gives for the first partition (of `paths`, oldest first)
    with a column whose type differs from the older partitions' (Spark's own names neither)."""
    seen: dict[str, str] = {}
    for path in paths:
        for field in spark.read.parquet(path).schema:
            type_name = field.dataType.simpleString()
            if seen.setdefault(field.name, type_name) != type_name:
                return ValueError(
                    f"{path}: column {field.name!r} is {type_name}, but {seen[field.name]} in the older "
                    "partitions; a view column has one type. Rerun the feature job for the older dates "
                    "so that every partition has the new type, then refresh the view in full"
                )
    return ValueError(
        f"the partitions {paths[0]} to {paths[-1]} have columns Spark cannot merge; rerun the feature "
        "job for the older dates so that every partition has the same types, then refresh the view in full"
    )


def _check_view_columns(
    rows: DataFrame, view: DataFrame, where: str, view_path: str, *, allow_missing: bool = False
) -> None:
    """Refuse rows whose columns differ from the view's (as delta-rs's refresh does)."""
    # simpleString: the type without the nullability of nested fields, which Delta may not keep
    types = {field.name: field.dataType.simpleString() for field in view.schema}
    new = [name for name in rows.columns if name not in types]
    missing = [] if allow_missing else [name for name in view.columns if name not in rows.columns]
    changed = [
        f"{field.name} ({field.dataType.simpleString()}, the view's is {types[field.name]})"
        for field in rows.schema
        if field.name in types and field.dataType.simpleString() not in (types[field.name], "void")
    ]
    if new or missing or changed:
        raise schema_change_error(where, view_path, new=new, missing=missing, changed=changed)


def _may_lack(view: DataFrame, columns: list[str], ds: date) -> bool:
    """Whether a partition of `ds` may lack the view's `columns` (as delta-rs's refresh checks): each
    was dropped (null in every row of the view's newest `feature_date`) or added after `ds` (no row
    of `ds` or earlier holds a value in it). Its rows then get nulls there, as in a full refresh."""
    from pyspark.sql import functions as F

    if not columns:
        return False
    newest = view.agg(F.max("feature_date")).first()[0]
    if newest is None:
        return False

    def any_row(where: Column) -> bool:
        return view.where(where).limit(1).count() > 0

    for name in columns:
        held = F.col(f"`{name}`").isNotNull()
        # a second Spark job only when the first does not settle it
        if any_row((F.col("feature_date") == date_literal(newest)) & held) and any_row(
            (F.col("feature_date") <= date_literal(ds)) & held
        ):
            return False
    return True


def newest_rows_before(
    spark: SparkSession,
    features_path: str,
    *,
    before: date,
    entities: DataFrame,
    entity_column: str,
    view: DataFrame,
    view_path: str,
) -> DataFrame:
    """The newest row of each of `entities` (one column, `entity_column`) in the partitions before
    `before`, in the view's columns (null where an older partition lacks one)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    days = [day for day in existing_date_partitions(spark, features_path) if day < before]
    if not days:
        return spark.createDataFrame([], view.schema)
    rows = _read_features(spark, features_path, days).join(entities, entity_column, "left_semi")
    _check_one_row_per_entity(rows, [entity_column, "date"], features_path)
    newest_first = Window.partitionBy(entity_column).orderBy(F.col("date").desc())
    newest = rows.withColumn("_newest", F.row_number().over(newest_first)).where(F.col("_newest") == 1)
    newest = newest.drop("_newest", "date")
    _check_view_columns(newest, view, features_path, view_path, allow_missing=True)
    return newest.select(
        *[
            F.col(f"`{field.name}`")
            if field.name in newest.columns
            else F.lit(None).cast(field.dataType).alias(field.name)
            for field in view.schema
        ]
    )


def latest_per_entity(
    spark: SparkSession, features_path: str, *, as_of: date, entity_column: str = "user_id"
) -> DataFrame:
    """Each entity's newest row in the date partitions on or before `as_of` (later partitions never
    count, nor their columns), without the partition column, in the features' column order."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    days = [day for day in existing_date_partitions(spark, features_path) if day <= as_of]
    if not days:
        # as delta-rs: never overwrite the view with an empty table
        raise FileNotFoundError(
            f"no feature partition on or before {as_of} under {features_path}; run the feature job first"
        )
    rows = _read_features(spark, features_path, days)
    if entity_column not in rows.columns:
        raise ValueError(f"{features_path} has no {entity_column!r} column; columns: {rows.columns}")
    _check_one_row_per_entity(rows, [entity_column, "date"], features_path)
    newest_first = Window.partitionBy(entity_column).orderBy(F.col("date").desc())
    return (
        rows.withColumn("_newest", F.row_number().over(newest_first))
        .where(F.col("_newest") == 1)
        .drop("_newest", "date")
    )


def _table_metrics(spark: SparkSession, view_path: str) -> tuple[int, dict[str, str]]:
    """The table's current version and the operation metrics of its last commit (which is another
    writer's when one committed since)."""
    from delta.tables import DeltaTable

    last = DeltaTable.forPath(spark, view_path).history(1).collect()[0]
    return int(last["version"]), dict(last["operationMetrics"] or {})


def refresh_full(
    spark: SparkSession,
    view_path: str,
    features_path: str,
    *,
    as_of: date,
    entity_column: str = "user_id",
    name: str = "",
) -> RefreshReport:
    """Rebuild the view from every partition on or before `as_of` (`full_refresh_as_of`: or the
    view's newest feature date, when later) and overwrite it (one commit). A view that is not a
    Delta table yet is created, and the write fails if another writer created it meanwhile (as
    delta-rs's `mode="error"`), rather than overwrite that writer's table."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    require_delta_spark(spark)
    exists = DeltaTable.isDeltaTable(spark, view_path)
    if exists:
        current = DeltaTable.forPath(spark, view_path).toDF()
        if "feature_date" in current.columns:
            newest = current.agg(F.max("feature_date")).first()[0]
            as_of = full_refresh_as_of(view_path, ds=as_of, newest_in_view=newest)
    latest = latest_per_entity(spark, features_path, as_of=as_of, entity_column=entity_column)
    (
        latest.sortWithinPartitions(entity_column)
        .write.format("delta")
        .mode("overwrite" if exists else "errorifexists")
        .option("overwriteSchema", "true")
        .save(view_path)
    )
    table_version, metrics = _table_metrics(spark, view_path)
    rows = int(metrics.get("numOutputRows", 0))
    dates_read = sum(1 for day in existing_date_partitions(spark, features_path) if day <= as_of)
    log.info(
        "full refresh of %s as of %s on Spark: %d rows from %d dates, version %d",
        view_path,
        as_of,
        rows,
        dates_read,
        table_version,
    )
    return RefreshReport(name, "full", as_of.isoformat(), dates_read, rows, table_version, inserted=rows)


def _holds_a_map(data_type: DataType) -> bool:
    """Whether a column of `data_type` holds a map, at any depth."""
    from pyspark.sql import types as T

    if isinstance(data_type, T.MapType):
        return True
    if isinstance(data_type, T.ArrayType):
        return _holds_a_map(data_type.elementType)
    if isinstance(data_type, T.StructType):
        return any(_holds_a_map(field.dataType) for field in data_type.fields)
    return False


def require_features_dataset(spark: SparkSession, features_path: str) -> None:
    """Refuse a features path that is no directory, as delta-rs's refresh does
    (`features_path_error`). A file there passed before, and its missing partition of
    `ds` took the view's rows of `ds` back."""
    fs, features_root = hadoop_file_system(spark, features_path)
    if not fs.exists(features_root):
        raise features_path_error(features_path)
    if not fs.getFileStatus(features_root).isDirectory():
        raise features_path_error(features_path, is_file=True)


def refresh_incremental(
    spark: SparkSession,
    view_path: str,
    features_path: str,
    *,
    ds: date,
    entity_column: str = "user_id",
    name: str = "",
) -> RefreshReport:
    """MERGE the partition of `ds` into the view on `entity_column`: the later feature date wins and
    new entities are inserted. A view that does not exist yet is built in full. The view's rows of
    `ds` whose entity the partition no longer holds take its newest earlier row, or are deleted, in
    the same MERGE (as delta-rs's refresh_incremental); a partition whose columns differ from the
    view's is refused, but for view columns it may lack (`_may_lack`), null in its rows."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    require_delta_spark(spark)
    if not DeltaTable.isDeltaTable(spark, view_path):
        log.info("%s is not a Delta table yet: building it in full as of %s", view_path, ds)
        return refresh_full(spark, view_path, features_path, as_of=ds, entity_column=entity_column, name=name)
    partition = LakeLayout.partition(features_path, ds)
    # An absent date (the feature job writes none when no entity had data in its window) is taken
    # as an empty one, its view rows taken back; a features path that is no directory is refused.
    require_features_dataset(spark, features_path)
    view = DeltaTable.forPath(spark, view_path)
    current = view.toDF()
    has_partition = date_partition_exists(spark, features_path, ds)
    if has_partition:
        rows = _partition_rows(spark, features_path, ds)
        missing = [name for name in current.columns if name not in rows.columns]
        _check_view_columns(
            rows, current, partition, view_path, allow_missing=_may_lack(current, missing, ds)
        )
        _check_one_row_per_entity(rows, [entity_column], partition)
        rows = rows.select(
            *[
                F.col(f"`{field.name}`")
                if field.name in rows.columns
                else F.lit(None).cast(field.dataType).alias(field.name)
                for field in current.schema
            ]
        )
    else:
        rows = spark.createDataFrame([], current.schema)
    # The view's entities of `ds` that the partition no longer holds (a rerun after a rewrite).
    gone = (
        current.where(F.col("feature_date") == date_literal(ds))
        .select(entity_column)
        .join(rows.select(entity_column), entity_column, "left_anti")
    ).cache()
    gone_count = gone.count()
    # As delta-rs: nothing to merge, and no commit. delta-spark commits nothing for a MERGE of no
    # row either, and the report then took the counts of the table's last commit, another one.
    if gone_count == 0 and (not has_partition or rows.isEmpty()):
        gone.unpersist()
        log.warning("%s is empty (no entity in its window): nothing to merge", partition)
        table_version, _ = _table_metrics(spark, view_path)
        return RefreshReport(name, "incremental", ds.isoformat(), 1, current.count(), table_version)
    source = rows
    replaced = dates_read = 0
    if gone_count:
        earlier = newest_rows_before(
            spark,
            features_path,
            before=ds,
            entities=gone,
            entity_column=entity_column,
            view=current,
            view_path=view_path,
        ).cache()
        replaced = earlier.count()
        dates_read = sum(1 for day in existing_date_partitions(spark, features_path) if day < ds)
        log.warning(
            "%s no longer holds %d %s(s) whose row of %s is in %s: %d take their newest earlier row, "
            "%d are deleted",
            partition,
            gone_count,
            entity_column,
            ds,
            view_path,
            replaced,
            gone_count - replaced,
        )
        source = rows.unionByName(earlier)
    # with entities gone, their earlier rows replace their rows of `ds`. Spark cannot compare maps
    # (`<=>` refuses them): a view row holding one is updated as before.
    update_when = matched_update_predicate(
        current.columns,
        entity_column=entity_column,
        replacing=ds if gone_count else None,
        uncomparable=[field.name for field in current.schema if _holds_a_map(field.dataType)],
    )
    merge = (
        view.alias("t")
        .merge(source.alias("s"), F.col(f"t.`{entity_column}`") == F.col(f"s.`{entity_column}`"))
        .whenMatchedUpdateAll(condition=update_when)
        .whenNotMatchedInsertAll()
    )
    if replaced < gone_count:
        merge = merge.whenNotMatchedBySourceDelete(condition=F.col("t.feature_date") == date_literal(ds))
    # The MERGE's own counts (MergeIntoCommand's output), not those of the table's last commit,
    # which another writer's may be.
    counts = merge.execute().first().asDict()
    gone.unpersist()
    table_version, _ = _table_metrics(spark, view_path)
    total = DeltaTable.forPath(spark, view_path).toDF().count()
    log.info("incremental refresh of %s with %s on Spark: %s", view_path, ds, counts)
    return RefreshReport(
        name,
        "incremental",
        ds.isoformat(),
        1 + dates_read,
        total,
        table_version,
        inserted=int(counts["num_inserted_rows"]),
        updated=int(counts["num_updated_rows"]),
        deleted=int(counts["num_deleted_rows"]),
    )


def refresh_view(
    spark: SparkSession,
    view_path: str,
    features_path: str,
    *,
    ds: date,
    mode: str = "incremental",
    entity_column: str = "user_id",
    name: str = "",
) -> RefreshReport:
    """Refresh the view for `ds` in `mode` (`incremental` or `full`) on Spark."""
    from delta.tables import DeltaTable

    check_refresh_mode(mode)
    if mode == "full":
        report = refresh_full(
            spark, view_path, features_path, as_of=ds, entity_column=entity_column, name=name
        )
    else:
        report = refresh_incremental(
            spark, view_path, features_path, ds=ds, entity_column=entity_column, name=name
        )
    # as delta-rs's refresh_view: delete the files the table left longer ago than its retention
    # (delta.deletedFileRetentionDuration, 7 days by default; delta-spark's vacuum lists the directory)
    DeltaTable.forPath(spark, view_path).vacuum()
    return report


VIEW_ENGINES = ("auto", "deltalake", "spark")


@dataclass(frozen=True)
class ViewEngineChoice:
    engine: str  # "deltalake" or "spark"
    reason: str


def choose_view_engine(requested: str, spark_conf: dict[str, str]) -> ViewEngineChoice:
    """Which engine refreshes a view: `deltalake` or `spark` as asked; for `auto`, Spark when the
    Spark connection's conf loads Delta's session extension (so the cluster is set up for
    delta-spark), else delta-rs in the Airflow worker."""
    if requested not in VIEW_ENGINES:
        raise ValueError(f"view engine must be one of {', '.join(VIEW_ENGINES)}, got {requested!r}")
    if requested != "auto":
        return ViewEngineChoice(requested, f"view_engine={requested}")
    extensions = [e.strip() for e in spark_conf.get("spark.sql.extensions", "").split(",")]
    if DELTA_SPARK_EXTENSION in extensions:
        return ViewEngineChoice(
            "spark", f"the Spark connection's spark.sql.extensions has {DELTA_SPARK_EXTENSION}"
        )
    return ViewEngineChoice("deltalake", "the Spark connection does not load Delta's session extension")
