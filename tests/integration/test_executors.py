"""Both daily DAGs under the two executors of docker-compose.yaml, run for real without Docker: the
Airflow components (`api-server`, `scheduler`, `dag-processor`, and under CeleryExecutor a
`celery worker`) each in its own process, as the compose services are, on a private PostgreSQL
database. CeleryExecutor's broker is a private redis-server, its result backend the same database.

Each DAG is triggered through the REST API, as the UI's Trigger button does. Their tasks use every
engine: Spark (spark-submit on local[2]), Dask (a LocalCluster whose worker processes the task
starts), the online store (two real Redis shards), the Delta view, and the merchant API (the sandbox
on loopback), whose profiles are enriched on a process pool inside the task process. Then
`online_store_rebalance` moves the keys of a ring grown by a node. `dag.test()` runs tasks in the test's own
process; only a real scheduler or Celery worker runs them in Airflow's task processes, where both
the pool and the Dask workers once failed (docs/merchant-profiles.md)."""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurelake.local_redis import LocalRedisServer
from featurelake.merchant_api import SandboxServer
from featurelake.synthetic import generate_lake
from tests.airflow_stack import AirflowStack, component_env, private_postgres_database
from tests.integration.test_merchant_stats import assert_matches as assert_merchant_stats_match
from tests.integration.test_user_features_job import assert_matches_oracle, read_features
from tests.oracle.merchant_stats_duckdb import oracle
from tests.oracle.user_features_duckdb import compute_user_features
from tests.support import emptied_redis_nodes

pytestmark = pytest.mark.integration

DS = date(2026, 8, 20)
DAG_IDS = ["user_features_daily", "merchant_profiles_daily"]
REBALANCE_DAG_ID = "online_store_rebalance"
STARTUP_TIMEOUT = 240.0  # seconds until the API answers and both DAGs are parsed (about 20 s here)
RUN_TIMEOUT = 600.0  # seconds for both runs to succeed (about 45 s here)


@pytest.fixture(scope="module")
def migrated_database(tmp_path_factory) -> Iterator[str]:
    """A private PostgreSQL database that `airflow db migrate` migrated, once for the module: each
    executor's Airflow runs on a copy of it, made in about a second: the schema does not depend
    on the executor, and each migration started the CLI and built the schema again."""
    home = tmp_path_factory.mktemp("migrate-home")
    with private_postgres_database("featurelake_executors_migrated") as database:
        migrator = AirflowStack(
            home=home, env=component_env(home=home, database=database, lake=home / "lake", online_nodes=[])
        )
        migrated = migrator.airflow("db", "migrate", timeout=300)
        assert migrated.returncode == 0, f"airflow db migrate failed:\n{migrated.stdout}\n{migrated.stderr}"
        yield database


