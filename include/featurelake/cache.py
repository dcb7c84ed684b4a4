"""The layered feature cache: an in-process LRU with a TTL, then the Redis online store, then a
compute function on a miss, whose results are written back to both layers. Bulk warm-up fills the
layers for a list of entities ahead of traffic.

The local layer is cachetools' TTLCache (bounded: least recently used entries go first, and every
entry expires `ttl_seconds` after it was stored), behind a lock: cachetools is not thread-safe.
Entity ids are text, as the store's keys hold them. Computed records are written and served as the
online format holds them, so every layer serves a record alike (docs/online-store.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

from cachetools import TTLCache
from redis.exceptions import OutOfMemoryError

from featurelake.feature_records import (
    FeatureRecord,
    decode_record,
    encode_record,
    iso_feature_date,
    plain_value,
    refuse_one_id,
    text_id,
)
from featurelake.online_store import OnlineStore

log = logging.getLogger(__name__)

# The notes kept for reads in flight (`_served`, `_computed`) hold at most max(max_entries, this)
# ids each: a read that waits long (a slow computation) otherwise had every id that other reads
# served meanwhile noted for it, however large the id space.
_MIN_NOTES = 10_000

# How many times one call computes its misses when a removal of the view begins under each
# computation (`_compute_and_store`): a publish a day per view makes a second attempt rare, and a
# third one rarer.
_COMPUTE_ATTEMPTS = 3

# Computes the records of the ids it is given; ids it has no record for are left out (or given
# None). Values may be of any type `plain_value` takes (numpy scalars, dates, datetimes, NaN): the
# cache writes and serves them as the online format holds them.
ComputeFeatures = Callable[[Sequence[str]], Mapping[str, FeatureRecord | None]]


@dataclass
class CacheStats:
    """Where requested ids were answered, counted since the cache was made."""

    local_hits: int = 0
    store_hits: int = 0
    computed: int = 0
    # Asked for, and found in no layer (nor computed).
    missing: int = 0


class _Computation:
    """One call's computation of some ids: `done` is set when it ended, `error` if it raised;
    `not_stored` holds the ids it computed but did not write back (a later record was served
    meanwhile), which the calls waiting for it compute themselves, as they would after a failure."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.not_stored: frozenset[str] = frozenset()

    @property
    def failed(self) -> bool:
        """Whether it raised; read once `done` is set."""
        return self.error is not None


def _entity_ids(method: str, entity_ids: Iterable[str]) -> Iterator[str]:
    """`entity_ids`, refused when it is one id (a string would be read as its characters), and
    each id refused when it is not text: the store keys `str(id)`, so b"u1" would read the key of
    "b'u1'", and 1 would be a local entry of its own beside "1"'s, which `invalidate(["1"])`
    leaves. Lazy, so that `warm` streams."""
    refuse_one_id(entity_ids, taken_by=f"{method}()")
    return _text_ids(method, entity_ids)


def _text_ids(method: str, entity_ids: Iterable[str]) -> Iterator[str]:
    # checked here, before the local layer, which never builds a key
    return (text_id(entity, taken_by=f"{method}()") for entity in entity_ids)


def _shown(ids: Sequence[str]) -> str:
    """The first few of `ids`, for an error message."""
    return ", ".join(repr(entity) for entity in ids[:3]) + (", ..." if len(ids) > 3 else "")


