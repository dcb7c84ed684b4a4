"""Move the online store's keys to the nodes its ring now names (a live rebalance)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from featurelake_airflow.hooks.online_store import OnlineStoreHook


class RebalanceOnlineStoreOperator(BaseOperator):
    """Run one rebalance pass over the connection's `nodes` and `previous_nodes`
    (`OnlineStore.rebalance`). It is idempotent, so a retry after a crash finishes the move. Fails
    when the pass could not finish (keys changed under it): retry until it does. Before moving, every
    node must answer and be a distinct server (`OnlineStoreHook.check_servers`). Returns the counts."""

    ui_color = "#fbe3e4"

    def __init__(self, *, online_conn_id: str = OnlineStoreHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.online_conn_id = online_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        hook = OnlineStoreHook(online_conn_id=self.online_conn_id)
        if hook.config().cluster:  # no retry can change that
            raise AirflowFailException(
                f"connection {self.online_conn_id!r} is a Redis Cluster, which moves its own slots: "
                "run `redis-cli --cluster rebalance` instead of this DAG"
            )
        with hook.get_conn() as store:
            try:
                hook.check_servers(store)
            except ValueError as error:  # the connection names one server twice: a retry fails again
                raise AirflowFailException(str(error)) from None
            if not store.config.previous_nodes:
                self.log.warning(
                    "connection %r lists no previous_nodes: this pass checks the keys of its `nodes` "
                    "only. Keys on a node the ring no longer lists are not seen; to move them, list "
                    "the old ring's nodes in `previous_nodes` and run this DAG again",
                    self.online_conn_id,
                )
            report = store.rebalance()
            counts = store.count_keys()
        self.log.info("Rebalance: %s; keys per node now: %s", report, counts)
        if not report.complete:
            raise RuntimeError(
                f"{report.changed_during_move} keys changed on their old node during the move; retry "
                "this task. Were writers still using the old ring? Point them at the new `nodes` first."
            )
        if store.config.previous_nodes:
            self.log.info(
                "Every key is on its ring node. Remove `previous_nodes` from connection %r.",
                self.online_conn_id,
            )
        else:
            self.log.info("Every key of the ring's nodes is on its ring node.")
        return {**asdict(report), "keys_per_node": counts, "scanned_nodes": store.every_node}
