"""Benchmark the Spark user-feature job against its targets, on a synthetic lake.

    PATH=/work/main/.venv/bin:$PATH .venv/bin/python bench/feature_job.py                 # 10M rows, ~1M users
    PATH=/work/main/.venv/bin:$PATH .venv/bin/python bench/feature_job.py \\
        --users 100000 --rows 1000000 --repeat 2 --repeat-heavy 1                         # quick check

Data: `--rows` raw transactions over `--days` dates ending on DS, for `--users` users, written by
featurelake.synthetic.generate_lake under `--data-dir` (gitignored bench/data/ by default). A lake is
reused when its marker file records the same parameters. A second lake holds twice the history
(2 x `--days` dates, same users and rate, same DS); the generator seeds each date's rows from
(seed, date), so its last `--days` dates are byte-identical to the first lake's.

What is timed (wall clock, median of the runs after one warm-up; Spark session start excluded). By
default DuckDB, the incremental run and each full-mode scenario run 3 times (`--repeat`,
`--repeat-heavy`): one full run cannot tell the full/DuckDB ratio to better than about 15% on these
machines. A full run takes 23-71 s at 10M rows on 2 cores, depending on the machine and its load;
timings and the runs behind these figures are in docs/benchmarks.md.
  duckdb         tests.oracle.user_features_duckdb.compute_user_features, in a spawned child process
                 so that its peak RSS is its own (the child's VmHWM; its RSS after imports is the
                 baseline). It only returns the features as a DataFrame: this is the baseline of
                 the target. After those runs the child also times the oracle's quarantine of DS
                 (1 warm-up + `--repeat` runs), which a Spark full run writes too, for an
                 information-only ratio (`information` in the JSON; no target uses it).
  spark full     run_user_features(mode="full") for DS: the window computed from raw in one pass;
                 it also writes the quarantine and the tile of DS and the features, and reads back
                 counts. The warm-up is a full run for DS-1.
  spark rebuild  run_user_features(mode="rebuild") for DS-1, once: every tile of the window rebuilt
                 from raw, then combined from the tiles.
  spark incr.    run_user_features(mode="incremental") for DS, after the rebuild: one new tile, then
                 the combine over the window's tiles, as a daily run. The JSON's `information` also
                 holds its share without the window phase (category groups, combine and write): the
                 floor of the incremental target, what the run's other steps alone cost against a
                 full run.
  spark full 2x  as spark full, on the lake with doubled history; its runs alternate with the 120-day
                 full runs so that drift in machine load hits both alike.
Peak memory: VmHWM from /proc of the Spark JVM (the java process among this process's descendants)
and of this Python process; both peaks are reset (/proc/PID/clear_refs) before each scenario, so each
scenario reports its own peak. CPU: DuckDB's is its child process's (user + system); Spark's is the
JVM's (driver and the local[2] executors, from /proc) plus this Python driver process's (getrusage),
both also given apart in each run. Targets: spark full <= 3x duckdb; incremental <= 15% of full;
doubled history <= 1.15x. Where Spark's time goes: write_partitioned, the category groups' listing,
the partition listings and the driver's reads of raw footers and tile markers are wrapped (timing
only) into phases, and the Spark jobs of the first two carry their phase's label; what is left is the
"other" phase. Per-stage metrics come from Spark's status REST API.

Cross-check, outside the timed runs: the features of DS that the last spark full run wrote against
those DuckDB computed (written to a temporary file by the child after its timed runs), user by user
and column by column (floats within 1e-9 relative, a zero's sign too): `users_match`,
`outputs_match` and `mismatching_users` in the JSON.

Results: a rich table on stdout and JSON at `--json` (default bench/results/feature_job.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))  # so that tests.oracle imports

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DS = date(2026, 10, 28)
SEED = 7
MARKER = ".bench-lake.json"
DERIVED_DATASETS = ("tiles", "features", "quarantine", "_metrics")
TARGET_SPARK_VS_DUCKDB = 3.0
TARGET_INCREMENTAL_SHARE = 0.15
TARGET_DOUBLED_HISTORY = 1.15
LISTING_PHASE = (
    "0 partition listing (list_date_partitions, listed_date_partitions, existing_date_partitions, "
    "date_partition_exists, lookup_files, put_back_set_aside_partitions)"
)
FILE_CHECKS_PHASE = "0 driver reads of raw footers and tile markers (check_raw_files, rewritten_since_built)"
FEATURES_PHASE = (
    "3 compute the window (full: from raw; else: combine tiles; with its category groups) + write features"
)
REPORT_PHASE = (
    "4 other: categories read + id check, read definitions with Spark's listing of their files, "
    "repeated-key count, run plan, staging cleanup, report queries"
)
TOP_STAGES = 6
# The float features, compared within a tolerance (as the tests compare them); the others exactly.
FLOAT_COLUMNS = ("total_spend", "avg_spend", "std_spend", "max_spend", "spend_7d", "last_amount")
SHOWN_MISMATCHES = 5
DUCKDB_CPU = "the DuckDB child process (user + system)"
SPARK_CPU = (
    "the Spark JVM (driver and local[2] executors) + this Python driver process (user + system); "
    "apart in runs[].jvm_cpu_seconds and driver_cpu_seconds"
)

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


# ---------------------------------------------------------------------------------------------- /proc


def _status_kib(pid: int, key: str) -> int | None:
    """A `kB` line of /proc/PID/status (VmHWM, VmRSS), in KiB; None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mib(pid: int) -> float | None:
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib / 1024


