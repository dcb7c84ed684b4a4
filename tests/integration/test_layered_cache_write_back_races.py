"""The layered cache's write-back of a computed record racing a publish of the same feature date,
over real Redis servers (a ring and a Redis Cluster): the record the publish wrote stays in Redis,
and is what the cache serves and keeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import pytest

from featurelake.cache import LayeredFeatureCache
from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import entity_on_node

pytestmark = pytest.mark.integration

VIEW = "user_features"
DAY = "2026-10-28"
AS_COMPUTED = FeatureRecord(DAY, {"spend": 10.0})  # read from the partition before its correction
AS_PUBLISHED = FeatureRecord(DAY, {"spend": 12.5})  # the corrected partition's record


@pytest.mark.parametrize("kind", ["ring", "cluster"])
def test_a_computation_does_not_overwrite_a_same_date_record_published_meanwhile(
    redis_nodes: list[str], redis_cluster: list[str], kind: str
) -> None:
    # The compute read date D's partition; a rerun of D with corrected data then swapped the
    # partition, published its record and invalidated the id; then the computation wrote back.
    # The write-back replaced the published record (a same date replaces), so Redis served the
    # uncorrected values to every reader, invalidations or not, until the key's TTL ran out.
    config = _store_config(kind, redis_nodes, redis_cluster)
    with OnlineStore(config) as store:
        store.delete(VIEW, ["u-1"])
        cache: LayeredFeatureCache

        def compute(ids):
            result = {entity: AS_COMPUTED for entity in ids}
            store.write(VIEW, [("u-1", AS_PUBLISHED)])  # the publish task, meanwhile
            cache.invalidate(["u-1"])
            return result

        cache = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
        try:
            served = cache.get("u-1")
            assert store.read(VIEW, ["u-1"]) == {"u-1": AS_PUBLISHED}, "the publish's record was overwritten"
            assert served == AS_PUBLISHED
            assert cache.get("u-1") == AS_PUBLISHED
        finally:
            store.delete(VIEW, ["u-1"])


def test_during_a_rebalance_a_computation_does_not_cover_a_same_date_record_on_the_previous_node(
    redis_nodes: list[str],
) -> None:
    # A publisher still on the old ring writes the key's record to its previous node while the
    # cache (on the new ring) computes it. The write-back set the computed record on the new
    # owner, whose record a read prefers on a same date, and which the rebalance's copy then kept.
    old, new = redis_nodes[:1], redis_nodes[:2]
    with (
        OnlineStore(OnlineStoreConfig(nodes=old)) as publisher,
        OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store,
    ):
        entity = entity_on_node(store, VIEW, new[1])

        def compute(ids):
            publisher.write(VIEW, [(entity, AS_PUBLISHED)])
            return {e: AS_COMPUTED for e in ids}

        cache = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
        assert cache.get(entity) == AS_PUBLISHED
        assert store.read(VIEW, [entity]) == {entity: AS_PUBLISHED}
        store.rebalance()
        assert store.read(VIEW, [entity]) == {entity: AS_PUBLISHED}
        assert LayeredFeatureCache(view=VIEW, store=store).get(entity) == AS_PUBLISHED


def _store_config(kind: str, redis_nodes: list[str], redis_cluster: list[str]) -> OnlineStoreConfig:
    if kind == "ring":
        return OnlineStoreConfig(nodes=redis_nodes[:2])
    return OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True)


@pytest.mark.parametrize("kind", ["ring", "cluster"])
@pytest.mark.parametrize("rerun_keeps_the_entity", [False, True])
def test_a_computation_does_not_bring_back_a_record_that_a_rerun_of_its_date_took_back(
    redis_nodes: list[str], redis_cluster: list[str], kind: str, rerun_keeps_the_entity: bool
) -> None:
    # The store holds no record of u-1, so the cache computes it, from date D's partition. While it
    # computes, a rerun of D swaps in a corrected partition without u-1 and publishes it: it writes
    # D's records and removes those of D whose entity the partition lacks (u-1 has none yet). Then
    # the computation wrote u-1's uncorrected record back, and Redis served it to every reader
    # until its TTL ran out. When the corrected partition still holds u-1 (the same values), the
    # record the rerun published must stay, and stay in Redis throughout: the write-back, refused
    # (a same date), set nothing, yet the take-back deleted the publish's record (the same bytes),
    # and the id was computed again from the lake.
    partition = {"u-1": AS_COMPUTED, "u-2": AS_COMPUTED}
    corrected = {"u-2": AS_PUBLISHED} | ({"u-1": AS_COMPUTED} if rerun_keeps_the_entity else {})
    calls: list[list[str]] = []
    held_when_computing: list[dict] = []
    with OnlineStore(_store_config(kind, redis_nodes, redis_cluster)) as store:
        store.delete(VIEW, ["u-1", "u-2"])

        def compute(ids):
            calls.append(list(ids))
            held_when_computing.append(store.read(VIEW, ["u-1"]))
            read = {entity: partition[entity] for entity in ids if entity in partition}
            if len(calls) == 1:  # the rerun, while the first computation runs
                partition.clear()
                partition.update(corrected)
                store.replace_date(VIEW, DAY, partition.items(), list(partition))
            return read

        try:
            served = LayeredFeatureCache(view=VIEW, store=store, compute=compute).get("u-1")
            expected = {"u-1": AS_COMPUTED} if rerun_keeps_the_entity else {}
            assert store.read(VIEW, ["u-1"]) == expected, "the write-back undid the rerun"
            assert served == expected.get("u-1")
            assert LayeredFeatureCache(view=VIEW, store=store).get("u-1") == expected.get("u-1")
            assert calls == [["u-1"], ["u-1"]], "computed again once, from the corrected partition"
            # the rerun's record stays in Redis throughout; the write-back is taken back
            assert held_when_computing == [{}, expected], held_when_computing
        finally:
            store.delete(VIEW, ["u-1", "u-2"])


def test_a_computation_reads_the_removals_counter_of_its_own_nodes_only(redis_nodes: list[str]) -> None:
    # The counter is read on the nodes that own the computed ids: a ring node that does not answer
    # fails no computation whose records it does not hold.
    from featurelake.local_redis import free_port

    down = f"127.0.0.1:{free_port()}"
    with OnlineStore(OnlineStoreConfig(nodes=[redis_nodes[0], down], retries=0)) as store:
        entity = entity_on_node(store, VIEW, redis_nodes[0])
        cache = LayeredFeatureCache(view=VIEW, store=store, compute=lambda ids: {e: AS_COMPUTED for e in ids})
        try:
            assert cache.get(entity) == AS_COMPUTED
            assert store.read(VIEW, [entity]) == {entity: AS_COMPUTED}
        finally:
            store.delete(VIEW, [entity])


def _assert_the_write_back_is_taken_back(store: OnlineStore, compute, calls: list[list[str]]) -> None:
    """The cache serves no record of u-1, Redis holds none after the rerun that dropped it, and
    u-1 was computed twice: before the rerun and from its partition."""
    try:
        assert LayeredFeatureCache(view=VIEW, store=store, compute=compute).get("u-1") is None
        assert store.read(VIEW, ["u-1"]) == {}, "the write-back outlived the rerun"
        assert calls == [["u-1"], ["u-1"]]
    finally:
        store.delete(VIEW, ["u-1"])


class _ReplyLostAndResent(OnlineStore):
    """A write whose reply was lost, and which the client sent again: the first send set the keys,
    the second found them as given (a same date, kept), so the write reports none set."""

    def write(self, view, records, *, replace_same_date=True, report_ids=False):
        records = list(records)
        OnlineStore.write(self, view, records, replace_same_date=replace_same_date)
        return OnlineStore.write(
            self, view, records, replace_same_date=replace_same_date, report_ids=report_ids
        )


@pytest.mark.parametrize("kind", ["ring", "cluster"])
def test_a_write_back_whose_reply_was_lost_is_still_taken_back(
    redis_nodes: list[str], redis_cluster: list[str], kind: str
) -> None:
    """Taking back only what the write reported set kept a record the write-back set whose reply a
    retry had replaced: the uncorrected record stayed in Redis until its TTL ran out."""
    partition = {"u-1": AS_COMPUTED}
    calls: list[list[str]] = []
    with _ReplyLostAndResent(_store_config(kind, redis_nodes, redis_cluster)) as store:
        store.delete(VIEW, ["u-1"])

        def compute(ids):
            calls.append(list(ids))
            read = {entity: partition[entity] for entity in ids if entity in partition}
            if len(calls) == 1:  # a rerun without u-1, while the first computation runs
                partition.clear()
                store.replace_date(VIEW, DAY, [], [])
            return read

        _assert_the_write_back_is_taken_back(store, compute, calls)


class _RemovalBeforeTheWriteBack(OnlineStore):
    """A rerun's removal of u-1 lands between the cache's read of the ids and its write-back."""

    removal: Callable[[], None] | None = None

    def write(self, view, records, *, replace_same_date=True, report_ids=False):
        if self.removal is not None:
            removal, self.removal = self.removal, None
            removal()
        return OnlineStore.write(
            self, view, records, replace_same_date=replace_same_date, report_ids=report_ids
        )


@pytest.mark.parametrize("kind", ["ring", "cluster"])
def test_a_write_back_after_a_removal_between_its_read_and_its_write_is_taken_back(
    redis_nodes: list[str], redis_cluster: list[str], kind: str
) -> None:
    """Redis held u-1 as computed when the cache read it, then a rerun removed it, then the
    write-back set it again: judged by the read alone, it was not the write-back's, and stayed."""
    calls: list[list[str]] = []
    with _RemovalBeforeTheWriteBack(_store_config(kind, redis_nodes, redis_cluster)) as store:
        store.delete(VIEW, ["u-1"])
        partition = {"u-1": AS_COMPUTED}

        def compute(ids):
            calls.append(list(ids))
            if len(calls) == 1:
                store.write(VIEW, [("u-1", AS_COMPUTED)])  # published with the same values

                def rerun_without_u1() -> None:
                    partition.clear()
                    store.replace_date(VIEW, DAY, [], [])

                store.removal = rerun_without_u1
                return {"u-1": AS_COMPUTED}
            return {entity: partition[entity] for entity in ids if entity in partition}

        _assert_the_write_back_is_taken_back(store, compute, calls)


