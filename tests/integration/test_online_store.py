"""The Redis online store on real servers: a ketama ring of four pytest-redis shards, and a real
3-primary Redis Cluster. Grouped reads and writes, the later feature date winning, TTLs, a live
rebalance that loses no key (with readers and writers running, and after an interruption), and the
layered cache over Redis with the lake as its compute layer."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from featurelake.cache import LayeredFeatureCache
from featurelake.feature_records import FeatureRecord, encode_record, feature_key
from featurelake.offline_features import read_offline_features
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from featurelake.sharding import ShardRing
from tests.support import keys_on, redis_client

pytestmark = pytest.mark.integration

VIEW = "user_features"


def records(n: int, day: str = "2026-10-28", *, start: int = 0) -> list[tuple[str, FeatureRecord]]:
    return [
        (f"u{i:06d}", FeatureRecord(day, {"n": i, "spend": i / 4, "group": "food"}))
        for i in range(start, start + n)
    ]


def test_grouped_writes_and_reads_place_every_key_on_its_ring_node(redis_nodes: list[str]) -> None:
    nodes = redis_nodes[:3]
    with OnlineStore(OnlineStoreConfig(nodes=nodes, batch_size=700)) as store:
        report = store.write(VIEW, records(5000))
        assert (report.written, report.kept_newer) == (5000, 0)
        assert sum(report.by_node.values()) == 5000 and set(report.by_node) == set(nodes)
        got = store.read(VIEW, [f"u{i:06d}" for i in range(5000)] + ["nobody"])
    assert len(got) == 5000 and "nobody" not in got
    assert got["u000007"] == FeatureRecord("2026-10-28", {"n": 7, "spend": 1.75, "group": "food"})
    ring = ShardRing(nodes)
    for node in nodes:
        on_node = keys_on(node)
        assert len(on_node) == report.by_node[node]
        assert all(ring.node_for(key) == node for key in on_node)
    assert not keys_on(redis_nodes[3])


def test_the_later_feature_date_wins_and_ttls_are_set(redis_nodes: list[str]) -> None:
    config = OnlineStoreConfig(nodes=redis_nodes[:2], key_ttl_seconds=3600)
    with OnlineStore(config) as store:
        store.write(VIEW, records(100, "2026-10-28"))
        older = store.write(VIEW, records(100, "2026-10-01"))  # a backfill of an older date
        assert (older.written, older.kept_newer) == (0, 100)
        again = store.write(VIEW, records(100, "2026-10-28"))  # a rerun of the same date
        assert (again.written, again.kept_newer) == (100, 0)
        newer = store.write(VIEW, records(50, "2026-10-29"))
        assert newer.written == 50
        got = store.read(VIEW, [f"u{i:06d}" for i in range(100)])
        assert {r.feature_date for i, r in got.items() if int(i[1:]) < 50} == {"2026-10-29"}
        assert {r.feature_date for i, r in got.items() if int(i[1:]) >= 50} == {"2026-10-28"}
        key = feature_key("fl", VIEW, "u000001")
        ttl = store.client(store.ring.node_for(key)).ttl(key)
        assert 3500 < ttl <= 3600


class _WriterBetweenMoves(OnlineStore):
    """A writer already on the new ring writes a batch of newer records (200 users, 2026-10-29)
    after each of the pass's first ten moves, so that its writes land while keys are moving."""

    def __init__(self, config: OnlineStoreConfig) -> None:
        super().__init__(config)
        self.batches = iter(range(0, 2000, 200))

    def _move(self, source, keys, report):
        super()._move(source, keys, report)
        if (start := next(self.batches, None)) is not None:
            with OnlineStore(self.config) as writer:
                writer.write(VIEW, records(200, "2026-10-29", start=start))