@pytest.fixture(scope="module", params=["LocalExecutor", "CeleryExecutor"])
def stack(
    request, tmp_path_factory, migrated_database: str, redis_shard_2, redis_shard_3
) -> Iterator[AirflowStack]:
    """A fresh lake, database (a copy of the migrated one), online store and Airflow for one
    executor. Under CeleryExecutor the broker is a redis-server of its own (not an online-store
    shard), as in the compose file. The online store is a ring of two nodes that was one
    (`previous_nodes`), in the middle of a resize."""
    executor = request.param
    home = tmp_path_factory.mktemp(f"{executor}-home")
    lake = home / "lake"
    generate_lake(lake=lake, start=DS - timedelta(days=95), end=DS, users=150, seed=29)
    online_nodes = emptied_redis_nodes(redis_shard_2, redis_shard_3)
    with (
        private_postgres_database(f"featurelake_{executor.lower()}", copy_of=migrated_database) as database,
        LocalRedisServer() as broker,
        SandboxServer(rate=200) as merchant_api,
    ):
        env = component_env(
            home=home,
            database=database,
            lake=lake,
            online_nodes=online_nodes,
            AIRFLOW__CORE__EXECUTOR=executor,
            # A ring grown from one node to two and not yet rebalanced: the daily run publishes on
            # the new ring, and test_the_rebalance_dag_moves_every_key moves what the old one placed.
            AIRFLOW_CONN_FEATURELAKE_ONLINE=json.dumps(
                {
                    "conn_type": "redis",
                    "host": "127.0.0.1",
                    "port": 1,
                    "extra": {"nodes": online_nodes, "previous_nodes": online_nodes[:1]},
                }
            ),
            AIRFLOW__CELERY__BROKER_URL=f"redis://{broker.address}/0",
            AIRFLOW__CELERY__RESULT_BACKEND=database.replace("postgresql+psycopg2://", "db+postgresql://"),
            # compute_merchant_stats on a LocalCluster of worker processes, children of the task
            # process (the other tests use airflow.env's default: threads inside the task process).
            AIRFLOW_CONN_DASK_DEFAULT=json.dumps(
                {
                    "conn_type": "generic",
                    "host": "local",
                    "extra": {"processes": True, "workers": 2, "threads": 1, "memory_limit": "1GiB"},
                }
            ),
            AIRFLOW_CONN_MERCHANT_API=json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": merchant_api.port,
                    "extra": {
                        "path_template": "/merchants/{id}",
                        "rate_per_second": 150,
                        "max_concurrency": 16,
                    },
                }
            ),
        )
        stack = AirflowStack(home=home, env=env)

        def start_components() -> None:
            stack.start("api-server", "api-server")
            stack.start("scheduler", "scheduler")
            stack.start("dag-processor", "dag-processor")
            if executor == "CeleryExecutor":
                stack.start("celery-worker", "celery", "worker", "--concurrency", "2")

        # SIGTERM: a warm shutdown for the Celery worker, a clean stop for the others.
        try:
            stack.start_listening(start_components, stop_signal=signal.SIGTERM, timeout=STARTUP_TIMEOUT)
            yield stack
        finally:
            stack.stop(signal.SIGTERM)


def test_both_daily_dags_run_under_the_executor(stack: AirflowStack) -> None:
    lake = Path(stack.env["AIRFLOW_VAR_FEATURELAKE_LAKE"])
    executor = stack.env["AIRFLOW__CORE__EXECUTOR"]
    started = time.monotonic()
    stack.wait_until_ready(DAG_IDS, timeout=STARTUP_TIMEOUT)
    ready = time.monotonic()

    # What the UI's Trigger button sends for a chosen logical date.
    for dag_id in DAG_IDS:
        stack.api(f"/api/v2/dags/{dag_id}/dagRuns", body={"logical_date": f"{DS.isoformat()}T00:00:00Z"})
    runs = {
        dag_id: stack.wait_for_runs(dag_id, 1, run_type="manual", timeout=RUN_TIMEOUT) for dag_id in DAG_IDS
    }
    print(
        f"{executor}: ready in {ready - started:.0f} s; both runs done {time.monotonic() - ready:.0f} s later"
    )

    succeeded = Counter()
    for dag_id, (run,) in runs.items():
        assert run["logical_date"][:10] == DS.isoformat()
        for ti in stack.task_instances(dag_id, run["dag_run_id"]):
            if ti["state"] == "success":
                succeeded[ti["task_id"]] += 1
    assert {"compute_user_features", "publish_online_features", "fetch_merchant_profiles"} <= set(succeeded)
    if executor == "CeleryExecutor":
        # Every task went through the broker to the worker, and ran there once.
        worker_log = (stack.home / "celery-worker.log").read_text(errors="replace")
        executed = Counter(re.findall(r"Executing workload in Celery: .*?task_id='([a-z_]+)'", worker_log))
        assert executed == succeeded, (executed, succeeded)

    # user_features_daily: the features match the oracle, and every user is online at DS.
    assert_matches_oracle(read_features(lake, DS), compute_user_features(lake=lake, ds=DS))
    from featurelake.offline_features import partition_records
    from featurelake.online_store import OnlineStore, OnlineStoreConfig

    online = json.loads(stack.env["AIRFLOW_CONN_FEATURELAKE_ONLINE"])["extra"]["nodes"]
    records = dict(
        partition_records(
            str(lake / "features" / "user_features" / f"date={DS.isoformat()}"), feature_date=DS
        )
    )
    with OnlineStore(OnlineStoreConfig(nodes=online)) as store:
        assert store.read("user_features", records) == records
    assert_merchant_stats_match(
        lake / "features" / "merchant_stats" / f"date={DS.isoformat()}", oracle(lake, DS, 30), DS
    )
    stats_log = stack.task_log("user_features_daily", "compute_merchant_stats")
    assert "a LocalCluster of 2 workers (each a process of its own)" in stats_log, stats_log

    # merchant_profiles_daily: every merchant of the day is a profile or quarantined.
    (profiles_run,) = runs["merchant_profiles_daily"]
    report = stack.xcom("merchant_profiles_daily", profiles_run["dag_run_id"], "fetch_merchant_profiles")
    merchants = set(
        pq.read_table(lake / "raw" / "transactions" / f"date={DS.isoformat()}", columns=["merchant_id"])[
            "merchant_id"
        ].to_pylist()
    ) - {None, ""}
    assert report["merchants"] == len(merchants) > 20
    assert report["profiles"] + report["quarantined"] == len(merchants), report
    assert (
        pq.read_table(lake / "raw" / "merchant_profiles" / f"date={DS.isoformat()}").num_rows
        == report["profiles"]
        > 0
    )
    # The enrich stage's pool started in a task process whose __main__ is Airflow's launcher script,
    # and under Celery one that a pool worker forked from a daemonic billiard process.
    fetch_log = stack.task_log("merchant_profiles_daily", "fetch_merchant_profiles")
    assert "will not run the task process's main script" in fetch_log, fetch_log
    assert ("inherited ForkProcess" in fetch_log) == (executor == "CeleryExecutor"), fetch_log


