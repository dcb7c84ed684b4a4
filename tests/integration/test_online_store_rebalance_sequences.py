"""Sequences found by a model-based stress test of the live ring rebalance: a write on the new ring
during a rebalance must supersede the record its key still has on its previous node, as it would on
one node, so that a later removal of the written date does not bring the older record back, and an
older write is kept out (`kept_newer`) rather than set on the new owner."""

from __future__ import annotations

from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import keys_on

VIEW = "user_features"


def _moving_entity(old: list[str], new: list[str]) -> str:
    """An entity whose key the ring `new` places on another node than the ring `old`."""
    with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        return next(
            entity
            for entity in (f"u{i:04d}" for i in range(1000))
            if store.ring.node_for(store.key(VIEW, entity))
            != store.previous_ring.node_for(store.key(VIEW, entity))
        )


def _held_by_the_old_ring(redis_nodes: list[str], record: FeatureRecord) -> tuple[list[str], list[str], str]:
    """A ring of one node grown to two (old, new), and an entity that moves, whose `record` the old
    ring holds."""
    old, new = redis_nodes[:1], redis_nodes[:2]
    entity = _moving_entity(old, new)
    with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
        store.write(VIEW, [(entity, record)])
    return old, new, entity


def test_removing_a_newer_date_written_during_a_rebalance_does_not_bring_back_the_old_nodes_record(
    redis_nodes: list[str],
) -> None:
    old, new, entity = _held_by_the_old_ring(redis_nodes, FeatureRecord("2026-10-27", {"n": 1}))
    with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        store.write(VIEW, [(entity, FeatureRecord("2026-10-28", {"n": 2}))])
        assert store.read(VIEW, [entity])[entity].feature_date == "2026-10-28"
        # a corrected rerun of 2026-10-28 that no longer holds the entity
        report = store.replace_date(VIEW, "2026-10-28", [], [])
        assert report.removed_stale == 1
        # on one node the 27th was replaced by the 28th, and the removal leaves no record
        assert store.read(VIEW, [entity]) == {}
        assert store.rebalance().complete
        assert store.read(VIEW, [entity]) == {}
    assert keys_on(old[0]) == set() and keys_on(new[1]) == set()


def test_an_older_write_during_a_rebalance_is_kept_out_and_not_revealed_by_a_removal(
    redis_nodes: list[str],
) -> None:
    old, new, entity = _held_by_the_old_ring(redis_nodes, FeatureRecord("2026-10-28", {"n": 2}))
    with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        # a backfill of an older date: the store holds a later record, on the previous node
        backfill = store.write(VIEW, [(entity, FeatureRecord("2026-10-27", {"n": 1}))])
        assert (backfill.written, backfill.kept_newer) == (0, 1)
        assert store.replace_date(VIEW, "2026-10-28", [], []).removed_stale == 1
        assert store.read(VIEW, [entity]) == {}
        assert store.rebalance().complete
        assert store.read(VIEW, [entity]) == {}
    assert keys_on(old[0]) == set() and keys_on(new[1]) == set()
