"""One rebalance pass at a time, on real Redis servers. Two passes at once lost keys: pass B copied a
key, pass A found the copy, kept it and deleted the old key, and B's compare-and-delete then took
the key for one deleted meanwhile and deleted its copy, so the key was on no node, with both passes
reported complete (988 of 30,000 keys in a free-running try, two processes)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
import redis

from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from featurelake.rebalance_lock import (
    RebalanceLock,
    RebalanceLockLostError,
    RebalanceRunningError,
    rebalance_lock_key,
)
from featurelake.sharding import ShardRing
from tests.support import keys_on, redis_client

pytestmark = pytest.mark.integration

VIEW = "user_features"
DAY = "2026-10-28"
IDS = [f"u{i:04d}" for i in range(300)]
LOCK = rebalance_lock_key("fl").encode()


def _written_on(nodes: list[str]) -> None:
    with OnlineStore(OnlineStoreConfig(nodes=nodes)) as store:
        store.write(VIEW, [(entity, FeatureRecord(DAY, {"n": i})) for i, entity in enumerate(IDS)])


def _every_key_once_on_its_owner(nodes: list[str]) -> None:
    ring = ShardRing(nodes)
    held = {node: keys_on(node) for node in nodes}
    assert sum(len(keys) for keys in held.values()) == len(IDS)
    assert all(ring.node_for(key) == node for node, keys in held.items() for key in keys)
    with OnlineStore(OnlineStoreConfig(nodes=nodes)) as store:
        assert {entity: record.values["n"] for entity, record in store.read(VIEW, IDS).items()} == {
            entity: i for i, entity in enumerate(IDS)
        }


class _SecondPassBetweenCopyAndDelete(OnlineStore):
    """After this pass copies its first keys, and before it deletes them from the old node, another
    pass of the same ring change runs: the sequence that lost the keys."""

    def __init__(self, config: OnlineStoreConfig) -> None:
        super().__init__(config)
        self.second: BaseException | None = None

    def _write_node(self, node, entries, **kwargs):
        written = super()._write_node(node, entries, **kwargs)
        if self.second is None:
            with OnlineStore(self.config) as other, pytest.raises(RebalanceRunningError) as refused:
                other.rebalance()
            self.second = refused.value
        return written


def test_a_second_pass_while_one_runs_is_refused_and_no_key_is_lost(redis_nodes: list[str]) -> None:
    old, new = redis_nodes[:1], redis_nodes[:3]
    _written_on(old)
    with _SecondPassBetweenCopyAndDelete(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        report = store.rebalance()
    assert report.complete and report.moved > 100
    message = str(store.second)
    assert "another rebalance pass holds the lock 'fl;rebalance'" in message
    assert f"pid {os.getpid()}" in message and "two passes at once lose keys" in message
    _every_key_once_on_its_owner(new)
    assert not any(_lock_held_on(node) for node in new), "the lock outlived its pass"


def _lock_held_on(node: str) -> bool:
    with redis_client(node) as client:
        return bool(client.exists(LOCK))


# The killed holder's lock lifetime. After the kill the lock lasts 2/3 of it at least (it is renewed
# every third): the time the test has to see another pass refused. At 2 s that was 1.3 s, which a
# stalled test process on a busy machine can overrun (a 2.1 s stall there and the pass was not refused).
HOLDER_LOCK_SECONDS = 6


def _hold_the_lock_until_killed(nodes: list[str], held: multiprocessing.Event) -> None:
    clients = {node: redis.Redis.from_url(f"redis://{node}") for node in nodes}
    with RebalanceLock(clients, key_prefix="fl", seconds=HOLDER_LOCK_SECONDS).held():
        held.set()
        while True:
            time.sleep(1)


def test_the_lock_of_a_killed_pass_refuses_others_until_it_expires(redis_nodes: list[str]) -> None:
    old, new = redis_nodes[:1], redis_nodes[:2]
    _written_on(old)
    context = multiprocessing.get_context("spawn")
    held = context.Event()
    holder = context.Process(target=_hold_the_lock_until_killed, args=(new, held))
    holder.start()
    try:
        assert held.wait(60), "the holding process did not take the lock"
        # It renews its lock every third of its lifetime, so the lock is still there after it.
        time.sleep(HOLDER_LOCK_SECONDS + 1)
        assert all(_lock_held_on(node) for node in new)
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
        with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
            with pytest.raises(RebalanceRunningError, match=f"pid {holder.pid} since"):
                store.rebalance()
            assert keys_on(old[0]) and len(keys_on(old[0])) == len(IDS), "the refused pass moved keys"
            deadline = time.monotonic() + 30 + HOLDER_LOCK_SECONDS
            while any(_lock_held_on(node) for node in new) and time.monotonic() < deadline:
                time.sleep(0.1)
            report = store.rebalance()
    finally:
        if holder.is_alive():
            holder.kill()
    assert report.complete and report.moved > 50
    _every_key_once_on_its_owner(new)


def test_a_failed_pass_releases_the_lock(redis_nodes: list[str]) -> None:
    old, new = redis_nodes[:1], redis_nodes[:2]
    _written_on(old)
    # Another program's hash under the prefix, placed by the new ring on the new node: the pass
    # fails on it, naming it.
    foreign = next(
        f"fl:{VIEW}:h{i}"
        for i in range(1000)
        if ShardRing(new).node_for(f"fl:{VIEW}:h{i}".encode()) == new[1]
    )
    with redis_client(old[0]) as client:
        client.hset(foreign, "field", "value")
    with OnlineStore(OnlineStoreConfig(nodes=new, previous_nodes=old)) as store:
        with pytest.raises(ValueError, match="holds no featurelake record"):
            store.rebalance()
        assert not any(_lock_held_on(node) for node in new)
        with redis_client(old[0]) as client:
            client.delete(foreign)
        assert store.rebalance().complete
    _every_key_once_on_its_owner(new)


class _LockTakenAfterTheFirstMove(OnlineStore):
    """After its first move, the pass's lock on the new node is another pass's, as when it expired
    (a stalled process) and another pass took it."""

    def _move(self, source, keys, report):
        super()._move(source, keys, report)
        with redis_client(self.config.nodes[1]) as client:
            client.set(LOCK, "another pass", px=60_000)


def test_a_pass_that_lost_its_lock_stops_before_its_next_move(redis_nodes: list[str]) -> None:
    old, new = redis_nodes[:1], redis_nodes[:2]
    _written_on(old)
    migrating = OnlineStoreConfig(nodes=new, previous_nodes=old, batch_size=20)
    lost = f"lost its lock 'fl;rebalance' on {new[1]}"
    with _LockTakenAfterTheFirstMove(migrating) as store, pytest.raises(RebalanceLockLostError, match=lost):
        store.rebalance()
    # One page of 20 scanned keys moved, no more; the other pass's lock is left as it was.
    assert 0 < len(keys_on(new[1])) <= 20
    with redis_client(new[1]) as client:
        assert client.get(LOCK) == b"another pass"
        client.delete(LOCK)
    with redis_client(new[0]) as client:
        assert not client.exists(LOCK)
    with OnlineStore(migrating) as store:
        assert store.rebalance().complete
    _every_key_once_on_its_owner(new)


def test_a_lock_refused_on_one_node_is_released_on_the_others(redis_nodes: list[str]) -> None:
    nodes = redis_nodes[:3]
    # The nodes are locked in sorted order: hold the last one's, so that the others were taken first.
    last = sorted(nodes)[-1]
    with redis_client(last) as client:
        client.set(LOCK, "another pass", px=60_000)
    clients = {node: redis.Redis.from_url(f"redis://{node}") for node in nodes}
    lock = RebalanceLock(clients, key_prefix="fl")
    with pytest.raises(RebalanceRunningError, match=f"on {last} \\(another pass\\)"), lock.held():
        pass
    assert [_lock_held_on(node) for node in sorted(nodes)] == [False, False, True]


def test_the_lock_is_renewed_while_held_and_never_scanned(redis_nodes: list[str]) -> None:
    nodes = redis_nodes[:2]
    _written_on(nodes)
    clients = {node: redis.Redis.from_url(f"redis://{node}") for node in nodes}
    # renewed every second: a renewal may come up to 2 s late on a loaded machine before the lock
    # lapses; the test outlasts two lifetimes
    lock = RebalanceLock(clients, key_prefix="fl", seconds=3)
    with lock.held():
        time.sleep(7)
        for node in nodes:
            with redis_client(node) as client:
                assert client.get(LOCK) == lock.token.encode()
        with OnlineStore(OnlineStoreConfig(nodes=nodes)) as store:
            assert sum(store.count_keys().values()) == len(IDS)
    assert not any(_lock_held_on(node) for node in nodes)


def test_a_lock_set_by_this_pass_whose_reply_was_lost_counts_as_acquired(redis_nodes: list[str]) -> None:
    # A SET whose reply was lost is sent again by the client's retries, and finds the lock set by
    # its own token.
    node = redis_nodes[0]
    lock = RebalanceLock({node: redis.Redis.from_url(f"redis://{node}")}, key_prefix="fl")
    with redis_client(node) as client:
        client.set(LOCK, lock.token, px=60_000)
    with lock.held():
        lock.check()
    assert not _lock_held_on(node)