def test_live_rebalance_onto_a_new_node_loses_no_key(redis_nodes: list[str]) -> None:
    old, new = redis_nodes[:3], redis_nodes
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write(VIEW, records(20_000))
    ids = [f"u{i:06d}" for i in range(20_000)]
    migrating = OnlineStoreConfig(nodes=new, previous_nodes=old, batch_size=500)

    # Readers run during the whole move: every read finds every key, and no key's feature date
    # goes back to one older than a read saw before.
    problems: list[str] = []
    stop = threading.Event()

    def read_all_the_time() -> None:
        seen: dict[str, str] = {}
        with OnlineStore(migrating) as reader:
            while not stop.is_set():
                got = reader.read(VIEW, ids)
                if len(got) != len(ids):
                    problems.append(f"a read during the rebalance found {len(got)} of {len(ids)}")
                for entity, record in got.items():
                    if record.feature_date < seen.get(entity, ""):
                        problems.append(f"{entity} went back from {seen[entity]} to {record.feature_date}")
                    seen[entity] = record.feature_date

    readers = [threading.Thread(target=read_all_the_time) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        with _WriterBetweenMoves(migrating) as store:
            # An interrupted pass (a crash after 3,000 moves), then a rerun that finishes the move.
            first = store.rebalance(max_keys=3000)
            assert (first.moved, first.complete) == (3000, False)
            assert next(store.batches, None) is None, "the writer's batches did not all land during the pass"
            second = store.rebalance()
            assert second.complete
            final = store.rebalance()
            assert (final.moved, final.complete) == (0, True)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert not problems, problems[:3]

    ring = ShardRing(new)
    placed = {node: keys_on(node) for node in new}
    assert sum(len(keys) for keys in placed.values()) == 20_000, "every key once: none lost, none left twice"
    assert all(ring.node_for(key) == node for node, keys in placed.items() for key in keys)
    moved_share = len(placed[new[3]]) / 20_000
    assert 0.15 < moved_share < 0.35, f"the new node took {moved_share:.0%}, about 1/4 expected"
    with OnlineStore(OnlineStoreConfig(nodes=new)) as store:
        got = store.read(VIEW, ids)
    assert len(got) == 20_000
    assert all(got[f"u{i:06d}"].feature_date == "2026-10-29" for i in range(2000)), "no newer write lost"
    assert got["u019999"] == FeatureRecord("2026-10-28", {"n": 19999, "spend": 19999 / 4, "group": "food"})


def test_removing_a_node_moves_only_its_keys(redis_nodes: list[str]) -> None:
    old, new = redis_nodes[:3], redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write(VIEW, records(3000))
    before = {node: keys_on(node) for node in new}
    with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        report = store.rebalance()
        assert report.complete and report.moved_from == {old[2]: report.moved}
    assert not keys_on(old[2])
    after = {node: keys_on(node) for node in new}
    assert all(before[node] <= after[node] for node in new)
    assert sum(len(keys) for keys in after.values()) == 3000


def test_a_rewrite_of_a_date_on_the_new_ring_wins_over_the_old_nodes_copy(redis_nodes: list[str]) -> None:
    # A corrected rerun of a date lands on the new owners while the move is pending: the move must
    # not put the old node's copy of that date back over it.
    old, new = redis_nodes[:1], redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write(VIEW, [(f"u{i:04d}", FeatureRecord("2026-10-28", {"v": "stale"})) for i in range(400)])
    with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        store.write(
            VIEW, [(f"u{i:04d}", FeatureRecord("2026-10-28", {"v": "corrected"})) for i in range(400)]
        )
        report = store.rebalance()
        moving = sum(1 for i in range(400) if store.ring.node_for(store.key(VIEW, f"u{i:04d}")) == new[1])
        assert moving > 50
        assert (report.moved, report.kept_newer, report.complete) == (moving, moving, True)
        got = store.read(VIEW, [f"u{i:04d}" for i in range(400)])
    assert {record.values["v"] for record in got.values()} == {"corrected"}
    assert sum(len(keys_on(node)) for node in new) == 400


class _ExpiringSource(OnlineStore):
    """Deletes the keys of each move from the old node after they are copied: what their TTLs
    running out at that moment does."""

    def _write_node(self, node, entries, **kwargs):
        written = super()._write_node(node, entries, **kwargs)
        if self.config.previous_nodes:
            with redis_client(self.config.previous_nodes[0]) as client:
                client.delete(*(key for key, _, _ in entries))
        return written


class _ScanGivingKeysTwice(OnlineStore):
    """Every key twice in a row from SCAN, which Redis allows (each key at least once) and does when
    a node's table shrinks mid-scan, as a rebalance's deletes make it."""

    def scan_keys(self, node, view=None):
        for key in super().scan_keys(node, view):
            yield key
            yield key


def test_a_key_that_scan_returns_twice_is_moved_once_and_kept(redis_nodes: list[str]) -> None:
    old, new = redis_nodes[:1], redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write(VIEW, records(600))
    with _ScanGivingKeysTwice(OnlineStoreConfig(nodes=new, previous_nodes=old, batch_size=100)) as store:
        report = store.rebalance()
        assert store.read(VIEW, [entity for entity, _ in records(600)]) == dict(records(600))
    placed = {node: keys_on(node) for node in new}
    assert sum(len(keys) for keys in placed.values()) == 600, "every key once: none lost"
    ring = ShardRing(new)
    assert all(ring.node_for(key) == node for node, keys in placed.items() for key in keys)
    assert report.complete and report.moved == len(placed[new[1]]) > 100, report
    assert report.changed_during_move == 0, report


def test_keys_expiring_during_a_rebalance_neither_fail_the_pass_nor_live_on(redis_nodes: list[str]) -> None:
    old, new = redis_nodes[:1], redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write(VIEW, records(600))
    with _ExpiringSource(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        report = store.rebalance()
    assert report.moved == 0 and report.expired_during_move > 50
    assert (report.changed_during_move, report.complete) == (0, True)

    # Many keys whose TTLs run out while the pass runs: none may be copied without its TTL.
    source = redis_nodes[2]
    with redis_client(source) as client:
        pipe = client.pipeline(transaction=False)
        value = encode_record(FeatureRecord("2026-10-28", {"n": 1}))
        for i in range(30_000):
            pipe.set(feature_key("fl", VIEW, f"e{i:05d}"), value, px=200 + i % 800)
        pipe.execute()
    with OnlineStore(OnlineStoreConfig(nodes=redis_nodes[:2], previous_nodes=[source])) as store:
        report = store.rebalance()
    assert (report.changed_during_move, report.complete) == (0, True)

    def expiring_keys_left() -> dict[str, int]:
        return {node: sum(1 for key in keys_on(node) if b":e" in key) for node in redis_nodes[:3]}

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(expiring_keys_left().values()):
        time.sleep(0.2)
    assert not any(expiring_keys_left().values()), f"keys outlived their TTL: {expiring_keys_left()}"


def test_a_record_the_new_owner_held_stays_when_the_old_copy_expires_during_its_move(
    redis_nodes: list[str],
) -> None:
    """A rerun of the same date on the new ring wrote the same bytes to each key's new owner; the
    old node's keys then expired while they were moved. The pass, which had copied nothing (the
    owner held the date), took back its "copies": it deleted the owner's records, and the keys were
    on no node, with the pass complete."""
    old, new = redis_nodes[:1], redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write(VIEW, records(600))
    migrating = OnlineStoreConfig(nodes=new, previous_nodes=old)
    with OnlineStore(migrating) as store:
        store.write(VIEW, records(600))  # the rerun, on the new ring
    moving = {key for key in keys_on(old[0]) if ShardRing(new).node_for(key) == new[1]}
    assert len(moving) > 100 and moving <= keys_on(new[1])

    with _ExpiringSource(migrating) as store:
        report = store.rebalance()
        assert store.read(VIEW, [entity for entity, _ in records(600)]) == dict(records(600))
    assert report.complete and report.kept_newer >= len(moving) and report.moved == 0, report
    assert moving <= keys_on(new[1]), "the new owner lost records it held before the pass"


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_an_entity_given_twice_in_one_write_keeps_its_later_record(
    redis_nodes: list[str], batch_size: int
) -> None:
    given = [
        ("a", FeatureRecord("2026-10-29", {"v": 2})),
        ("a", FeatureRecord("2026-10-28", {"v": 1})),
        ("b", FeatureRecord("2026-10-28", {"v": 1})),
        ("b", FeatureRecord("2026-10-28", {"v": 2})),
    ]
    with OnlineStore(OnlineStoreConfig(nodes=redis_nodes[:2], batch_size=batch_size)) as store:
        report = store.write(VIEW, given)
        got = store.read(VIEW, ["a", "b"])
    assert got == {"a": FeatureRecord("2026-10-29", {"v": 2}), "b": FeatureRecord("2026-10-28", {"v": 2})}
    assert report.written + report.kept_newer == 4


def test_a_redis_cluster_reads_and_writes_the_same_records(redis_cluster: list[str]) -> None:
    config = OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True, batch_size=400)
    with OnlineStore(config) as store:
        report = store.write(VIEW, records(3000))
        assert (report.written, report.kept_newer) == (3000, 0)
        assert store.write(VIEW, records(10, "2026-01-01")).kept_newer == 10
        got = store.read(VIEW, [f"u{i:06d}" for i in range(3000)])
        per_primary = store.count_keys(VIEW)
        with pytest.raises(ValueError, match="rebalances its own slots"):
            store.rebalance()
    assert len(got) == 3000 and got["u000003"].values["n"] == 3
    assert len(per_primary) == 3 and sum(per_primary.values()) == 3000
    assert all(count > 500 for count in per_primary.values()), per_primary


def test_layered_cache_over_redis_computes_misses_from_the_lake(
    redis_nodes: list[str], tmp_path: Path
) -> None:
    features = tmp_path / "features" / "user_features"
    for day, spend in ((date(2026, 10, 27), 1.0), (date(2026, 10, 28), 2.0), (date(2026, 10, 29), 3.0)):
        partition = features / f"date={day.isoformat()}"
        partition.mkdir(parents=True)
        table = pa.table({"user_id": ["a", "b", "c"], "feature_date": [day] * 3, "total_spend": [spend] * 3})
        pq.write_table(table, partition / "part-0.parquet")

    with OnlineStore(OnlineStoreConfig(nodes=redis_nodes[:2])) as store:
        store.write(VIEW, [("a", FeatureRecord("2026-10-28", {"total_spend": 2.0}))])

        def compute(ids):
            return read_offline_features(str(features), ids, as_of=date(2026, 10, 28))

        cache = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
        got = cache.get_many(["a", "b", "z"])
        assert got == {
            "a": FeatureRecord("2026-10-28", {"total_spend": 2.0}),
            "b": FeatureRecord("2026-10-28", {"total_spend": 2.0}),  # the newest partition <= as_of
        }
        assert (cache.stats.store_hits, cache.stats.computed, cache.stats.missing) == (1, 1, 1)
        assert store.read(VIEW, ["b"]) == {"b": got["b"]}, "the computed record was written back to Redis"

        # A fresh process warms its local layer in bulk: every read is then local.
        fresh = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
        assert fresh.warm(["a", "b", "c"], batch_size=2) == 3
        fresh.get_many(["a", "b", "c"])
        assert fresh.stats.local_hits == 3


# -- a rerun of a date with corrected data -----------------------------------------------------
DAY, LATER, EARLIER = "2026-10-28", "2026-10-29", "2026-10-27"


def dated_records(ids: range, day: str, prefix: str = "r") -> list[tuple[str, FeatureRecord]]:
    return [(f"{prefix}{i:05d}", FeatureRecord(day, {"n": i})) for i in ids]


def seed_a_published_date(store: OnlineStore, view: str) -> None:
    """r00000-r00299 of DAY; r00300-r00319 of LATER and r00320-r00339 of EARLIER (other dates of
    entities that DAY's rerun will not hold); r00000-r00009 are then rewritten with LATER."""
    store.write(view, dated_records(range(300), DAY))
    store.write(view, dated_records(range(300, 320), LATER))
    store.write(view, dated_records(range(320, 340), EARLIER))
    store.write(view, dated_records(range(10), LATER))


def assert_the_rerun_replaced_the_date(store: OnlineStore, view: str) -> None:
    got = store.read(view, [f"r{i:05d}" for i in range(340)])
    dates = {entity: record.feature_date for entity, record in got.items()}
    assert dates == {
        **{f"r{i:05d}": LATER for i in range(10)},
        **{f"r{i:05d}": DAY for i in range(10, 250)},  # r00250-r00299: dropped by the rerun
        **{f"r{i:05d}": LATER for i in range(300, 320)},
        **{f"r{i:05d}": EARLIER for i in range(320, 340)},
    }


@pytest.mark.parametrize("node_count", [1, 3], ids=["one node", "ring of 3"])
def test_a_rerun_of_a_date_removes_the_records_of_entities_it_no_longer_holds(
    redis_nodes: list[str], node_count: int
) -> None:
    config = OnlineStoreConfig(nodes=redis_nodes[:node_count], key_ttl_seconds=0, batch_size=64)
    with OnlineStore(config) as store:
        seed_a_published_date(store, VIEW)
        # The corrected partition holds r00000-r00249 (r00000-r00009 kept LATER records).
        report = store.replace_date(
            VIEW,
            date(2026, 10, 28),
            dated_records(range(250), DAY),
            pa.array([f"r{i:05d}" for i in range(250)]),  # as the partition's column
        )
        assert (report.written, report.kept_newer, report.removed_stale) == (240, 10, 50)
        assert_the_rerun_replaced_the_date(store, VIEW)
        again = store.replace_date(
            VIEW, DAY, dated_records(range(250), DAY), [f"r{i:05d}" for i in range(250)]
        )
        assert again.removed_stale == 0, "a rerun of the same partition removes nothing more"

        # The date left with no entity at all: every record of DAY goes, the other dates stay.
        assert store.replace_date(VIEW, DAY, [], []).removed_stale == 240
        left = {
            entity: record.feature_date
            for entity, record in store.read(VIEW, [f"r{i:05d}" for i in range(340)]).items()
        }
    assert set(left.values()) == {LATER, EARLIER} and len(left) == 50
    assert sum(len(keys_on(node)) for node in redis_nodes[:node_count]) == 50


def test_a_rerun_during_a_live_rebalance_removes_stale_records_from_old_and_new_nodes(
    redis_nodes: list[str],
) -> None:
    old, new = redis_nodes[:3], redis_nodes
    with OnlineStore(OnlineStoreConfig(nodes=old, batch_size=64)) as store:
        seed_a_published_date(store, VIEW)
    stale = {feature_key("fl", VIEW, f"r{i:05d}") for i in range(250, 300)}
    migrating = OnlineStoreConfig(nodes=new, previous_nodes=old, batch_size=64)
    with OnlineStore(migrating) as store:
        moving = {key for key in stale if store.ring.node_for(key) != store.previous_ring.node_for(key)}
        assert moving, "some stale records are still on their previous node"
        # and some are on both nodes, as a move leaves them until its delete
        store.write(VIEW, dated_records(range(250, 275), DAY))
        report = store.replace_date(
            VIEW, DAY, dated_records(range(250), DAY), [f"r{i:05d}" for i in range(250)]
        )
        assert report.removed_stale == 50
        assert not any(stale & keys_on(node) for node in new), "a stale record is left on a node"
        assert_the_rerun_replaced_the_date(store, VIEW)
        assert store.rebalance().complete
    with OnlineStore(OnlineStoreConfig(nodes=new)) as store:
        assert_the_rerun_replaced_the_date(store, VIEW)


def test_a_rerun_on_a_redis_cluster_removes_the_records_of_entities_it_no_longer_holds(
    redis_cluster: list[str],
) -> None:
    view = "rerun_view"  # the cluster is shared by the module's tests
    with OnlineStore(OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True, batch_size=64)) as store:
        seed_a_published_date(store, view)
        report = store.replace_date(
            view, DAY, dated_records(range(250), DAY), [f"r{i:05d}" for i in range(250)]
        )
        assert (report.written, report.kept_newer, report.removed_stale) == (240, 10, 50)
        assert_the_rerun_replaced_the_date(store, view)
        assert store.replace_date(view, DAY, [], []).removed_stale == 240
        assert sum(store.count_keys(view).values()) == 50
        assert store.delete(view, [f"r{i:05d}" for i in range(340)]) == 50
        assert sum(store.count_keys(view).values()) == 0