def rss_mib(pid: int) -> float | None:
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib / 1024


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _stat_fields(pid: int) -> tuple[str, list[str]] | None:
    """(comm, fields after comm) of /proc/PID/stat; comm may hold spaces, so split at the last ')'."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, tail = raw.rpartition(")")
    return head.partition("(")[2], tail.split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (fields utime, stime of /proc/PID/stat)."""
    stat = _stat_fields(pid)
    if stat is None:
        return None
    _, fields = stat
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU time of this process so far, every thread (not its children)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def find_jvm_pid(root: int) -> int:
    """The java process among the descendants of `root` (PySpark's gateway JVM)."""
    children: dict[int, list[int]] = {}
    comms: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat_fields(int(entry.name))
        if stat is None:
            continue
        comm, fields = stat
        comms[int(entry.name)] = comm
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    queue, found = [root], []
    while queue:
        pid = queue.pop()
        for child in children.get(pid, []):
            queue.append(child)
            if comms.get(child) == "java":
                found.append(child)
    if not found:
        raise RuntimeError(f"no java process under pid {root}; did the Spark session start?")
    return max(found, key=lambda pid: rss_mib(pid) or 0.0)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def uptime_text() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class LakeSpec:
    """A synthetic lake: `days` dates ending on `end`, `users` users at `rate` transactions/user/day."""

    users: int
    days: int
    end: date
    rate: float
    seed: int

    @property
    def start(self) -> date:
        return self.end - timedelta(days=self.days - 1)

    @property
    def name(self) -> str:
        return f"lake-u{self.users}-d{self.days}-r{self.rate:.6g}-s{self.seed}-e{self.end:%Y%m%d}"

    def marker(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "transactions_per_user_day": self.rate,
            "seed": self.seed,
        }


