"""Model-based random sequences of the layered cache over real Redis servers, one of which goes down
and comes back. Each read is checked against a model of what docs/online-store.md promises: the
layer that answers (the local layer while an entry is fresh, then Redis, then one compute of what
both miss), the record it serves, the stats, errors that propagate and leave nothing behind. Bursts
of threaded reads with slow computes and network latency, while dates are published, Redis keys and
local entries expire and ids are invalidated, check that an id is computed once and that no read
goes back to an older feature date than one a read that finished before it served, unless Redis
did (a slow compute's write-back landed after the later record's key expired).

FEATURELAKE_CACHE_SEQUENCES and FEATURELAKE_CACHE_BURSTS set how many sequences and bursts run,
FEATURELAKE_CACHE_SEED the first seed. A failure names its seed, which replays a sequence up to its
first burst (threads then interleave as they will)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pytest
import redis
from pytest_redis import factories
from redis.backoff import NoBackoff
from redis.retry import Retry

from featurelake.cache import LayeredFeatureCache
from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

VIEW = "seq"
# ids the lake may hold, and ids it never holds
PRESENT = tuple(f"u{i}" for i in range(6))
ABSENT = ("n0", "n1")
ENTITIES = PRESENT + ABSENT
TTL_SECONDS = 10.0
# what a compute that answers for ids it was not asked for gives them: never served nor stored
BOGUS = FeatureRecord("1999-01-01", {"bogus": True})

SEQUENCES = int(os.environ.get("FEATURELAKE_CACHE_SEQUENCES", "40"))
BURSTS = int(os.environ.get("FEATURELAKE_CACHE_BURSTS", "25"))
FIRST_SEED = int(os.environ.get("FEATURELAKE_CACHE_SEED", "0"))

# A Redis server of this module's own, stopped and started again by the sequences.
redis_flaky = factories.redis_proc(port=None)


def day(n: int) -> str:
    return (date(2026, 10, 1) + timedelta(days=n)).isoformat()


def day_number(record: FeatureRecord) -> int:
    return (date.fromisoformat(record.feature_date) - date(2026, 10, 1)).days


def lake_record(entity: str, n: int) -> FeatureRecord:
    """The lake's record of `entity` for day `n` (one record per id and date)."""
    return FeatureRecord(day(n), {"id": entity, "n": n})


class ComputeFailed(RuntimeError):
    """The compute layer's failure (the lake is unreachable)."""


