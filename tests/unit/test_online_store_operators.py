"""The online store's operators and hook around the library: the connection they read (the demo's
too), what the rebalance task does with an unfinished pass, and what the publish task does with an
absent partition, and the partition readers they and the layered cache use (the real moves and
removals are in tests/integration)."""

from __future__ import annotations

import json
import re
from datetime import date
from unittest import mock

import pytest

from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStoreConfig, RebalanceReport, WriteReport


def test_the_hook_reads_the_ring_from_the_connection(monkeypatch) -> None:
    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    connection = {
        "conn_type": "redis",
        "host": "redis-0",
        "port": 6379,
        "password": "secret",
        "extra": {"nodes": ["redis-0:6379", "redis-1:6379"], "previous_nodes": ["redis-0:6379"]},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SHARDS", json.dumps(connection))
    config = OnlineStoreHook(online_conn_id="shards").config()
    assert config == OnlineStoreConfig(
        nodes=("redis-0:6379", "redis-1:6379"), previous_nodes=("redis-0:6379",), password="secret"
    )


class FakeStore:
    def __init__(self, report: RebalanceReport) -> None:
        self.report = report
        self.config = OnlineStoreConfig(nodes=("a:1", "b:2"), previous_nodes=("a:1",))
        self.every_node = ["a:1", "b:2"]

    def __enter__(self) -> FakeStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def rebalance(self) -> RebalanceReport:
        return self.report

    def count_keys(self) -> dict[str, int]:
        return {"a:1": 5, "b:2": 4}


@pytest.mark.parametrize(
    ("report", "error"),
    [
        pytest.param(RebalanceReport(scanned=9, moved=4, moved_from={"a:1": 4}), None, id="finished"),
        pytest.param(
            RebalanceReport(scanned=9, moved=3, changed_during_move=1, complete=False),
            "retry",
            id="unfinished",
        ),
    ],
)
def test_rebalance_task_fails_until_a_pass_finishes(report: RebalanceReport, error: str | None) -> None:
    from featurelake_airflow.operators import rebalance_online_store

    hook = mock.Mock()
    hook.return_value.get_conn.return_value = FakeStore(report)
    hook.return_value.config.return_value = FakeStore(report).config
    with mock.patch.object(rebalance_online_store, "OnlineStoreHook", hook):
        task = rebalance_online_store.RebalanceOnlineStoreOperator(
            task_id="rebalance", online_conn_id="shards"
        )
        if error:
            with pytest.raises(RuntimeError, match=error):
                task.execute(context={})
        else:
            result = task.execute(context={})
            assert result["moved"] == 4 and result["keys_per_node"] == {"a:1": 5, "b:2": 4}
    hook.assert_called_once_with(online_conn_id="shards")


def test_a_rebalance_of_a_redis_cluster_fails_without_retries(monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from featurelake_airflow.operators.rebalance_online_store import RebalanceOnlineStoreOperator

    # A closed port: the task must refuse before it connects (a cluster client connects at once)
    connection = {"conn_type": "redis", "host": "127.0.0.1", "port": 1, "extra": {"cluster": True}}
    monkeypatch.setenv("AIRFLOW_CONN_ONLINE_CLUSTER", json.dumps(connection))
    task = RebalanceOnlineStoreOperator(task_id="rebalance", online_conn_id="online_cluster")
    with pytest.raises(
        AirflowFailException, match=r"'online_cluster' is a Redis Cluster.*redis-cli --cluster rebalance"
    ):
        task.execute(context={})


def test_the_demo_and_the_hook_read_a_connection_the_same_way(monkeypatch) -> None:
    from airflow.sdk import Connection

    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    connection = {
        "conn_type": "redis",
        "host": "redis-c0",
        "port": 7000,
        "login": "feature-writer",
        "password": "secret",
        "extra": {"cluster": "true", "ssl": True, "ssl_cert_reqs": "required"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", json.dumps(connection))
    expected = OnlineStoreConfig(
        nodes=("redis-c0:7000",),
        cluster=True,
        username="feature-writer",
        password="secret",
        ssl=True,
        ssl_cert_reqs="required",
    )
    assert OnlineStoreHook().config() == expected
    assert OnlineStoreHook.config_of(Connection.from_json(json.dumps(connection), conn_id="x")) == expected


class FakePublishStore:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __enter__(self) -> FakePublishStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def replace_date(self, view, feature_date, records, entity_ids) -> WriteReport:
        self.calls.append((view, feature_date, list(records), list(entity_ids)))
        return WriteReport(removed_stale=7)


def test_publishing_an_absent_partition_removes_the_dates_records(tmp_path) -> None:
    from featurelake_airflow.operators import publish_online_features

    store = FakePublishStore()
    hook = mock.Mock()
    hook.return_value.get_conn.return_value = store
    with mock.patch.object(publish_online_features, "OnlineStoreHook", hook):
        task = publish_online_features.PublishOnlineFeaturesOperator(
            task_id="publish", lake=str(tmp_path), ds="2030-01-01", online_conn_id="shards"
        )
        result = task.execute(context={})
    assert store.calls == [("user_features", date(2030, 1, 1), [], [])]
    assert result == {
        "partition": f"{tmp_path}/features/user_features/date=2030-01-01",
        "written": 0,
        "kept_newer": 0,
        "by_node": {},
        "redirected": 0,
        "removed_stale": 7,
    }
    hook.assert_called_once_with(online_conn_id="shards")


def test_partition_entities_are_the_ids_the_records_are_keyed_by(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake.offline_features import partition_entities, partition_records

    partition = tmp_path / "date=2026-10-28"
    partition.mkdir()
    assert partition_entities(str(partition)).to_pylist() == [], "a directory with no data file"
    ids = pa.array([7, 12], pa.int64())
    pq.write_table(pa.table({"user_id": ids, "v": [1.0, 2.0]}), partition / "part-0.parquet")
    (partition / "_SUCCESS").write_text("")
    entities = partition_entities(str(partition))
    keyed = [entity for entity, _ in partition_records(str(partition), feature_date=date(2026, 10, 28))]
    assert entities.to_pylist() == keyed == ["7", "12"]
    with pytest.raises(ValueError, match="no entity column 'merchant_id'"):
        partition_entities(str(partition), entity_column="merchant_id")


@pytest.mark.parametrize(
    "ids",
    [[1.0, 2.5], [True, False], ["a", None, "b"], [7, None, -3]],
    ids=["float", "bool", "string-with-null", "int-with-null"],
)
def test_partition_entities_match_the_keys_whatever_the_column_type(tmp_path, ids: list) -> None:
    """The publish task removes a date's records whose entity the partition lacks: its entity set
    must hold the very text the keys hold (str(1.0) is '1.0', where pyarrow's cast writes '1')."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake.offline_features import partition_entities, partition_records

    partition = tmp_path / "date=2026-10-28"
    partition.mkdir()
    rows = [i for i, entity in enumerate(ids) if entity is not None]
    table = pa.table({"entity": [ids[i] for i in rows], "v": [float(i) for i in rows]})
    pq.write_table(table, partition / "part-0.parquet")
    keyed = [
        entity
        for entity, _ in partition_records(
            str(partition), feature_date=date(2026, 10, 28), entity_column="entity"
        )
    ]
    assert partition_entities(str(partition), entity_column="entity").to_pylist() == keyed
    # and the ids of a column with nulls (which records refuse) are the others
    with_nulls = pa.table({"entity": ids})
    pq.write_table(with_nulls, partition / "part-0.parquet")
    assert partition_entities(str(partition), entity_column="entity").to_pylist() == [
        str(entity) for entity in ids if entity is not None
    ]


@pytest.mark.parametrize(
    "ids",
    [[7, 12, -3], [1.0, 2.5, 3.0], [True, False], ["a", "b", "c"]],
    ids=["int", "float", "bool", "string"],
)
def test_the_compute_layer_finds_ids_as_the_keys_hold_them_whatever_the_column_type(
    tmp_path, ids: list
) -> None:
    """The layered cache's compute layer is asked for ids as the keys hold them (str(id)), as the
    publish task keys them: a partition whose entity column is not text answers them too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake.offline_features import read_offline_features

    partition = tmp_path / "date=2026-10-28"
    partition.mkdir()
    values = [float(n) for n in range(1, len(ids) + 1)]
    pq.write_table(pa.table({"user_id": ids, "v": values}), partition / "part-0.parquet")
    wanted = [str(ids[0]), str(ids[1]), "nobody"]
    got = read_offline_features(str(tmp_path), wanted, as_of=date(2026, 10, 30))
    assert got == {
        str(ids[0]): FeatureRecord("2026-10-28", {"v": 1.0}),
        str(ids[1]): FeatureRecord("2026-10-28", {"v": 2.0}),
    }


def test_the_compute_layer_reads_a_partition_with_no_data_file_as_holding_no_entity(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake.offline_features import read_offline_features

    (tmp_path / "date=2026-10-27").mkdir()
    pq.write_table(pa.table({"user_id": ["a"], "v": [1.0]}), tmp_path / "date=2026-10-27" / "part-0.parquet")
    (tmp_path / "date=2026-10-28").mkdir()
    (tmp_path / "date=2026-10-28" / "_SUCCESS").write_text("")
    # the newest date holds no entity: nothing is served from an older one
    assert read_offline_features(str(tmp_path), ["a"], as_of=date(2026, 10, 28)) == {}
    assert read_offline_features(str(tmp_path), ["a"], as_of=date(2026, 10, 27)) == {
        "a": FeatureRecord("2026-10-27", {"v": 1.0})
    }


# A compact date (which date.fromisoformat takes) is no partition either, as Spark's listing says.
@pytest.mark.parametrize("name", ["date=2026-10-28.bak", "date=20261027"])
def test_the_compute_layer_names_a_directory_that_is_no_date_partition(tmp_path, name: str) -> None:
    from featurelake.offline_features import read_offline_features

    (tmp_path / "date=2026-10-28").mkdir()
    (tmp_path / name).mkdir()
    with pytest.raises(ValueError, match=rf"{re.escape(name)} is not a partition of .*Move it out"):
        read_offline_features(str(tmp_path), ["a"], as_of=date(2026, 10, 28))


def _connection(conn_id: str = "online", **fields):
    from airflow.sdk import Connection

    return Connection(conn_id=conn_id, conn_type="redis", **fields)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # extra_dejson reads such an extra as {}: the store would use the host alone, not the ring
        pytest.param(
            '{"nodes": ["r0:6379", "r1:6379"],}', "'online': its extra is not valid JSON", id="bad-json"
        ),
        pytest.param('["r0:6379"]', "'online': its extra must be a JSON object", id="not-an-object"),
    ],
)
def test_an_extra_that_is_no_json_object_is_refused_naming_the_connection(extra: str, message: str) -> None:
    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    with pytest.raises(ValueError, match=message):
        OnlineStoreHook.config_of(_connection(host="r0", extra=extra))


def test_a_uri_connections_path_is_its_database_and_its_password_is_decoded() -> None:
    from airflow.sdk import Connection

    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    uri = "redis://feature-writer:p%40ss%3Aw%2Fo%20rd@redis-0:6380/2?key_prefix=prod"
    config = OnlineStoreHook.config_of(Connection.from_uri(uri, conn_id="online"))
    assert (config.nodes, config.db, config.username, config.password, config.key_prefix) == (
        ("redis-0:6380",),
        2,
        "feature-writer",
        "p@ss:w/o rd",
        "prod",
    )
    with pytest.raises(ValueError, match=r"'online' names two databases: 2 in its schema .* and '3'"):
        OnlineStoreHook.config_of(Connection.from_uri("redis://redis-0/2?db=3", conn_id="online"))
    with pytest.raises(ValueError, match=r"'online': its schema .* must be a database number"):
        OnlineStoreHook.config_of(Connection.from_uri("redis://redis-0/features", conn_id="online"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"host": "r", "extra": json.dumps({"nodes": ["r0"]})},
            "'online': extra `nodes` holds 'r0'; each entry must be",
            id="node-without-port",
        ),
        pytest.param(
            {"host": "r", "extra": json.dumps({"nodes": ["r0:1", 6379]})},
            "'online': extra `nodes` holds 6379",
            id="node-not-text",
        ),
        pytest.param(
            {"host": "r", "extra": json.dumps({"nodes": ["r0:1"], "previous_nodes": ["r0"]})},
            "'online': extra `previous_nodes` holds 'r0'",
            id="previous-node-without-port",
        ),
        pytest.param(
            {"host": "r", "extra": json.dumps({"batch_size": 0})},
            "'online': batch_size must be >= 1",
            id="store-error",
        ),
        pytest.param(
            {"host": "r", "extra": json.dumps({"ssl": True, "ssl_cert_reqs": "require"})},
            "'online': extra `ssl_cert_reqs` must be one of required, optional, none, got 'require'",
            id="tls-verify-mode",
        ),
        pytest.param(
            {"host": "redis-0:6380"}, "'online': its host 'redis-0:6380' must be a host", id="host-with-port"
        ),
        pytest.param(
            {"host": "rediss://redis-0"}, "'online': its host 'rediss://redis-0' must be", id="host-uri"
        ),
    ],
)
def test_bad_connection_fields_fail_naming_the_connection_and_the_field(fields: dict, message: str) -> None:
    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    with pytest.raises(ValueError, match=message):
        OnlineStoreHook.config_of(_connection(**fields))


def test_an_ipv6_host_and_a_form_connection_with_blank_port_work() -> None:
    from featurelake_airflow.hooks.online_store import OnlineStoreHook

    assert OnlineStoreHook.config_of(_connection(host="::1")).nodes == ("::1:6379",)
    form = _connection(
        host="redis-0", port=None, extra=json.dumps({"db": 1, "startup_nodes": "", "ssl_cert_reqs": None})
    )
    config = OnlineStoreHook.config_of(form)
    assert (config.nodes, config.db) == (("redis-0:6379",), 1)


def test_a_partition_with_a_column_the_format_cannot_hold_fails_before_any_record(tmp_path) -> None:
    """Checked on the schema: a bad column that is null in the first rows would otherwise fail the
    publish in a later batch, after it had written the first ones."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake.offline_features import partition_records

    partition = tmp_path / "date=2026-10-28"
    partition.mkdir()
    refunds = pa.array([None] * 5 + [1] * 5, pa.decimal128(10, 2))
    pq.write_table(
        pa.table({"user_id": [f"u{i}" for i in range(10)], "refund": refunds}), partition / "p.parquet"
    )
    records = partition_records(str(partition), feature_date=date(2026, 10, 28), batch_size=2)
    with pytest.raises(TypeError, match=r"feature column 'refund' is of type decimal128\(10, 2\)"):
        next(records)
