"""The layered cache over real Redis servers, fed what callers and compute functions give in
practice: entity ids that are not text, and computed records in other types than the online format
holds (numpy scalars, datetimes, NaN, big integers, None for an absent id). What the first reader
is served, what Redis holds and what every later reader is served must be the same record, in the
documented format, or the call fails naming the id, the column and what to do."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import numpy as np
import pytest

from featurelake.cache import LayeredFeatureCache
from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import keys_on

pytestmark = pytest.mark.integration

VIEW = "user_features"
DAY = "2026-10-28"


@pytest.fixture
def store(redis_nodes: list[str]):
    with OnlineStore(OnlineStoreConfig(nodes=redis_nodes[:2])) as online_store:
        yield online_store


@pytest.mark.parametrize(
    "entity",
    [
        pytest.param(b"u1", id="bytes"),
        pytest.param(1, id="int"),
        pytest.param(np.int64(1), id="numpy-int"),
    ],
)
def test_an_entity_id_that_is_not_text_is_refused(store: OnlineStore, entity: object) -> None:
    # b"u1" was read as the key fl:user_features:b'u1' (a miss, computed and written back under
    # that junk key); 1 was cached locally under the int, which invalidate(["1"]) did not drop.
    computed: list[list[object]] = []

    def compute(ids):
        computed.append(list(ids))
        return {entity: FeatureRecord(DAY, {"n": 1}) for entity in ids}

    cache = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
    for method in ("get_many", "warm", "invalidate"):
        with pytest.raises(
            TypeError, match=rf"{method}\(\) takes entity ids as text.*{type(entity).__name__}"
        ):
            getattr(cache, method)([entity])
    with pytest.raises(TypeError, match=r"get\(\) takes entity ids as text"):
        cache.get(entity)  # type: ignore[arg-type]
    assert computed == [] and len(cache) == 0
    assert set().union(*(keys_on(node) for node in store.config.nodes)) == set()


def test_a_record_served_from_the_local_layer_is_the_one_redis_holds(store: OnlineStore) -> None:
    # The first reader got the computed values as given (numpy scalars, NaN), Redis held NaN where
    # the format holds nil, and a numpy integer or a datetime failed the write.
    given = {
        "count": np.int64(3),
        "ratio": np.float64(0.25),
        "flag": np.bool_(True),
        "missing": float("nan"),
        "last_seen": datetime(2026, 10, 28, 13, 5, 1, 250000, tzinfo=UTC),
        "first_day": date(2026, 10, 1),
        "name": "zoë",
    }
    cache = LayeredFeatureCache(
        view=VIEW, store=store, compute=lambda ids: {entity: FeatureRecord(DAY, given) for entity in ids}
    )
    plain = FeatureRecord(
        DAY,
        {
            "count": 3,
            "ratio": 0.25,
            "flag": True,
            "missing": None,
            "last_seen": "2026-10-28T13:05:01.250000Z",
            "first_day": "2026-10-01",
            "name": "zoë",
        },
    )
    served = cache.get("ü-1")
    assert served == plain
    assert [type(value) for value in served.values.values()] == [int, float, bool, type(None), str, str, str]
    assert store.read(VIEW, ["ü-1"]) == {"ü-1": plain}
    fresh = LayeredFeatureCache(view=VIEW, store=store)
    assert fresh.get("ü-1") == plain


def test_a_computed_date_is_written_as_the_format_holds_it(store: OnlineStore) -> None:
    # A date object failed the write with msgpack's "can not serialize 'datetime.date' object".
    cache = LayeredFeatureCache(
        view=VIEW,
        store=store,
        compute=lambda ids: {entity: FeatureRecord(date(2026, 10, 28), {}) for entity in ids},
    )
    assert cache.get("u1") == FeatureRecord(DAY, {})
    assert store.read(VIEW, ["u1"]) == {"u1": FeatureRecord(DAY, {})}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        pytest.param(
            FeatureRecord(DAY, {"total": 2**64}),
            r"compute gave entity 'u1' of view 'user_features' a record that the online format cannot "
            r"hold: feature column 'total' holds 18446744073709551616, outside msgpack's 64-bit",
            id="big-int",
        ),
        pytest.param(
            FeatureRecord(DAY, {"tags": ("a", "b")}),
            r"entity 'u1' .*feature column 'tags' holds a tuple",
            id="tuple",
        ),
        pytest.param(
            FeatureRecord(DAY, {"raw": b"\x00"}),
            r"entity 'u1' .*feature column 'raw' holds a bytes",
            id="bytes",
        ),
        pytest.param(
            FeatureRecord("2026-10-28T00:00:00", {}),
            r"entity 'u1' .*feature_date must be a date or YYYY-MM-DD, got '2026-10-28T00:00:00'",
            id="datetime-date",
        ),
        pytest.param({"n": 1}, r"entity 'u1' .*a dict, not a FeatureRecord", id="not-a-record"),
    ],
)
def test_a_computed_record_the_format_cannot_hold_fails_naming_the_id(
    store: OnlineStore, record: object, message: str
) -> None:
    # A big int failed with msgpack's bare "Integer value out of range"; a tuple was served as a
    # tuple to the first reader and as a list from Redis; bytes were stored though the format has
    # no bytes; a datetime-like date sorted after its own day in the store's Lua comparison.
    cache = LayeredFeatureCache(
        view=VIEW, store=store, compute=lambda ids: {entity: record for entity in ids}
    )
    with pytest.raises((TypeError, ValueError), match=message):
        cache.get("u1")
    assert store.read(VIEW, ["u1"]) == {} and len(cache) == 0


def test_a_compute_that_gives_none_for_an_id_leaves_it_out(store: OnlineStore) -> None:
    # {id: None} for an absent id failed in the write with "'NoneType' object has no attribute
    # 'feature_date'", and the present ids of the call were lost with it.
    records = {"u1": FeatureRecord(DAY, {"n": 1})}
    cache = LayeredFeatureCache(view=VIEW, store=store, compute=lambda ids: {i: records.get(i) for i in ids})
    assert cache.get_many(["u1", "u2"]) == records
    assert (cache.stats.computed, cache.stats.missing) == (1, 1)
    assert store.read(VIEW, ["u1", "u2"]) == records


def test_a_compute_that_returns_nothing_fails_naming_what_to_return(store: OnlineStore) -> None:
    cache = LayeredFeatureCache(view=VIEW, store=store, compute=lambda ids: None)
    with pytest.raises(TypeError, match=r"compute returned None for 1 ids of view 'user_features' \('u1'\)"):
        cache.get("u1")


def test_a_read_in_flight_does_not_let_the_bookkeeping_outgrow_the_bound(
    store: OnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While one read waited on a slow computation, every id other reads served or computed was
    # noted for it (`_served`, `_computed`) until it ended: a warm of N ids meanwhile held N notes
    # however small `max_entries` was (5,000,000 users, 5,000,000 notes).
    from featurelake import cache as cache_module

    monkeypatch.setattr(cache_module, "_MIN_NOTES", 50, raising=False)
    entered, release = threading.Event(), threading.Event()

    def compute(ids):
        if "slow" in ids:
            entered.set()
            assert release.wait(10)
        return {entity: FeatureRecord(DAY, {"id": entity}) for entity in ids}

    cache = LayeredFeatureCache(view=VIEW, store=store, compute=compute, max_entries=10)
    slow: dict[str, FeatureRecord | None] = {}
    reader = threading.Thread(target=lambda: slow.update(slow=cache.get("slow")))
    reader.start()
    try:
        assert entered.wait(10)
        ids = [f"u{i}" for i in range(500)]
        assert cache.warm(ids, batch_size=100) == 500
        assert len(cache._served) <= 50 and len(cache._computed) <= 50
    finally:
        release.set()
        reader.join(10)
    assert slow == {"slow": FeatureRecord(DAY, {"id": "slow"})}
    tail = [*ids[-5:], "slow"]
    assert cache.get_many(tail) == {entity: FeatureRecord(DAY, {"id": entity}) for entity in tail}
    assert cache.stats.computed == 501, "an id was computed twice"