class _NewerWriteAfterTheScan(OnlineStore):
    """A writer puts a later record of every candidate between the SCAN and the compare-and-delete."""

    def _outside(self, keys, head, keep):
        candidates = super()._outside(keys, head, keep)
        entities = [key[len(head) :].decode() for key in candidates]
        OnlineStore.write(self, VIEW, [(entity, FeatureRecord(LATER, {"n": -1})) for entity in entities])
        return candidates


@pytest.mark.parametrize("cluster", [False, True], ids=["ring", "cluster"])
def test_a_later_record_written_during_the_removal_is_never_removed(
    redis_nodes: list[str], redis_cluster: list[str], cluster: bool
) -> None:
    config = (
        OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True)
        if cluster
        else OnlineStoreConfig(nodes=redis_nodes[:3])
    )
    ids = [f"w{i:03d}" for i in range(100)]
    with OnlineStore(config) as store:
        store.delete(VIEW, ids)
        store.write(VIEW, [(entity, FeatureRecord(DAY, {"n": 1})) for entity in ids])
    with _NewerWriteAfterTheScan(config) as store:
        assert store.remove_stale(VIEW, DAY, ids[:60]) == 0
        got = store.read(VIEW, ids)
        store.delete(VIEW, ids)
    assert {entity for entity, record in got.items() if record.feature_date == LATER} == set(ids[60:])
    assert len(got) == 100


