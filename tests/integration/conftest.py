from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from pytest_redis import factories

from tests.support import emptied_redis_nodes

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One real local Spark session (2 cores) for the library tests, built like the jobs build theirs."""
    from featurelake.spark_session import build_spark_session

    # py4j logs from finalizers after pytest closed its capture streams; keep it to warnings.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    session = build_spark_session("featurelake-tests", master="local[2]")
    try:
        yield session
    finally:
        session.stop()


# Four standalone Redis servers on free loopback ports (pytest-redis), one process each for the
# session: shards of a ketama ring. `redis_nodes` empties them for each test that uses them.
redis_shard_0 = factories.redis_proc(port=None)
redis_shard_1 = factories.redis_proc(port=None)
redis_shard_2 = factories.redis_proc(port=None)
redis_shard_3 = factories.redis_proc(port=None)


@pytest.fixture
def redis_nodes(redis_shard_0, redis_shard_1, redis_shard_2, redis_shard_3) -> list[str]:
    """host:port of four empty Redis servers."""
    return emptied_redis_nodes(redis_shard_0, redis_shard_1, redis_shard_2, redis_shard_3)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[list[str]]:
    """A real 3-primary Redis Cluster on loopback (cluster-enabled servers joined by
    `redis-cli --cluster create`); yields the host:port of its nodes."""
    from featurelake.local_redis import LocalRedisServer

    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(LocalRedisServer(cluster=True)) for _ in range(3)]
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(s.address for s in servers),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        import redis

        client = redis.Redis(host="127.0.0.1", port=servers[0].port)
        deadline = time.monotonic() + 30
        while client.cluster("info").get("cluster_state") != "ok":
            assert time.monotonic() < deadline, "the cluster did not reach state ok in 30 s"
            time.sleep(0.2)
        client.close()
        yield [s.address for s in servers]
