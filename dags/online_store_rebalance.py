"""
### online_store_rebalance

Moves the Redis online store's keys to the nodes its consistent-hash ring now names, live: readers
and writers keep working while it runs. Trigger it by hand after changing the ring:

1. Edit the `featurelake_online` connection: the new ring in `nodes`, the old one in
   `previous_nodes`. Writers then use the new ring, and reads fall back to a key's old node.
2. Trigger this DAG, unpaused (it starts paused; a run of a paused DAG stays queued).
   **rebalance_online_store** scans every node (SCAN) and moves each misplaced key:
   copy to its new node (the later feature date wins, the TTL is kept), then delete it from the old
   node only if unchanged. A failed or interrupted run is retried and finishes the move.
3. When it succeeds, remove `previous_nodes` from the connection.

One pass runs at a time: a pass holds a lock on every node it scans (`<prefix>;rebalance`), and a
second one (a direct `OnlineStore.rebalance()` call, or a try still running beside its retry) fails
and moves nothing, since two passes at once lose keys.

A Redis Cluster moves its own slots (`redis-cli --cluster rebalance`). See docs/online-store.md.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from featurelake_airflow.operators.rebalance_online_store import RebalanceOnlineStoreOperator

with DAG(
    dag_id="online_store_rebalance",
    doc_md=__doc__,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "featurelake", "retries": 3, "retry_delay": timedelta(seconds=30)},
    tags=["featurelake", "online-store", "maintenance"],
) as dag:
    RebalanceOnlineStoreOperator(task_id="rebalance_online_store", online_conn_id="featurelake_online")


if __name__ == "__main__":
    dag.test()
