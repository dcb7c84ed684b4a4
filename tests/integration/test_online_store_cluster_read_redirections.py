"""Reads of a real 3-primary Redis Cluster by a client that only reads (its slot table is never
updated by a write's redirection) while and after a slot moves: a slot moved whole after the
client loaded its table (MOVED), and a slot half migrated whose keys of a batch are all on the
target, or none anywhere (ASK). Its own module, so its own cluster: the slots it moves stay."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from featurelake.feature_records import FeatureRecord, feature_key
from featurelake.online_store import DEFAULT_KEY_PREFIX, OnlineStore, OnlineStoreConfig
from tests.integration.test_online_store_slot_migration import entities_in_slot, node_id, owner_of_slot
from tests.support import redis_client

pytestmark = pytest.mark.integration

VIEW = "user_features"
DAY = "2026-10-28"


def records(entities: list[str]) -> list[tuple[str, FeatureRecord]]:
    return [(entity, FeatureRecord(DAY, {"entity": entity})) for entity in entities]


@pytest.mark.parametrize("prefix", ["a", "b"])
def test_a_reader_follows_a_slot_moved_and_a_slot_half_migrated(
    redis_cluster: list[str], prefix: str
) -> None:
    background = [f"{prefix}u{i:05d}" for i in range(500)]
    slot = key_slot(feature_key(DEFAULT_KEY_PREFIX, VIEW, f"{prefix}s0000000"))
    in_slot = entities_in_slot(slot, 8, f"{prefix}s")
    absent = entities_in_slot(slot, 4, f"{prefix}x")  # in the slot, never written
    keys = [feature_key(DEFAULT_KEY_PREFIX, VIEW, e) for e in in_slot]
    source = owner_of_slot(redis_cluster, slot)
    target = next(address for address in redis_cluster if address != source)
    host, port = target.rsplit(":", 1)
    config = OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True)
    with OnlineStore(config) as writer, OnlineStore(config) as reader:
        writer.write(VIEW, records(background + in_slot))
        assert len(reader.read(VIEW, background + in_slot)) == 508  # the reader loads its table
        with redis_client(source) as src, redis_client(target) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
            src.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys[:4])
            # keys all moved (ASK), and keys that no node holds (ASK, then nil)
            got = reader.read(VIEW, background + in_slot[:4] + absent)
            assert sorted(got) == sorted(background + in_slot[:4])
            src.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys[4:])
            for address in redis_cluster:
                with redis_client(address) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))
        # The reader's table still names the source: MOVED
        got = reader.read(VIEW, background + in_slot + absent)
        assert sorted(got) == sorted(background + in_slot)
        assert all(got[e] == FeatureRecord(DAY, {"entity": e}) for e in in_slot)


def test_a_batch_read_key_by_key_finds_no_record_in_another_programs_hash(
    redis_cluster: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A batch that meets a half-migrated slot is read again one key at a time. A key under the
    prefix that holds no string (another program's hash) is no record there too, as for the batch's
    MGET (docs/online-store.md): the fallback's GET answered WRONGTYPE and failed the whole read."""
    import logging

    slot = key_slot(feature_key(DEFAULT_KEY_PREFIX, VIEW, "hs0000000"))
    in_slot = entities_in_slot(slot, 6, "hs")
    (foreign,) = entities_in_slot(slot, 1, "hf")
    keys = [feature_key(DEFAULT_KEY_PREFIX, VIEW, e) for e in in_slot]
    source = owner_of_slot(redis_cluster, slot)
    target = next(address for address in redis_cluster if address != source)
    host, port = target.rsplit(":", 1)
    with OnlineStore(OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True)) as store:
        store.write(VIEW, records(in_slot))
        store.cluster_client().hset(feature_key(DEFAULT_KEY_PREFIX, VIEW, foreign), "f", "1")
        assert sorted(store.read(VIEW, [*in_slot, foreign])) == sorted(in_slot)
        with redis_client(source) as src, redis_client(target) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
            src.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys[:3])
            with caplog.at_level(logging.INFO, logger="featurelake.online_store"):
                got = store.read(VIEW, [*in_slot, foreign])
            assert "one by one" in caplog.text
            assert sorted(got) == sorted(in_slot)
            assert all(got[e] == FeatureRecord(DAY, {"entity": e}) for e in in_slot)
            # finish the move, so the module's other tests meet a stable cluster
            rest = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
            src.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *rest)
            for address in redis_cluster:
                with redis_client(address) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))
