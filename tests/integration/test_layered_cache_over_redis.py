"""The layered cache over real Redis shards with several threads reading: a slow read never puts
an older record over a newer one in the local layer, and concurrent misses of one id compute it
once. A node at its maxmemory fails no read with its refusal of the write-back."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import pytest

from featurelake.cache import LayeredFeatureCache
from featurelake.feature_records import FeatureRecord
from featurelake.local_redis import LocalRedisServer
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import redis_client

pytestmark = pytest.mark.integration

VIEW = "user_features"
OLDER = FeatureRecord("2026-10-28", {"n": 1})
NEWER = FeatureRecord("2026-10-29", {"n": 2})


def test_a_slow_read_does_not_put_an_older_record_over_a_newer_one(redis_nodes: list[str]) -> None:
    cache: LayeredFeatureCache

    class PublishDuringTheFirstRead(OnlineStore):
        """The publish of the next date lands while the first read is on its way back, and another
        thread reads (and caches) the newer record before the first read fills the local layer."""

        publishing = True

        def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
            found = super().read(view, entity_ids)
            if self.publishing:
                self.publishing = False
                self.write(VIEW, [("x", NEWER)])
                assert cache.get("x") == NEWER
            return found

    with PublishDuringTheFirstRead(OnlineStoreConfig(nodes=redis_nodes[:2])) as store:
        store.write(VIEW, [("x", OLDER)])
        cache = LayeredFeatureCache(view=VIEW, store=store)
        assert cache.get("x") == OLDER  # what the store held when this read asked
        assert cache.get("x") == NEWER, "the local layer went back to the older record"


def test_concurrent_misses_of_one_id_compute_it_once(redis_nodes: list[str]) -> None:
    calls: list[list[str]] = []
    entered, release = threading.Event(), threading.Event()

    def compute(ids):
        calls.append(list(ids))
        if len(calls) == 1:  # the first computation is slow (the lake)
            entered.set()
            assert release.wait(10)
        return {entity: NEWER for entity in ids}

    with OnlineStore(OnlineStoreConfig(nodes=redis_nodes[:2])) as store:
        cache = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
        results: dict[str, dict[str, FeatureRecord]] = {}

        def read(name: str) -> None:
            results[name] = cache.get_many(["x"])

        # The second read has begun, and missed in Redis, once its store read returns: released
        # then, whatever the machine's speed, the first computation ends while the second is in
        # flight, before or after it reaches the wait for it.
        second_missed = threading.Event()
        read_store = store.read

        def store_read(*args, **kwargs):
            found = read_store(*args, **kwargs)
            if threading.current_thread().name == "second":
                second_missed.set()
            return found

        store.read = store_read
        first = threading.Thread(target=read, args=("first",), name="first")
        first.start()
        assert entered.wait(10)
        second = threading.Thread(target=read, args=("second",), name="second")
        second.start()
        assert second_missed.wait(10)
        release.set()
        first.join(10)
        second.join(10)
        assert results == {"first": {"x": NEWER}, "second": {"x": NEWER}}
        assert calls == [["x"]], "the second reader computed x again"
        assert store.read(VIEW, ["x"]) == {"x": NEWER}


def test_a_write_back_that_a_node_at_its_maxmemory_refuses_is_served_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Servers of its own: the shards of `redis_nodes` are shared, and this one's maxmemory stays.
    computed: list[list[str]] = []

    def compute(ids):
        computed.append(list(ids))
        return {entity: NEWER for entity in ids}

    with (
        LocalRedisServer() as full,
        LocalRedisServer() as roomy,
        OnlineStore(OnlineStoreConfig(nodes=[full.address, roomy.address])) as store,
    ):
        ids = [f"u{i}" for i in range(20)]
        on_full = [entity for entity in ids if store.ring.node_for(store.key(VIEW, entity)) == full.address]
        assert 0 < len(on_full) < len(ids)
        # Redis' default policy is noeviction: every write to this node is now refused (OOM),
        # while it still answers reads.
        with redis_client(full.address) as client:
            client.config_set("maxmemory", 1)
        cache = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
        with caplog.at_level(logging.WARNING, logger="featurelake.cache"):
            assert cache.get_many(ids) == {entity: NEWER for entity in ids}
        assert "refused the write-back" in caplog.text and "maxmemory" in caplog.text
        # The other node took its part if the write reached it before the refusal.
        held = store.read(VIEW, ids)
        assert not set(held) & set(on_full) and all(record == NEWER for record in held.values())
        assert cache.get_many(ids) == {entity: NEWER for entity in ids}
        assert len(computed) == 1, "the local layer serves what was computed"
        # Another process's cache: what Redis took is read from it, the rest computed.
        other = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
        assert other.get_many(ids) == {entity: NEWER for entity in ids}
        assert computed[1] == [entity for entity in ids if entity not in held]
