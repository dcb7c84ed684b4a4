"""Run one DAG for one logical date in-process (`dag.test()`, real tasks, real spark-submit) and print
what it did: task states and durations, and for user_features_daily a sample of the features it
wrote and reads of the online store through the layered cache. The online store is a private
redis-server on a free port, started here and stopped at the end, unless `--online-conn` points the
run at an existing one.

    python -m featurelake_airflow.demo --dag-id user_features_daily --date 2026-10-28
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from airflow.sdk import Connection

log = logging.getLogger(__name__)
# The DAG whose output the demo shows after the task table.
FEATURES_DAG_ID = "user_features_daily"
# Piped output (make, CI) would otherwise be cut to 80 columns.
console = Console(width=None if Console().is_terminal else 140)


def run_dag(dag_id: str, day: date) -> tuple[str, list[tuple[str, str, float]]]:
    """Run `dag_id` for the logical date `day`; return the run's state and (task, state, seconds) rows."""
    from airflow.dag_processing.dagbag import DagBag

    folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
    bag = DagBag(dag_folder=folder)
    if bag.import_errors:
        raise SystemExit(f"DAG import errors in {folder}: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise SystemExit(f"no DAG {dag_id!r} in {folder}; known: {sorted(bag.dag_ids)}")
    logical = datetime(day.year, day.month, day.day, tzinfo=UTC)
    run = dag.test(logical_date=logical)
    tasks = sorted(
        ((ti.task_id, str(ti.state), float(ti.duration or 0.0)) for ti in run.get_task_instances()),
        key=lambda row: row[0],
    )
    return str(run.state), tasks


def feature_sample(lake: Path, day: date, rows: int = 5) -> tuple[list[str], list[dict]]:
    """Every user id of the day's features, and the `rows` most active users' rows."""
    import pyarrow.parquet as pq

    table = pq.read_table(lake / "features" / "user_features" / f"date={day.isoformat()}")
    ordered = table.sort_by([("transaction_count", "descending"), ("user_id", "ascending")])
    return table.column("user_id").to_pylist(), ordered.slice(0, rows).to_pylist()


def pq_rows(path: Path) -> int:
    import pyarrow.dataset as pads

    return pads.dataset(path, format="parquet").count_rows()


def dask_cluster() -> str:
    """Where compute_merchant_stats ran, from the `dask_default` connection the run used: a
    LocalCluster in the task, or a scheduler's address."""
    from featurelake_airflow.hooks.dask_cluster import DaskClusterHook

    address = DaskClusterHook().scheduler_address()
    return "LocalCluster" if address is None else f"scheduler {address}"


def show_view(lake: Path) -> None:
    """Print the Delta view's size and its latest commits."""
    from deltalake import DeltaTable

    path = lake / "views" / "user_features_latest"
    view = DeltaTable(str(path))
    commits = ", ".join(
        f"v{entry['version']} {entry['operation']} ({entry.get('operationMetrics', {}).get('execution_time_ms', '?')} ms)"
        for entry in view.history(3)
    )
    rows = view.to_pyarrow_dataset().count_rows()
    console.print(f"Delta view {path}: {rows} rows, version {view.version()}; latest commits: {commits}")


def show_online_reads(user_ids: list[str], online_connection: str, *, lake: Path, day: date) -> None:
    """Read `user_ids` through the layered cache: cold (from Redis), warm (local), and after some
    keys are evicted from Redis (computed from the lake and written back); print where each read
    was answered and how long it took."""
    from featurelake.cache import LayeredFeatureCache
    from featurelake.offline_features import read_offline_features
    from featurelake.online_store import OnlineStore
    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    # Read as the DAG's tasks read it: password, TLS and cluster included.
    config = OnlineStoreHook.config_of(read_online_connection(online_connection))
    features = str(lake / "features" / "user_features")
    evicted = user_ids[:100]
    with OnlineStore(config) as store:
        cache = LayeredFeatureCache(
            view="user_features",
            store=store,
            compute=lambda ids: read_offline_features(features, ids, as_of=day),
            ttl_seconds=300,
        )
        reads = Table(title="Online reads through the layered cache (local LRU+TTL, Redis, the lake)")
        for column in ("read", "users", "answered by", "ms"):
            reads.add_column(column)

        def timed_read(label: str, ids: list[str]) -> None:
            before = (cache.stats.local_hits, cache.stats.store_hits, cache.stats.computed)
            started = time.perf_counter()
            found = cache.get_many(ids)
            elapsed = (time.perf_counter() - started) * 1000
            local, remote, computed = (
                cache.stats.local_hits - before[0],
                cache.stats.store_hits - before[1],
                cache.stats.computed - before[2],
            )
            answered = f"{local} local, {remote} Redis, {computed} computed, {len(ids) - len(found)} missing"
            reads.add_row(label, str(len(ids)), answered, f"{elapsed:.1f}")

        timed_read("cold: local layer empty", user_ids)
        timed_read("warm", user_ids)
        store.delete("user_features", evicted)
        cache.invalidate(evicted)
        timed_read("evicted from Redis and locally", evicted)
        timed_read("the same again", evicted)
        console.print(reads)
        console.print(f"Online store keys per node: {store.count_keys('user_features')}")


def read_online_connection(value: str) -> Connection:
    """The featurelake_online connection `value` holds, read as Airflow reads an AIRFLOW_CONN_
    variable, which is what the demo sets it as: JSON when it starts with `{`, else a URI
    (`redis://:password@host:6379/0`)."""
    from airflow.sdk import Connection

    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    text = value.strip()
    conn_id = OnlineStoreHook.default_conn_name
    if text.startswith("{"):
        return Connection.from_json(text, conn_id=conn_id)
    return Connection.from_uri(text, conn_id=conn_id)


def online_connection_argument(value: str) -> str:
    """`--online-conn`, checked before the run as the demo's reads will take it at the end: a
    connection that cannot be read fails here, not after the DAG has run."""
    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    try:
        OnlineStoreHook.config_of(read_online_connection(value))
    except Exception as error:  # JSON, URI and config errors alike: argparse shows this message only
        raise argparse.ArgumentTypeError(
            f"not a Redis connection as JSON or a URI ({error}); for example "
            '\'{"conn_type": "redis", "host": "127.0.0.1", "port": 6379}\' or redis://127.0.0.1:6379/0'
        ) from error
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dag-id", default=FEATURES_DAG_ID)
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="logical date, YYYY-MM-DD")
    parser.add_argument(
        "--online-conn",
        default=None,
        type=online_connection_argument,
        help="the featurelake_online connection as JSON or a URI, as an AIRFLOW_CONN_ variable takes "
        "it; default: a private redis-server started here",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with contextlib.ExitStack() as stack:
        if args.online_conn is None:
            from featurelake.local_redis import LocalRedisServer

            server = stack.enter_context(LocalRedisServer())
            args.online_conn = json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": server.port})
            console.print(
                f"Online store: a private redis-server on {server.address}, stopped when the demo ends"
            )
        os.environ["AIRFLOW_CONN_FEATURELAKE_ONLINE"] = args.online_conn
        return run_demo(args.dag_id, args.date, args.online_conn)


def run_demo(dag_id: str, day: date, online_connection: str) -> int:
    from featurelake.lake import local_path

    # A file:// root, which the generator and the DAG take too, is a local path here.
    lake = local_path(
        os.environ["AIRFLOW_VAR_FEATURELAKE_LAKE"],
        what="the lake",
        remedy="the demo reads the run's output from local files; point AIRFLOW_VAR_FEATURELAKE_LAKE "
        "at a local directory",
    )
    started = time.perf_counter()
    state, tasks = run_dag(dag_id, day)
    table = Table(title=f"{dag_id} for {day} ({state}, {time.perf_counter() - started:.0f} s)")
    for column in ("task", "state", "seconds"):
        table.add_column(column)
    for task_id, task_state, seconds in tasks:
        table.add_row(task_id, task_state, f"{seconds:.1f}")
    console.print(table)
    if state != "success":
        console.print(f"[red]The run ended {state}; see the task logs above.[/red]")
        return 1
    if dag_id != FEATURES_DAG_ID:
        # What follows reads what user_features_daily writes; another DAG's run wrote none of it.
        return 0

    report_file = lake / "_metrics" / "user_features" / f"date={day.isoformat()}.json"
    report = json.loads(report_file.read_text())
    user_ids, sample = feature_sample(lake, day)
    console.print(
        f"Wrote [bold]{len(user_ids)}[/bold] user feature rows to {report['output_path']} "
        f"(mode {report['mode']}, {len(report['tiles_built'])} tile(s) built; in the raw dates of those "
        f"tiles, {report['quarantined_rows']} rows quarantined {report['quarantined_by_reason']} and "
        f"{report['duplicate_rows_dropped']} duplicate rows dropped)"
    )
    features = Table(title="Most active users")
    columns = [
        "user_id",
        "transaction_count",
        "total_spend",
        "std_spend",
        "spend_7d",
        "unique_merchants",
        "days_since_last_transaction",
        "last_amount",
        "top_category_group",
    ]
    for column in columns:
        features.add_column(column)
    for row in sample:
        features.add_row(*(f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    console.print(features)
    stats = lake / "features" / "merchant_stats" / f"date={day.isoformat()}"
    console.print(f"Dask ({dask_cluster()}): {pq_rows(stats)} merchants' 30-day statistics in {stats}")
    show_view(lake)
    show_online_reads(user_ids, online_connection, lake=lake, day=day)
    return 0


if __name__ == "__main__":
    sys.exit(main())