def ensure_lake(spec: LakeSpec, data_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Generate the lake unless a complete one with the same parameters exists; then clear the job's
    outputs so every bench run starts from raw data only. Returns the root and its marker."""
    from featurelake.synthetic import generate_lake

    lake = data_dir / spec.name
    marker_path = lake / MARKER
    if marker_path.is_file():
        stored = json.loads(marker_path.read_text())
        if stored.get("params") == spec.marker():
            console.log(f"reusing {lake} ({stored['rows']:,} rows)")
            _clear_outputs(lake)
            return lake, stored
    if lake.exists():
        shutil.rmtree(lake)
    console.log(f"generating {spec.days} days x {spec.users:,} users at {spec.rate:.4g}/user/day into {lake}")
    summary = generate_lake(
        lake=lake,
        start=spec.start,
        end=spec.end,
        users=spec.users,
        seed=spec.seed,
        transactions_per_user_day=spec.rate,
    )
    size = sum(f.stat().st_size for f in (lake / "raw").rglob("*.parquet"))
    stored = {
        "params": spec.marker(),
        "rows": summary.total_rows,
        "bytes": size,
        "generation_seconds": round(summary.seconds, 2),
    }
    marker_path.write_text(json.dumps(stored, indent=2) + "\n")
    console.log(f"generated {summary.total_rows:,} rows ({size / 2**20:.0f} MiB) in {summary.seconds:.1f} s")
    return lake, stored


def _clear_outputs(lake: Path) -> None:
    for name in DERIVED_DATASETS:
        shutil.rmtree(lake / name, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- duckdb


def duckdb_worker(
    lake: str, ds: str, window_days: int, warmups: int, repeat: int, output: str
) -> dict[str, Any]:
    """Run in a spawned child: time compute_user_features, then the quarantine of ds (information
    only, see main); report times, CPU and this process's memory (the peak covers both). Then,
    untimed and after the peak is read, write the features to the Parquet file `output` for the
    cross-check against Spark's."""
    from tests.oracle.user_features_duckdb import compute_user_features, connect, quarantine

    con = connect()
    threads = con.execute("SELECT current_setting('threads')").fetchone()
    baseline = rss_mib(os.getpid())
    day = date.fromisoformat(ds)

    def timed(compute: Callable[[], Any]) -> tuple[float, float, int]:
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        began = time.perf_counter()
        frame = compute()
        wall = time.perf_counter() - began
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
        return wall, cpu, len(frame)

    def features() -> tuple[float, float, int]:
        return timed(lambda: compute_user_features(lake=Path(lake), ds=day, window_days=window_days, con=con))

    def quarantined() -> tuple[float, float, int]:
        return timed(lambda: quarantine(lake=Path(lake), dates=[day], con=con))

    # The target's baseline first, its runs back to back; the information-only quarantine after.
    warm = [features() for _ in range(warmups)]
    runs = [features() for _ in range(repeat)]
    for _ in range(warmups):
        quarantined()
    quarantine_runs = [quarantined() for _ in range(repeat)]
    peak = peak_rss_mib(os.getpid())
    compute_user_features(lake=Path(lake), ds=day, window_days=window_days, con=con).to_parquet(
        output, index=False
    )
    return {
        "warmup_seconds": [w for w, _, _ in warm],
        "seconds": [w for w, _, _ in runs],
        "cpu_seconds": [c for _, c, _ in runs],
        "rows": runs[-1][2],
        "quarantine_seconds": [w for w, _, _ in quarantine_runs],
        "quarantine_cpu_seconds": [c for _, c, _ in quarantine_runs],
        "quarantine_rows": quarantine_runs[-1][2],
        "threads": threads[0] if threads else None,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak,
    }


def bench_duckdb(lake: Path, *, ds: date, window_days: int, repeat: int, output: Path) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(
            duckdb_worker, str(lake), ds.isoformat(), window_days, 1, repeat, str(output)
        ).result()


# ---------------------------------------------------------------------------------------------- spark


@dataclass
class SparkRun:
    """One timed run_user_features call."""

    label: str
    seconds: float
    # the JVM's (driver and local[2] executors) plus this Python driver process's, user + system
    cpu_seconds: float
    jvm_cpu_seconds: float
    driver_cpu_seconds: float
    phases: dict[str, float]
    report: dict[str, Any]
    load_after: list[float]


@dataclass
class Scenario:
    """The timed runs of one Spark scenario and the peaks reached while they ran."""

    name: str
    runs: list[SparkRun] = field(default_factory=list)
    jvm_peak_rss_mib: float | None = None
    python_peak_rss_mib: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def median_cpu(self) -> float:
        return statistics.median(r.cpu_seconds for r in self.runs)


class PhaseRecorder:
    """Wraps names that featurelake.user_features_run calls to time them into phases: each write
    (write_partitioned, its Spark jobs labelled too), the listing of the window's category groups
    (an action of its own, before the features write; timed into the window phase, whose work it
    is), the partition listings, and the driver's reads of raw footers and tile markers. It does no
    work of its own, so the timed runs are unchanged; what no wrapper times is the report phase."""

    # Driver-side Hadoop FileSystem calls: no Spark job to label.
    DRIVER_PHASES: ClassVar[dict[str, str]] = {
        "list_date_partitions": LISTING_PHASE,
        "listed_date_partitions": LISTING_PHASE,
        "existing_date_partitions": LISTING_PHASE,
        "date_partition_exists": LISTING_PHASE,
        "lookup_files": LISTING_PHASE,
        "put_back_set_aside_partitions": LISTING_PHASE,
        "check_raw_files": FILE_CHECKS_PHASE,
        "rewritten_since_built": FILE_CHECKS_PHASE,
    }

    def __init__(self, spark: SparkSession) -> None:
        import featurelake.user_features_run as job_module

        self._sc = spark.sparkContext
        self._module = job_module
        self._originals: dict[str, Callable[..., Any]] = {
            name: getattr(job_module, name)
            for name in (
                "write_partitioned",
                *self.DRIVER_PHASES,
                "category_groups",
                "lookup_category_groups",
            )
        }
        self.current: dict[str, float] = {}
        self.run_label = ""
        self._active = False
        job_module.write_partitioned = self._write
        for name, phase in self.DRIVER_PHASES.items():
            setattr(job_module, name, self._timed(self._originals[name], phase, label_jobs=False))
        for name in ("category_groups", "lookup_category_groups"):
            setattr(job_module, name, self._timed(self._originals[name], FEATURES_PHASE))

    @staticmethod
    def phase_of(path: str) -> str:
        for key, phase in (
            ("/quarantine/", "1 validate + mark rows, write quarantine"),
            ("/tiles/", "2 build + write tiles"),
            ("/features/", FEATURES_PHASE),
        ):
            if key in path:
                return phase
        return f"write {path}"

    @contextmanager
    def _phase(self, phase: str, *, label_jobs: bool = True) -> Iterator[None]:
        """Add the block's wall time to `phase`; with `label_jobs`, its Spark jobs carry the phase
        in their description (the UI breakdown), and later jobs the report phase again. A wrapped
        call inside another one counts in the outer one's phase only, never twice."""
        if self._active:
            yield
            return
        self._active = True
        if label_jobs:
            self._sc.setJobDescription(f"{self.run_label}|{phase}")
        began = time.perf_counter()
        try:
            yield
        finally:
            self.current[phase] = self.current.get(phase, 0.0) + time.perf_counter() - began
            self._active = False
            if label_jobs:
                self._sc.setJobDescription(f"{self.run_label}|{REPORT_PHASE}")

    def _write(self, df: Any, path: str, *args: Any, **kwargs: Any) -> None:
        with self._phase(self.phase_of(path)):
            self._originals["write_partitioned"](df, path, *args, **kwargs)

    def _timed(
        self, original: Callable[..., Any], phase: str, *, label_jobs: bool = True
    ) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._phase(phase, label_jobs=label_jobs):
                return original(*args, **kwargs)

        return timed

    @contextmanager
    def run(self, label: str) -> Iterator[dict[str, float]]:
        self.run_label = label
        self.current = {}
        self._sc.setJobDescription(f"{label}|{REPORT_PHASE}")
        try:
            yield self.current
        finally:
            self._sc.setJobDescription(None)  # type: ignore[arg-type]

    def close(self) -> None:
        for name, original in self._originals.items():
            setattr(self._module, name, original)


def spark_run(
    spark: SparkSession,
    recorder: PhaseRecorder,
    jvm_pid: int,
    *,
    label: str,
    lake: Path,
    ds: date,
    window_days: int,
    mode: str,
) -> SparkRun:
    from featurelake.user_features_run import run_user_features

    with recorder.run(label) as phases:
        cpu_before = cpu_seconds(jvm_pid) or 0.0
        driver_before = own_cpu_seconds()
        began = time.perf_counter()
        report = run_user_features(spark, ds=ds, lake=str(lake), window_days=window_days, mode=mode)
        seconds = time.perf_counter() - began
        driver_cpu = own_cpu_seconds() - driver_before
        jvm_cpu = (cpu_seconds(jvm_pid) or 0.0) - cpu_before
    timed = sum(phases.values())
    phases = {**phases, REPORT_PHASE: seconds - timed}
    run = SparkRun(
        label=label,
        seconds=seconds,
        cpu_seconds=jvm_cpu + driver_cpu,
        jvm_cpu_seconds=jvm_cpu,
        driver_cpu_seconds=driver_cpu,
        phases=dict(sorted(phases.items())),
        report=asdict(report),
        load_after=load_average(),
    )
    console.log(
        f"{label}: {seconds:.1f} s (CPU: JVM {jvm_cpu:.1f} s + Python driver {driver_cpu:.1f} s, "
        f"{len(report.tiles_built)} tile(s), {report.users_written:,} users) "
        + ", ".join(f"{k[2:].split(' (')[0]} {v:.1f}" for k, v in run.phases.items())
    )
    return run


@contextmanager
def measured(scenario: Scenario, jvm_pid: int) -> Iterator[Scenario]:
    """Reset the JVM's and this process's peak RSS, run the block, then keep the largest peak the
    scenario has reached over all its blocks."""
    reset_peak_rss(jvm_pid)
    reset_peak_rss(os.getpid())
    yield scenario
    for attr, pid in (("jvm_peak_rss_mib", jvm_pid), ("python_peak_rss_mib", os.getpid())):
        peaks = [p for p in (getattr(scenario, attr), peak_rss_mib(pid)) if p is not None]
        setattr(scenario, attr, max(peaks, default=None))


def _ui_get(base: str, path: str) -> Any:
    with urllib.request.urlopen(f"{base}{path}", timeout=30) as response:
        return json.load(response)


def _ui_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def stage_breakdown(spark: SparkSession, labels: set[str]) -> dict[str, Any]:
    """Per run label and phase: job wall time, task time, GC, shuffle and spill, plus the stages, from
    Spark's status REST API (the UI must be enabled)."""
    base = spark.sparkContext.uiWebUrl
    if not base:
        return {"error": "Spark UI disabled; no stage metrics"}
    app = spark.sparkContext.applicationId
    jobs = _ui_get(base, f"/api/v1/applications/{app}/jobs")
    stages = {(s["stageId"], s["attemptId"]): s for s in _ui_get(base, f"/api/v1/applications/{app}/stages")}
    latest = {}
    for (stage_id, attempt), stage in stages.items():
        if stage_id not in latest or attempt > latest[stage_id]["attemptId"]:
            latest[stage_id] = stage
    out: dict[str, Any] = {}
    for job in sorted(jobs, key=lambda j: j["jobId"]):
        label, _, phase = (job.get("description") or "").partition("|")
        if label not in labels:
            continue
        entry = out.setdefault(label, {}).setdefault(
            phase,
            {
                "jobs": 0,
                "job_wall_seconds": 0.0,
                "task_seconds": 0.0,
                "task_cpu_seconds": 0.0,
                "gc_seconds": 0.0,
                "input_mib": 0.0,
                "shuffle_read_mib": 0.0,
                "shuffle_write_mib": 0.0,
                "spill_disk_mib": 0.0,
                "spill_memory_mib": 0.0,
                "stages": [],
            },
        )
        entry["jobs"] += 1
        start, end = _ui_time(job.get("submissionTime")), _ui_time(job.get("completionTime"))
        if start is not None and end is not None:
            entry["job_wall_seconds"] += end - start
        for stage_id in job["stageIds"]:
            stage = latest.get(stage_id)
            if stage is None or stage["status"] != "COMPLETE":
                continue
            s_start, s_end = _ui_time(stage.get("submissionTime")), _ui_time(stage.get("completionTime"))
            entry["task_seconds"] += stage["executorRunTime"] / 1000
            entry["task_cpu_seconds"] += stage["executorCpuTime"] / 1e9
            entry["gc_seconds"] += stage["jvmGcTime"] / 1000
            entry["input_mib"] += stage["inputBytes"] / 2**20
            entry["shuffle_read_mib"] += stage["shuffleReadBytes"] / 2**20
            entry["shuffle_write_mib"] += stage["shuffleWriteBytes"] / 2**20
            entry["spill_disk_mib"] += stage["diskBytesSpilled"] / 2**20
            entry["spill_memory_mib"] += stage["memoryBytesSpilled"] / 2**20
            entry["stages"].append(
                {
                    "stage": stage_id,
                    "name": stage["name"],
                    "tasks": stage["numTasks"],
                    "wall_seconds": None if s_start is None or s_end is None else round(s_end - s_start, 2),
                    "task_seconds": round(stage["executorRunTime"] / 1000, 2),
                    "gc_seconds": round(stage["jvmGcTime"] / 1000, 2),
                    "shuffle_write_mib": round(stage["shuffleWriteBytes"] / 2**20, 1),
                    "spill_disk_mib": round(stage["diskBytesSpilled"] / 2**20, 1),
                }
            )
    return out


# ---------------------------------------------------------------------------------------------- cross-check


def copy_features(lake: Path, ds: date, target: Path) -> None:
    """Copy the features partition of `ds` under `lake` to `target` (nothing when there is none)."""
    from featurelake.lake import LakeLayout

    partition = Path(LakeLayout.partition(LakeLayout(str(lake)).user_features, ds))
    if partition.is_dir():
        shutil.copytree(partition, target)


def _shown(value: Any) -> str:
    """A value for the report; a float as repr shows it, so that -0.0 shows its sign."""
    return repr(float(value)) if isinstance(value, float) else str(value)


def compare_outputs(spark_output: Path, duckdb_output: Path) -> dict[str, Any]:
    """Spark's features (the partition directory `spark_output`) against DuckDB's (the Parquet file
    `duckdb_output`): the same user_ids, once each, and for every user every feature column equal,
    floats within 1e-9 relative (1e-12 absolute) as the tests compare them, and a zero of the same
    sign (docs/features.md: never -0.0), the others exactly. Returns the counts and the first
    mismatches."""
    import numpy as np
    import pandas as pd

    from tests.oracle.user_features_duckdb import FEATURE_COLUMNS

    began = time.perf_counter()
    duck = pd.read_parquet(duckdb_output)
    files = sorted(spark_output.glob("*.parquet")) if spark_output.is_dir() else []
    spark = pd.read_parquet(spark_output) if files else duck.iloc[:0]
    spark_ids, duck_ids = set(spark["user_id"]), set(duck["user_id"])
    both = spark.merge(duck, on="user_id", suffixes=("_spark", "_duckdb")).sort_values(
        "user_id", ignore_index=True
    )
    missing_columns = [c for c in FEATURE_COLUMNS if c not in spark.columns or c not in duck.columns]
    differs: dict[str, Any] = {}
    for column in FEATURE_COLUMNS[1:]:
        if column in missing_columns:
            continue
        got, want = both[f"{column}_spark"], both[f"{column}_duckdb"]
        if column in FLOAT_COLUMNS:
            g, w = got.to_numpy(float), want.to_numpy(float)
            same = (np.isnan(g) & np.isnan(w)) | np.isclose(g, w, rtol=1e-9, atol=1e-12)
            # -0.0 == 0.0 in any comparison: the sign of a zero is compared apart
            same &= ~((g == 0) & (w == 0) & (np.signbit(g) != np.signbit(w)))
        else:
            if column == "feature_date":
                got, want = pd.to_datetime(got).dt.date, pd.to_datetime(want).dt.date
            elif column == "last_transaction_ts":
                got, want = pd.to_datetime(got, utc=True), pd.to_datetime(want, utc=True)
            else:
                got, want = got.astype(object), want.astype(object)
            same = ((got == want) | (got.isna() & want.isna())).to_numpy(bool)
        if not same.all():
            differs[column] = ~same
    bad_rows = np.logical_or.reduce(list(differs.values())) if differs else np.zeros(len(both), bool)
    only_spark, only_duck = sorted(spark_ids - duck_ids), sorted(duck_ids - spark_ids)
    duplicated = {
        "spark": int(spark["user_id"].duplicated().sum()),
        "duckdb": int(duck["user_id"].duplicated().sum()),
    }
    mismatching = set(both["user_id"][bad_rows]) | set(only_spark) | set(only_duck)
    first = [
        {
            "user_id": both["user_id"].iat[i],
            **{
                column: {
                    "spark": _shown(both[f"{column}_spark"].iat[i]),
                    "duckdb": _shown(both[f"{column}_duckdb"].iat[i]),
                }
                for column, bad in differs.items()
                if bad[i]
            },
        }
        for i in np.flatnonzero(bad_rows)[:SHOWN_MISMATCHES]
    ]
    return {
        "compared": "the features of DS of the last spark full run against DuckDB's: user_ids, then "
        "every column of every user (floats within 1e-9 relative or 1e-12 absolute, a zero's sign "
        "too; the others exactly)",
        "users_spark": len(spark),
        "users_duckdb": len(duck),
        "users_only_in_spark": len(only_spark),
        "users_only_in_duckdb": len(only_duck),
        "duplicate_user_ids": duplicated,
        "missing_columns": missing_columns,
        "mismatching_users": len(mismatching),
        "mismatching_users_by_column": {column: int(bad.sum()) for column, bad in differs.items()},
        "first_mismatches": first,
        "first_users_only_in_spark": only_spark[:SHOWN_MISMATCHES],
        "first_users_only_in_duckdb": only_duck[:SHOWN_MISMATCHES],
        "seconds": round(time.perf_counter() - began, 2),
    }


# ---------------------------------------------------------------------------------------------- report


def verdict(ratio: float | None, target: float) -> str:
    if ratio is None:
        return "n/a"
    return "PASS" if ratio <= target else "MISS"


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def render(results: dict[str, Any]) -> None:
    timing = Table(
        title=f"user_features benchmark: {results['params']['summary']}",
        caption=f"CPU s: of duckdb rows, {DUCKDB_CPU}; of spark rows, {SPARK_CPU}",
    )
    for column in ("measurement", "runs", "median s", "min s", "max s", "CPU s (median)", "peak RSS MiB"):
        timing.add_column(column, justify="left" if column == "measurement" else "right")
    for row in results["timings"]:
        timing.add_row(
            row["name"],
            str(len(row["seconds"])),
            _fmt(row["median_seconds"], ".2f"),
            _fmt(min(row["seconds"]) if row["seconds"] else None, ".2f"),
            _fmt(max(row["seconds"]) if row["seconds"] else None, ".2f"),
            _fmt(row.get("median_cpu_seconds")),
            row["peak_rss"],
        )
    console.print(timing)

    targets = Table(title="Targets")
    for column in ("target", "wall-clock ratio", "limit", "verdict", "CPU-time ratio (info)"):
        targets.add_column(column)
    for target in results["targets"]:
        style = "green" if target["verdict"] == "PASS" else "red"
        targets.add_row(
            target["name"],
            _fmt(target["ratio"], ".3f"),
            f"<= {target['limit']}",
            f"[{style}]{target['verdict']}[/]",
            _fmt(target["cpu_ratio"], ".3f"),
        )
    console.print(targets)
    for item in results.get("information", []):
        console.print(
            f"Information, not a target: {item['name']} = {_fmt(item['ratio'], '.3f')} ({item['note']})"
        )

    for name, phases in results.get("phases", {}).items():
        table = Table(
            title=f"Where Spark's time goes: {name} (median per phase; jobs/tasks from the last run)"
        )
        for column in (
            "phase",
            "wall s",
            "share",
            "jobs",
            "task s",
            "GC s",
            "shuffle write MiB",
            "spill MiB",
            "widest stage: tasks",
        ):
            table.add_column(column, justify="left" if column == "phase" else "right")
        total = sum(p["median_seconds"] for p in phases.values())
        for phase, p in phases.items():
            ui = p.get("ui") or {}
            table.add_row(
                phase,
                _fmt(p["median_seconds"]),
                f"{p['median_seconds'] / total:.0%}" if total else "-",
                str(ui.get("jobs", "-")),
                _fmt(ui.get("task_seconds")),
                _fmt(ui.get("gc_seconds")),
                _fmt(ui.get("shuffle_write_mib"), ".0f"),
                _fmt(ui.get("spill_disk_mib"), ".0f"),
                str(max((s["tasks"] for s in ui.get("stages", [])), default="-")),
            )
        console.print(table)
        stages = [(phase, st) for phase, p in phases.items() for st in (p.get("ui") or {}).get("stages", [])]
        stages.sort(key=lambda item: item[1]["wall_seconds"] or 0.0, reverse=True)
        top = Table(title=f"Slowest stages: {name} (last run)")
        for column in (
            "stage",
            "phase",
            "tasks",
            "wall s",
            "task s",
            "GC s",
            "shuffle write MiB",
            "spill MiB",
        ):
            top.add_column(column, justify="left" if column == "phase" else "right")
        for phase, st in stages[:TOP_STAGES]:
            top.add_row(
                str(st["stage"]),
                phase,
                str(st["tasks"]),
                _fmt(st["wall_seconds"], ".2f"),
                _fmt(st["task_seconds"]),
                _fmt(st["gc_seconds"]),
                _fmt(st["shuffle_write_mib"], ".0f"),
                _fmt(st["spill_disk_mib"], ".0f"),
            )
        console.print(top)


def timing_row(
    name: str, seconds: list[float], cpu: list[float], peak_rss: str, *, cpu_of: str
) -> dict[str, Any]:
    return {
        "name": name,
        "seconds": [round(s, 3) for s in seconds],
        "median_seconds": statistics.median(seconds) if seconds else None,
        "median_cpu_seconds": statistics.median(cpu) if cpu else None,
        "cpu_of": cpu_of,
        "peak_rss": peak_rss,
    }


def phase_summary(scenario: Scenario, ui: dict[str, Any]) -> dict[str, Any]:
    phases = sorted({p for r in scenario.runs for p in r.phases})
    last = ui.get(scenario.runs[-1].label, {}) if scenario.runs else {}
    return {
        phase: {
            "median_seconds": statistics.median(r.phases.get(phase, 0.0) for r in scenario.runs),
            "ui": last.get(phase),
        }
        for phase in phases
    }


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=120, help="history of the base lake, in days")
    parser.add_argument("--rows", type=int, default=10_000_000, help="raw rows in the base lake (about)")
    parser.add_argument("--window-days", type=int, default=90)
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs of DuckDB and of the Spark incremental run"
    )
    parser.add_argument(
        "--repeat-heavy",
        type=int,
        default=3,
        help="timed runs of each Spark full-mode scenario (120-day and doubled history); one takes "
        "23-71 s at the default size on 2 cores",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--ds", type=date.fromisoformat, default=DS, help="run date, the lakes' last date")
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / "bench" / "data")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "bench" / "results" / "feature_job.json")
    parser.add_argument(
        "--driver-memory",
        default=None,
        help="Spark driver JVM heap, e.g. 4g (default: Spark's own, 1g); set before the JVM starts",
    )
    parser.add_argument("--skip-doubled", action="store_true", help="skip the doubled-history lake")
    args = parser.parse_args(argv)
    for name in ("users", "days", "rows", "window_days", "repeat", "repeat_heavy"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.days < args.window_days + 1:
        parser.error(f"--days must exceed --window-days (history beyond the window), got {args.days}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rate = args.rows / (args.days * args.users)
    ds: date = args.ds
    base_spec = LakeSpec(users=args.users, days=args.days, end=ds, rate=rate, seed=args.seed)
    doubled_spec = LakeSpec(users=args.users, days=2 * args.days, end=ds, rate=rate, seed=args.seed)
    began = time.perf_counter()
    uptime_start = uptime_text()
    console.log(f"{uptime_start}; {os.cpu_count()} cores")

    lake, lake_info = ensure_lake(base_spec, args.data_dir)
    doubled_lake, doubled_info = (
        (None, None) if args.skip_doubled else ensure_lake(doubled_spec, args.data_dir)
    )

    # The two engines' features of DS, kept for the cross-check after the timed runs.
    outputs = tempfile.TemporaryDirectory(prefix="feature-job-outputs-")
    duckdb_output = Path(outputs.name) / "duckdb.parquet"
    spark_output = Path(outputs.name) / "spark"

    # DuckDB first, in its own process, while no JVM is running.
    console.log(f"DuckDB: 1 warm-up + {args.repeat} runs in a spawned child process")
    load_before_duckdb = load_average()
    duck = bench_duckdb(lake, ds=ds, window_days=args.window_days, repeat=args.repeat, output=duckdb_output)
    console.log(
        f"DuckDB: {[round(s, 2) for s in duck['seconds']]} s, {duck['rows']:,} users, "
        f"peak RSS {duck['peak_rss_mib']:.0f} MiB (baseline {duck['baseline_rss_mib']:.0f}); "
        f"quarantine of DS (information) {[round(s, 2) for s in duck['quarantine_seconds']]} s, "
        f"{duck['quarantine_rows']:,} rows"
    )

    if args.driver_memory:
        # The gateway JVM reads this when it starts; spark.driver.memory set on a builder is too late.
        os.environ["PYSPARK_SUBMIT_ARGS"] = f"--driver-memory {args.driver_memory} pyspark-shell"
    from featurelake.spark_session import build_spark_session, driver_collectors

    session_began = time.perf_counter()
    spark = build_spark_session("bench", master="local[2]")
    session_seconds = time.perf_counter() - session_began
    jvm_pid = find_jvm_pid(os.getpid())
    jvm_max_heap_mib = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**20  # type: ignore[union-attr]
    jvm_collectors = driver_collectors(spark)
    console.log(
        f"Spark session in {session_seconds:.1f} s (not timed); JVM pid {jvm_pid}, "
        f"max heap {jvm_max_heap_mib:.0f} MiB, collectors {', '.join(jvm_collectors)}"
    )
    recorder = PhaseRecorder(spark)
    warmup = Scenario("spark warm-up (full, DS-1)")
    full = Scenario(f"spark full, {args.days}-day lake")
    doubled = Scenario(f"spark full, {2 * args.days}-day lake")
    rebuild = Scenario("spark rebuild, DS-1 (every tile of the window, then combine)")
    incremental = Scenario("spark incremental (after the rebuild for DS-1)")
    scenarios = (warmup, full, doubled, rebuild, incremental)

    def run(scenario: Scenario, label: str, lake_root: Path, day: date, mode: str) -> SparkRun:
        with measured(scenario, jvm_pid):
            return spark_run(
                spark,
                recorder,
                jvm_pid,
                label=label,
                lake=lake_root,
                ds=day,
                window_days=args.window_days,
                mode=mode,
            )

    try:
        warmup.runs.append(run(warmup, "warmup-full-ds-1", lake, ds - timedelta(days=1), "full"))
        # Alternate the two full scenarios so that drifting machine load hits both alike.
        for i in range(args.repeat_heavy):
            full.runs.append(run(full, f"full-{i}", lake, ds, "full"))
            if doubled_lake is not None:
                doubled.runs.append(run(doubled, f"doubled-{i}", doubled_lake, ds, "full"))
        # Untimed: the last full run's features of DS, which the incremental runs below replace.
        copy_features(lake, ds, spark_output)
        # A full run reads and writes no tile but its own: the rebuild for DS-1 writes the window's
        # tiles, so that each incremental run for DS then builds the one tile of DS, as a daily run does.
        rebuild.runs.append(run(rebuild, "rebuild-ds-1", lake, ds - timedelta(days=1), "rebuild"))
        for i in range(args.repeat):
            incremental.runs.append(run(incremental, f"incremental-{i}", lake, ds, "incremental"))
        for r in incremental.runs:
            if r.report["tiles_built"] != [ds.isoformat()]:
                raise RuntimeError(
                    f"incremental run {r.label} built {r.report['tiles_built']}, expected [{ds}]"
                )
        labels = {r.label for s in scenarios for r in s.runs}
        try:
            ui = stage_breakdown(spark, labels)
        except OSError as error:  # the UI is a diagnostic; the timings stand without it
            ui = {"error": f"Spark status API unreachable: {error}"}
    finally:
        recorder.close()
        spark.stop()

    python_lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # After the peak is read: the comparison's frames are no part of any scenario.
    output_check = compare_outputs(spark_output, duckdb_output)
    outputs.cleanup()
    duck_median = statistics.median(duck["seconds"])
    duck_with_quarantine = duck_median + statistics.median(duck["quarantine_seconds"])

    def ratio(numerator: Scenario, denominator: Scenario | None, *, cpu: bool = False) -> float | None:
        if not numerator.runs or denominator is None or not denominator.runs:
            return None
        if cpu:
            return numerator.median_cpu / denominator.median_cpu
        return numerator.median / denominator.median

    spark_quarantine_rows = full.runs[-1].report["quarantined_rows"] if full.runs else None
    spark_peak = f"JVM {_fmt(full.jvm_peak_rss_mib, '.0f')} / py {_fmt(full.python_peak_rss_mib, '.0f')}"
    results: dict[str, Any] = {
        "params": {
            "summary": f"{lake_info['rows']:,} rows, {args.days} days, {args.users:,} users, "
            f"window {args.window_days} d, ds {ds}",
            "users": args.users,
            "days": args.days,
            "rows_requested": args.rows,
            "rows": lake_info["rows"],
            "transactions_per_user_day": rate,
            "window_days": args.window_days,
            "ds": ds.isoformat(),
            "seed": args.seed,
            "repeat": args.repeat,
            "repeat_heavy": args.repeat_heavy,
            "lake": str(lake),
            "lake_bytes": lake_info["bytes"],
            "doubled_lake": None if doubled_lake is None else str(doubled_lake),
            "doubled_rows": None if doubled_info is None else doubled_info["rows"],
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        },
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "uptime_start": uptime_start,
            "uptime_end": uptime_text(),
            "load_before_duckdb": load_before_duckdb,
            "spark_master": "local[2]",
            "spark_session_start_seconds": round(session_seconds, 2),
            "jvm_max_heap_mib": round(jvm_max_heap_mib),
            "jvm_collectors": jvm_collectors,
            "duckdb_threads": duck["threads"],
            "wall_seconds_total": round(time.perf_counter() - began, 1),
        },
        "timings": [
            timing_row(
                "duckdb compute_user_features",
                duck["seconds"],
                duck["cpu_seconds"],
                f"{duck['peak_rss_mib']:.0f} (child; {duck['baseline_rss_mib']:.0f} after imports)",
                cpu_of=DUCKDB_CPU,
            ),
            timing_row(
                "duckdb quarantine of DS (information)",
                duck["quarantine_seconds"],
                duck["quarantine_cpu_seconds"],
                "(same child)",
                cpu_of=DUCKDB_CPU,
            ),
            *(
                timing_row(
                    s.name,
                    [r.seconds for r in s.runs],
                    [r.cpu_seconds for r in s.runs],
                    f"JVM {_fmt(s.jvm_peak_rss_mib, '.0f')} / py {_fmt(s.python_peak_rss_mib, '.0f')}",
                    cpu_of=SPARK_CPU,
                )
                for s in scenarios
                if s.runs
            ),
        ],
        "memory": {
            "method": "VmHWM of /proc/PID/status; JVM and Python peaks reset via /proc/PID/clear_refs "
            "before each scenario; DuckDB in a spawned child process (its own VmHWM)",
            "duckdb_child_peak_rss_mib": duck["peak_rss_mib"],
            "duckdb_child_rss_after_imports_mib": duck["baseline_rss_mib"],
            "spark_full_jvm_peak_rss_mib": full.jvm_peak_rss_mib,
            "spark_doubled_jvm_peak_rss_mib": doubled.jvm_peak_rss_mib,
            "spark_rebuild_jvm_peak_rss_mib": rebuild.jvm_peak_rss_mib,
            "spark_incremental_jvm_peak_rss_mib": incremental.jvm_peak_rss_mib,
            "python_driver_peak_rss_mib_during_spark": full.python_peak_rss_mib,
            "python_lifetime_peak_rss_mib": python_lifetime_peak,
            "summary_full": spark_peak,
        },
        "targets": [
            {
                "name": "spark full / duckdb",
                "ratio": full.median / duck_median if full.runs else None,
                "cpu_ratio": full.median_cpu / statistics.median(duck["cpu_seconds"]) if full.runs else None,
                "limit": TARGET_SPARK_VS_DUCKDB,
            },
            {
                "name": "incremental / full",
                "ratio": ratio(incremental, full),
                "cpu_ratio": ratio(incremental, full, cpu=True),
                "limit": TARGET_INCREMENTAL_SHARE,
            },
            {
                "name": f"full {2 * args.days}-day / full {args.days}-day history",
                "ratio": ratio(doubled, full),
                "cpu_ratio": ratio(doubled, full, cpu=True),
                "limit": TARGET_DOUBLED_HISTORY,
            },
        ],
        # Not a target: the target's DuckDB baseline returns the features only, while a Spark full
        # run also validates the window, and writes the quarantine and the tile of DS.
        "information": [
            {
                "name": "spark full / (duckdb features + duckdb quarantine of DS)",
                "ratio": full.median / duck_with_quarantine if full.runs else None,
                "duckdb_quarantine_rows": duck["quarantine_rows"],
                "spark_quarantine_rows": spark_quarantine_rows,
                "note": f"quarantined rows: DuckDB {duck['quarantine_rows']:,}, Spark {_fmt(spark_quarantine_rows, ',')}",
            },
            {
                "name": "incremental without its window phase / full",
                "ratio": statistics.median(
                    r.seconds - r.phases.get(FEATURES_PHASE, 0.0) for r in incremental.runs
                )
                / full.median
                if incremental.runs and full.runs
                else None,
                "note": "the incremental share's floor: everything an incremental run does besides "
                "listing the window's category groups, combining its tiles and writing the features (the "
                "tile and quarantine of DS, partition listings, the driver's reads of raw footers and tile "
                "markers, and the other phase: categories read + id check, read definitions, the "
                "repeated-key count, run plan, staging cleanup, report queries)",
            },
        ],
        "phases": {s.name: phase_summary(s, ui) for s in scenarios if s is not warmup and s.runs},
        "runs": {s.name: [asdict(r) for r in s.runs] for s in scenarios},
        "spark_ui_error": ui.get("error") if isinstance(ui.get("error"), str) else None,
    }
    for target in results["targets"]:
        target["verdict"] = verdict(target["ratio"], target["limit"])
    # Spark's full run against DuckDB, every user and feature (compare_outputs, untimed).
    results["users_match"] = output_check["users_only_in_spark"] == output_check[
        "users_only_in_duckdb"
    ] == 0 and not any(output_check["duplicate_user_ids"].values())
    results["outputs_match"] = output_check["mismatching_users"] == 0 and not output_check["missing_columns"]
    results["mismatching_users"] = output_check["mismatching_users"]
    results["output_check"] = output_check
    if results["outputs_match"]:
        console.log(
            f"outputs match: Spark's full run and DuckDB give the same {output_check['users_duckdb']:,} "
            f"users and features (compared in {output_check['seconds']:.1f} s, untimed)"
        )
    else:
        console.log(
            f"[red]outputs differ: {output_check['mismatching_users']:,} mismatching users of "
            f"Spark {output_check['users_spark']:,} / DuckDB {output_check['users_duckdb']:,} "
            f"(only in Spark {output_check['users_only_in_spark']:,}, only in DuckDB "
            f"{output_check['users_only_in_duckdb']:,}, duplicate ids {output_check['duplicate_user_ids']}, "
            f"missing columns {output_check['missing_columns']}); by column "
            f"{output_check['mismatching_users_by_column']}[/]"
        )
        for mismatch in output_check["first_mismatches"]:
            console.log(f"[red]  {mismatch}[/]")
        for side in ("spark", "duckdb"):
            if output_check[f"first_users_only_in_{side}"]:
                console.log(
                    f"[red]  first users only in {side}: {output_check[f'first_users_only_in_{side}']}[/]"
                )

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    render(results)
    console.print(f"{results['machine']['uptime_end']}; results in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
