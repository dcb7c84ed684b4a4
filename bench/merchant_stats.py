"""The Dask merchant statistics job on the feature job benchmark's lake, against DuckDB on the same
files (a ratio in the same script: the machines are shared and noisy).

    .venv/bin/python bench/merchant_stats.py [--rows 10000000] [--window-days 120] \
        [--workers 2] [--memory-limit 1500MiB] [--json out.json]

It uses bench/feature_job.py's lake (10M rows over 120 days for 1M users by default, generated when
missing; `--rows 80000000` makes a lake whose window is larger than the workers' memory).
Reported: the window's in-memory size (as pandas frames) against the workers' memory limit
(`--workers` x `--memory-limit`), the Dask run's wall time, its workers' peak RSS (sampled) and how
many workers their nannies restarted, DuckDB's wall time for the same statistics (the test
oracle's SQL), and whether both give the same merchants, counts and sums.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.feature_job import DS, SEED, LakeSpec, ensure_lake  # noqa: E402
from featurelake.merchant_stats import compute_merchant_stats, read_parquet_frame  # noqa: E402
from tests.oracle.merchant_stats_duckdb import oracle  # noqa: E402

console = Console(width=None if Console().is_terminal else 140)


def window_bytes_in_pandas(lake: Path, ds: date, window_days: int, sample_days: int = 3) -> int:
    """The window's rows as pandas DataFrames, estimated from `sample_days` dates."""
    sizes = []
    for offset in range(sample_days):
        day = ds - timedelta(days=offset)
        frame = read_parquet_frame(str(lake / "raw" / "transactions" / f"date={day.isoformat()}"))
        sizes.append(int(frame.memory_usage(deep=True).sum()))
    return int(statistics.mean(sizes) * window_days)


class PeakRss:
    """Samples the summed RSS of a set of processes every 50 ms; `peak` is the highest sum."""

    def __init__(self, pids: list[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for process in self.processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--window-days", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="1500MiB", help="per Dask worker process")
    parser.add_argument("--buckets", type=int, default=None, help="staging buckets (default: the job's)")
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / "bench" / "data")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    spec = LakeSpec(
        users=args.users, days=args.days, end=DS, rate=args.rows / (args.days * args.users), seed=SEED
    )
    lake, _ = ensure_lake(spec, args.data_dir)
    window_bytes = window_bytes_in_pandas(lake, DS, args.window_days)
    limit = parse_bytes(args.memory_limit) * args.workers

    started = time.perf_counter()
    want = oracle(lake, DS, args.window_days)
    duckdb_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="merchant-stats-bench-") as scratch:
        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=args.memory_limit,
            local_directory=scratch,
            dashboard_address="127.0.0.1:0",
        )
        with cluster, Client(cluster) as client:
            pids = list(client.run(os.getpid).values())
            output = Path(scratch) / "out"
            with PeakRss(pids) as rss:
                started = time.perf_counter()
                report = compute_merchant_stats(
                    client,
                    raw_transactions=str(lake / "raw" / "transactions"),
                    output=str(output),
                    staging=str(Path(scratch) / "staging"),
                    ds=DS,
                    window_days=args.window_days,
                    buckets=args.buckets,
                )
                dask_seconds = time.perf_counter() - started
            # A nanny restarts a worker that passes 95% of its limit: its process id changes.
            restarted = len(set(pids) - set(client.run(os.getpid).values()))
            got = pd.read_parquet(output).sort_values("merchant_id").reset_index(drop=True)

    same = (
        got["merchant_id"].tolist() == want["merchant_id"].tolist()
        and got["transaction_count"].tolist() == want["transaction_count"].astype("int64").tolist()
        and got["unique_users"].tolist() == want["unique_users"].astype("int64").tolist()
        and bool(
            (
                (got["total_amount"] - want["total_amount"]).abs()
                <= 1e-6 * want["total_amount"].abs().clip(lower=1)
            ).all()
        )
    )
    results = {
        "rows_read": report.rows_read,
        "rows_counted": report.rows_counted,
        "merchants": report.merchants,
        "buckets": report.buckets,
        "window_in_pandas_mib": window_bytes / 2**20,
        "workers_memory_limit_mib": limit / 2**20,
        "window_over_limit": window_bytes / limit,
        "dask_seconds": dask_seconds,
        "dask_workers_peak_rss_mib": rss.peak / 2**20,
        "workers_restarted": restarted,
        "duckdb_seconds": duckdb_seconds,
        "dask_over_duckdb": dask_seconds / duckdb_seconds,
        "same_result": same,
    }
    table = Table(
        title=f"Dask merchant stats, {args.window_days} days, {args.workers} workers x {args.memory_limit}"
    )
    table.add_column("measurement")
    table.add_column("value")
    for name, value in results.items():
        table.add_row(name, f"{value:,.2f}" if isinstance(value, float) else str(value))
    console.print(table)
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
