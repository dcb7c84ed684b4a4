"""The publish and rebalance tasks on real Redis servers, through real Airflow connections: a
partition that fails its checks writes nothing, a URI connection's database and password reach the
server, and a rebalance task killed midway finishes on its retry with no key lost."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from featurelake.sharding import ShardRing
from tests.support import keys_on, redis_client

pytestmark = pytest.mark.integration

DAY = "2030-01-01"


def features_partition(lake: Path, table: pa.Table) -> None:
    partition = lake / "features" / "user_features" / f"date={DAY}"
    partition.mkdir(parents=True)
    pq.write_table(table, partition / "part-0.parquet")


def publish(lake: Path):
    from featurelake_airflow.operators.publish_online_features import PublishOnlineFeaturesOperator

    return PublishOnlineFeaturesOperator(task_id="publish", lake=str(lake), ds=DAY).execute(context={})


USERS = [f"u{i:04d}" for i in range(300)]


@pytest.mark.parametrize(
    ("table", "error", "message"),
    [
        pytest.param(
            # null in the first rows: the rows of a later batch hold the values the format lacks
            pa.table({"user_id": USERS, "raw": pa.array([None] * 150 + [b"x"] * 150, pa.binary())}),
            TypeError,
            "feature column 'raw' is of type binary",
            id="unwritable-column-later",
        ),
        pytest.param(
            pa.table({"user_id": [*USERS[:-1], None], "n": list(range(300))}),
            ValueError,
            "1 feature rows have an empty 'user_id'",
            id="null-entity-last",
        ),
    ],
)
def test_a_partition_that_fails_its_checks_publishes_nothing(
    tmp_path: Path, redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch, table, error, message
) -> None:
    node = redis_nodes[0]
    host, port = node.rsplit(":", 1)
    connection = {"conn_type": "redis", "host": host, "port": int(port), "extra": {"batch_size": 50}}
    monkeypatch.setenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", json.dumps(connection))
    features_partition(tmp_path, table)
    with pytest.raises(error, match=message):
        publish(tmp_path)
    with redis_client(node) as client:
        assert client.dbsize() == 0, "the date was half published"


@pytest.mark.parametrize("padding", ["\n", " "], ids=["trailing-newline", "leading-space"])
def test_a_lake_root_with_white_space_round_it_publishes_its_partition(
    tmp_path: Path, redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch, padding: str
) -> None:
    """The task checked the stripped root, then read the partition under the raw one: a Variable
    with a trailing newline named a path that did not exist, read as an absent partition, and every
    record of the date was removed, in a task that succeeded."""
    node = redis_nodes[0]
    host, port = node.rsplit(":", 1)
    monkeypatch.setenv(
        "AIRFLOW_CONN_FEATURELAKE_ONLINE", json.dumps({"conn_type": "redis", "host": host, "port": int(port)})
    )
    features_partition(tmp_path, pa.table({"user_id": USERS, "n": list(range(300))}))
    assert publish(tmp_path)["written"] == 300
    padded = f"{tmp_path}{padding}" if padding == "\n" else f"{padding}{tmp_path}"
    from featurelake_airflow.operators.publish_online_features import PublishOnlineFeaturesOperator

    report = PublishOnlineFeaturesOperator(task_id="publish", lake=padded, ds=DAY).execute(context={})
    assert (report["written"], report["removed_stale"]) == (300, 0), report  # a rerun of the date
    with OnlineStore(OnlineStoreConfig(nodes=[node])) as store:
        assert len(store.read("user_features", USERS)) == 300


def test_a_uri_connection_publishes_to_its_database_with_its_password(
    tmp_path: Path, redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = redis_nodes[0]
    password = "p@ss:w/o rd%#?"
    features_partition(tmp_path, pa.table({"user_id": USERS, "n": list(range(300))}))
    with redis_client(node) as client:
        client.config_set("requirepass", password)
        try:
            uri = f"redis://:{quote(password, safe='')}@{node}/2"
            monkeypatch.setenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", uri)
            assert publish(tmp_path)["written"] == 300
            client.auth(password)
            # database 2 holds the 300 records and the view's removals counter
            assert [client.execute_command("SELECT", db) and client.dbsize() for db in (0, 2)] == [0, 301]
            assert int(client.get("fl;removals:user_features")) == 1
        finally:
            client.config_set("requirepass", "")


def test_a_wrong_password_fails_the_publish_without_retries_naming_the_connection(
    tmp_path: Path, redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's AuthenticationError is a ConnectionError, which the task otherwise leaves to Airflow's
    retries (a node that did not answer); a refused password fails it for good, naming the connection."""
    from airflow.sdk.exceptions import AirflowFailException

    node = redis_nodes[0]
    features_partition(tmp_path, pa.table({"user_id": USERS, "n": list(range(300))}))
    with redis_client(node) as client:
        client.config_set("requirepass", "the-right-one")
        try:
            monkeypatch.setenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", f"redis://:a-rotated-one@{node}/0")
            with pytest.raises(AirflowFailException) as failed:
                publish(tmp_path)
            client.auth("the-right-one")
            assert client.dbsize() == 0
        finally:
            client.config_set("requirepass", "")
    message = str(failed.value)
    assert "refuses the login and password of connection 'featurelake_online'" in message
    assert node in message and "clear this task" in message


def test_a_rebalance_task_killed_midway_finishes_on_its_retry(
    redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from featurelake_airflow.operators.rebalance_online_store import RebalanceOnlineStoreOperator

    old, new = redis_nodes[:2], redis_nodes
    records = {f"u{i:05d}": FeatureRecord("2030-01-01", {"n": i}) for i in range(4000)}
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write("user_features", records.items())
    host, port = old[0].rsplit(":", 1)
    connection = {
        "conn_type": "redis",
        "host": host,
        "port": int(port),
        "extra": {"nodes": new, "previous_nodes": old, "batch_size": 200},
    }
    monkeypatch.setenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", json.dumps(connection))
    task = RebalanceOnlineStoreOperator(task_id="rebalance")

    # Killed after its third copy to a new owner, before it deletes those keys from their old node.
    write_node = OnlineStore._write_node
    copies = []

    def killed_after_three_copies(self, *args, **kwargs):
        written = write_node(self, *args, **kwargs)
        copies.append(written)
        if len(copies) == 3:
            raise SystemExit("killed")
        return written

    with monkeypatch.context() as patch:
        patch.setattr(OnlineStore, "_write_node", killed_after_three_copies)
        with pytest.raises(SystemExit):
            task.execute(context={})
    assert sum(len(keys) for keys in copies) > 0  # keys copied to their new owners
    result = task.execute(context={})  # the retry
    assert result["complete"] and result["changed_during_move"] == 0, result
    json.dumps(result)  # an XCom
    ring = ShardRing(new)
    placed = {node: keys_on(node, match="fl:user_features:*") for node in new}
    assert sum(len(keys) for keys in placed.values()) == 4000, "every key once: none lost, none left twice"
    assert all(ring.node_for(key) == node for node, keys in placed.items() for key in keys)
    with OnlineStore(OnlineStoreConfig(nodes=new)) as store:
        assert store.read("user_features", records) == records
