"""Another program's hash, list or set under featurelake's prefix, on real Redis servers (a ring and
a Redis Cluster): a write or a removal that meets it fails naming the key and what to do, as for
another program's string (GET of such a key answers WRONGTYPE, which names neither)."""

from __future__ import annotations

import pytest
import redis

from featurelake.feature_records import FeatureRecord, feature_key
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import entity_on_node

pytestmark = pytest.mark.integration

VIEW = "user_features"
NAMED = "key fl:user_features:u-1 holds no featurelake record .* delete it if nothing else needs it"


# A command that stores a value of each type at a key, and its arguments after the key.
FOREIGN_VALUES = {"hash": ("HSET", "a", "1"), "list": ("RPUSH", "a"), "set": ("SADD", "a")}


@pytest.mark.parametrize("kind", sorted(FOREIGN_VALUES))
def test_a_hash_list_or_set_under_the_prefix_is_named_by_a_write_and_a_removal(
    redis_nodes: list[str], redis_cluster: list[str], kind: str
) -> None:
    foreign = feature_key("fl", VIEW, "u-1")
    command, *args = FOREIGN_VALUES[kind]
    configs = (
        OnlineStoreConfig(nodes=redis_nodes[:1]),
        OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True),
    )
    for config in configs:
        with OnlineStore(config) as store:
            client = store.cluster_client() if config.cluster else store.client(redis_nodes[0])
            client.execute_command(command, foreign, *args)
            try:
                with pytest.raises(redis.ResponseError, match=NAMED):
                    store.write(VIEW, [("u-1", FeatureRecord("2026-10-28", {"n": 1}))])
                with pytest.raises(redis.ResponseError, match=NAMED):
                    store.remove_stale(VIEW, "2026-10-28", ["u-2"])
                assert client.type(foreign) == kind.encode(), "the other program's value is left as it was"
            finally:
                client.delete(foreign)


def test_a_rebalance_that_meets_another_programs_string_over_a_record_names_the_key(
    redis_nodes: list[str],
) -> None:
    # The old node holds another program's string where the new owner holds a record: the copy's
    # date comparison failed with "user_script:30: attempt to index a number value".
    old, new = redis_nodes[:1], redis_nodes[:2]
    with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        entity = entity_on_node(store, VIEW, new[1])
        key = store.key(VIEW, entity)
        store.write(VIEW, [(entity, FeatureRecord("2026-10-28", {"n": 1}))])  # on the new owner
        store.client(old[0]).set(key, b"hello")
        with pytest.raises(redis.ResponseError, match=f"key {key.decode()} holds no featurelake record"):
            store.rebalance()
        assert store.client(old[0]).get(key) == b"hello", "nothing is deleted"
        assert store.client(new[1]).get(key) is not None


@pytest.mark.parametrize("kind", sorted(FOREIGN_VALUES))
def test_a_rebalance_that_meets_a_hash_list_or_set_names_the_key_and_moves_nothing_of_its_batch(
    redis_nodes: list[str], kind: str
) -> None:
    """The move's read answered redis-py's bare WRONGTYPE, which named no fix, on every retry."""
    old, new = redis_nodes[:1], redis_nodes[:2]
    command, *args = FOREIGN_VALUES[kind]
    with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        entity = entity_on_node(store, VIEW, new[1])
        key = store.key(VIEW, entity)
        store.client(old[0]).execute_command(command, key, *args)
        with pytest.raises(
            ValueError,
            match=rf"key {key.decode()} on {old[0]} holds no featurelake record \(a Redis {kind}, not a "
            r"string\): delete it .* or give featurelake its own key_prefix",
        ):
            store.rebalance()
        assert store.client(old[0]).type(key) == kind.encode(), "the other program's value is left"
        assert not store.client(new[1]).exists(key)
