"""A read that meets a value under the prefix in the record's layout but not its format (a feature
date that is not text, a column name that is not text), on real Redis servers: it fails naming
the key, as the write scripts do, and never serves it (docs/online-store.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import pytest
import redis

from featurelake.cache import LayeredFeatureCache
from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import entity_on_node

pytestmark = pytest.mark.integration

VIEW = "user_features"
MALFORMED = {
    "date-not-text": msgpack.packb([1, 20261028, {"n": 1}]),
    "column-bytes": msgpack.packb([1, "2026-10-28", {b"n": 1}], use_bin_type=True),
}
# Malformed records that reads served, or that the write scripts took as records while reads
# refused them: each write script and each read now refuses them alike, naming the key.
REFUSED_BY_READS_AND_WRITES = {
    # what the writer stored before it held feature dates to YYYY-MM-DD: it sorted after the rerun
    # of its own date, and kept it out as older
    "date-with-a-time": msgpack.packb([1, "2026-10-28T10:00:00", {"n": 1}]),
    "date-not-a-date": msgpack.packb([1, "garbage", {"n": 1}]),  # kept out every later date
    "date-empty": msgpack.packb([1, "", {"n": 1}]),
    "trailing-bytes": msgpack.packb([1, "2026-10-28", {"n": 1}]) + b"\x00",
    "trailing-nil": msgpack.packb([1, "2026-10-28", {"n": 1}]) + b"\xc0",
}
# Reads refuse these, and a write replaces them as older or newer records by their date: the write
# script does not look into the map (a loop over it cost 10-20%), and Lua's cmsgpack cannot tell
# bin from text, nor check UTF-8.
REFUSED_BY_READS = {
    "column-name-an-int": msgpack.packb([1, "2026-10-28", {5: 1}]),
    "value-a-list": msgpack.packb([1, "2026-10-28", {"n": [1, 2]}]),
    "value-a-map": msgpack.packb([1, "2026-10-28", {"n": {"a": 1}}]),
    "value-bin": msgpack.packb([1, "2026-10-28", {"n": b"\xff"}], use_bin_type=True),
    "value-ext": msgpack.packb([1, "2026-10-28", {"n": msgpack.ExtType(5, b"x")}]),
    "text-not-utf8": b"\x93\x01\xaa2026-10-28\x81\xa1n\xa2\xff\xfe",
}
MALFORMED |= REFUSED_BY_READS_AND_WRITES | REFUSED_BY_READS


@contextmanager
def _held_by_u1(config: OnlineStoreConfig, value: bytes) -> Iterator[tuple[OnlineStore, bytes, Any]]:
    """A store of `config` whose key of entity u-1 holds `value`, on its owner; deleted after."""
    with OnlineStore(config) as store:
        key = store.key(VIEW, "u-1")
        client = store.cluster_client() if config.cluster else store.client(store.ring.node_for(key))
        client.set(key, value)
        try:
            yield store, key, client
        finally:
            client.delete(key)


def _ring_and_cluster(redis_nodes: list[str], redis_cluster: list[str]) -> tuple[OnlineStoreConfig, ...]:
    return (
        OnlineStoreConfig(nodes=redis_nodes[:2]),
        OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True),
    )


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_read_of_a_malformed_record_names_the_key_on_a_ring_and_a_cluster(
    redis_nodes: list[str], redis_cluster: list[str], kind: str
) -> None:
    for config in _ring_and_cluster(redis_nodes, redis_cluster):
        with _held_by_u1(config, MALFORMED[kind]) as (store, _, _):
            with pytest.raises(
                ValueError, match="online store key b'fl:user_features:u-1': not a featurelake"
            ):
                store.read(VIEW, ["u-1"])
            cache = LayeredFeatureCache(view=VIEW, store=store)
            with pytest.raises(ValueError, match="online store key b'fl:user_features:u-1'"):
                cache.get_many(["u-1"])
            assert len(cache) == 0


def test_a_rebalancing_read_of_a_malformed_record_on_the_previous_node_names_the_key(
    redis_nodes: list[str],
) -> None:
    # The previous node's value had an int date: the comparison with the owner's record failed with
    # "'>' not supported between instances of 'int' and 'str'", naming no key.
    old, new = redis_nodes[:1], redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        entity = entity_on_node(store, VIEW, new[1])
        key = store.key(VIEW, entity)
        store.write(VIEW, [(entity, FeatureRecord("2026-10-28", {"n": 1}))])
        store.client(old[0]).set(key, MALFORMED["date-not-text"])
        with pytest.raises(ValueError, match=f"online store key {key!r}: not a featurelake record"):
            store.read(VIEW, [entity])


@pytest.mark.parametrize("kind", sorted(REFUSED_BY_READS_AND_WRITES))
def test_a_write_or_removal_over_a_malformed_record_names_the_key_and_leaves_it(
    redis_nodes: list[str], redis_cluster: list[str], kind: str
) -> None:
    """The write script took these for records: a date it could not compare ('garbage') kept out
    every later one as older, counted as `kept_newer`; one with bytes after it was replaced without
    a word, though a read refused it."""
    for config in _ring_and_cluster(redis_nodes, redis_cluster):
        with _held_by_u1(config, MALFORMED[kind]) as (store, key, client):
            named = f"key {key.decode()} holds no featurelake record"
            with pytest.raises(redis.ResponseError, match=named):
                store.write(VIEW, [("u-1", FeatureRecord("2099-01-01", {"n": 3}))])
            with pytest.raises(redis.ResponseError, match=named):
                store.remove_stale(VIEW, "2026-10-28", ["u-2"])
            assert client.get(key) == MALFORMED[kind], "the value is left as it was"
