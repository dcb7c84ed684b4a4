"""The layered cache's own logic: LRU bound, TTL expiry and the order of layers, with an in-memory
store (tests/integration/test_online_store.py runs it against real Redis shards)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

from featurelake.cache import LayeredFeatureCache
from featurelake.feature_records import FeatureRecord
from featurelake.online_store import WriteReport


class DictStore:
    """The OnlineStore methods the cache calls, over a dict."""

    def __init__(self, records: dict[str, FeatureRecord] | None = None) -> None:
        self.records = dict(records or {})
        self.reads: list[list[str]] = []
        self.removals_begun = 0

    def removals(self, view: str, entity_ids: Iterable[str]) -> dict[str, int]:
        return {"dict": self.removals_begun}

    def delete_if_unchanged(self, view: str, records: Mapping[str, FeatureRecord]) -> int:
        unchanged = [entity for entity, record in records.items() if self.records.get(entity) == record]
        for entity in unchanged:
            del self.records[entity]
        return len(unchanged)

    def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
        ids = list(entity_ids)
        self.reads.append(ids)
        return {i: self.records[i] for i in ids if i in self.records}

    def write(
        self,
        view: str,
        records: Iterable[tuple[str, FeatureRecord]],
        *,
        replace_same_date: bool = True,
        report_ids: bool = False,
    ) -> WriteReport:
        report = WriteReport()
        for entity, record in records:
            held = self.records.get(entity)
            if held is not None and (
                held.feature_date > record.feature_date
                or (not replace_same_date and held.feature_date == record.feature_date)
            ):
                report.kept_newer += 1
            else:
                self.records[entity] = record
                report.written += 1
                if report_ids:
                    report.written_ids.append(entity)
        return report


def record(n: int) -> FeatureRecord:
    return FeatureRecord("2026-10-28", {"n": n})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_layers_answer_in_order_and_misses_are_computed_once() -> None:
    store = DictStore({"a": record(1)})
    computed: list[list[str]] = []

    def compute(ids):
        computed.append(list(ids))
        return {i: record(9) for i in ids if i == "b"}

    cache = LayeredFeatureCache(view="v", store=store, compute=compute)
    assert cache.get_many(["a", "b", "c"]) == {"a": record(1), "b": record(9)}
    assert (cache.stats.local_hits, cache.stats.store_hits, cache.stats.computed, cache.stats.missing) == (
        0,
        1,
        1,
        1,
    )
    # the ids asked for, then the computed one again just before its write-back
    assert store.reads == [["a", "b", "c"], ["b"]] and computed == [["b", "c"]]
    assert store.records["b"] == record(9), "a computed record is written back to the store"

    assert cache.get_many(["a", "b"]) == {"a": record(1), "b": record(9)}
    assert cache.stats.local_hits == 2 and len(store.reads) == 2, "both now answered locally"


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    store = DictStore({"a": record(1)})
    cache = LayeredFeatureCache(view="v", store=store, ttl_seconds=10, timer=clock)
    cache.get("a")
    clock.now = 9.9
    cache.get("a")
    assert cache.stats.local_hits == 1
    store.records["a"] = record(2)
    clock.now = 10.1
    assert cache.get("a") == record(2), "expired locally, so read again from the store"
    assert cache.stats.store_hits == 2


def test_the_local_layer_is_bounded_lru() -> None:
    store = DictStore({k: record(i) for i, k in enumerate("abcd")})
    cache = LayeredFeatureCache(view="v", store=store, max_entries=3)
    cache.get_many(["a", "b", "c"])
    cache.get("a")  # a is now the most recently used
    cache.get("d")  # evicts b, the least recently used
    assert len(cache) == 3
    store.reads.clear()
    cache.get_many(["a", "c", "d", "b"])
    assert store.reads == [["b"]]


def test_warm_loads_in_batches_and_invalidate_drops_locally() -> None:
    store = DictStore({f"u{i}": record(i) for i in range(25)})
    cache = LayeredFeatureCache(view="v", store=store)
    assert cache.warm((f"u{i}" for i in range(30)), batch_size=10) == 25
    assert [len(r) for r in store.reads] == [10, 10, 10]
    cache.invalidate(["u1"])
    assert len(cache) == 24
    cache.invalidate()
    assert len(cache) == 0


def test_a_read_in_flight_does_not_undo_an_invalidation() -> None:
    # Another thread writes a newer record and invalidates it while this read is at the store.
    cache: LayeredFeatureCache

    class StoreWithAWriterMidRead(DictStore):
        def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
            found = super().read(view, entity_ids)
            self.records["x"] = record(2)
            cache.invalidate(["x"])
            return found

    store = StoreWithAWriterMidRead({"x": record(1)})
    cache = LayeredFeatureCache(view="v", store=store)
    assert cache.get("x") == record(1)  # what the store held when it was read
    assert len(cache) == 0
    store.read = DictStore.read.__get__(store)  # the writer is done
    assert cache.get("x") == record(2)


def test_a_computed_record_loses_to_a_later_one_written_meanwhile() -> None:
    later = FeatureRecord("2026-10-29", {"n": 2})

    store = DictStore()

    def compute(ids):
        store.records["x"] = later  # a writer publishes the next date while this computes
        return {"x": record(1)}

    cache = LayeredFeatureCache(view="v", store=store, compute=compute)
    assert cache.get("x") == later
    assert store.records["x"] == later
    assert cache.get("x") == later  # and the local layer holds the later one


def test_warm_refuses_a_batch_size_below_one() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        LayeredFeatureCache(view="v", store=DictStore()).warm(["a"], batch_size=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"max_entries": 0}, "max_entries", id="size"),
        pytest.param({"ttl_seconds": 0}, "ttl_seconds", id="ttl"),
    ],
)
def test_bad_bounds_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LayeredFeatureCache(view="v", store=DictStore(), **kwargs)


def test_a_ttl_that_is_not_a_number_is_refused() -> None:
    # NaN passed `ttl_seconds <= 0`, and every entry then expired at once: a silently disabled cache.
    with pytest.raises(ValueError, match="ttl_seconds must be > 0, got nan"):
        LayeredFeatureCache(view="v", store=DictStore(), ttl_seconds=float("nan"))


@pytest.mark.parametrize("method", ["get_many", "warm", "invalidate"])
def test_one_id_as_a_string_is_refused_not_split_into_characters(method: str) -> None:
    store = DictStore({"u1": record(1)})
    cache = LayeredFeatureCache(view="v", store=store)
    cache.get("u1")
    with pytest.raises(
        TypeError, match=rf"{method}\(\) takes an iterable of entity ids, got the string 'u1'"
    ):
        getattr(cache, method)("u1")
    assert len(cache) == 1 and store.reads == [["u1"]]


def test_a_failed_computation_is_not_taken_for_missing_records_by_a_reader_waiting_on_it() -> None:
    import threading
    import time

    entered = threading.Event()
    calls: list[list[str]] = []

    def compute(ids):
        calls.append(list(ids))
        if len(calls) == 1:
            entered.set()
            time.sleep(0.3)  # the second reader misses x meanwhile
            raise OSError("the lake is unreachable")
        return {i: record(9) for i in ids}

    cache = LayeredFeatureCache(view="v", store=DictStore(), compute=compute)
    errors: list[BaseException] = []

    def first() -> None:
        try:
            cache.get("x")
        except OSError as error:
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(10)
    assert cache.get("x") == record(9), "the second reader computes x itself"
    thread.join(10)
    assert len(errors) == 1 and calls == [["x"], ["x"]]


def test_a_slow_read_does_not_bring_back_an_older_record_once_the_newer_one_expired() -> None:
    # While a read of x is at the store, the next date is published, another read serves and
    # caches it, and its local entry expires: the slow read must not cache the older record then.
    clock = Clock()
    later = FeatureRecord("2026-10-29", {"n": 2})
    cache: LayeredFeatureCache

    class StoreWithAWriterMidRead(DictStore):
        def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
            found = super().read(view, entity_ids)
            if len(self.reads) == 1:
                self.records["x"] = later
                assert cache.get("x") == later
                clock.now += 61
            return found

    cache = LayeredFeatureCache(view="v", store=StoreWithAWriterMidRead({"x": record(1)}), timer=clock)
    assert cache.get("x") == record(1)
    assert cache.get("x") == later, "a read went back to the older record after the later one was served"


def test_a_slow_read_does_not_put_back_a_record_that_a_corrected_rerun_of_its_date_replaced() -> None:
    # While a read of x is at the store, a rerun of x's date publishes a corrected record (in
    # another process: nothing invalidates), and another read serves and caches it. The slow read
    # ends with the uncorrected record of the same date: it must not replace the corrected one.
    corrected = FeatureRecord("2026-10-28", {"n": 2})
    cache: LayeredFeatureCache

    class StoreWithARerunMidRead(DictStore):
        def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
            found = super().read(view, entity_ids)
            if len(self.reads) == 1:
                self.records["x"] = corrected
                assert cache.get("x") == corrected
            return found

    cache = LayeredFeatureCache(view="v", store=StoreWithARerunMidRead({"x": record(1)}))
    assert cache.get("x") == record(1)  # what the slow read found, before the rerun
    assert cache.get("x") == corrected, "a read went back to the uncorrected record after the corrected one"


def test_a_read_that_may_not_cache_what_it_served_drops_the_older_record_held() -> None:
    # Read B is at the store when `invalidate(["y"])` comes, then read A caches x's older record
    # and the next date is published: B serves the later record; it may not cache it, but it must
    # not leave the older one for later reads either.
    later = FeatureRecord("2026-10-29", {"n": 2})
    cache: LayeredFeatureCache

    class StoreWithReadsMidRead(DictStore):
        b_reading = True

        def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
            if self.b_reading:  # before B's read reaches the store
                self.b_reading = False
                cache.invalidate(["y"])
                assert cache.get("x") == record(1)  # read A
                self.records["x"] = later
            return super().read(view, entity_ids)

    cache = LayeredFeatureCache(view="v", store=StoreWithReadsMidRead({"x": record(1)}))
    assert cache.get("x") == later  # read B
    assert cache.get("x") == later, "a read went back to the older record after the later one was served"


def test_a_miss_whose_computation_ended_meanwhile_is_not_computed_again() -> None:
    # Read B misses x at the store; while that answer is on its way back, read A (another thread)
    # misses x too, computes it and ends. B must read what A stored, not compute x again.
    import threading

    calls: list[list[str]] = []
    cache: LayeredFeatureCache

    class StoreWithAReaderMidRead(DictStore):
        def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
            found = super().read(view, entity_ids)
            if len(self.reads) == 1:
                reader_a = threading.Thread(target=cache.get, args=("x",))
                reader_a.start()
                reader_a.join(10)
            return found

    def compute(ids):
        calls.append(list(ids))
        return {i: record(9) for i in ids}

    cache = LayeredFeatureCache(view="v", store=StoreWithAReaderMidRead(), compute=compute)
    assert cache.get("x") == record(9)
    assert calls == [["x"]], "x was computed again after a computation of it ended"
    assert (cache.stats.computed, cache.stats.store_hits) == (1, 1)


def test_a_computation_under_which_removals_keep_beginning_is_served_but_not_stored() -> None:
    # Each computation sees a removal of the view begin (a rerun's publish): what it wrote back is
    # taken back and computed again, and after the last attempt served to the caller alone.
    store = DictStore()
    computed: list[list[str]] = []

    def compute(ids):
        computed.append(list(ids))
        store.removals_begun += 1
        return {i: record(len(computed)) for i in ids}

    cache = LayeredFeatureCache(view="v", store=store, compute=compute)
    assert cache.get("a") == record(3)
    assert computed == [["a"], ["a"], ["a"]], "three attempts in all"
    assert store.records == {}, "each write-back was taken back"


def test_a_call_waiting_for_a_computation_that_stored_nothing_computes_the_id_itself(monkeypatch) -> None:
    """The computation under which removals kept beginning reported none of its ids as not stored,
    so a call waiting for it read the store, found nothing, and served no record for an id that
    exists (the computing call was served it)."""
    import threading

    import featurelake.cache as cache_module

    waiting = threading.Event()

    class WaitedFor(cache_module._Computation):
        def __init__(self) -> None:
            super().__init__()
            done = self.done

            class Recorded(threading.Event):
                def wait(self, timeout: float | None = None) -> bool:
                    waiting.set()  # a call now waits for this computation
                    return done.wait(timeout)

                def set(self) -> None:
                    done.set()

            self.done = Recorded()

    monkeypatch.setattr(cache_module, "_Computation", WaitedFor)
    store = DictStore()
    computed: list[list[str]] = []
    computing = threading.Event()

    def compute(ids):
        computed.append(list(ids))
        computing.set()
        if len(computed) <= 3:  # the first call's three attempts each see a removal begin
            store.removals_begun += 1
        if len(computed) == 3:
            assert waiting.wait(30), "the second call never waited for the first"
        return {i: record(len(computed)) for i in ids}

    cache = LayeredFeatureCache(view="v", store=store, compute=compute)
    served: dict[str, FeatureRecord | None] = {}
    first = threading.Thread(target=lambda: served.update(first=cache.get("a")))
    first.start()
    assert computing.wait(30)
    served["second"] = cache.get("a")
    first.join(30)

    assert served == {"first": record(3), "second": record(4)}
    assert computed == [["a"]] * 4, "the waiting call computed it once more, itself"
    assert store.records == {"a": record(4)}


def test_a_removal_under_one_computation_costs_one_more() -> None:
    store = DictStore()
    computed: list[list[str]] = []

    def compute(ids):
        computed.append(list(ids))
        if len(computed) == 1:
            store.removals_begun += 1
        return {i: record(len(computed)) for i in ids}

    cache = LayeredFeatureCache(view="v", store=store, compute=compute)
    assert cache.get("a") == record(2)
    assert computed == [["a"], ["a"]]
    assert store.records == {"a": record(2)}


def test_readers_waiting_on_a_failing_computation_retry_it_once_not_one_after_another(monkeypatch) -> None:
    """With the lake down, each of N readers of one id waited for the previous one's computation to
    fail before it computed the id itself: N computations in a row, the last reader failing after
    N times the compute's time. Now a reader computes itself once after a failure it waited for,
    and gets the error of the second."""
    import threading

    import featurelake.cache as cache_module

    readers = 5
    waits = threading.Condition()
    waited = [0]

    class Counted(cache_module._Computation):
        def __init__(self) -> None:
            super().__init__()
            done = self.done

            class CountedEvent(threading.Event):
                def wait(self, timeout: float | None = None) -> bool:
                    with waits:
                        waited[0] += 1
                        waits.notify_all()
                    return done.wait(timeout)

                def set(self) -> None:
                    done.set()

            self.done = CountedEvent()

    monkeypatch.setattr(cache_module, "_Computation", Counted)
    calls: list[list[str]] = []
    calls_lock = threading.Lock()
    first_entered = threading.Event()

    def compute(ids):
        with calls_lock:
            calls.append(list(ids))
            n = len(calls)
        first_entered.set()
        # The first computation fails once every other reader waits for it; the second (one of
        # them, computing again) once the rest wait for it.
        expected = {1: readers - 1, 2: (readers - 1) + (readers - 2)}.get(n)
        if expected is not None:
            with waits:
                assert waits.wait_for(lambda: waited[0] >= expected, timeout=30), (n, waited[0])
        raise OSError("the lake is unreachable")

    cache = LayeredFeatureCache(view="v", store=DictStore(), compute=compute)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            cache.get("x")
        except OSError as error:
            errors.append(error)

    threads = [threading.Thread(target=read) for _ in range(readers)]
    threads[0].start()
    assert first_entered.wait(30)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(errors) == readers, "every reader gets the lake's error"
    assert calls == [["x"], ["x"]], "after the first failure, one reader computed again, not each in turn"


def test_ids_compute_gives_but_was_not_asked_for_are_neither_stored_nor_cached() -> None:
    """A compute function that answers more than it was asked (a whole partition, say) has only
    the asked ids' records written back and cached: the others were never requested, and writing
    them would fill the store behind the publish's back."""
    store = DictStore()
    cache = LayeredFeatureCache(view="v", store=store, compute=lambda ids: {"a": record(1), "x": record(2)})
    assert cache.get_many(["a"]) == {"a": record(1)}
    assert store.records == {"a": record(1)}
    assert len(cache) == 1 and cache.stats.computed == 1


