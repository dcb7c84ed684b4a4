"""spark-submit entry point: the user feature set for one date.

    spark-submit spark_jobs/user_features.py --ds YYYY-MM-DD --lake PATH \
        [--window-days 90] [--mode auto|full|incremental|rebuild]

Writes PATH/features/user_features/date=<ds>/, the daily tiles it builds under PATH/tiles/user_daily/,
invalid rows under PATH/quarantine/transactions/, and a JSON report at
PATH/_metrics/user_features/date=<ds>.json. Every write replaces only its own date partitions, so a
rerun or a backfill of a date is idempotent; each is staged first, so a run that fails leaves the
features of ds as they were (the quarantine and tiles it built before may be replaced, and its retry
builds them again).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from featurelake.lake import LakeLayout, run_date_argument, window_start
from featurelake.partitioning import hadoop_file_system, write_text
from featurelake.spark_session import build_spark_session
from featurelake.user_features import DEFAULT_WINDOW_DAYS, RUN_MODES
from featurelake.user_features_run import run_user_features

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from featurelake.user_features import FeatureRunReport

log = logging.getLogger("featurelake.jobs.user_features")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ds", required=True, type=run_date_argument, help="run date, YYYY-MM-DD (UTC)")
    parser.add_argument("--lake", required=True, help="lake root: a path or URI Spark can read")
    parser.add_argument(
        "--window-days", type=int, default=DEFAULT_WINDOW_DAYS, help="window length W in days"
    )
    parser.add_argument(
        "--mode",
        choices=RUN_MODES,
        default="auto",
        help="full: compute the window from raw in one pass (reads no tile; rebuilds the ds tile); "
        "incremental: build the ds tile and any missing ones, then combine the window's tiles; "
        "rebuild: rebuild every tile of the window, then combine; "
        "auto (default): incremental when the window already has tiles, else full",
    )
    args = parser.parse_args(argv)
    try:  # before Spark starts
        window_start(args.ds, args.window_days)
    except ValueError as error:
        parser.error(f"--window-days: {error}")
    return args


def require_lake(spark: SparkSession, lake: str) -> None:
    """Fail, naming `lake`, when the lake root does not exist (a wrong --lake, or Variable)."""
    fs, root = hadoop_file_system(spark, lake)
    if not fs.exists(root):
        raise FileNotFoundError(
            f"--lake {lake!r} does not exist: pass the lake root, the directory that holds raw/ "
            "(in Airflow, the Variable featurelake_lake), or create the lake with `featurelake generate`"
        )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    spark = build_spark_session("featurelake-user-features")
    try:
        require_lake(spark, args.lake)
        metrics = LakeLayout(args.lake).run_metrics("user_features", args.ds)

        def write_report(report: FeatureRunReport) -> None:
            write_text(spark, metrics, json.dumps(asdict(report), sort_keys=True))

        report = run_user_features(
            spark,
            ds=args.ds,
            lake=args.lake,
            window_days=args.window_days,
            mode=args.mode,
            write_report=write_report,
        )
        payload = json.dumps(asdict(report), sort_keys=True)
        log.info(
            "wrote %d users to %s; %d rows quarantined %s; report %s",
            report.users_written,
            report.output_path,
            report.quarantined_rows,
            report.quarantined_by_reason,
            payload,
        )
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