class Clock:
    """The local layer's timer, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SpiedStore(OnlineStore):
    """The real store, recording the ids each read asks for, with optional network latency on each
    side of a read. A refused connection is retried as redis-py does, without its backoff sleeps,
    so that a read of a stopped server fails in milliseconds, not seconds."""

    def __init__(self, config: OnlineStoreConfig, *, seed: int) -> None:
        super().__init__(config)
        self.reads: list[list[str]] = []
        # In a burst, `ticket` numbers events; `on_write` is then called after each write with the
        # number taken once Redis answered, and the records Redis set.
        self.ticket: Callable[[], int] | None = None
        self.on_write: Callable[[int, list[tuple[str, FeatureRecord]]], None] | None = None
        self.latency = 0.0
        self._rng = random.Random(seed)
        for node in config.nodes:  # made now: OnlineStore.client is not meant to race
            self.client(node)

    def client(self, node: str) -> redis.Redis:
        made = node in self._clients
        client = super().client(node)
        if not made:
            client.set_retry(Retry(NoBackoff(), 3))
        return client

    def _pause(self) -> None:
        if self.latency:
            time.sleep(self._rng.uniform(0, self.latency))

    def write(self, view: str, records: Iterable[tuple[str, FeatureRecord]], **options: Any) -> Any:
        given = list(records)
        ticket, on_write = self.ticket, self.on_write
        report = super().write(view, given, **options)
        if ticket is not None and on_write is not None:
            landed = ticket()
            set_here = set(report.written_ids)
            on_write(landed, [(entity, record) for entity, record in given if entity in set_here])
        return report

    def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
        ids = list(entity_ids)
        self.reads.append(ids)
        self._pause()
        try:
            return super().read(view, ids)
        finally:
            self._pause()


class Lake:
    """The compute layer: each id's newest record, how it answers (`mode`), and every call."""

    def __init__(self) -> None:
        self.newest: dict[str, FeatureRecord] = {}
        self.history: dict[str, list[FeatureRecord]] = {entity: [] for entity in ENTITIES}
        self.mode = "normal"
        self.delay = 0.0
        self.calls: list[list[str]] = []
        self.returned: list[dict[str, FeatureRecord]] = []
        self._lock = threading.Lock()
        # In a burst, `ticket` numbers events: the number taken as this thread's last compute
        # returned is `returned_at()` (the cache chooses what to write back after that)
        self.ticket: Callable[[], int] | None = None
        self._returned = threading.local()

    def returned_at(self) -> int:
        return getattr(self._returned, "at", -1)

    def publish(self, entity: str, record: FeatureRecord) -> None:
        self.history[entity].append(record)
        held = self.newest.get(entity)
        if held is None or held.feature_date < record.feature_date:
            self.newest[entity] = record

    def compute(self, ids: Sequence[str]) -> dict[str, FeatureRecord]:
        ids = list(ids)
        with self._lock:
            self.calls.append(ids)
        if self.delay:
            time.sleep(self.delay)
        mode = self.mode
        if mode == "raise":
            raise ComputeFailed(f"the lake is unreachable (computing {ids})")
        found = {entity: self.newest[entity] for entity in ids if entity in self.newest}
        if mode == "fewer":
            found = dict(list(found.items())[1::2])
        elif mode == "extras":
            found = {**{entity: BOGUS for entity in ENTITIES if entity not in ids}, **found}
        with self._lock:
            self.returned.append(found)
        if self.ticket is not None:
            self._returned.at = self.ticket()
        return found


