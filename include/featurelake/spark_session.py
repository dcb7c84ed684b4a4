"""Build SparkSessions from a tuned base configuration, with the caller's settings merged on top.

Precedence, lowest first: the tuned base below, then whatever spark-submit already set
(spark-defaults.conf, the Spark connection's `conf` extra and the operator's `conf`, passed as
`--conf`), then per-job overrides. The few settings the features' correctness depends on
(`REQUIRED_SPARK_CONF`) are set last, over every layer: a different value asked for is logged as a
warning naming the property, and not applied.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

LOCAL_MASTER = "local[*]"


def is_local_master(master: str) -> bool:
    """True for `local`, `local[N]`, `local[*]` and `local[N,F]`: one JVM, no cluster manager."""
    return master == "local" or master.startswith("local[")


def local_core_count(master: str, *, available: int | None = None) -> int:
    """Cores a local master uses: `local` is 1, `local[N]` and `local[N,F]` are N, `local[*]` is
    `available` (the count Spark's `local[*]` itself uses: the driver JVM's available processors, which
    follow CPU affinity and container limits), else `os.cpu_count()`."""
    if master == "local":
        return 1
    # Spark allows blanks around the comma: local[* ,2]
    inner = master[len("local[") : -1].split(",")[0].strip()
    if inner != "*":
        return int(inner)
    return available or os.cpu_count() or 1


def default_executor_cores(master: str) -> int | None:
    """The cores of an executor that `spark.executor.cores` leaves unset: 1 on YARN and Kubernetes,
    None on a standalone master (an executor takes all of its worker's cores)."""
    return 1 if master.startswith(("yarn", "k8s://")) else None


def dynamic_allocation(conf: Mapping[str, str]) -> bool:
    """Whether a job on a cluster runs with dynamic allocation, given the properties set over the
    base: as `spark.dynamicAllocation.enabled` says, else on, unless they fix the executor count
    (`spark.executor.instances`, and no other `spark.dynamicAllocation.*`). Under dynamic
    allocation that count is only the first one, with no ceiling: a job capped at 4 executors on
    a shared queue could take the whole queue."""
    if "spark.dynamicAllocation.enabled" in conf:
        return str(conf["spark.dynamicAllocation.enabled"]).strip().lower() == "true"
    fixed = conf.get("spark.executor.instances")
    return not fixed or any(key.startswith("spark.dynamicAllocation.") for key in conf)


def cluster_core_count(conf: Mapping[str, str], *, master: str = "") -> int | None:
    """The most executor cores a job on a cluster can hold, read from its Spark properties:
    `spark.cores.max` (standalone), else `spark.executor.cores` (on YARN and Kubernetes 1 when
    unset, Spark's default there) times the executor count (`spark.dynamicAllocation.maxExecutors`
    with dynamic allocation, `dynamic_allocation`, else `spark.executor.instances`). None when
    the properties leave it open."""
    if conf.get("spark.cores.max"):
        return int(conf["spark.cores.max"])
    cores = conf.get("spark.executor.cores") or default_executor_cores(master)
    dynamic = dynamic_allocation(conf)
    executors = conf.get("spark.dynamicAllocation.maxExecutors" if dynamic else "spark.executor.instances")
    if not cores or not executors:
        return None
    return int(cores) * int(executors)


# Shuffle partitions a cluster job starts with per core it can hold, and never fewer than Spark's
# default of 200: AQE coalesces small ones, but cannot split a partition that is too large.
CLUSTER_SHUFFLE_PARTITIONS_PER_CORE = 3
CLUSTER_MIN_SHUFFLE_PARTITIONS = 200


# Settings the features' correctness depends on, applied over every other layer (`build_spark_session`).
REQUIRED_SPARK_CONF = {
    # Dates and timestamps are UTC whatever the machine's zone: every date Spark SQL takes from a
    # timestamp uses the session zone, so another zone moves rows across days (into the quarantine as
    # date mismatches, or across the window's edges). (The driver's JVM is already running when this
    # conf is read: `build_spark_session` sets its default zone to UTC, and a test runs the job in
    # UTC+14.)
    "spark.sql.session.timeZone": "UTC",
    # ANSI mode: an overflowing integer sum or cast fails the job instead of wrapping around into a
    # wrong total, or turning into a silent null.
    "spark.sql.ansi.enabled": "true",
    # Parquet timestamps as INT64 micros, so that pyarrow, DuckDB and delta-rs read them as tz-aware UTC.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # A damaged input file, or one gone since it was listed, fails the job naming it
    # (docs/data-contract.md): skipped, its rows were lost and the run succeeded.
    "spark.sql.files.ignoreCorruptFiles": "false",
    "spark.sql.files.ignoreMissingFiles": "false",
    # Column names match whatever their case, as the raw footer check matches them: case-sensitive,
    # a file's `Amount` passed the check and was read as a null amount, every row quarantined.
    "spark.sql.caseSensitive": "false",
}


# The executors' JVMs run in UTC (`executor_java_options`).
EXECUTOR_UTC_JAVA_OPTION = "-Duser.timezone=UTC"


def executor_java_options(asked: str | None) -> str:
    """`spark.executor.extraJavaOptions` for a job: the options asked for (spark-defaults.conf, the
    Spark connection's conf, the operator's, the job's), then `-Duser.timezone=UTC`, which wins
    over an earlier `-Duser.timezone` (the JVM keeps the last setting of a property)."""
    asked = (asked or "").strip()
    if asked.split()[-1:] == [EXECUTOR_UTC_JAVA_OPTION]:
        return asked
    zones = [o for o in asked.split() if o.startswith("-Duser.timezone=") and o != EXECUTOR_UTC_JAVA_OPTION]
    if zones:
        log.warning(
            "Ignoring %s in spark.executor.extraJavaOptions: the executors' JVMs run in UTC, so %s "
            "follows it. Remove it to silence this warning.",
            zones[-1],
            EXECUTOR_UTC_JAVA_OPTION,
        )
    return f"{asked} {EXECUTOR_UTC_JAVA_OPTION}".strip()


def required_spark_conf_conflicts(asked: Mapping[str, str]) -> dict[str, str]:
    """The properties of `REQUIRED_SPARK_CONF` that `asked` sets to another value, with that value
    (compared without case or surrounding blanks: `True` is `true`)."""
    return {
        key: str(asked[key])
        for key, required in REQUIRED_SPARK_CONF.items()
        if key in asked and str(asked[key]).strip().lower() != required.lower()
    }


def base_spark_conf(
    *, master: str, submitted: Mapping[str, str] | None = None, available_cores: int | None = None
) -> dict[str, str]:
    """The tuned defaults for feature jobs on `master`; `submitted` holds the properties already
    set on top of them (the Spark connection's, spark-submit's, the job's), read for the cluster's size;
    `available_cores` is the driver JVM's processor count, what `local[*]` runs (`local_core_count`).

    AQE coalesces small shuffle partitions and splits skewed joins (a few heavy users dominate
    transaction data). Shuffle partitions are sized to the cores: on a local master 16 per core; on
    a cluster 3 per core it can hold (`cluster_core_count`), at least 200; AQE then coalesces
    them. Dynamic allocation only makes sense with a cluster manager, so local masters never get it,
    nor a cluster job whose properties fix its executor count (`dynamic_allocation`).
    """
    conf = {
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.sql.adaptive.skewJoin.enabled": "true",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.sql.parquet.compression.codec": "snappy",
        **REQUIRED_SPARK_CONF,
        # Executors start after this conf is read, so on a cluster their JVMs run in UTC too
        # (`build_spark_session` keeps it after options another layer asks for).
        "spark.executor.extraJavaOptions": EXECUTOR_UTC_JAVA_OPTION,
        # Reruns and backfills replace only the partitions they write.
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.ui.showConsoleProgress": "false",
    }
    if is_local_master(master):
        cores = local_core_count(master, available=available_cores)
        # Many small shuffle partitions: a local driver's heap (1 GiB unless the Spark connection
        # sets spark.driver.memory) is shared by every task, and a per-user aggregate over a
        # few large partitions spills. Measured on the 10M-row benchmark: the window combine took
        # 12.8 s with 16 per core and 16 MiB targets, 20.3 s with 2 per core and AQE's 64 MiB.
        conf["spark.sql.shuffle.partitions"] = str(16 * cores)
        conf["spark.sql.adaptive.advisoryPartitionSizeInBytes"] = "16m"
        conf["spark.default.parallelism"] = str(max(2, cores))
        # List a lake's date partitions on the driver. Above 32 directories Spark lists them with a
        # job, one task per directory, which on a local master only adds task overhead. Measured on
        # the benchmark lake, warm: counting one raw date's rows (120 partitions listed) took
        # 0.2-0.4 s against 1.4-1.8 s, and one tile date's (91 listed) 0.3-0.4 s against 0.9-1.2 s.
        # A laptop reading an object store may list faster in parallel: the Spark connection's conf
        # can set the threshold back.
        conf["spark.sql.sources.parallelPartitionDiscovery.threshold"] = "100000"
    else:
        cores = cluster_core_count(submitted or {}, master=master)
        conf["spark.sql.shuffle.partitions"] = str(
            max(CLUSTER_MIN_SHUFFLE_PARTITIONS, CLUSTER_SHUFFLE_PARTITIONS_PER_CORE * (cores or 0))
        )
        if dynamic_allocation(submitted or {}):
            conf["spark.dynamicAllocation.enabled"] = "true"
            conf["spark.dynamicAllocation.shuffleTracking.enabled"] = "true"
    return conf


# The parallel (throughput) collector for a local driver, which runs every task: a batch job wants
# throughput, not G1's short pauses. Measured on the benchmark lake (2 cores, 1 GiB heap, whole full
# runs in alternating processes): warm runs 56-62 s against 61-69 s with G1, about 10% less.
LOCAL_DRIVER_JAVA_OPTIONS = "-XX:+UseParallelGC"


def launch_spark_conf(*, master: str) -> dict[str, str]:
    """Properties that only take effect when the driver's JVM starts: whoever launches it (the
    Airflow operator through spark-submit, or `build_spark_session` when it starts the JVM itself)
    passes them; the job's session builder is too late for them. Empty on a cluster, where the
    driver does little of the work and the cluster's own settings stay."""
    if is_local_master(master):
        return {"spark.driver.extraJavaOptions": LOCAL_DRIVER_JAVA_OPTIONS}
    return {}


def merge_spark_conf(
    *layers: Mapping[str, str] | None,
) -> dict[str, str]:
    """Merge configuration layers, later layers winning; None layers are skipped."""
    merged: dict[str, str] = {}
    for layer in layers:
        if layer:
            merged.update({str(k): str(v) for k, v in layer.items()})
    return merged


def session_extensions(*layers: str | None) -> str:
    """`spark.sql.extensions` of several layers joined, each class once, in the layers' order: the
    property is a list, so a job's own extension (Delta's, for the view refresh) joins the ones the
    connection loads instead of replacing them."""
    names = [name.strip() for value in layers if value for name in value.split(",") if name.strip()]
    return ",".join(dict.fromkeys(names))


def build_spark_session(
    app_name: str,
    *,
    master: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> SparkSession:
    """Start (or reuse) a SparkSession: base defaults < spark-submit's settings < `overrides`
    < `REQUIRED_SPARK_CONF`, whose properties no layer can change (a warning names any that one tried to);
    the executors' JVM options always end with `-Duser.timezone=UTC` (`executor_java_options`), and
    the session extensions of `overrides` join spark-submit's (`session_extensions`).

    `master` is only used when spark-submit did not set one (plain `python job.py`, tests);
    otherwise the Spark connection decides.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    # Connect to (or start) the JVM first: only then does SparkConf see the properties spark-submit
    # set with --master and --conf. Without it a job would silently override the connection's master.
    # When the JVM starts here, it starts with the master (else the launcher would set local[*])
    # and the launch properties; PYSPARK_SUBMIT_ARGS still wins over them. PySpark ignores them
    # when the JVM is already running (under spark-submit, or a second session).
    launch_master = master or LOCAL_MASTER
    launch = {"spark.master": launch_master, **launch_spark_conf(master=launch_master)}
    SparkContext._ensure_initialized(conf=SparkConf(loadDefaults=False).setAll(list(launch.items())))
    # What Spark's local[*] runs: the JVM's count follows CPU affinity and container limits, which
    # os.cpu_count() does not (a 2-CPU container on a 64-core host would size for 64).
    available_cores = SparkContext._jvm.java.lang.Runtime.getRuntime().availableProcessors()  # type: ignore[union-attr]
    # The driver's JVM in UTC, as the executors': a Python date reaches Spark (`F.lit(day)`) through
    # java.sql.Date in the JVM's default zone, which turns a day the zone skipped (2011-12-30 in
    # Pacific/Apia) into the next one.
    time_zones = SparkContext._jvm.java.util.TimeZone  # type: ignore[union-attr]
    time_zones.setDefault(time_zones.getTimeZone("UTC"))
    submitted = SparkConf()
    effective_master = submitted.get("spark.master", None) or master or LOCAL_MASTER
    on_top = merge_spark_conf(dict(submitted.getAll()), overrides)
    extensions = session_extensions(
        submitted.get("spark.sql.extensions", None), (overrides or {}).get("spark.sql.extensions")
    )
    if extensions:
        on_top["spark.sql.extensions"] = extensions
    for key, value in required_spark_conf_conflicts(on_top).items():
        log.warning(
            "Ignoring %s=%s (from spark-defaults.conf, the Spark connection's conf, the operator's conf "
            "or the job's overrides): the features are only correct with %s=%s, which the job sets. "
            "Remove the setting to silence this warning.",
            key,
            value,
            key,
            REQUIRED_SPARK_CONF[key],
        )
    final = merge_spark_conf(
        base_spark_conf(master=effective_master, submitted=on_top, available_cores=available_cores),
        on_top,
        REQUIRED_SPARK_CONF,
    )
    # Options another layer sets replace the base's whole string: the executors' zone goes back on.
    final["spark.executor.extraJavaOptions"] = executor_java_options(
        on_top.get("spark.executor.extraJavaOptions")
    )
    builder = SparkSession.builder.appName(app_name).master(effective_master)
    for key, value in final.items():
        if key != "spark.master":
            builder = builder.config(key, value)
    session = builder.getOrCreate()
    # Again on the session itself: a session that already existed keeps its own SQL settings.
    for key, value in REQUIRED_SPARK_CONF.items():
        session.conf.set(key, value)
    session.sparkContext.setLogLevel("WARN")
    log.info(
        "Spark session %s on %s (shuffle partitions %s; driver JVM collectors: %s)",
        app_name,
        effective_master,
        session.conf.get("spark.sql.shuffle.partitions"),
        ", ".join(driver_collectors(session)),
    )
    return session


def driver_collectors(session: SparkSession) -> list[str]:
    """The garbage collectors of the driver's JVM, sorted (for a local master, `launch_spark_conf`'s)."""
    management = session.sparkContext._jvm.java.lang.management.ManagementFactory  # type: ignore[union-attr]
    return sorted(bean.getName() for bean in management.getGarbageCollectorMXBeans())
