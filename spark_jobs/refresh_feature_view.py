"""spark-submit entry point: refresh a Delta materialized view with delta-spark.

    spark-submit spark_jobs/refresh_feature_view.py --ds YYYY-MM-DD --lake PATH \
        [--view user_features] [--mode incremental|full] [--entity-column user_id]

Refreshes PATH/views/<view>_latest from PATH/features/<view>/ (featurelake.materialized_views_spark),
vacuums the files the table left longer ago than its retention, and writes a JSON report at
PATH/_metrics/<view>_latest/date=<ds>.json. Spark needs the delta-spark
jars (the Spark connection's spark.jars.packages or spark.jars); the job sets Delta's session
extension and catalog itself. Without the jars it fails, saying what to set.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

from featurelake.lake import LakeLayout, run_date_argument
from featurelake.materialized_views import REFRESH_MODES
from featurelake.materialized_views_spark import DELTA_SPARK_SESSION_CONF, refresh_view
from featurelake.partitioning import write_text
from featurelake.spark_session import build_spark_session

log = logging.getLogger("featurelake.jobs.refresh_feature_view")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ds", required=True, type=run_date_argument, help="run date, YYYY-MM-DD (UTC)")
    parser.add_argument("--lake", required=True, help="lake root: a path or URI Spark can read")
    parser.add_argument("--view", default="user_features", help="the feature dataset under PATH/features/")
    parser.add_argument(
        "--mode",
        choices=REFRESH_MODES,
        default="incremental",
        help="incremental: MERGE the partition of ds (a missing table is built in full); "
        "full: rebuild from every partition on or before ds",
    )
    parser.add_argument("--entity-column", default="user_id")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    layout = LakeLayout(args.lake)
    name = f"{args.view}_latest"
    spark = build_spark_session("featurelake-refresh-feature-view", overrides=DELTA_SPARK_SESSION_CONF)
    try:
        report = refresh_view(
            spark,
            layout.view(name),
            layout.features(args.view),
            ds=args.ds,
            mode=args.mode,
            entity_column=args.entity_column,
            name=name,
        )
        payload = json.dumps(asdict(report), sort_keys=True)
        write_text(spark, layout.run_metrics(name, args.ds), payload)
        log.info("refreshed %s: %s", layout.view(name), payload)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
