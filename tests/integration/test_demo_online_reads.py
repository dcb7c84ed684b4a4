"""The demo's read-back of the online store (`show_online_reads`) on the connections the DAG's tasks
take: one with a password, and a Redis Cluster. It reads the connection as the hook does, and evicts
keys through the store, so both work."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake.local_redis import LocalRedisServer
from featurelake.offline_features import partition_records
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from featurelake_airflow.demo import show_online_reads
from tests.support import redis_client

pytestmark = pytest.mark.integration

DAY = date(2026, 10, 28)
USERS = [f"d{i:06d}" for i in range(150)]


def publish(lake: Path, config: OnlineStoreConfig) -> None:
    partition = lake / "features" / "user_features" / f"date={DAY}"
    partition.mkdir(parents=True)
    table = pa.table({"user_id": USERS, "transaction_count": list(range(150))})
    pq.write_table(table, partition / "part-0.parquet")
    with OnlineStore(config) as store:
        store.write("user_features", partition_records(str(partition), feature_date=DAY))


def assert_the_evicted_users_were_computed(output: str) -> None:
    evicted = next(line for line in output.splitlines() if "evicted from Redis" in line)
    assert "0 Redis, 100 computed, 0 missing" in evicted, output


def test_the_demo_reads_through_a_connection_with_a_password(tmp_path: Path, capsys) -> None:
    with LocalRedisServer() as server:
        with redis_client(server.address) as client:
            client.config_set("requirepass", "s3cret")
        publish(tmp_path, OnlineStoreConfig(nodes=(server.address,), password="s3cret"))
        connection = {"conn_type": "redis", "host": "127.0.0.1", "port": server.port, "password": "s3cret"}
        show_online_reads(USERS, json.dumps(connection), lake=tmp_path, day=DAY)
    assert_the_evicted_users_were_computed(capsys.readouterr().out)


def test_the_demo_reads_from_a_redis_cluster(tmp_path: Path, redis_cluster: list[str], capsys) -> None:
    host, port = redis_cluster[0].rsplit(":", 1)
    publish(tmp_path, OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True))
    connection = {"conn_type": "redis", "host": host, "port": int(port), "extra": {"cluster": True}}
    show_online_reads(USERS, json.dumps(connection), lake=tmp_path, day=DAY)
    assert_the_evicted_users_were_computed(capsys.readouterr().out)
