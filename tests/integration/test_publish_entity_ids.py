"""The publish task on real Redis servers and real Parquet partitions, with entity ids that are not
plain text (ids stored as bytes, ids typed differently between files, NaN ids), and with Redis
stopping part-way through a publish: what the task writes, the error it gives, and what its retry
does."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import AirflowFailException

from featurelake.feature_records import FeatureRecord
from featurelake.local_redis import LocalRedisServer
from featurelake.offline_features import read_offline_features
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import keys_on

pytestmark = pytest.mark.integration

DAY = "2030-01-01"


def write_files(lake: Path, *tables: pa.Table) -> Path:
    partition = lake / "features" / "user_features" / f"date={DAY}"
    partition.mkdir(parents=True)
    for number, table in enumerate(tables):
        pq.write_table(table, partition / f"part-{number:05d}.parquet")
    return partition


def use_connection(monkeypatch: pytest.MonkeyPatch, node: str, **extra) -> None:
    host, port = node.rsplit(":", 1)
    connection = {"conn_type": "redis", "host": host, "port": int(port), "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", json.dumps(connection))


def publish(lake: Path) -> dict:
    from featurelake_airflow.operators.publish_online_features import PublishOnlineFeaturesOperator

    return PublishOnlineFeaturesOperator(task_id="publish", lake=str(lake), ds=DAY).execute(context={})


def test_ids_stored_as_bytes_are_published_and_computed_as_their_text(
    tmp_path: Path, redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parquet text without its UTF-8 annotation (BYTE_ARRAY, as Impala and some Hive and Spark
    setups write) reads as binary. Before, the ids were keyed by their repr, fl:user_features:b'u1',
    which no reader asks for, and the compute layer found none of them."""
    node = redis_nodes[0]
    use_connection(monkeypatch, node)
    ids = pa.array([b"u1", "ü-2".encode()], pa.binary())
    write_files(tmp_path, pa.table({"user_id": ids, "v": [1.0, 2.0]}))
    assert publish(tmp_path)["written"] == 2
    assert keys_on(node) == {b"fl:user_features:u1", "fl:user_features:ü-2".encode()}
    expected = {"u1": FeatureRecord(DAY, {"v": 1.0}), "ü-2": FeatureRecord(DAY, {"v": 2.0})}
    with OnlineStore(OnlineStoreConfig(nodes=(node,))) as store:
        assert store.read("user_features", ["u1", "ü-2"]) == expected
    features = str(tmp_path / "features" / "user_features")
    assert read_offline_features(features, ["u1", "ü-2", "x"], as_of=date(2030, 1, 1)) == expected


def test_ids_stored_as_bytes_that_are_no_text_fail_before_any_write(
    tmp_path: Path, redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = redis_nodes[0]
    use_connection(monkeypatch, node, batch_size=2)
    ids = pa.array([b"u1", b"u2", b"u3", b"\xff\xfe"], pa.binary())
    partition = write_files(tmp_path, pa.table({"user_id": ids, "v": [1.0, 2.0, 3.0, 4.0]}))
    with pytest.raises(ValueError, match=rf"{partition}.*'user_id'.*UTF-8.*strings"):
        publish(tmp_path)
    assert keys_on(node) == set(), "the date was half published"


def test_files_that_type_the_ids_as_ints_and_as_floats_are_refused(
    tmp_path: Path, redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file of int ids and one of float ids: before, every id of the partition was read as a
    float, so the int file's user 1 was published as fl:user_features:1.0 (its key on other days,
    and the key readers ask for, is fl:user_features:1), and a rerun's removal of stale records
    left the old key in place."""
    node = redis_nodes[0]
    use_connection(monkeypatch, node)
    partition = write_files(
        tmp_path,
        pa.table({"user_id": pa.array([1, 2], pa.int64()), "v": [1.0, 2.0]}),
        pa.table({"user_id": pa.array([3.5], pa.float64()), "v": [3.0]}),
    )
    with pytest.raises(ValueError, match=rf"{partition}.*'user_id' as double, int64.*one type"):
        publish(tmp_path)
    assert keys_on(node) == set()


def test_int_ids_of_two_widths_are_one_type(
    tmp_path: Path, redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = redis_nodes[0]
    use_connection(monkeypatch, node)
    write_files(
        tmp_path,
        pa.table({"user_id": pa.array([1], pa.int32()), "v": [1.0]}),
        pa.table({"user_id": pa.array([2**40], pa.int64()), "v": [2.0]}),
    )
    assert publish(tmp_path)["written"] == 2
    assert keys_on(node) == {b"fl:user_features:1", f"fl:user_features:{2**40}".encode()}


def test_a_nan_id_is_an_empty_id(
    tmp_path: Path, redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """NaN marks a missing id as null does (polars and Spark keep it apart from null). Before, its
    row was published as fl:user_features:nan."""
    node = redis_nodes[0]
    use_connection(monkeypatch, node)
    write_files(tmp_path, pa.table({"user_id": [1.5, float("nan")], "v": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="1 feature rows have an empty 'user_id'"):
        publish(tmp_path)
    assert keys_on(node) == set()
    # and the compute layer serves no record for it either
    features = str(tmp_path / "features" / "user_features")
    assert read_offline_features(features, ["1.5", "nan"], as_of=date(2030, 1, 1)) == {
        "1.5": FeatureRecord(DAY, {"v": 1.0})
    }


def test_redis_stopping_mid_publish_names_the_date_and_the_retry_publishes_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    users = [f"u{i:03d}" for i in range(300)]
    write_files(tmp_path, pa.table({"user_id": users, "n": list(range(300))}))
    with LocalRedisServer() as server:
        use_connection(monkeypatch, server.address, batch_size=100, retries=1, retry_backoff_cap=0.01)
        write_node = OnlineStore._write_node
        batches: list[int] = []

        def killed_after_the_first_batch(self, *args, **kwargs):
            written = write_node(self, *args, **kwargs)
            batches.append(written)
            if len(batches) == 1:
                server.kill()
            return written

        with monkeypatch.context() as patch:
            patch.setattr(OnlineStore, "_write_node", killed_after_the_first_batch)
            with pytest.raises(redis.ConnectionError) as failure:
                publish(tmp_path)
        message = str(failure.value)
        assert f"user_features of {DAY}" in message and server.address in message, message
        assert "retry" in message, message
        server.restart()  # with no persistence it comes back empty, as after a crash
        result = publish(tmp_path)  # the retry
        assert (result["written"], result["removed_stale"]) == (300, 0)
        with OnlineStore(OnlineStoreConfig(nodes=(server.address,))) as store:
            assert len(store.read("user_features", users)) == 300


@pytest.mark.parametrize("ds", ["2030-01-01T00:00:00+00:00", "{{ ds }}", ""])
def test_a_ds_that_is_no_date_is_refused_naming_it(tmp_path: Path, ds: str) -> None:
    """Before: `Invalid isoformat string: '2030-01-01T00:00:00+00:00'`, naming neither the field nor
    what to pass (`{{ ts }}` given for `{{ ds }}`, or a template left unrendered)."""
    from featurelake_airflow.operators.publish_online_features import PublishOnlineFeaturesOperator

    task = PublishOnlineFeaturesOperator(task_id="publish", lake=str(tmp_path), ds=ds)
    with pytest.raises(AirflowFailException, match=r"ds must be the run's date as YYYY-MM-DD .*\{\{ ds \}\}"):
        task.execute(context={})  # at once: no retry gives it another ds
