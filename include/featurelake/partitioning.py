"""Partitioned Parquet on Spark: idempotent partition writes, pruned range reads, per-partition and
per-key (hash) processing. The seed's Pattern 1, done so reruns and backfills are safe."""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from featurelake.lake import is_data_file, iso_day

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)


def date_range(start: date, end: date) -> list[date]:
    """Every date from start to end, both included."""
    start = require_date(start, name="start")
    end = require_date(end, name="end")
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start}); pass start <= end")
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


def require_date(value: object, *, name: str) -> date:
    """`value` when it is a `datetime.date` and not a datetime; else a TypeError naming it and the remedy.

    A datetime compares with a date partition as the partition's midnight (a start at noon drops its
    own day) and formats as `YYYY-MM-DDTHH:MM:SS` (no such directory): never a partition's day."""
    if isinstance(value, datetime):
        raise TypeError(
            f"{name} must be a datetime.date, got the datetime {value!r}: date partitions are UTC days; "
            "pass its UTC date (value.astimezone(timezone.utc).date() for an aware datetime, value.date() "
            "for a naive UTC one)"
        )
    if not isinstance(value, date):
        raise TypeError(
            f"{name} must be a datetime.date, got {type(value).__name__} {value!r}; "
            "pass date.fromisoformat(...) for a YYYY-MM-DD string"
        )
    return value


def _require_several(value: object, *, name: str, of: str) -> None:
    """A TypeError naming `value` when it is one string or one date where a list of `of` is needed:
    iterated, a string gives its characters (partition columns `d`, `a`, `t`, `e`)."""
    if isinstance(value, (str, date)):
        raise TypeError(
            f"{name} must be a list of {of}, got the single {type(value).__name__} {value!r}; pass [{value!r}]"
        )


def date_literal(day: date) -> Any:
    """`day` as a Spark date Column, whatever the JVM's default zone. `F.lit(day)` goes through
    `java.sql.Date` in that zone, which turns a day the zone skipped (2011-12-30 in Pacific/Apia)
    into the next one; a cast of the ISO text takes no zone."""
    from pyspark.sql import functions as F

    return F.lit(day.isoformat()).cast("date")


# Characters Spark's reader takes as a glob (Hadoop's GlobPattern), escaped to be read as they are.
_GLOB_CHARACTERS = re.compile(r"([{}\[\]*?\\])")


def literal_path(path: str) -> str:
    """`path` for `DataFrameReader.parquet`, which globs its paths: a directory named `lake[1]`
    would match `lake1`, or nothing."""
    return _GLOB_CHARACTERS.sub(r"\\\1", path)


def _refuse_staging_over(spark: SparkSession, *, staging: str, path: str) -> None:
    """A ValueError when `staging` is `path` or holds it: it is removed before and after the write."""
    staging_fs, staging_path = hadoop_file_system(spark, staging)
    path_fs, hadoop_path = hadoop_file_system(spark, path)
    scratch = str(staging_fs.makeQualified(staging_path)).rstrip("/")
    target = str(path_fs.makeQualified(hadoop_path)).rstrip("/")
    if target == scratch or target.startswith(f"{scratch}/"):
        raise ValueError(
            f"staging {staging!r} would remove {path} with it (a staging directory is removed before and "
            "after the write); pass a scratch directory that is neither the dataset nor one holding it"
        )


