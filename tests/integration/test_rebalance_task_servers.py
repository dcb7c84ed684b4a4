"""The rebalance task (`RebalanceOnlineStoreOperator.execute`) on real Redis servers whose connection
names them badly: one server under two names (an address in `nodes`, a host name in
`previous_nodes`), or a node that does not answer. Each must fail before any key moves, naming the
node and what to fix; the first used to delete keys it had "moved" onto the server they were on.
A node that refuses the password is told apart from one that is down."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import free_port, keys_on, redis_client

pytestmark = pytest.mark.integration

RECORDS = {f"u{i:04d}": FeatureRecord("2030-01-01", {"n": i}) for i in range(600)}


def rebalance(monkeypatch: pytest.MonkeyPatch, extra: dict) -> dict:
    from featurelake_airflow.operators.rebalance_online_store import RebalanceOnlineStoreOperator

    connection = {"conn_type": "redis", "host": "127.0.0.1", "port": 1, "extra": {"retries": 0, **extra}}
    monkeypatch.setenv("AIRFLOW_CONN_SHARDS", json.dumps(connection))
    return RebalanceOnlineStoreOperator(task_id="rebalance", online_conn_id="shards").execute(context={})


def test_one_server_under_two_names_is_refused_and_loses_no_key(
    redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = redis_nodes[:2]
    a_by_name = a.replace("127.0.0.1", "localhost")
    with OnlineStore(OnlineStoreConfig(nodes=[a_by_name])) as store:
        store.write("user_features", RECORDS.items())
    # The ring grows by b, and the connection now names a by its address.
    with pytest.raises(AirflowFailException, match=rf"{a}.*{a_by_name}.*same Redis server.*one name"):
        rebalance(monkeypatch, {"nodes": [a, b], "previous_nodes": [a_by_name]})
    assert len(keys_on(a)) == len(RECORDS), "keys were deleted from the server they stayed on"
    assert keys_on(b) == set()


def test_the_library_rebalance_refuses_one_server_under_two_names_too(redis_nodes: list[str]) -> None:
    """`OnlineStore.rebalance()` called without Airflow (bench/online_store.py does) is guarded too."""
    a, b = redis_nodes[:2]
    a_by_name = a.replace("127.0.0.1", "localhost")
    with OnlineStore(OnlineStoreConfig(nodes=[a_by_name])) as store:
        store.write("user_features", RECORDS.items())
    grown = OnlineStoreConfig(nodes=[a, b], previous_nodes=[a_by_name])
    with OnlineStore(grown) as store, pytest.raises(ValueError, match=rf"{a} and {a_by_name} are the same"):
        store.rebalance()
    assert len(keys_on(a)) == len(RECORDS) and keys_on(b) == set()


def test_an_unreachable_previous_node_is_named_with_what_to_do(
    redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = redis_nodes[:2]
    gone = f"127.0.0.1:{free_port()}"  # nothing listens there
    with OnlineStore(OnlineStoreConfig(nodes=[a])) as store:
        store.write("user_features", RECORDS.items())
    with pytest.raises(
        RuntimeError,
        match=rf"{gone} \(in `previous_nodes`\) does not answer.*Start it.*remove it from `previous",
    ):
        rebalance(monkeypatch, {"nodes": [a, b], "previous_nodes": [a, gone]})
    assert len(keys_on(a)) == len(RECORDS) and keys_on(b) == set(), "nothing moves before every node answers"


def test_a_node_that_refuses_the_password_is_not_called_unreachable(
    redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = redis_nodes[:2]
    with redis_client(b) as client:
        client.config_set("requirepass", "other secret")
        try:
            with pytest.raises(
                AirflowFailException, match=rf"{b} \(in `nodes`\) refuses its login and password"
            ):
                rebalance(monkeypatch, {"nodes": [a, b], "previous_nodes": [a]})
        finally:
            client.auth("other secret")
            client.config_set("requirepass", "")


def test_a_rebalance_with_every_node_up_moves_keys_and_returns_a_json_report(
    redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=[a])) as store:
        store.write("user_features", RECORDS.items())
    result = rebalance(monkeypatch, {"nodes": [a, b], "previous_nodes": [a]})
    assert result["complete"] and result["moved"] == len(keys_on(b)) > 0, result
    assert json.loads(json.dumps(result))["keys_per_node"] == {a: len(keys_on(a)), b: len(keys_on(b))}
    assert rebalance(monkeypatch, {"nodes": [a, b], "previous_nodes": [a]})["moved"] == 0, "idempotent"


def test_a_pass_without_previous_nodes_says_it_saw_only_the_rings_nodes(
    redis_nodes: list[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A ring shrunk from a, b, c to b, c without `previous_nodes`: the pass never sees a's keys,
    and it logged "Every key is on its ring node" all the same. It now says which nodes it scanned,
    and how to move the rest; with the old ring listed, every key moves."""
    a, b, c = redis_nodes[:3]
    with OnlineStore(OnlineStoreConfig(nodes=[a, b, c])) as store:
        store.write("user_features", RECORDS.items())
    stranded = len(keys_on(a))
    capfd.readouterr()
    result = rebalance(monkeypatch, {"nodes": [b, c]})
    assert result["scanned_nodes"] == [b, c] and len(keys_on(a)) == stranded > 0, result
    said = " ".join("".join(capfd.readouterr()).split())  # the task's log, its lines joined
    assert "lists no previous_nodes: this pass checks the keys of its `nodes` only" in said, said
    assert "Every key is on its ring node." not in said

    result = rebalance(monkeypatch, {"nodes": [b, c], "previous_nodes": [a, b, c]})
    assert result["scanned_nodes"] == [b, c, a] and result["moved"] == stranded, result
    assert keys_on(a) == set() and len(keys_on(b)) + len(keys_on(c)) == len(RECORDS)