def _computed_records(view: str, ids: Sequence[str], returned: object) -> dict[str, FeatureRecord]:
    """What `compute(ids)` returned, as the store holds it: the records of `ids` (an id given
    None has none; ids not asked for are dropped), each with its values in plain types
    (`plain_value`) and gone through the format's bytes, so that the reader that computed a record
    is served the same values as every later reader of it (from the local layer or Redis). A
    record the format cannot hold is an error naming the id and the column."""
    if not isinstance(returned, Mapping):
        what = "None" if returned is None else f"a {type(returned).__name__}"
        raise TypeError(
            f"compute returned {what} for {len(ids)} ids of view {view!r} ({_shown(ids)}): return a "
            "mapping of entity id to FeatureRecord, leaving out the ids it has no record for ({} when none)"
        )
    wanted = set(ids)
    records: dict[str, FeatureRecord] = {}
    for entity, record in returned.items():
        if entity not in wanted or record is None:
            continue
        if not isinstance(record, FeatureRecord) or not isinstance(record.values, Mapping):
            raise TypeError(
                f"compute gave entity {entity!r} of view {view!r} a {type(record).__name__}, not a "
                "FeatureRecord (feature_date, {column: value}): return one, or leave the id out"
            )
        try:
            columns = [column for column in record.values if not isinstance(column, str)]
            if columns:
                raise TypeError(f"feature column names are text, got {columns[0]!r}")
            plain = FeatureRecord(
                iso_feature_date(record.feature_date),
                {column: plain_value(column, value) for column, value in record.values.items()},
            )
            value_bytes = encode_record(plain)  # text UTF-8 cannot encode fails here
        except (TypeError, ValueError) as error:
            raise type(error)(
                f"compute gave entity {entity!r} of view {view!r} a record that the online format "
                f"cannot hold: {error}"
            ) from None
        records[entity] = decode_record(value_bytes)
    return records