def test_the_publish_task_removes_what_a_corrected_rerun_dropped(
    redis_nodes: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from featurelake_airflow.operators.publish_online_features import PublishOnlineFeaturesOperator

    host, port = redis_nodes[0].rsplit(":", 1)
    connection = {"conn_type": "redis", "host": host, "port": int(port), "extra": {"key_ttl_seconds": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", json.dumps(connection))
    partition = tmp_path / "features" / "user_features" / f"date={DAY}"

    def publish(users: list[str] | None) -> dict:
        if partition.exists():
            for old in partition.iterdir():
                old.unlink()
            partition.rmdir()
        if users is not None:
            partition.mkdir(parents=True)
            table = pa.table({"user_id": users, "total_spend": [1.0] * len(users)})
            pq.write_table(table, partition / "part-0.parquet")
        task = PublishOnlineFeaturesOperator(task_id="publish", lake=str(tmp_path), ds=DAY)
        return task.execute(context={})

    with OnlineStore(OnlineStoreConfig(nodes=redis_nodes[:1])) as store:
        store.write(VIEW, [("later", FeatureRecord(LATER, {"total_spend": 9.0}))])
        first = publish(["a", "b", "c", "later"])
        assert (first["written"], first["kept_newer"], first["removed_stale"]) == (3, 1, 0)
        rerun = publish(["a"])  # corrected: b and c had only bogus transactions
        assert (rerun["written"], rerun["removed_stale"]) == (1, 2)
        assert set(store.read(VIEW, ["a", "b", "c", "later"])) == {"a", "later"}
        empty = publish([])  # a partition of no rows
        assert (empty["written"], empty["removed_stale"]) == (0, 1)
        publish(["a", "b"])
        gone = publish(None)  # the feature job left the date absent: no entity had data
        assert gone == {
            "partition": str(partition),
            "written": 0,
            "kept_newer": 0,
            "by_node": {},
            "redirected": 0,
            "removed_stale": 2,
        }
        assert store.read(VIEW, ["a", "b", "c", "later"]) == {
            "later": FeatureRecord(LATER, {"total_spend": 9.0})
        }


def test_delete_finds_keys_on_their_previous_node_during_a_rebalance(redis_nodes: list[str]) -> None:
    old, new = redis_nodes[:1], redis_nodes[:2]
    ids = [f"x{i:04d}" for i in range(200)]
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write(VIEW, [(entity, FeatureRecord(DAY, {"n": 1})) for entity in ids])
    with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        store.write(VIEW, [(entity, FeatureRecord(LATER, {"n": 2})) for entity in ids[:50]])
        held = sum(len(keys_on(node)) for node in new)
        assert held > 200, "some keys are on both nodes"
        # each key once, wherever it was held (the copies of a key on both nodes counted twice)
        assert store.delete(VIEW, ids) == 200
        assert store.read(VIEW, ids) == {}
    assert not keys_on(new[0]) and not keys_on(new[1])


def test_a_capped_pass_whose_moves_expire_does_not_skip_the_rest_of_its_page(redis_nodes: list[str]) -> None:
    # max_keys caps the moves, and keys that expire during their move are no moves: the pass
    # must go on through the page rather than skip its other misplaced keys and call itself
    # complete, after which `previous_nodes` would be dropped and those keys lost to readers.
    old, new = redis_nodes[:1], redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write(VIEW, records(600))
    config = OnlineStoreConfig(nodes=new, previous_nodes=old)
    with _ExpiringSource(config) as store:
        report = store.rebalance(max_keys=50)
    misplaced = [key for key in keys_on(old[0]) if ShardRing(new).node_for(key) != old[0]]
    assert report.complete == (not misplaced), (report, len(misplaced))
    assert report.expired_during_move > 100 and not misplaced


def test_a_value_that_is_no_record_fails_writes_reads_and_removals_naming_its_key(
    redis_nodes: list[str], redis_cluster: list[str]
) -> None:
    # Another program's value under the prefix: every batch that meets it fails, so the error
    # must say which key it is and what to do, not `user_script:10: attempt to index a number`.
    foreign = feature_key("fl", VIEW, "u000001")
    record = FeatureRecord("2026-10-28", {"n": 1})
    for config in (
        OnlineStoreConfig(nodes=redis_nodes[:1]),
        OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True),
    ):
        with OnlineStore(config) as store:
            owner = "cluster" if config.cluster else redis_nodes[0]
            if config.cluster:
                store.cluster_client().set(foreign, b"hello")
            else:
                with redis_client(owner) as client:
                    client.set(foreign, b"hello")
            try:
                with pytest.raises(
                    redis.ResponseError, match="key fl:user_features:u000001 holds no featurelake"
                ):
                    store.write(VIEW, [("u000001", record)])
                with pytest.raises(
                    redis.ResponseError, match="key fl:user_features:u000001 holds no featurelake"
                ):
                    store.remove_stale(VIEW, "2026-10-28", ["u000002"])
                with pytest.raises(
                    ValueError, match="key b'fl:user_features:u000001': not a featurelake record"
                ):
                    store.read(VIEW, ["u000001"])
            finally:
                store.delete(VIEW, ["u000001"])