def write_partitioned(
    df: DataFrame,
    path: str,
    partition_cols: Sequence[str],
    *,
    sort_within: Sequence[str] = (),
    shuffle: bool = True,
    replace: Iterable[date] = (),
    staging: str | None = None,
    marker: str | None = None,
    marker_text: Mapping[date, str] | None = None,
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
    `df`'s rows, or nothing. Without `staging`, a write that fails after the removal leaves them
    empty, not stale.

    `staging` (a scratch directory on the same file system, removed first; neither `path` nor a
    directory holding it, which is refused) makes the replacement safe against a failed write: `df`
    is written there, and only once that write has succeeded is each partition it wrote, and each
    `replace` date, swapped into `path` (per partition, on a local Linux filesystem the published
    directory and the new one exchanged in one atomic rename, so a reader always finds one of them;
    elsewhere, such as HDFS or S3A, the published one renamed aside and the new one renamed in: no
    extra pass over the data, and no reader sees a partition partly removed). A failed write leaves
    `path` as it was, and so does a
    row whose partition value is null or not a date (`YYYY-MM-DD`; an error names it before
    anything moves). Without `staging` nothing checks the values: a null is written as
    `<column>=__HIVE_DEFAULT_PARTITION__`, which every later listing of `path` refuses.
    `marker` names an empty file put in each of those partitions, even one left with no rows, so that a listing
    (`existing_date_partitions(..., marker=...)`) tells a partition written empty from one never
    written. `marker_text` gives the marker's contents by date (empty for a date it does not
    name), for example what the partition was built from; it needs `marker`, and dates as its
    keys. Both need the single (date) partition column that `replace` needs.
    """
    _require_several(partition_cols, name="partition_cols", of="names")
    _require_several(sort_within, name="sort_within", of="names")
    _require_several(replace, name="replace", of="dates")
    if not partition_cols:
        raise ValueError("write_partitioned needs at least one partition column, got none")
    missing = [c for c in partition_cols if c not in df.columns]
    if missing:
        raise ValueError(f"partition columns {missing} are not in the DataFrame (columns: {df.columns})")
    replaced = sorted({require_date(day, name="a replace date") for day in replace})
    if (replaced or staging or marker) and len(partition_cols) != 1:
        raise ValueError(
            f"replace, staging and marker need exactly one (date) partition column, got {list(partition_cols)}"
        )
    if marker and not staging:
        raise ValueError(f"marker {marker!r} needs a staging directory; pass staging=")
    if marker_text and not marker:
        raise ValueError("marker_text needs marker= to name the file it is written to; pass marker=")
    # A key that is not a date (a string, a datetime) would match no partition: every marker empty.
    texts = {require_date(day, name="a marker_text date"): text for day, text in (marker_text or {}).items()}
    spark = df.sparkSession
    if staging:
        _refuse_staging_over(spark, staging=staging, path=path)
        put_back_set_aside(spark, staging=staging, path=path)
        delete_path(spark, staging)  # a killed run's leftovers
    else:
        for day in replaced:
            delete_path(spark, f"{path}/{partition_cols[0]}={day.isoformat()}")
    out = df.repartition(*partition_cols) if shuffle else df
    if sort_within or not shuffle:
        out = out.sortWithinPartitions(*partition_cols, *sort_within)
    (
        out.write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy(*partition_cols)
        .parquet(staging or path)
    )
    if staging:
        _swap_partitions_in(
            spark,
            staging=staging,
            path=path,
            column=partition_cols[0],
            replace=replaced,
            marker=marker,
            marker_text=texts,
        )


def _swap_partitions_in(
    spark: SparkSession,
    *,
    staging: str,
    path: str,
    column: str,
    replace: list[date],
    marker: str | None,
    marker_text: Mapping[date, str],
) -> None:
    """Move the partitions written under `staging` into `path`, each replacing its namesake, and
    remove the `replace` dates' partitions that `staging` does not hold; then remove `staging`.
    A replaced partition ends up in `staging` (exchanged, or renamed aside into `_replaced/`), so a
    run killed at any step leaves each partition published whole, old or new, or (killed between
    two renames, off a local filesystem) set aside in the staging directory, from where the next
    run with that staging directory puts it back before anything else (`put_back_set_aside`)."""
    fs, staged_root = hadoop_file_system(spark, staging)
    jvm_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path
    prefix = f"{column}="
    written = (
        {
            status.getPath().getName()
            for status in fs.listStatus(staged_root)
            if status.isDirectory() and status.getPath().getName().startswith(prefix)
        }
        if fs.exists(staged_root)
        else set()
    )
    # Checked before any partition moves: a null (or non-date) value would otherwise be swapped in
    # as a directory that every later listing of `path` refuses, or stop the swap half-way.
    for name in sorted(written):
        value = name.removeprefix(prefix)
        if iso_day(value) is None:
            shown = "null" if value == "__HIVE_DEFAULT_PARTITION__" else repr(value)
            raise ValueError(
                f"rows written to {path} have a {column} value that is not a date ({shown}, staged as "
                f"{jvm_path(staged_root, name)}); nothing was replaced: drop or fix the rows whose {column} "
                "is not a date and rerun"
            ) from None
    names = written | {f"{prefix}{day.isoformat()}" for day in replace}
    # A replaced partition is renamed aside, into the staging directory, and deleted with it: a
    # recursive delete in place would let a reader, or a run killed part-way, see some of its files.
    replaced_root = jvm_path(staged_root, "_replaced")
    for name in sorted(names):
        staged = jvm_path(staged_root, name)
        if marker:  # also creates the directory of an empty partition
            day = date.fromisoformat(name.removeprefix(prefix))
            write_text(spark, str(jvm_path(staged, marker)), marker_text.get(day, ""))
        live = jvm_path(f"{path.rstrip('/')}/{name}")
        aside = jvm_path(replaced_root, name)
        if fs.exists(live) and fs.exists(staged) and _exchanged(fs, staged, live):
            continue  # the published partition now lies at `staged`, removed with the staging directory
        if fs.exists(live):
            fs.mkdirs(replaced_root)
            if not fs.rename(live, aside):
                raise OSError(
                    f"could not move {live} to {aside} to replace it with {staged}; check that both are "
                    "on one file system, or remove it by hand, and rerun"
                )
        if fs.exists(staged):
            fs.mkdirs(live.getParent())
            if not fs.rename(staged, live):
                if fs.exists(aside):
                    fs.rename(aside, live)  # put the published partition back
                raise OSError(f"could not move {staged} to {live}; check that both are on one file system")
    fs.delete(staged_root, True)


def put_back_set_aside(spark: SparkSession, *, staging: str, path: str) -> None:
    """Publish again each partition that a run killed between the two renames of
    `_swap_partitions_in` left in `<staging>/_replaced/`: renamed aside, its replacement still
    staged. The killed run never replaced it, so it is put back, as `arrow_partitions.remove_leftovers`
    does for the Arrow writers, before the staging directory is removed. A partition set aside whose
    replacement moved in, or that had no replacement (a `replace` date removed on purpose), stays
    where it is and goes with the staging directory."""
    fs, staged_root = hadoop_file_system(spark, staging)
    jvm_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path
    replaced_root = jvm_path(staged_root, "_replaced")
    if not fs.exists(replaced_root):
        return
    for status in fs.listStatus(replaced_root):
        name = status.getPath().getName()
        live = jvm_path(f"{path.rstrip('/')}/{name}")
        if fs.exists(live) or not fs.exists(jvm_path(staged_root, name)):
            continue
        log.warning(
            "%s: putting back %s, set aside by a run killed before it moved the new one in", live, name
        )
        fs.mkdirs(live.getParent())
        if not fs.rename(status.getPath(), live):
            raise OSError(
                f"could not put {status.getPath()} back at {live}, where a killed run left nothing; move it "
                "there by hand (it is the partition last published) and rerun"
            )


def _exchanged(fs: Any, staged: Any, live: Any) -> bool:
    """Whether the directories `staged` and `live` (Hadoop Paths on `fs`) were swapped in one atomic
    rename (`renameat2` with `RENAME_EXCHANGE`, as `arrow_partitions.swap_in` does): on a local Linux
    filesystem, where a reader then finds the published partition or the new one, never none.
    False elsewhere (HDFS, S3A, NFS, two mounts), for the caller to rename twice."""
    if fs.getUri().getScheme() != "file":
        return False
    from featurelake.arrow_partitions import exchange_paths

    first, second = (str(fs.makeQualified(p).toUri().getPath()) for p in (staged, live))
    try:
        return exchange_paths(first, second)
    except OSError as error:
        if error.errno == errno.EXDEV:  # staging on another mount: Hadoop's rename copies instead
            return False
        raise


def read_partition_range(
    spark: SparkSession,
    path: str,
    start: date,
    end: date,
    *,
    partition_col: str = "date",
    schema: StructType | None = None,
    listed: Mapping[date, Any] | None = None,
) -> DataFrame:
    """Read the date partitions of `path` in [start, end] (dates, both included) only.

    One listing of `path` picks the partition directories in range, and Spark reads only those: it
    lists their files alone, infers the schema (when `schema` is None) from all their files, merged
    (a column added from some date on is kept, null before it; a column whose type differs between
    partitions is an error naming its partitions by type, read them with `schema`), and never
    opens a file outside the range. The filter on the partition column stays in the plan
    (`PartitionFilters`). `basePath` keeps the partition column in the result. A range with no
    partition (a `path` not written yet included), or whose partitions hold no data file (written
    empty), reads as an empty DataFrame when `schema` is given, with the columns of a read that
    finds rows (the partition column last); without `schema` either is an error: there is no file
    to infer the schema from (Spark's UNABLE_TO_INFER_SCHEMA). `path` is taken as it is, never as
    a glob (`lake[1]` is not `lake1`). `listed`: what `listed_date_partitions` gave for `path`,
    when the caller has it, so that the root is not listed again.
    """
    start = require_date(start, name="start")
    end = require_date(end, name="end")
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start}); pass start <= end")
    if listed is None:
        listed = listed_date_partitions(spark, path, partition_col=partition_col)
    in_range = [str(directory) for day, directory in sorted(listed.items()) if start <= day <= end]
    return _read_partitions(
        spark, path, in_range, start=start, end=end, partition_col=partition_col, schema=schema
    )


def _read_partitions(
    spark: SparkSession,
    path: str,
    in_range: list[str],
    *,
    start: date,
    end: date,
    partition_col: str,
    schema: StructType | None,
) -> DataFrame:
    """`read_partition_range`'s read of the partition directories `in_range`, already listed."""
    from pyspark.sql import functions as F

    df = None
    reader = spark.read.option("basePath", path)
    # Without a schema, all the files' schemas merged: one file's dropped a column added from some
    # date on, or kept it, by where the range began.
    reader = reader.schema(schema) if schema is not None else reader.option("mergeSchema", "true")
    if schema is None and not in_range:
        raise ValueError(
            f"{path} has no {partition_col}= partition in [{start}, {end}] to infer the schema from; "
            "pass schema= to read a range that may be empty"
        )
    if in_range:
        try:
            df = reader.parquet(*[literal_path(directory) for directory in in_range])
        except Exception as error:
            # Spark's message names the two types, neither the column's partitions nor the fix.
            if schema is not None or "CANNOT_MERGE" not in str(error):
                raise
            raise ValueError(_type_conflicts(spark, path, in_range, start=start, end=end)) from None
        if schema is not None and df.columns[-1:] != [partition_col]:
            # Spark takes the partition column from the directories of data files, and the range
            # has none (partitions written empty): no column, or the schema's column in its place.
            df = None
    if df is None:
        # No data file in range, or no dataset at all yet (which a read of `path` would refuse):
        # nothing to list or open. Columns as a read gives them: the partition column last.
        empty = spark.createDataFrame([], schema)
        partition = F.col(partition_col) if partition_col in empty.columns else F.lit(None).cast("date")
        df = empty.select(*[c for c in empty.columns if c != partition_col], partition.alias(partition_col))
    return df.where(F.col(partition_col).between(date_literal(start), date_literal(end)))


def _type_conflicts(spark: SparkSession, path: str, in_range: list[str], *, start: date, end: date) -> str:
    """The error of a read without a schema whose partitions in range give a column different
    types, which Spark's schema merge refuses: each such column, with its partitions by type."""
    types: dict[str, dict[str, list[str]]] = {}
    mixed = []
    for directory in in_range:
        name = directory.rstrip("/").rsplit("/", 1)[-1]
        try:
            fields = spark.read.option("mergeSchema", "true").parquet(literal_path(directory)).schema.fields
        except Exception:  # its own files disagree
            mixed.append(name)
            continue
        for field in fields:
            types.setdefault(field.name, {}).setdefault(field.dataType.simpleString(), []).append(name)
    found = [
        f"{column} is " + ", ".join(f"{kind} in {' '.join(names)}" for kind, names in by_type.items())
        for column, by_type in types.items()
        if len(by_type) > 1
    ]
    if mixed:
        found.append(f"the files of {', '.join(mixed)} disagree among themselves")
    return (
        f"the partitions of {path} in [{start}, {end}] give columns different types, which a read "
        f"without a schema cannot merge: {'; '.join(found)}. Pass schema= with the type to read "
        "them as, or rewrite the partitions of the other type"
    )


def hadoop_file_system(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """(Hadoop FileSystem, Hadoop Path) for `path`, through the JVM, so that any URI Spark reads and
    writes (local, HDFS, S3A, ABFS, GCS) works the same."""
    hadoop_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small file through Hadoop's FileSystem, so any lake URI Spark writes to works."""
    fs, target = hadoop_file_system(spark, path)
    stream = fs.create(target, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str) -> str | None:
    """The text of a small file written by `write_text`, or None when there is no such file."""
    fs, target = hadoop_file_system(spark, path)
    if not fs.exists(target):
        return None
    stream = fs.open(target)
    try:
        data = spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
    finally:
        stream.close()
    return bytes(data).decode("utf-8")


def file_fingerprint(status: Any) -> list[Any]:
    """What tells a file (a Hadoop FileStatus) apart without reading it: `[name, bytes, modification
    time in ms]`. Rewriting it, even with the same rows, changes it."""
    return [status.getPath().getName(), int(status.getLen()), int(status.getModificationTime())]


def _data_files(statuses: Iterable[Any]) -> list[list[Any]]:
    """The `file_fingerprint` of each data file (`is_data_file`) among a directory's `statuses`
    (Hadoop FileStatus), sorted."""
    return sorted(
        file_fingerprint(status)
        for status in statuses
        if status.isFile() and is_data_file(status.getPath().getName())
    )


@dataclass(frozen=True)
class DatePartitionListing:
    """What one listing of a date-partitioned dataset found: its root, then each of its
    `partition_col=YYYY-MM-DD` directories, each listed once (`list_date_partitions`)."""

    # {date: its data files, as `_data_files` gives them}, empty for a partition with none.
    files: dict[date, list[list[Any]]]
    # {date: what its partition holds that no reader reads}: full paths of files that are not data
    # (`is_data_file`) and of subdirectories, which end with "/". Hidden names (`.`, `_`) are not
    # among them.
    unread: dict[date, list[str]]
    # Full paths of what the root holds besides partition directories and hidden names: files, and
    # directories named otherwise (`dt=2026-09-02/`, `2026-09-02/`, `date=2026-9-2/`), which end
    # with "/".
    stray: list[str]


def _in_range(day: date, start: date | None, end: date | None) -> bool:
    return (start is None or start <= day) and (end is None or day <= end)


def list_date_partitions(
    spark: SparkSession,
    path: str,
    *,
    partition_col: str = "date",
    start: date | None = None,
    end: date | None = None,
) -> DatePartitionListing:
    """Every date partition under `path` (as `listed_date_partitions` finds them) with its data
    files and what else it holds, and what else the root holds: one listing of the root and one of
    each partition tell which dates have data, what each date's data is, and what no reader would
    read. With `start` or `end` (dates, both included), only the partitions in that range are
    listed and given, so that a run's listings do not grow with the dataset's history; the root's
    strays are found either way, among them directories named `partition_col=` plus anything but a
    date (which the other listings refuse at once), so that a check can name them all together.
    Empty for a missing `path`."""
    start = None if start is None else require_date(start, name="start")
    end = None if end is None else require_date(end, name="end")
    fs, hadoop_path = hadoop_file_system(spark, path)
    if not fs.exists(hadoop_path):
        return DatePartitionListing({}, {}, [])
    directories, stray = _partition_directories(
        fs, hadoop_path, path=path, partition_col=partition_col, misnamed_are_stray=True
    )
    files: dict[date, list[list[Any]]] = {}
    unread: dict[date, list[str]] = {}
    for day, directory in directories.items():
        if not _in_range(day, start, end):
            continue
        files[day], unread[day] = directory_entries(fs, directory)
    return DatePartitionListing(files, unread, stray)


def directory_entries(fs: Any, directory: Any) -> tuple[list[list[Any]], list[str]]:
    """From one listing of the existing Hadoop `directory`: its data files as `_data_files` gives
    them, and the full paths of what no reader reads (files that are not data, subdirectories,
    which end with "/"), sorted. Hidden names (`.`, `_`) are in neither."""
    statuses = list(fs.listStatus(directory))
    unread = sorted(
        _shown(status)
        for status in statuses
        if not (name := status.getPath().getName()).startswith((".", "_"))
        and (status.isDirectory() or not is_data_file(name))
    )
    return _data_files(statuses), unread


def _shown(status: Any) -> str:
    """The full path of a Hadoop FileStatus, ending with "/" for a directory."""
    return f"{status.getPath()}/" if status.isDirectory() else str(status.getPath())


def _holds_data(fs: Any, directory: Any, marker: str | None = None) -> bool:
    """Whether `directory` holds a data file (`is_data_file`: not a writer's hidden temporary file
    or marker), or the file `marker`."""
    return any(
        is_data_file(name) or name == marker
        for name in (child.getPath().getName() for child in fs.listStatus(directory))
    )


def listed_date_partitions(spark: SparkSession, path: str, *, partition_col: str = "date") -> dict[date, Any]:
    """Every `partition_col=YYYY-MM-DD` directory under `path`, empty or not: {date: Hadoop Path},
    from one listing. Hidden names (`_temporary`, `.spark-staging-*`) are skipped; a directory
    named `partition_col=` plus anything but a date is an error that names it."""
    fs, hadoop_path = hadoop_file_system(spark, path)
    if not fs.exists(hadoop_path):
        return {}
    return _partition_directories(fs, hadoop_path, path=path, partition_col=partition_col)[0]


def _partition_directories(
    fs: Any, hadoop_path: Any, *, path: str, partition_col: str, misnamed_are_stray: bool = False
) -> tuple[dict[date, Any], list[str]]:
    """From one listing of the existing `hadoop_path` (`path`): its partition directories
    ({date: Hadoop Path}), and the full paths of what else it holds but hidden names, sorted. A
    directory named `partition_col=` plus anything but a date is an error, or with
    `misnamed_are_stray` one of the others."""
    found: dict[date, Any] = {}
    stray: list[str] = []
    prefix = f"{partition_col}="
    for status in fs.listStatus(hadoop_path):
        name = status.getPath().getName()
        if not (status.isDirectory() and name.startswith(prefix)):
            if not name.startswith((".", "_")):
                stray.append(_shown(status))
            continue
        day = iso_day(name[len(prefix) :])
        if day is None and misnamed_are_stray:
            stray.append(_shown(status))
            continue
        if day is None:
            raise ValueError(
                f"{status.getPath()} is not a partition of {path}: its partition directories must be "
                f"named {prefix}YYYY-MM-DD. Move it out of {path} (a backup or a copy belongs elsewhere) "
                "and rerun"
            )
        found[day] = status.getPath()
    return found, sorted(stray)


def existing_date_partitions(
    spark: SparkSession,
    path: str,
    *,
    partition_col: str = "date",
    marker: str | None = None,
    start: date | None = None,
    end: date | None = None,
    listed: Mapping[date, Any] | None = None,
) -> set[date]:
    """The date partitions under `path` that hold at least one data file (or the file `marker`,
    see `write_partitioned`), from a listing only. Hidden files (names starting with `.` or `_`)
    are not data: writers' temporary files and uploads in flight. With `start` or `end` (dates,
    both included), only the partitions in that range are listed. `listed`: what
    `listed_date_partitions` gave for `path`, when the caller has it, so that the root is not
    listed again."""
    start = None if start is None else require_date(start, name="start")
    end = None if end is None else require_date(end, name="end")
    fs, _ = hadoop_file_system(spark, path)
    if listed is None:
        listed = listed_date_partitions(spark, path, partition_col=partition_col)
    return {
        day
        for day, directory in listed.items()
        if _in_range(day, start, end) and _holds_data(fs, directory, marker)
    }


def date_partition_exists(spark: SparkSession, path: str, day: date, *, partition_col: str = "date") -> bool:
    """Whether the partition of `day` under `path` holds at least one data file: a listing of that
    one directory, where `existing_date_partitions` lists every partition."""
    day = require_date(day, name="day")
    fs, hadoop_path = hadoop_file_system(spark, f"{path}/{partition_col}={day.isoformat()}")
    return bool(fs.exists(hadoop_path)) and _holds_data(fs, hadoop_path)


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
    is idempotent: running a date twice gives the same output. Each date's result is staged in
    `<output_path>/.staging-<partition_col>=<date>/` (hidden from readers) and swapped in only once
    written, so a failure part-way leaves finished dates complete and the failed date's earlier
    output as it was. Returns the dates processed. A date with no input data (no partition,
    or one emptied since) is skipped and logged, and its output partition, derived from input that
    is gone, is removed as a whole: renamed into the date's staging directory, which is deleted.
    A missing `input_path` is an error (FileNotFoundError) before any output is touched: a mistyped
    path is not a dataset whose every date is gone.
    """
    _require_several(dates, name="dates", of="dates")
    wanted = sorted({require_date(day, name="a date of dates") for day in dates})
    if not wanted:
        return []
    fs, input_root = hadoop_file_system(spark, input_path)
    if not fs.exists(input_root):
        # Not "every date's input is gone": a mistyped path would remove every date's output.
        raise FileNotFoundError(
            f"input_path {input_path} does not exist, so no output under {output_path} was touched; "
            "check the path (a dataset whose data is all gone is still a directory)"
        )
    available = existing_date_partitions(
        spark, input_path, partition_col=partition_col, start=wanted[0], end=wanted[-1]
    )
    done: list[date] = []
    for day in wanted:
        staging = f"{output_path.rstrip('/')}/.staging-{partition_col}={day.isoformat()}"
        if day not in available:
            stale = f"{output_path.rstrip('/')}/{partition_col}={day.isoformat()}"
            fs, stale_path = hadoop_file_system(spark, stale)
            removed = bool(fs.exists(stale_path))
            if removed:
                # Renamed aside first, as a replaced partition is: a delete in place would let a
                # reader, or a run killed part-way, see some of its files.
                delete_path(spark, staging)
                _swap_partitions_in(
                    spark,
                    staging=staging,
                    path=output_path,
                    column=partition_col,
                    replace=[day],
                    marker=None,
                    marker_text={},
                )
            log.warning(
                "No data in partition %s=%s under %s; skipped%s",
                partition_col,
                day,
                input_path,
                f", and removed its earlier output {stale}" if removed else "",
            )
            continue
        # The date's directory, known to hold data: no second listing of every partition per date.
        directory = f"{input_path.rstrip('/')}/{partition_col}={day.isoformat()}"
        part = _read_partitions(
            spark, input_path, [directory], start=day, end=day, partition_col=partition_col, schema=None
        )
        result = transform(part.drop(partition_col), day).withColumn(partition_col, date_literal(day))
        write_partitioned(result, output_path, [partition_col], replace=[day], staging=staging)
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

    Every row of one key lands in one task (hash partitioning), so `fn` sees the whole group; rows
    whose key is null form one group of their own. `num_partitions` (>= 1) sets the task count,
    else `spark.sql.shuffle.partitions`. The result schema is explicit: Spark cannot infer what a
    pandas function returns. `fn`'s columns are matched to it by name; a missing or extra column,
    or (in a `build_spark_session` session) a value that does not convert safely, such as 1.5 to
    a long, fails the query naming the column. So does a null (or NaN) in a column the schema
    declares NOT NULL, which Spark would take as it is: the error names the key too. Column names
    holding a dot or a backtick, which applyInPandas cannot take, are refused up front.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import DataType, StructType

    if key not in df.columns:
        raise ValueError(f"key column {key!r} is not in the DataFrame (columns: {df.columns})")
    parsed = [c for c in df.columns if "." in c or "`" in c]
    if parsed:
        # applyInPandas takes every column by a name Spark parses: `user.id` is the field id of user.
        raise ValueError(
            f"columns {parsed} have names Spark parses (a dot names a struct's field, a backtick quotes), "
            "which applyInPandas cannot take; rename them (DataFrame.withColumnsRenamed) before "
            "apply_per_key, and back in its result"
        )
    if num_partitions is not None and num_partitions < 1:
        raise ValueError(
            f"num_partitions must be >= 1 (or None for spark.sql.shuffle.partitions), got {num_partitions}"
        )
    partitioned = (
        df.repartition(F.col(key)) if num_partitions is None else df.repartition(num_partitions, F.col(key))
    )
    struct = schema if isinstance(schema, StructType) else DataType.fromDDL(schema)
    required = [f.name for f in struct.fields if not f.nullable] if isinstance(struct, StructType) else []
    if required:
        fn = _refusing_nulls(fn, key=key, columns=required)
    return partitioned.groupBy(key).applyInPandas(fn, schema=schema)


def _refusing_nulls(
    fn: Callable[[pd.DataFrame], pd.DataFrame], *, key: str, columns: list[str]
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """`fn`, failing with an error naming the column and the key when its result holds a null (or a
    NaN, which Arrow takes for one) in one of `columns`, which the result schema declares NOT NULL:
    Spark trusts the declaration, and fails on such a value without naming either."""

    def checked(group: pd.DataFrame) -> pd.DataFrame:
        result = fn(group)
        returned = getattr(result, "columns", ())  # not a DataFrame: Spark's own error names its type
        for column in columns:
            if column in returned and result[column].isna().any():
                raise ValueError(
                    f"fn returned a null {column} for {key} {group[key].iloc[0]!r}, and the result schema "
                    f"declares {column} NOT NULL; return a value there, or declare the column nullable"
                )
        return result

    return checked
