"""A rebalance pass that finds keys changed on their old node during their move, or gone from it,
on real Redis servers: a change (a writer still on the old ring) must survive the retry, which the
docs promise moves it, and a key deleted meanwhile must not come back through the pass's copy."""

from __future__ import annotations

import pytest

from featurelake.feature_records import FeatureRecord, entity_of_key
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from featurelake.sharding import ShardRing
from tests.support import keys_on

pytestmark = pytest.mark.integration

VIEW = "user_features"
DAY = "2026-10-28"
IDS = [f"u{i:04d}" for i in range(300)]


class _OldRingWriterDuringTheCopy(OnlineStore):
    """After the pass copies its keys to their new node, and before it deletes them from the old
    one, a writer still on the old ring corrects the same date of every entity."""

    def __init__(self, config: OnlineStoreConfig, old_ring: OnlineStoreConfig) -> None:
        super().__init__(config)
        self.old_ring = old_ring

    def _write_node(self, node, entries, **kwargs):
        written = super()._write_node(node, entries, **kwargs)
        with OnlineStore(self.old_ring) as writer:
            writer.write(VIEW, [(entity, FeatureRecord(DAY, {"v": "corrected"})) for entity in IDS])
        return written


def test_a_same_date_change_on_the_old_node_during_its_move_survives_the_retry(
    redis_nodes: list[str],
) -> None:
    old, new = redis_nodes[:1], redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write(VIEW, [(entity, FeatureRecord(DAY, {"v": "stale"})) for entity in IDS])
    migrating = OnlineStoreConfig(nodes=new, previous_nodes=old)
    moving = [key for key in keys_on(old[0]) if ShardRing(new).node_for(key) == new[1]]
    assert len(moving) > 50

    with _OldRingWriterDuringTheCopy(migrating, OnlineStoreConfig(nodes=old)) as store:
        first = store.rebalance()
    assert (first.changed_during_move, first.complete) == (len(moving), False)
    with OnlineStore(migrating) as store:
        between = store.read(VIEW, IDS)
        second = store.rebalance()
        after = store.read(VIEW, IDS)
    assert {record.values["v"] for record in between.values()} == {"corrected"}
    assert (second.moved, second.changed_during_move, second.complete) == (len(moving), 0, True)
    assert {record.values["v"] for record in after.values()} == {"corrected"}, "the retry kept the old copy"
    assert len(after) == len(IDS)
    assert keys_on(new[1]) == set(moving) and len(keys_on(new[0])) == len(IDS) - len(moving)


class _DeleteDuringTheMove(OnlineStore):
    """Between the pass's read of its keys on the old node and its copy to the new one, an eviction
    on the new ring (`OnlineStore.delete`, from the previous node and then the owner) deletes them."""

    def _write_node(self, node, entries, **kwargs):
        with OnlineStore(self.config) as evicter:
            evicter.delete(VIEW, [entity_of_key(key, prefix="fl", view=VIEW) for key, _, _ in entries])
        return super()._write_node(node, entries, **kwargs)


def test_keys_deleted_during_their_move_are_not_brought_back_by_its_copy(redis_nodes: list[str]) -> None:
    old, new = redis_nodes[:1], redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=old, key_ttl_seconds=0)) as store:
        store.write(VIEW, [(entity, FeatureRecord(DAY, {"v": "evicted"})) for entity in IDS])
    moving = [key for key in keys_on(old[0]) if ShardRing(new).node_for(key) == new[1]]
    assert len(moving) > 50
    migrating = OnlineStoreConfig(nodes=new, previous_nodes=old, key_ttl_seconds=0)
    with _DeleteDuringTheMove(migrating) as store:
        report = store.rebalance()
    assert (report.moved, report.expired_during_move, report.complete) == (0, len(moving), True)
    assert keys_on(new[1]) == set(), "a deleted key came back, with no TTL to end it"
    with OnlineStore(migrating) as store:
        assert len(store.read(VIEW, IDS)) == len(IDS) - len(moving)


class _RebalanceBeforeEachRemovalOfOlderRecords(OnlineStore):
    """A rerun's removal during a live rebalance, with a whole rebalance pass run just before each of
    its deletes of records dated on or before the date (the previous node's, then the owner's)."""

    def _delete_dated(self, node, keys, day, *, or_before=False):
        if or_before:
            with OnlineStore(self.config) as other:
                other.rebalance()
        return super()._delete_dated(node, keys, day, or_before=or_before)


def test_a_rerun_removal_during_a_rebalance_leaves_no_older_record_of_the_entity(
    redis_nodes: list[str],
) -> None:
    """The rerun of a date without an entity deleted its record of the date on the owner, then the
    older record still on the previous node. A pass run in between copied that older record to the
    owner, empty by then, and deleted it from the previous node, so the last step found nothing,
    and the older record was served (until its TTL ran out; for good with `key_ttl_seconds` 0)."""
    old, new = redis_nodes[:1], redis_nodes[:2]
    moving = [e for e in IDS if ShardRing(new).node_for(f"fl:{VIEW}:{e}") == new[1]]
    dropped, kept = moving[0], [e for e in IDS if e != moving[0]]
    with OnlineStore(OnlineStoreConfig(nodes=old, key_ttl_seconds=0)) as store:
        store.write(VIEW, [(entity, FeatureRecord("2026-10-27", {"v": "older"})) for entity in IDS])
    migrating = OnlineStoreConfig(nodes=new, previous_nodes=old, key_ttl_seconds=0)
    with OnlineStore(migrating) as store:
        store.write(VIEW, [(dropped, FeatureRecord(DAY, {"v": "dated"}))])
        assert store.read(VIEW, [dropped])[dropped].feature_date == DAY
    with _RebalanceBeforeEachRemovalOfOlderRecords(migrating) as store:
        assert store.remove_stale(VIEW, DAY, kept) == 1
    with OnlineStore(migrating) as store:
        assert store.rebalance().complete
        assert store.read(VIEW, [dropped]) == {}, "the older record came back"
        assert len(store.read(VIEW, kept)) == len(kept)
    assert not any(f"fl:{VIEW}:{dropped}".encode() in keys_on(node) for node in new)
