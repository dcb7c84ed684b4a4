"""The online store and the layered cache on private redis-servers, as ratios against baselines run
in the same script (the machines are shared and noisy, so absolute figures drift between runs).

    .venv/bin/python bench/online_store.py [--records 200000] [--repeat 3] [--json out.json]

Records look like user_features rows: 12 values (floats, ints, an ISO timestamp and a string).
- Reads of every record: `OnlineStore.read` (one MGET per node and batch of 1,000) against one GET
  per key over the same connections (pipelining off: the naive client).
- Writes, as the daily publish meets them: before each timed run the store is emptied and seeded
  (untimed) with the previous date's records of the same ids, so every timed write replaces an
  older record. `OnlineStore.write` (the Lua script that keeps the later feature date: a GET and
  an unpack of the held record's date, then SET) against plain pipelined `SET PX` of the same
  bytes, which keeps no date. Then the publish task's `replace_date` (the write, then
  `remove_stale`'s SCAN of every key name) against the write alone. Apart: `OnlineStore.write`
  into an empty store (a first publish, or a backfill of new ids), where the script finds no record.
- The layered cache: `get_many` answered from the local layer against the same call answered from
  Redis (the local layer emptied first).
- Single-key latency of `LayeredFeatureCache.get`, local hit and Redis hit, p50 and p99.
- A rebalance from three nodes to four: keys moved per second.
- A Redis Cluster of three primaries: `OnlineStore.write` (over the previous date's records, seeded
  as on the ring) against the same on the ring, and `OnlineStore.read`. Then the two ways to fetch
  every key's bytes in batches of 1,000, run in turn (the order alternates): redis-py's
  `mget_nonatomic` (one MGET per slot), which the store uses, and one GET per key in a cluster
  pipeline, its fallback for a batch with a slot that a migration has split (TRYAGAIN).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from featurelake.cache import LayeredFeatureCache
from featurelake.feature_records import FeatureRecord, encode_record, record_from_row
from featurelake.local_redis import LocalRedisCluster, LocalRedisServer
from featurelake.online_store import OnlineStore, OnlineStoreConfig

VIEW = "user_features"
FEATURE_DATE = "2026-10-28"
PREVIOUS_DATE = "2026-10-27"  # of the records each timed write replaces
console = Console(width=None if Console().is_terminal else 140)


def feature_records(count: int, *, feature_date: str = FEATURE_DATE) -> list[tuple[str, FeatureRecord]]:
    base = datetime.fromisoformat(feature_date).replace(tzinfo=UTC)
    rows = []
    for i in range(count):
        row = {
            "total_spend": i * 1.25,
            "avg_spend": i / 7,
            "std_spend": None if i % 5 == 0 else i / 11,
            "max_spend": i * 0.5,
            "transaction_count": i % 97,
            "unique_merchants": i % 31,
            "last_transaction_ts": base - timedelta(seconds=i),
            "days_since_last_transaction": i % 90,
            "spend_7d": i * 0.1,
            "transaction_count_7d": i % 7,
            "last_amount": (i % 200) - 20.5,
            "top_category_group": ("food", "travel", "health", "entertainment")[i % 4],
        }
        rows.append((f"u{i:07d}", record_from_row(row, feature_date=feature_date)))
    return rows


def median_seconds(
    action: Callable[[], object], repeat: int, before: Callable[[], object] | None = None
) -> float:
    runs = []
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.perf_counter()
        action()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def flush(store: OnlineStore) -> None:
    """Empty every node of `store` (on a cluster, every primary)."""
    if store.config.cluster:
        store.cluster_client().flushall()
    else:
        for node in store.every_node:
            store.client(node).flushall()


def seed(store: OnlineStore, previous: list[tuple[str, FeatureRecord]]) -> None:
    """Untimed: empty `store`, then write `previous` (the previous date's records of the same ids),
    so that a timed write of today's records replaces an older record on every key."""
    flush(store)
    store.write(VIEW, previous)


def check_holds(store: OnlineStore, ids: list[str], feature_date: str) -> None:
    """Fail unless `store` holds a record of `feature_date` for every id (after a timed write)."""
    held = store.read(VIEW, ids)
    dates = {record.feature_date for record in held.values()}
    if dates != {feature_date} or len(held) != len(ids):
        raise RuntimeError(f"the store holds {len(held)} of {len(ids)} records, dated {sorted(dates)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    records = feature_records(args.records)
    previous = feature_records(args.records, feature_date=PREVIOUS_DATE)
    ids = [entity for entity, _ in records]
    results: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(LocalRedisServer()) for _ in range(4)]
        nodes = [server.address for server in servers]
        ring = nodes[:3]
        store = stack.enter_context(OnlineStore(OnlineStoreConfig(nodes=ring)))

        # Writes over the previous date's records (the daily case): the newer-wins script against
        # plain pipelined SET PX of the same bytes.
        def plain_set() -> None:
            values = {store.key(VIEW, entity): encode_record(record) for entity, record in records}
            for node, keys in store.ring.group_by_node(values).items():
                pipe = store.client(node).pipeline(transaction=False)
                for n, key in enumerate(keys, 1):
                    pipe.set(key, values[key], px=store.config.key_ttl_seconds * 1000)
                    if n % 1000 == 0:
                        pipe.execute()
                pipe.execute()

        def seeded() -> None:
            seed(store, previous)

        results["write_plain_set_over_previous_date_s"] = median_seconds(
            plain_set, args.repeat, before=seeded
        )
        check_holds(store, ids, FEATURE_DATE)
        results["write_store_over_previous_date_s"] = median_seconds(
            lambda: store.write(VIEW, records), args.repeat, before=seeded
        )
        check_holds(store, ids, FEATURE_DATE)
        # A first publish: the script finds no record to compare with.
        results["write_store_into_empty_s"] = median_seconds(
            lambda: store.write(VIEW, records), args.repeat, before=lambda: flush(store)
        )
        # The publish task: the same write, then removing records of that date whose entity the
        # date no longer holds (none here, the daily case: one SCAN of every key name).
        results["publish_replace_date_over_previous_date_s"] = median_seconds(
            lambda: store.replace_date(VIEW, FEATURE_DATE, records, ids), args.repeat, before=seeded
        )
        check_holds(store, ids, FEATURE_DATE)

        # Reads of every record: grouped MGET against one GET per key.
        def one_get_per_key() -> None:
            for entity in ids:
                key = store.key(VIEW, entity)
                store.client(store.ring.node_for(key)).get(key)

        results["read_store_s"] = median_seconds(lambda: store.read(VIEW, ids), args.repeat)
        results["read_get_per_key_s"] = median_seconds(one_get_per_key, 1)

        # The layered cache: local layer against Redis, for the same call.
        cache = LayeredFeatureCache(view=VIEW, store=store, max_entries=args.records, ttl_seconds=3600)
        results["cache_from_redis_s"] = median_seconds(
            lambda: cache.get_many(ids), args.repeat, before=cache.invalidate
        )
        cache.get_many(ids)
        results["cache_local_s"] = median_seconds(lambda: cache.get_many(ids), args.repeat)

        sample = ids[:: max(1, len(ids) // 2000)]
        local_latency, redis_latency = [], []
        for entity in sample:
            started = time.perf_counter()
            cache.get(entity)
            local_latency.append(time.perf_counter() - started)
        cache.invalidate()
        for entity in sample:
            started = time.perf_counter()
            cache.get(entity)
            redis_latency.append(time.perf_counter() - started)
        for name, values in (("local", local_latency), ("redis", redis_latency)):
            quantiles = statistics.quantiles(values, n=100)
            results[f"get_{name}_p50_us"] = quantiles[49] * 1e6
            results[f"get_{name}_p99_us"] = quantiles[98] * 1e6

        # A rebalance from three nodes to four.
        with OnlineStore(OnlineStoreConfig(nodes=nodes, previous_nodes=ring)) as migrating:
            started = time.perf_counter()
            report = migrating.rebalance()
            results["rebalance_s"] = time.perf_counter() - started
            results["rebalance_moved"] = report.moved
            assert report.complete and sum(migrating.count_keys(VIEW).values()) == args.records

    # A Redis Cluster: the store's writes, and its reads against one MGET per slot.
    with (
        LocalRedisCluster(primaries=3) as cluster,
        OnlineStore(OnlineStoreConfig(nodes=cluster.addresses[:1], cluster=True)) as on_cluster,
    ):
        results["cluster_write_store_over_previous_date_s"] = median_seconds(
            lambda: on_cluster.write(VIEW, records), args.repeat, before=lambda: seed(on_cluster, previous)
        )
        check_holds(on_cluster, ids, FEATURE_DATE)
        keys = [on_cluster.key(VIEW, entity) for entity in ids]

        results["cluster_read_store_s"] = median_seconds(lambda: on_cluster.read(VIEW, ids), args.repeat)
        batches = [
            keys[i : i + on_cluster.config.batch_size]
            for i in range(0, len(keys), on_cluster.config.batch_size)
        ]

        def mget_per_slot() -> None:
            for batch in batches:
                on_cluster.cluster_client().mget_nonatomic(batch)

        def get_pipeline() -> None:
            for batch in batches:
                pipe = on_cluster.cluster_client().pipeline()
                for key in batch:
                    pipe.get(key)
                pipe.execute()

        runs: dict[str, list[float]] = {"cluster_mget_per_slot_s": [], "cluster_get_pipeline_s": []}
        fetches = [("cluster_mget_per_slot_s", mget_per_slot), ("cluster_get_pipeline_s", get_pipeline)]
        for turn in range(2 * args.repeat):
            for name, fetch in fetches if turn % 2 == 0 else fetches[::-1]:
                started = time.perf_counter()
                fetch()
                runs[name].append(time.perf_counter() - started)
        results.update((name, statistics.median(times)) for name, times in runs.items())
        assert len(on_cluster.read(VIEW, ids)) == args.records

    write = results["write_store_over_previous_date_s"]
    publish = results["publish_replace_date_over_previous_date_s"]
    ratios = {
        "read: one GET per key / grouped MGET": results["read_get_per_key_s"] / results["read_store_s"],
        "write over the previous date: newer-wins script / plain SET PX": write
        / results["write_plain_set_over_previous_date_s"],
        "write: over the previous date / into an empty store": write / results["write_store_into_empty_s"],
        "publish over the previous date: write + remove_stale / write": publish / write,
        "cache get_many: from Redis / local": results["cache_from_redis_s"] / results["cache_local_s"],
        "cluster fetch: GET pipeline (the fallback) / MGET per slot": results["cluster_get_pipeline_s"]
        / results["cluster_mget_per_slot_s"],
        "write over the previous date: cluster / ring": results["cluster_write_store_over_previous_date_s"]
        / write,
    }
    table = Table(
        title=f"Online store, {args.records:,} records, a ring of 3 private redis-servers and a 3-primary cluster"
    )
    for column in ("measurement", "value"):
        table.add_column(column)
    for name, value in results.items():
        table.add_row(name, f"{value:,.3f}" if isinstance(value, float) else f"{value:,}")
    table.add_row("records/s: store read", f"{args.records / results['read_store_s']:,.0f}")
    table.add_row("records/s: store write over the previous date", f"{args.records / write:,.0f}")
    table.add_row("keys/s: rebalance", f"{results['rebalance_moved'] / results['rebalance_s']:,.0f}")
    table.add_row("records/s: cluster read", f"{args.records / results['cluster_read_store_s']:,.0f}")
    table.add_row(
        "records/s: cluster write over the previous date",
        f"{args.records / results['cluster_write_store_over_previous_date_s']:,.0f}",
    )
    for name, ratio in ratios.items():
        table.add_row(name, f"{ratio:.2f}x")
    console.print(table)
    if args.json:
        args.json.write_text(
            json.dumps({"records": args.records, "results": results, "ratios": ratios}, indent=2)
        )


if __name__ == "__main__":
    main()
