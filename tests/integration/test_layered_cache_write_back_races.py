"""The layered cache's write-back of a computed record racing a publish of the same feature date,
over real Redis servers (a ring and a Redis Cluster): the record the publish wrote stays in Redis,
and is what the cache serves and keeps."""

from __future__ import annotations

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
    config = (
        OnlineStoreConfig(nodes=redis_nodes[:2])
        if kind == "ring"
        else OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True)
    )
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
