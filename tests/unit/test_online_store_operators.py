"""The online store's operators and hook around the library: the connection they read, and what the
rebalance task does with an unfinished pass (the real moves are in tests/integration)."""

from __future__ import annotations

import json
from unittest import mock

import pytest

from featurelake.online_store import OnlineStoreConfig, RebalanceReport


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