class CheckedCache(LayeredFeatureCache):
    """The cache under test; `checker`, when set, wraps each `get_many` (`get` and `warm` too)."""

    checker: Callable[[list[str], Callable[[list[str]], dict[str, FeatureRecord]]], Any] | None = None

    def get_many(self, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
        if self.checker is None:
            return super().get_many(entity_ids)
        return self.checker(list(entity_ids), super().get_many)


@dataclass
class Entry:
    """The model's local entry: the record, when it was put there, and whether it is surely still
    there (an LRU eviction may have dropped it)."""

    record: FeatureRecord
    filled_at: float
    surely_held: bool = True


@dataclass
class Served:
    """One read of a burst: its place in time (a global order of starts and ends) and its answer."""

    start: int
    end: int = -1
    answer: dict[str, FeatureRecord] = field(default_factory=dict)
    error: BaseException | None = None


class Run:
    """One random sequence over a fresh cache and emptied servers."""

    def __init__(self, seed: int, *, stable: str, flaky: str, restart: Callable[[bool], None]) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.stable, self.flaky, self.restart = stable, flaky, restart
        self.down = False
        config = OnlineStoreConfig(nodes=(stable, flaky))
        self.store = SpiedStore(config, seed=seed)
        self.publisher = SpiedStore(config, seed=seed)
        self.observer = SpiedStore(config, seed=seed)
        self.lake = Lake()
        self.clock = Clock()
        self.max_entries = self.rng.choice([2, 3, 5, 100])
        with_compute = self.rng.random() < 0.85
        self.cache = CheckedCache(
            view=VIEW,
            store=self.store,
            compute=self.lake.compute if with_compute else None,
            max_entries=self.max_entries,
            ttl_seconds=TTL_SECONDS,
            timer=self.clock,
        )
        self.cache.checker = self.checked_get_many
        self.local: dict[str, Entry] = {}
        self.may_go_down = self.rng.random() < 0.3
        self.bursts = self.rng.random() < 0.4
        self.ops: list[str] = []
        # what the sequence exercised: layers that answered, errors, evictions, bursts
        self.seen: Counter[str] = Counter()

    def close(self) -> None:
        for store in (self.store, self.publisher, self.observer):
            store.close()

    def node_of(self, entity: str) -> str:
        return self.store.ring.node_for(self.store.key(VIEW, entity))

    def up(self, entities: Iterable[str]) -> list[str]:
        return [entity for entity in entities if not (self.down and self.node_of(entity) == self.flaky)]

    def in_redis(self) -> dict[str, FeatureRecord]:
        """What Redis holds of every entity on a server that is up."""
        return self.observer.read(VIEW, self.up(ENTITIES))

    def fresh(self, entity: str) -> Entry | None:
        entry = self.local.get(entity)
        return entry if entry is not None and self.clock.now < entry.filled_at + TTL_SECONDS else None

    # -- one read, checked ---------------------------------------------------------------------
    def checked_get_many(
        self, ids: list[str], get_many: Callable[[list[str]], dict[str, FeatureRecord]]
    ) -> dict[str, FeatureRecord]:
        wanted = list(dict.fromkeys(ids))
        before = self.in_redis()
        stats = dataclasses.replace(self.cache.stats)
        reads, calls, returned = len(self.store.reads), len(self.lake.calls), len(self.lake.returned)
        mode = self.lake.mode
        error: BaseException | None = None
        try:
            got = get_many(ids)
        except (ComputeFailed, redis.ConnectionError) as failure:
            error, got = failure, {}
        now = self.clock.now
        reads_made, calls_made = self.store.reads[reads:], self.lake.calls[calls:]
        # the local misses, then, when some were computed, those ids again just before their
        # write-back (what the store held then is not the write-back's to take back)
        assert len(reads_made) <= 2, f"at most two store reads per get_many, got {reads_made}"
        misses = reads_made[0] if reads_made else []
        before_write_back = reads_made[1] if len(reads_made) == 2 else []
        assert misses == [entity for entity in wanted if entity in misses], (
            f"the store read {misses} is not the local misses of {wanted}"
        )
        hits = [entity for entity in wanted if entity not in misses]
        for entity in hits:
            assert self.fresh(entity) is not None, f"{entity} answered locally, but its entry expired"
        for entity in misses:
            entry = self.fresh(entity)
            assert entry is None or not entry.surely_held, f"{entity} is fresh in the local layer: missed"
        unreachable = [entity for entity in misses if entity not in self.up(misses)]
        from_store = {entity: before[entity] for entity in misses if entity in before}
        to_compute = [entity for entity in misses if entity not in before]
        computed: dict[str, FeatureRecord] = {}
        if unreachable:
            assert isinstance(error, redis.ConnectionError), (
                f"read of {unreachable} on a down server: {error!r}"
            )
            assert calls_made == []
        elif to_compute and self.cache.compute is not None:
            assert calls_made == [to_compute], f"computed {calls_made}, the misses were {to_compute}"
            if mode == "raise":
                assert isinstance(error, ComputeFailed), f"the compute's error did not propagate: {error!r}"
            else:
                answer = self.lake.returned[returned]
                computed = {entity: answer[entity] for entity in to_compute if entity in answer}
                assert sorted(before_write_back) == sorted(computed), (
                    f"read {before_write_back} before the write-back of {sorted(computed)}"
                )
        else:
            assert calls_made == [], f"computed {calls_made}, with nothing to compute"
        if not computed:
            assert before_write_back == [], f"read {before_write_back} again, with nothing written back"
        if error is None:
            assert not unreachable and not (calls_made and mode == "raise"), "expected an error"
            held = {entity: self.local[entity].record for entity in hits}
            expected = {
                entity: record
                for entity in wanted
                for record in [{**held, **from_store, **computed}.get(entity)]
                if record is not None
            }
            assert list(got.items()) == list(expected.items()), f"{ids}: got {got}, expected {expected}"
            delta = [
                self.cache.stats.local_hits - stats.local_hits,
                self.cache.stats.store_hits - stats.store_hits,
                self.cache.stats.computed - stats.computed,
                self.cache.stats.missing - stats.missing,
            ]
            missing = len(wanted) - len(expected)
            assert delta == [len(hits), len(from_store), len(computed), missing], f"stats moved {delta}"
            after = self.in_redis()
            for entity, record in computed.items():
                assert after.get(entity) == record, f"computed {entity} was not written back to Redis"
            assert BOGUS not in after.values(), "a record computed for an id not asked was stored"
            filled = {**from_store, **computed}
        else:
            assert self.cache.stats.local_hits - stats.local_hits == len(hits)
            filled = {}
        self.touch(hits, filled, misses, now)
        assert len(self.cache) <= self.max_entries
        self.seen.update(local_hit=len(hits), from_redis=len(from_store), computed=len(computed))
        if self.max_entries < len(ENTITIES) and any(not entry.surely_held for entry in self.local.values()):
            self.seen["maybe_evicted"] += 1
        if error is not None:
            self.seen[type(error).__name__] += 1
            raise error
        return got

    def touch(self, hits: list[str], filled: dict[str, FeatureRecord], misses: list[str], now: float) -> None:
        """The model after a read: hits stay, misses go, what was found is put there now; an LRU
        eviction may then drop any entry the read did not touch."""
        for entity in hits:
            self.local[entity].surely_held = True
        for entity in misses:
            self.local.pop(entity, None)
        for entity, record in filled.items():
            self.local[entity] = Entry(record, now)
        touched = set(hits) | set(filled)
        if sum(self.fresh(entity) is not None for entity in self.local) > self.max_entries:
            for entity, entry in self.local.items():
                if entity not in touched or len(touched) > self.max_entries:
                    entry.surely_held = False

    # -- the operations ------------------------------------------------------------------------
    def publish(self, entity: str, *, newer: bool) -> None:
        """A new date (or a backfill of an older one) lands in the lake, then in Redis."""
        held = self.lake.newest.get(entity)
        top = 10 if held is None else day_number(held)
        n = top + self.rng.randint(1, 3) if newer or held is None else top - self.rng.randint(1, 5)
        record = lake_record(entity, n)
        self.lake.publish(entity, record)
        if self.up([entity]):
            self.publisher.write(VIEW, [(entity, record)])

    def expire_in_redis(self, entities: list[str]) -> None:
        """Redis' own TTL expiry, brought forward: each key expires in a millisecond."""
        for entity in self.up(entities):
            self.observer.client(self.node_of(entity)).pexpire(self.store.key(VIEW, entity), 1)
        time.sleep(0.003)

    def step(self) -> None:
        rng = self.rng
        some = rng.sample(ENTITIES, rng.randint(1, 4))
        choices: list[tuple[str, float]] = [
            ("get", 20),
            ("get_many", 20),
            ("warm", 5),
            ("publish", 12),
            ("backfill", 5),
            ("expire_redis", 5),
            ("delete", 2),
            ("advance", 10),
            ("invalidate", 4),
            ("mode", 8),
            ("down_up", 3 if self.may_go_down else 0),
            ("burst", 2 if self.bursts else 0),
        ]
        op = rng.choices([name for name, _ in choices], [weight for _, weight in choices])[0]
        self.ops.append(op)
        try:
            if op == "get":
                self.cache.get(some[0])
            elif op == "get_many":
                self.cache.get_many(some + rng.sample(some, rng.randint(0, 1)))
            elif op == "warm":
                batch = rng.randint(1, 3)
                loaded = self.cache.warm(iter(some + some[:1]), batch_size=batch)
                assert loaded <= len(some) + 1
        except (ComputeFailed, redis.ConnectionError):
            pass  # checked by checked_get_many: it was expected
        if op == "publish":
            self.publish(some[0], newer=True)
        elif op == "backfill":
            self.publish(some[0], newer=False)
        elif op == "expire_redis":
            self.expire_in_redis(some)
        elif op == "delete":
            self.publisher.delete(VIEW, self.up(some))
        elif op == "advance":
            self.clock.now += rng.choice([1, 2, 5, 9, 10, 11, 30])
        elif op == "invalidate":
            if rng.random() < 0.3:
                self.cache.invalidate()
                self.local.clear()
            else:
                self.cache.invalidate(some)
                for entity in some:
                    self.local.pop(entity, None)
        elif op == "mode":
            self.lake.mode = rng.choice(["normal", "normal", "raise", "fewer", "extras"])
        elif op == "down_up":
            self.down = not self.down
            self.restart(not self.down)
        elif op == "burst" and not self.down:
            self.burst()
            self.seen["burst"] += 1

    # -- a burst of threaded reads -------------------------------------------------------------
    def burst(self) -> None:
        """Readers on threads while computes are slow, dates are published, Redis keys and local
        entries expire and ids are invalidated; then every id is read once more."""
        rng = random.Random(self.rng.random())
        self.cache.checker = None
        # Redis may hold an older record than a fresh local entry (a backfill after an expiry):
        # the burst starts from Redis, so that reads going back are the cache's doing.
        self.cache.invalidate()
        self.local.clear()
        mode = self.lake.mode = rng.choice(["normal", "normal", "normal", "fewer", "raise"])
        self.lake.delay = rng.uniform(0.01, 0.04)
        self.store.latency = 0.015
        # a few ids, read by every thread: they meet; often gone from Redis, so computed
        hot = rng.sample(ENTITIES, 3)
        if rng.random() < 0.6:
            self.publisher.delete(VIEW, hot)
        in_redis_before = set(self.in_redis())
        calls_before = len(self.lake.calls)
        in_lake_before = set(self.lake.newest)
        order = itertools.count()
        served: list[Served] = []
        errors: list[BaseException] = []
        expired: set[str] = set()
        # When each id's first expiry began, and each record the cache wrote back that Redis set:
        # the number taken as the compute that gave it returned, and the one once Redis answered.
        # A slow compute's write-back that lands after the later record's key expired takes Redis
        # back to an older date, which reads then serve (docs/online-store.md: "as long as Redis
        # does not"), unless a read that served the later date had ended when the cache chose what
        # to write back (after the compute returned): it then writes back no older record.
        first_expiry: dict[str, int] = {}
        written_back: list[tuple[int, int, str, FeatureRecord]] = []

        def wrote(landed: int, records: list[tuple[str, FeatureRecord]]) -> None:
            chosen = self.lake.returned_at()  # the write-back is on the compute's thread
            written_back.extend((chosen, landed, entity, record) for entity, record in records)

        self.store.ticket = self.lake.ticket = lambda: next(order)
        self.store.on_write = wrote

        def read(ids: list[str]) -> None:
            entry = Served(next(order))
            served.append(entry)
            try:
                entry.answer = self.cache.get_many(ids)
            except ComputeFailed as failure:
                entry.error = failure
                self.seen["burst_ComputeFailed"] += 1
            except BaseException as failure:  # reported below, with the seed
                errors.append(failure)
            entry.end = next(order)

        start = threading.Barrier(7)

        def reader(seed: float) -> None:
            mine = random.Random(seed)
            start.wait(10)
            for _ in range(4):
                read(mine.sample(hot if mine.random() < 0.8 else ENTITIES, mine.randint(1, 3)))
                time.sleep(mine.uniform(0, 0.01))

        def disturber(seed: float) -> None:
            mine = random.Random(seed)
            start.wait(10)
            try:
                for _ in range(10):
                    time.sleep(mine.uniform(0, 0.01))
                    action = mine.choice(["publish"] * 3 + ["advance"] * 2 + ["expire", "invalidate"])
                    entity = mine.choice([entity for entity in hot if entity in PRESENT] or PRESENT)
                    if action == "publish":
                        held = self.lake.newest.get(entity)
                        record = lake_record(entity, (day_number(held) if held else 10) + 1)
                        self.lake.publish(entity, record)
                        self.publisher.write(VIEW, [(entity, record)])
                    elif action == "advance":
                        self.clock.now += TTL_SECONDS + 1
                    elif action == "expire":
                        expired.add(entity)
                        first_expiry.setdefault(entity, next(order))
                        self.expire_in_redis([entity])
                    else:
                        self.cache.invalidate([entity])
            except BaseException as failure:  # reported below, with the seed
                errors.append(failure)

        threads = [threading.Thread(target=reader, args=(rng.random(),)) for _ in range(6)]
        threads.append(threading.Thread(target=disturber, args=(rng.random(),)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads), "a burst's thread hung"
        self.lake.mode = "normal" if mode == "raise" else mode
        last = threading.Thread(target=read, args=(list(ENTITIES),))
        last.start()
        last.join(30)
        assert not last.is_alive(), "a read after the burst hung (a computation left behind?)"
        assert errors == [], f"unexpected errors in the burst: {errors!r}"
        for entry in served:
            assert entry.error is None or mode == "raise", f"error {entry.error!r} with mode {mode}"
        for entry in served:
            for entity, record in entry.answer.items():
                assert record in self.lake.history[entity], f"{entity} served {record}, never published"
        # no read goes back to an older date than one a read that ended before it began served,
        # unless Redis went back: the cache wrote that older record back after the id's key expired
        for first, then in itertools.permutations(served, 2):
            if first.end < then.start:
                for entity, record in then.answer.items():
                    if entity not in first.answer or record.feature_date >= first.answer[entity].feature_date:
                        continue
                    # Redis set the older record after the expiry began and before `then` ended, and
                    # no read serving a later date had ended when the cache chose to write it back
                    redis_went_back = entity in first_expiry and any(
                        first_expiry[entity] < landed
                        and chosen < then.end
                        and not any(
                            later.end != -1
                            and later.end < chosen
                            and entity in later.answer
                            and later.answer[entity].feature_date > record.feature_date
                            for later in served
                        )
                        for chosen, landed, written, older in written_back
                        if written == entity and older == record
                    )
                    assert redis_went_back, (
                        f"{entity}: served {first.answer[entity].feature_date}, then "
                        f"{record.feature_date} (Redis holds {self.in_redis().get(entity)})"
                    )
                    self.seen["burst_redis_went_back"] += 1
        if mode == "normal":
            calls = self.lake.calls[calls_before:]
            for entity in PRESENT:
                if entity in expired or entity not in in_lake_before:
                    continue  # a new miss, or nothing stored: computed again
                times = sum(entity in call for call in calls)
                allowed = 0 if entity in in_redis_before else 1
                assert times <= allowed, f"{entity} computed {times} times in a burst: {calls}"
        self.store.ticket = self.store.on_write = self.lake.ticket = None
        self.lake.delay = 0.0
        self.store.latency = 0.0
        self.cache.invalidate()
        self.local.clear()
        self.cache.checker = self.checked_get_many

    def run(self, steps: int) -> None:
        for entity in PRESENT:
            if self.rng.random() < 0.6:
                self.publish(entity, newer=True)
        for _ in range(steps):
            self.step()


OLDER = FeatureRecord("2026-10-28", {"n": 1})
NEWER = FeatureRecord("2026-10-29", {"n": 2})


class StoreWithAWriterMidRead(OnlineStore):
    """A real store whose first read of `x`, once Redis has answered it, waits while `meanwhile()`
    runs (other readers, a publish): the reply is still on its way back."""

    meanwhile: Callable[[], None] | None = None

    def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
        found = super().read(view, entity_ids)
        if self.meanwhile is not None and "x" in found:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return found


@pytest.mark.parametrize("dropped_by", ["local TTL", "LRU eviction"])
def test_a_slow_read_does_not_bring_back_an_older_record_once_the_newer_one_left(
    redis_nodes: list[str], dropped_by: str
) -> None:
    # A read is at Redis for x (dated the 28th). Meanwhile the 29th is published, another read
    # serves and caches it, and it leaves the local layer (its TTL ran out, or the LRU dropped it).
    # The slow read must not then put the 28th there: later reads would go back to it.
    clock = Clock()
    with StoreWithAWriterMidRead(OnlineStoreConfig(nodes=redis_nodes[:2])) as store:
        store.write(VIEW, [("x", OLDER), ("y", OLDER)])
        cache = LayeredFeatureCache(
            view=VIEW, store=store, timer=clock, ttl_seconds=60, max_entries=1 if "LRU" in dropped_by else 10
        )

        def publish_serve_and_drop() -> None:
            store.write(VIEW, [("x", NEWER)])
            assert cache.get("x") == NEWER
            if "LRU" in dropped_by:
                assert cache.get("y") == OLDER  # x goes: max_entries=1
            else:
                clock.now += 61

        store.meanwhile = publish_serve_and_drop
        assert cache.get("x") == OLDER  # what Redis held when this read asked
        assert cache.get("x") == NEWER, "a read went back to the 28th after the 29th was served"


def test_a_slow_read_does_not_bring_back_an_older_record_past_an_invalidation_of_another_id(
    redis_nodes: list[str],
) -> None:
    # Read B begins, then `invalidate(["y"])` (after some write of y), then read A begins and gets
    # x's 28th from Redis. The 29th is published and B gets it from Redis; B serves it but does not
    # cache it (an invalidation came while it was in flight). A, which began after the invalidation,
    # must not cache the 28th either: the 29th has been served.
    with StoreWithAWriterMidRead(OnlineStoreConfig(nodes=redis_nodes[:2])) as store:
        store.write(VIEW, [("x", OLDER)])
        cache = LayeredFeatureCache(view=VIEW, store=store)
        b_began, a_read, b_done = threading.Event(), threading.Event(), threading.Event()
        served: dict[str, FeatureRecord | None] = {}

        class Paused(OnlineStore):
            def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
                if threading.current_thread().name == "B":
                    b_began.set()
                    assert a_read.wait(10)
                return store.read(view, entity_ids)

        def read_b() -> None:
            served["B"] = cache.get("x")
            b_done.set()

        def meanwhile() -> None:  # A's reply (the 28th) is in flight
            a_read.set()
            store.write(VIEW, [("x", NEWER)])
            assert b_done.wait(10)

        cache.store = Paused(store.config)
        reader_b = threading.Thread(target=read_b, name="B")
        reader_b.start()
        assert b_began.wait(10)
        cache.invalidate(["y"])
        store.meanwhile = meanwhile
        served["A"] = cache.get("x")
        reader_b.join(10)
        cache.store.close()
        assert served == {"B": NEWER, "A": OLDER}
        assert cache.get("x") == NEWER, "a read went back to the 28th after the 29th was served"


def test_a_read_that_may_not_cache_what_it_served_drops_the_older_record_held(
    redis_nodes: list[str],
) -> None:
    # Read B begins and is slow to reach Redis; `invalidate(["y"])` comes meanwhile. Read A then
    # caches x's 28th. The 29th is published, and B gets it: B serves it, and may not cache it (an
    # invalidation came while it was in flight), but must not leave the 28th for later reads.
    with OnlineStore(OnlineStoreConfig(nodes=redis_nodes[:2])) as store:
        store.write(VIEW, [("x", OLDER)])
        cache = LayeredFeatureCache(view=VIEW, store=store)
        b_began, go_on = threading.Event(), threading.Event()
        served: dict[str, FeatureRecord | None] = {}

        class SlowForB(OnlineStore):
            def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
                if threading.current_thread().name == "B":
                    b_began.set()
                    assert go_on.wait(10)
                return store.read(view, entity_ids)

        def read_b() -> None:
            served["B"] = cache.get("x")

        cache.store = SlowForB(store.config)
        reader_b = threading.Thread(target=read_b, name="B")
        reader_b.start()
        assert b_began.wait(10)
        cache.invalidate(["y"])
        served["A"] = cache.get("x")
        store.write(VIEW, [("x", NEWER)])
        go_on.set()
        reader_b.join(10)
        cache.store.close()
        assert served == {"A": OLDER, "B": NEWER}
        assert cache.get("x") == NEWER, "a read went back to the 28th after the 29th was served"


def test_a_miss_whose_computation_ended_meanwhile_is_not_computed_again(redis_nodes: list[str]) -> None:
    # A computes x (a slow lake read). B misses x in Redis meanwhile, and A ends before B goes on
    # (B's reply from Redis was still on its way): B must read what A wrote, not compute x again.
    calls: list[list[str]] = []
    a_computing, b_missed, a_done = threading.Event(), threading.Event(), threading.Event()

    def compute(ids: Sequence[str]) -> dict[str, FeatureRecord]:
        calls.append(list(ids))
        if len(calls) == 1:
            a_computing.set()
            assert b_missed.wait(10)
        return {entity: NEWER for entity in ids}

    class ReplyInFlight(OnlineStore):
        def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
            found = super().read(view, entity_ids)
            if threading.current_thread().name == "B" and not b_missed.is_set():
                b_missed.set()
                assert a_done.wait(10)
            return found

    with ReplyInFlight(OnlineStoreConfig(nodes=redis_nodes[:2])) as store:
        cache = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
        served: dict[str, FeatureRecord | None] = {}

        def read(name: str) -> None:
            served[name] = cache.get("x")
            if name == "A":
                a_done.set()

        readers = [threading.Thread(target=read, args=(name,), name=name) for name in "AB"]
        readers[0].start()
        assert a_computing.wait(10)
        readers[1].start()
        for reader in readers:
            reader.join(10)
        assert served == {"A": NEWER, "B": NEWER}
        assert calls == [["x"]], "B computed x again after A's computation of it ended"
        assert cache.stats.computed == 1 and cache.stats.store_hits == 1


@pytest.fixture
def servers(redis_nodes: list[str], redis_flaky) -> Any:
    """A stable Redis server and one that `restart(False)` stops and `restart(True)` starts again."""
    flaky = f"{redis_flaky.host}:{redis_flaky.port}"

    def restart(up: bool) -> None:
        if up:
            redis_flaky.start()
        else:
            redis_flaky.stop()

    def empty() -> None:
        for node in (redis_nodes[0], flaky):
            host, port = node.rsplit(":", 1)
            with redis.Redis(host=host, port=int(port)) as client:
                client.flushall()

    try:
        yield redis_nodes[0], flaky, restart, empty
    finally:
        if not redis_flaky.running():
            redis_flaky.start()


def run_sequence(seed: int, servers: Any, *, steps: int = 40, bursts_only: bool = False) -> Run:
    stable, flaky, restart, empty = servers
    empty()
    run = Run(seed, stable=stable, flaky=flaky, restart=restart)
    try:
        if bursts_only:
            run.run(0)
            for _ in range(steps):
                run.burst()
                run.ops.append("burst")
        else:
            run.run(steps)
    except AssertionError as failure:
        raise AssertionError(f"seed {seed}, after {run.ops}: {failure}") from failure
    finally:
        if run.down:
            restart(True)
        run.close()
    return run


def test_random_sequences_match_the_model(servers: Any) -> None:
    started = time.monotonic()
    seen: Counter[str] = Counter()
    for seed in range(FIRST_SEED, FIRST_SEED + SEQUENCES):
        seen.update(run_sequence(seed, servers).seen)
    log.info("%d sequences in %.1f s: %s", SEQUENCES, time.monotonic() - started, dict(seen))
    if SEQUENCES >= 40:  # the sequences reached every layer, error and race they are meant to
        for what in ("local_hit", "from_redis", "computed", "maybe_evicted", "burst"):
            assert seen[what] > 0, f"no sequence exercised {what}: {dict(seen)}"
        for what in ("ComputeFailed", "ConnectionError", "burst_ComputeFailed"):
            assert seen[what] > 0, f"no sequence met {what}: {dict(seen)}"


def test_random_bursts_of_threaded_reads(servers: Any) -> None:
    started = time.monotonic()
    seen: Counter[str] = Counter()
    for seed in range(FIRST_SEED, FIRST_SEED + BURSTS // 5):
        seen.update(run_sequence(seed, servers, steps=5, bursts_only=True).seen)
    log.info("%d bursts in %.1f s: %s", BURSTS // 5 * 5, time.monotonic() - started, dict(seen))