class LayeredFeatureCache:
    """Records of one feature view: local LRU/TTL, then `store`, then `compute` (optional)."""

    def __init__(
        self,
        *,
        view: str,
        store: OnlineStore,
        compute: ComputeFeatures | None = None,
        max_entries: int = 100_000,
        ttl_seconds: float = 60.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if not ttl_seconds > 0:  # NaN too, which would expire every entry at once
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        self.view = view
        self.store = store
        self.compute = compute
        self.stats = CacheStats()
        self._local: TTLCache[str, FeatureRecord] = TTLCache(
            maxsize=max_entries, ttl=ttl_seconds, timer=timer
        )
        self._lock = threading.Lock()
        # Counts `invalidate` calls: a read that began before one does not put what it read into
        # the local layer, which could be the value the invalidation was for.
        self._invalidations = 0
        # The ids being computed, each with the computation's outcome: a concurrent miss of one
        # waits for it rather than computing (reading the lake) again.
        self._computing: dict[str, _Computation] = {}
        # Events are numbered (`_tick`). Each read that goes below the local layer takes a number
        # as it begins, kept in `_in_flight` until it ends. While others are in flight, a read
        # notes the latest date it served of each id (`_served`), and a computation the ids it
        # finished (`_computed`), both with their number, for the reads that began before:
        # - a read that began before a later date was served does not put its older record in the
        #   local layer, even once that later one has left it (TTL, LRU) or was never put there;
        # - a read whose miss of an id another call finished computing after it began reads what
        #   that call stored rather than computing the id again.
        # Both hold at most one entry per id, and are emptied up to the oldest read in flight as
        # reads end. Past `_notes_limit` entries the oldest go: a read that began before a served
        # note it needed went (`_served_forgotten`) then puts nothing in the local layer, and one
        # that began before a computed note went may compute that id again.
        self._tick = 0
        self._in_flight: dict[int, None] = {}
        self._served: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._computed: OrderedDict[str, int] = OrderedDict()
        self._notes_limit = max(max_entries, _MIN_NOTES)
        self._served_forgotten = 0

    def get(self, entity_id: str) -> FeatureRecord | None:
        if not isinstance(entity_id, str):  # the error names get(), not get_many()
            text_id(entity_id, taken_by="get()")
        return self.get_many([entity_id]).get(entity_id)

    def get_many(self, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
        """The records of `entity_ids` that any layer holds or `compute` gives; one store read
        (grouped by shard) and one compute call for the ids the layers above miss. An id that
        another call is computing, or finished computing since this call began, is not computed
        again: this call waits, then reads it."""
        ids = list(dict.fromkeys(_entity_ids("get_many", entity_ids)))
        found: dict[str, FeatureRecord] = {}
        with self._lock:
            invalidations = self._invalidations
            for entity in ids:
                record = self._local.get(entity)
                if record is not None:
                    found[entity] = record
            self.stats.local_hits += len(found)
            if len(found) == len(ids):
                return found
            self._tick += 1
            begun = self._tick
            self._in_flight[begun] = None
        try:
            self._read_below(ids, found, begun, invalidations)
        finally:
            with self._lock:
                self._end(begun)
        return {entity: found[entity] for entity in ids if entity in found}

    def _read_below(
        self, ids: Sequence[str], found: dict[str, FeatureRecord], begun: int, invalidations: int
    ) -> None:
        """Add to `found` (the local hits) what the store holds of the other `ids`, then what
        `compute` gives of the rest; put them in the local layer."""
        misses = [entity for entity in ids if entity not in found]
        from_store = dict(self.store.read(self.view, misses))
        found.update(from_store)
        misses = [entity for entity in misses if entity not in from_store]
        computed: dict[str, FeatureRecord] = {}
        if misses and self.compute is not None:
            computed, waited_for = self._compute_once(self.compute, misses, begun)
            if waited_for:
                # Computed by another call, which wrote what it found to the store.
                by_others = self.store.read(self.view, waited_for)
                from_store.update(by_others)
                found.update(by_others)
            found.update(computed)
            misses = [entity for entity in misses if entity not in found]
        with self._lock:
            # an invalidation since this read began: what it found is not put back; nor when a
            # note of a read served since it began went (it may have served a later date)
            put = self._invalidations == invalidations and begun >= self._served_forgotten
            self._keep_newer(from_store, begun, put=put)
            self._keep_newer(computed, begun, put=put)
            if len(self._in_flight) > 1:  # else no read began before this one ends
                self._tick += 1
                for entity, record in (*from_store.items(), *computed.items()):
                    served = self._served.pop(entity, None)
                    latest = record.feature_date if served is None else max(served[1], record.feature_date)
                    self._served[entity] = (self._tick, latest)
                while len(self._served) > self._notes_limit:
                    _, (tick, _) = self._served.popitem(last=False)
                    self._served_forgotten = max(self._served_forgotten, tick)
            self.stats.store_hits += len(from_store)
            self.stats.computed += len(computed)
            self.stats.missing += len(misses)

    def _end(self, begun: int) -> None:
        """The read numbered `begun` ended: forget what only reads begun before the oldest one
        still in flight need. Under the lock."""
        del self._in_flight[begun]
        oldest = next(iter(self._in_flight), None)
        if oldest is None:
            self._served.clear()
            self._computed.clear()
            return
        while self._served and next(iter(self._served.values()))[0] < oldest:
            self._served.popitem(last=False)
        while self._computed and next(iter(self._computed.values())) < oldest:
            self._computed.popitem(last=False)

    def _compute_once(
        self, compute: ComputeFeatures, misses: Sequence[str], begun: int
    ) -> tuple[dict[str, FeatureRecord], list[str]]:
        """Compute the `misses` that no other call is computing, nor finished computing since this
        read began (numbered `begun`), write them to the store, and wait for the others; return
        (the records computed here, the ids another call computed). An id whose computation
        failed in the other call is computed here."""
        wanted: list[str] = list(misses)
        computed: dict[str, FeatureRecord] = {}
        waited_for: list[str] = []
        # After a computation this call waited for failed, it computes those ids itself once; a
        # second failure it waits for is raised. Else its waiters, taking turns, computed one after
        # another: with the lake down, the last of N concurrent readers failed after N computations.
        retried_a_failure = False
        while wanted:
            mine = _Computation()
            with self._lock:
                done = [entity for entity in wanted if self._computed.get(entity, 0) > begun]
                theirs = {
                    entity: self._computing[entity]
                    for entity in wanted
                    if entity in self._computing and entity not in done
                }
                ours = [entity for entity in wanted if entity not in theirs and entity not in done]
                for entity in ours:
                    self._computing[entity] = mine
            waited_for.extend(done)
            try:
                if ours:
                    records, not_stored = self._compute_and_store(compute, ours, begun)
                    computed.update(records)
                    mine.not_stored = frozenset(not_stored)
            except BaseException as error:
                mine.error = error
                raise
            finally:
                with self._lock:
                    for entity in ours:
                        del self._computing[entity]
                    if not mine.failed and len(self._in_flight) > 1:  # else no read began before
                        self._tick += 1
                        for entity in ours:
                            self._computed.pop(entity, None)
                            if entity not in mine.not_stored:  # else a later miss computes it
                                self._computed[entity] = self._tick
                        while len(self._computed) > self._notes_limit:
                            self._computed.popitem(last=False)
                mine.done.set()
            awaited = {id(c): c for c in theirs.values()}.values()
            for computation in awaited:
                computation.done.wait()
            failure = next((c.error for c in awaited if c.error is not None), None)
            if failure is not None:
                if retried_a_failure:
                    raise failure  # as concurrent.futures gives each waiter a future's error
                retried_a_failure = True
            wanted = [
                entity
                for entity, computation in theirs.items()
                if computation.failed or entity in computation.not_stored
            ]
            waited_for.extend(entity for entity in theirs if entity not in wanted)
        return computed, waited_for

    def _compute_and_store(
        self, compute: ComputeFeatures, ids: Sequence[str], begun: int
    ) -> tuple[dict[str, FeatureRecord], list[str]]:
        """`compute(ids)` (for the read numbered `begun`), written back to the store; a record of a
        later or the same date that a writer put in the store meanwhile replaces the computed one.
        Returns (the records to serve, the ids computed but not written back). A computed record
        older than one that a read ending since `begun` served is not written back: that read
        found the later one in the store, whose key may have expired or been removed since, and
        the write-back would take the store back to the older date. A removal of the view that
        began meanwhile (a rerun's publish taking back the records of entities its date no longer
        holds) may have run after `compute` read the partition that rerun replaced, and before the
        write-back: what was written back is then taken back and computed again, up to
        `_COMPUTE_ATTEMPTS` times in all. A write-back that a node refuses for want of memory
        (maxmemory, policy noeviction) is served all the same, as not written back."""
        kept_newer = 0
        for attempt in range(1, _COMPUTE_ATTEMPTS + 1):
            refused: list[str] = []  # ids whose write-back a node at its maxmemory refused
            removals = self.store.removals(self.view, ids)
            computed = _computed_records(self.view, ids, compute(ids))
            with self._lock:
                superseded = [
                    entity for entity, record in computed.items() if self._served_later(entity, record, begun)
                ]
            to_write = {entity: record for entity, record in computed.items() if entity not in superseded}
            if not to_write:
                break
            # What the store holds of these ids just before the write-back: a record it holds as
            # computed already (a publish of the same values, meanwhile) is the publish's, not this
            # write-back's, so it is not taken back below (it was, and computed again), unless the
            # write says it set it (a removal came in between). Both, as the write's reply alone
            # misses a record set by a send whose reply was lost: the client's resend reports it kept.
            held = self.store.read(self.view, list(to_write))
            # A same date is kept too: a publish of that date (a corrected rerun) may have written it
            # after `compute` read the partition it replaced.
            try:
                written = self.store.write(
                    self.view, to_write.items(), replace_same_date=False, report_ids=True
                )
            except OutOfMemoryError as error:
                # The write-back only saves later reads a computation: a node at its maxmemory
                # (policy noeviction) refuses it, and the reader is served what was computed. A
                # ring's other nodes, or a cluster's other primaries, may have taken their part.
                log.warning(
                    "Redis refused the write-back of %d computed records of %s (%s; %s): serving them "
                    "without storing what it refused. Raise the node's maxmemory, or let it evict "
                    "(maxmemory-policy volatile-lru)",
                    len(to_write),
                    self.view,
                    _shown(list(to_write)),
                    error,
                )
                refused, kept_newer, set_here = list(to_write), 0, set()
            else:
                refused, kept_newer, set_here = [], written.kept_newer, set(written.written_ids)
            if self.store.removals(self.view, ids) == removals:
                break
            written_back = {
                entity: record
                for entity, record in to_write.items()
                if entity in set_here or held.get(entity) != record
            }
            taken_back = self.store.delete_if_unchanged(self.view, written_back)
            log.info(
                "a removal of %s began while %d ids were computed (attempt %d of %d): took back %d "
                "records written back%s",
                self.view,
                len(ids),
                attempt,
                _COMPUTE_ATTEMPTS,
                taken_back,
                ", computing again" if attempt < _COMPUTE_ATTEMPTS else "",
            )
        else:
            log.warning(
                "%s changed under each of %d computations of %d ids (%s): serving the last one's records, "
                "which the store does not hold",
                self.view,
                _COMPUTE_ATTEMPTS,
                len(ids),
                _shown(ids),
            )
            return computed, list(computed)  # every write-back was taken back
        not_stored: list[str] = []
        if superseded or kept_newer or refused:
            # A writer got its records into the store meanwhile: serve those, not ours.
            stored = self.store.read(self.view, list(computed))
            computed.update(
                (entity, record)
                for entity, record in stored.items()
                if record.feature_date >= computed[entity].feature_date
            )
            not_stored = [
                entity for entity in (*superseded, *refused) if stored.get(entity) != computed[entity]
            ]
        return computed, not_stored

    def _served_later(self, entity: str, record: FeatureRecord, begun: int) -> bool:
        """Whether a read that ended after the read numbered `begun` began served a later date
        of `entity` than `record`'s (as far as the notes still tell). Under the lock."""
        served = self._served.get(entity)
        return served is not None and served[0] > begun and served[1] > record.feature_date

    def _keep_newer(self, records: Mapping[str, FeatureRecord], begun: int, *, put: bool) -> None:
        """Put `records` (served by the read numbered `begun`) in the local layer, unless it holds
        a later feature date for the id, or a read that began after this one served the same or a
        later date (which may since have left the local layer). A record not put (or `put` False)
        still drops an older one the local layer holds (reads never go back to an older record),
        and one of the same date that differs: two records of one date are a publish and its
        corrected rerun (in another process: nothing invalidated), and which one a read found
        last is not known here, so the next read asks the store. Under the lock."""
        for entity, record in records.items():
            held = self._local.get(entity)
            if held is not None and held.feature_date > record.feature_date:
                continue
            served = self._served.get(entity)
            if put and (served is None or served[0] <= begun or served[1] < record.feature_date):
                self._local[entity] = record
            elif held is not None and (
                held.feature_date < record.feature_date
                or (held.feature_date == record.feature_date and held != record)
            ):
                self._local.pop(entity, None)

    def warm(self, entity_ids: Iterable[str], *, batch_size: int = 1000) -> int:
        """Load `entity_ids` into the layers in batches (computing and storing misses); return how
        many records the batches found (an id given again in a later batch counts again)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        loaded = 0
        iterator = iter(_entity_ids("warm", entity_ids))
        while batch := list(islice(iterator, batch_size)):
            loaded += len(self.get_many(batch))
        log.info("warmed %d records of %s", loaded, self.view)
        return loaded

    def invalidate(self, entity_ids: Iterable[str] | None = None) -> None:
        """Drop ids (every id when None) from the local layer; the store keeps them. Reads in
        flight do not fill the local layer again with what they found."""
        ids = None if entity_ids is None else list(_entity_ids("invalidate", entity_ids))
        with self._lock:
            self._invalidations += 1
            if ids is None:
                self._local.clear()
            else:
                for entity in ids:
                    self._local.pop(entity, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._local)
