"""A manual backfill of user_features_daily through the real Airflow CLI, run by a real scheduler:
`airflow standalone` (scheduler, dag-processor, api-server, triggerer) in its own AIRFLOW_HOME, with
LocalExecutor on a private PostgreSQL database, on a free loopback port; `airflow backfill create`
for two dates, newest first (`--run-backwards`), then the two partitions checked against the DuckDB
oracle, and the online store (two real Redis shards) and the Delta view checked to hold each user's
newest features."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from featurelake.synthetic import generate_lake
from tests.airflow_stack import AirflowStack, component_env, private_postgres_database
from tests.integration.test_user_features_job import assert_matches_oracle, read_features
from tests.oracle.user_features_duckdb import compute_user_features
from tests.support import emptied_redis_nodes

pytestmark = pytest.mark.integration

DAG_ID = "user_features_daily"
DS = date(2026, 8, 20)
BACKFILL_DATES = [DS - timedelta(days=1), DS]  # --from-date and --to-date are both inclusive
STARTUP_TIMEOUT = 240.0  # seconds until the API answers and the DAG is parsed (about 50 s here)
RUN_TIMEOUT = 600.0  # seconds for both backfill runs to succeed


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("backfill-lake") / "lake"
    generate_lake(lake=root, start=DS - timedelta(days=95), end=DS + timedelta(days=1), users=150, seed=23)
    return root


@pytest.fixture(scope="module")
def metadata_database() -> Iterator[str]:
    """LocalExecutor on a private PostgreSQL database, as it runs at scale."""
    with private_postgres_database("featurelake_backfill") as url:
        yield url


@pytest.fixture(scope="module")
def online_nodes(redis_shard_0, redis_shard_1) -> list[str]:
    """Two emptied pytest-redis servers: the online store's ring for this module."""
    return emptied_redis_nodes(redis_shard_0, redis_shard_1)


@pytest.fixture(scope="module")
def standalone(
    tmp_path_factory, lake: Path, metadata_database: str, online_nodes: list[str]
) -> Iterator[AirflowStack]:
    """`airflow standalone` with a fresh home and database, serving on a free loopback port."""
    home = tmp_path_factory.mktemp("standalone-home")
    env = component_env(home=home, database=metadata_database, lake=lake, online_nodes=online_nodes)
    stack = AirflowStack(home=home, env=env)
    try:
        stack.start_listening(
            lambda: stack.start("standalone", "standalone"),
            stop_signal=signal.SIGINT,
            timeout=STARTUP_TIMEOUT,
        )
        yield stack
    finally:
        stack.stop(signal.SIGINT)


def test_backfill_create_is_run_by_the_scheduler(
    standalone: AirflowStack, lake: Path, online_nodes: list[str]
) -> None:
    started = time.monotonic()
    standalone.wait_until_ready([DAG_ID], timeout=STARTUP_TIMEOUT)
    ready = time.monotonic()

    created = standalone.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        BACKFILL_DATES[0].isoformat(),
        "--to-date",
        BACKFILL_DATES[-1].isoformat(),
        "--max-active-runs",
        "1",
        # newest first: the older date's publish must not replace the newer features online
        "--run-backwards",
    )
    assert created.returncode == 0, f"backfill create failed:\n{created.stdout}\n{created.stderr}"

    runs = standalone.wait_for_runs(DAG_ID, len(BACKFILL_DATES), run_type="backfill", timeout=RUN_TIMEOUT)
    done = time.monotonic()
    print(f"standalone ready in {ready - started:.0f} s; backfill of 2 dates ran in {done - ready:.0f} s")

    # Both ends of the range ran, and nothing else did (use_job_schedule is off).
    assert [(run["run_type"], run["logical_date"][:10]) for run in runs] == [
        ("backfill", d.isoformat()) for d in BACKFILL_DATES
    ]
    for day in BACKFILL_DATES:
        assert (lake / "features" / "user_features" / f"date={day.isoformat()}").is_dir()
        assert_matches_oracle(read_features(lake, day), compute_user_features(lake=lake, ds=day))

    # Online: each user's newest date, although the older date was published last.
    from featurelake.offline_features import partition_records
    from featurelake.online_store import OnlineStore, OnlineStoreConfig

    newest: dict = {}
    for day in BACKFILL_DATES:  # oldest first, so a later date replaces an earlier one
        partition = lake / "features" / "user_features" / f"date={day.isoformat()}"
        newest.update(partition_records(str(partition), feature_date=day))
    with OnlineStore(OnlineStoreConfig(nodes=online_nodes)) as store:
        assert store.read("user_features", newest) == newest
    assert any(record.feature_date == DS.isoformat() for record in newest.values())
    older_run = next(run for run in runs if run["logical_date"][:10] == BACKFILL_DATES[0].isoformat())
    published = standalone.xcom(DAG_ID, older_run["dag_run_id"], "publish_online_features")
    assert published["kept_newer"] > 0 and published["written"] < len(newest), published

    # The Delta view too: built as of DS, then the MERGE of DS-1 kept every newer row.
    from deltalake import DeltaTable

    from featurelake.materialized_views import latest_per_entity

    view = DeltaTable(str(lake / "views" / "user_features_latest"))
    want, _ = latest_per_entity(str(lake / "features" / "user_features"), as_of=DS)
    assert view.to_pyarrow_table().sort_by("user_id").to_pylist() == want.to_pylist()
    refreshed = {
        run["logical_date"][:10]: standalone.xcom(DAG_ID, run["dag_run_id"], "refresh_user_features_view")
        for run in runs
    }
    newer, older = refreshed[DS.isoformat()], refreshed[BACKFILL_DATES[0].isoformat()]
    assert (newer["mode"], newer["version"]) == ("full", 0), newer  # built, as there was no table yet
    # merged after it: every user of DS-1 has a newer row, so nothing was updated (delta-rs then
    # commits nothing); users only on DS-1 would have been inserted
    assert (older["mode"], older["updated"]) == ("incremental", 0), older
    assert older["inserted"] == len(want) - newer["rows"]