def test_the_rebalance_dag_moves_every_key_under_the_executor(stack: AirflowStack) -> None:
    """online_store_rebalance, triggered as the UI does, moves the keys that the previous ring (one
    node) placed to the nodes the ring (two) now names, and loses none."""
    from featurelake.feature_records import FeatureRecord
    from featurelake.online_store import OnlineStore, OnlineStoreConfig

    extra = json.loads(stack.env["AIRFLOW_CONN_FEATURELAKE_ONLINE"])["extra"]
    placed_by_the_old_ring = {
        f"resized-{i}": FeatureRecord(feature_date="2026-08-19", values={"total_spend": float(i)})
        for i in range(3000)
    }
    with OnlineStore(OnlineStoreConfig(nodes=extra["previous_nodes"])) as old_ring:
        assert old_ring.write("user_features", placed_by_the_old_ring.items()).written == 3000
    stack.wait_until_ready([REBALANCE_DAG_ID], timeout=STARTUP_TIMEOUT)

    stack.api(f"/api/v2/dags/{REBALANCE_DAG_ID}/dagRuns", body={"logical_date": None})
    (run,) = stack.wait_for_runs(REBALANCE_DAG_ID, 1, run_type="manual", timeout=RUN_TIMEOUT)

    report = stack.xcom(REBALANCE_DAG_ID, run["dag_run_id"], "rebalance_online_store")
    assert report["complete"] and report["changed_during_move"] == 0, report
    with OnlineStore(OnlineStoreConfig(nodes=extra["nodes"])) as new_ring:  # previous_nodes removed
        assert new_ring.read("user_features", placed_by_the_old_ring) == placed_by_the_old_ring
        # Every key the new ring gives the second node left the first one, and reached the second.
        second = extra["nodes"][1]
        moving = [
            e
            for e in placed_by_the_old_ring
            if new_ring.ring.node_for(new_ring.key("user_features", e)) == second
        ]
        # the daily run's keys were published on the new ring: only these were misplaced
        assert report["moved"] == report["moved_from"][extra["nodes"][0]] == len(moving) > 1000, report
        assert new_ring.count_keys() == report["keys_per_node"], report