@pytest.mark.parametrize("kind", ["ring", "cluster"])
def test_a_computation_does_not_write_back_a_record_older_than_one_served_meanwhile(
    redis_nodes: list[str], redis_cluster: list[str], kind: str
) -> None:
    # The compute read the lake before the 29th landed. Meanwhile the 29th was published, another
    # read served it from Redis, and its key expired. The write-back then set the 28th, and every
    # later read, here and in other processes, went back to it until the next publish.
    older, later = FeatureRecord("2026-10-28", {"spend": 10.0}), FeatureRecord("2026-10-29", {"spend": 12.5})
    config = _store_config(kind, redis_nodes, redis_cluster)
    # A third read then misses the id everywhere and waits for the computation: it began after the
    # 29th was served, so it must not get the 28th, nor nothing (it was served nothing, and counted
    # missing, when it read what the computation stored).
    lake = {"u-1": older}
    with StoreTellingReads(config) as store:
        store.delete(VIEW, ["u-1"])
        cache: LayeredFeatureCache
        meanwhile: list[FeatureRecord | None] = []
        waiting: list[FeatureRecord | None] = []
        waiter = threading.Thread(target=lambda: waiting.append(cache.get("u-1")))

        def compute(ids):
            result = {entity: lake[entity] for entity in ids}
            if waiter.ident is not None:  # the third read computes the id itself: nothing meanwhile
                return result
            lake["u-1"] = later  # the publish task, meanwhile
            store.write(VIEW, [("u-1", later)])
            reader = threading.Thread(target=lambda: meanwhile.append(cache.get("u-1")))
            reader.start()
            reader.join(10)
            store.delete(VIEW, ["u-1"])  # its key expired
            cache.invalidate(["u-1"])  # (or its local entry's TTL ran out)
            store.read_by[waiter.name] = threading.Event()
            waiter.start()
            assert store.read_by[waiter.name].wait(10), "the third read never read Redis"
            time.sleep(0.2)  # it goes on to wait for this computation (if late, it computes: the same)
            return result

        cache = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
        try:
            assert cache.get("u-1") == older  # read before the 29th was served: it may serve the 28th
            waiter.join(10)
            assert meanwhile == [later]
            assert waiting == [later], (
                "a read that began after the 29th was served got an older record, or none"
            )
            assert cache.stats.missing == 0
            assert store.read(VIEW, ["u-1"]) == {"u-1": later}, "the computation wrote back an older record"
            cache.invalidate()
            assert cache.get("u-1") == later
        finally:
            store.delete(VIEW, ["u-1"])


class StoreTellingReads(OnlineStore):
    """A real store that sets `read_by[thread name]` once that thread's read has returned."""

    def __init__(self, config: OnlineStoreConfig) -> None:
        super().__init__(config)
        self.read_by: dict[str, threading.Event] = {}

    def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
        found = super().read(view, entity_ids)
        told = self.read_by.get(threading.current_thread().name)
        if told is not None:
            told.set()
        return found
