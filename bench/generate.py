"""Benchmark the synthetic data generator: ~5M rows into a temporary lake, end to end (population,
generation, Parquet writing), reported in rows per second.

    .venv/bin/python bench/generate.py [--users 100000] [--days 100] [--rate 0.5] [--workers 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from featurelake.synthetic import DEFAULT_WORKERS, generate_lake

START = date(2026, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.5, help="transactions per user per day")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best and the median are reported")
    args = parser.parse_args()

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pyarrow {pa.__version__}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"users={args.users:,} days={args.days} rate={args.rate} seed={args.seed} workers={args.workers}")
    speeds = []
    for run in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="featurelake-bench-generate-") as lake:
            summary = generate_lake(
                lake=Path(lake),
                start=START,
                end=START + timedelta(days=args.days - 1),
                users=args.users,
                seed=args.seed,
                transactions_per_user_day=args.rate,
                workers=args.workers,
            )
            size = sum(f.stat().st_size for f in Path(lake).rglob("*.parquet"))
        speeds.append(summary.rows_per_second)
        print(
            f"run {run}: {summary.total_rows:,} rows in {summary.seconds:.2f} s = "
            f"{summary.rows_per_second:,.0f} rows/s ({size / 2**20:.0f} MiB of Parquet)"
        )
    print(f"best {max(speeds):,.0f} rows/s, median {float(np.median(speeds)):,.0f} rows/s")


if __name__ == "__main__":
    main()
