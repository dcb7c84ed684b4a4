from __future__ import annotations

import logging
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
    `redis-cli --cluster create`), one per test module; yields the host:port of its nodes."""
    from featurelake.local_redis import LocalRedisCluster

    with LocalRedisCluster(primaries=3) as cluster:
        yield cluster.addresses