def test_an_id_given_twice_is_read_computed_and_counted_once() -> None:
    store = DictStore({"a": record(1)})
    computed: list[list[str]] = []

    def compute(ids):
        computed.append(list(ids))
        return {i: record(9) for i in ids}

    cache = LayeredFeatureCache(view="v", store=store, compute=compute)
    assert cache.get_many(["a", "b", "a", "b"]) == {"a": record(1), "b": record(9)}
    assert store.reads[0] == ["a", "b"] and computed == [["b"]]
    assert (cache.stats.store_hits, cache.stats.computed) == (1, 1)
    assert cache.get_many(["a", "a"]) == {"a": record(1)}
    assert cache.stats.local_hits == 1


def test_a_read_that_serves_a_corrected_record_drops_the_uncorrected_one_of_its_date_held() -> None:
    # Read B is at the store when read A caches x's record, and a rerun of the same date then
    # publishes a corrected one (in another process: nothing invalidates). B serves the corrected
    # record; which of the two is current it cannot tell, so it must not leave A's for later reads.
    corrected = FeatureRecord("2026-10-28", {"n": 2})
    cache: LayeredFeatureCache

    class StoreWithACorrectionMidRead(DictStore):
        b_reading = True

        def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
            if self.b_reading:  # before B's read reaches the store
                self.b_reading = False
                assert cache.get("x") == record(1)  # read A
                self.records["x"] = corrected
            return super().read(view, entity_ids)

    cache = LayeredFeatureCache(view="v", store=StoreWithACorrectionMidRead({"x": record(1)}))
    assert cache.get("x") == corrected  # read B
    assert cache.get("x") == corrected, "a later read was served the uncorrected record of the same date"
