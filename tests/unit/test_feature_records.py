"""The online store's key and value format, pinned to exact bytes (docs/online-store.md)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

import msgpack
import numpy as np
import pandas as pd
import pytest

from featurelake.feature_records import (
    FeatureRecord,
    decode_record,
    encode_record,
    entity_of_key,
    feature_key,
    key_pattern,
    plain_value,
    record_from_row,
)


def test_feature_key_bytes() -> None:
    assert feature_key("fl", "user_features", "u000042") == b"fl:user_features:u000042"
    assert feature_key("prod", "user_features", "ü") == "prod:user_features:ü".encode()
    assert key_pattern("fl") == "fl:*"
    assert key_pattern("fl", "user_features") == "fl:user_features:*"
    assert entity_of_key(b"fl:user_features:u:1", prefix="fl", view="user_features") == "u:1"


@pytest.mark.parametrize(
    ("prefix", "view", "entity"),
    [
        pytest.param("", "user_features", "u1", id="empty-prefix"),
        pytest.param("fl", "a:b", "u1", id="colon-in-view"),
        pytest.param("fl*", "user_features", "u1", id="glob-in-prefix"),
        pytest.param("fl", "user_[a]", "u1", id="glob-in-view"),
        # SCAN's escape character: "f\\l:*" matches the keys of "fl", another prefix
        pytest.param("f\\l", "user_features", "u1", id="backslash-in-prefix"),
        pytest.param("fl", "user?features", "u1", id="question-mark-in-view"),
        pytest.param("fl", "user_features", "", id="empty-entity"),
    ],
)
def test_feature_key_rejects_ambiguous_segments(prefix: str, view: str, entity: str) -> None:
    with pytest.raises(ValueError, match=r"key|entity"):
        feature_key(prefix, view, entity)


def test_value_bytes_are_the_documented_msgpack_array() -> None:
    row = {
        "user_id": "u1",
        "total_spend": 12.5,
        "transaction_count": 3,
        "std_spend": None,
        "last_transaction_ts": datetime(2026, 10, 28, 13, 5, 1, 250000),
        "top_category_group": "food",
        "feature_date": date(2026, 10, 28),
    }
    record = record_from_row(row, feature_date=date(2026, 10, 28), exclude=("user_id", "feature_date"))
    value = encode_record(record)
    assert value == (
        b"\x93\x01\xaa2026-10-28\x85\xabtotal_spend\xcb@)\x00\x00\x00\x00\x00\x00\xb1transaction_count"
        b"\x03\xa9std_spend\xc0\xb3last_transaction_ts\xbb2026-10-28T13:05:01.250000Z"
        b"\xb2top_category_group\xa4food"
    )
    assert msgpack.unpackb(value) == [
        1,
        "2026-10-28",
        {
            "total_spend": 12.5,
            "transaction_count": 3,
            "std_spend": None,
            "last_transaction_ts": "2026-10-28T13:05:01.250000Z",
            "top_category_group": "food",
        },
    ]
    assert decode_record(value) == record
    # text of 32 to 255 bytes is msgpack's str8 (0xd9), as spec 2.0 writers (use_bin_type) write it
    long_text = FeatureRecord("2026-10-28", {"s": "x" * 40})
    assert encode_record(long_text) == b"\x93\x01\xaa2026-10-28\x81\xa1s\xd9\x28" + b"x" * 40


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        pytest.param(datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05Z", id="naive-is-utc"),
        pytest.param(
            datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-02T03:04:05Z",
            id="aware",
        ),
        pytest.param(datetime(2026, 1, 2, tzinfo=UTC), "2026-01-02T00:00:00Z", id="utc"),
        pytest.param(date(2026, 1, 2), "2026-01-02", id="date"),
        pytest.param(float("nan"), None, id="nan-is-null"),
        pytest.param(np.int64(7), 7, id="numpy-int"),
        pytest.param(np.float64(0.25), 0.25, id="numpy-float"),
        pytest.param(True, True, id="bool"),
        pytest.param(pd.NaT, None, id="pandas-nat-is-null"),
        pytest.param(pd.Timestamp("2026-10-28T13:05:01.25"), "2026-10-28T13:05:01.250000Z", id="pandas-ts"),
        # a timestamp[ns] column's values: the format has microseconds
        pytest.param(
            pd.Timestamp("2026-10-28T13:05:01.250000789"), "2026-10-28T13:05:01.250000Z", id="pandas-ts-ns"
        ),
        pytest.param(
            np.datetime64("2026-10-28T13:05:01.250000000"), "2026-10-28T13:05:01.250000Z", id="numpy-ns"
        ),
        pytest.param(np.datetime64("NaT"), None, id="numpy-nat-is-null"),
        pytest.param(2**64 - 1, 2**64 - 1, id="largest-uint64"),
    ],
)
def test_plain_values(value: object, plain: object) -> None:
    assert plain_value("c", value) == plain


def test_unsupported_value_names_the_column() -> None:
    with pytest.raises(TypeError, match="'merchants' holds a list"):
        plain_value("merchants", ["m1"])
    with pytest.raises(ValueError, match="'big' holds 18446744073709551616, outside msgpack's 64-bit"):
        plain_value("big", 2**64)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(b"\xc1", "msgpack failed", id="not-msgpack"),
        pytest.param(msgpack.packb({"a": 1}), "want \\[version, date, map\\]", id="wrong-layout"),
        # the write scripts refuse an element after the map (record_date): reads refuse it alike
        pytest.param(
            msgpack.packb([1, "2026-10-28", {}, "extra"]), "want \\[version, date, map\\]", id="four-elements"
        ),
        pytest.param(msgpack.packb([2, "2026-01-01", {}]), "format version 2", id="newer-version"),
    ],
)
def test_decode_refuses_what_it_does_not_know(value: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_record(value)


def test_record_dates_are_iso() -> None:
    assert record_from_row({}, feature_date="2026-10-28") == FeatureRecord("2026-10-28", {})
    with pytest.raises(ValueError):
        record_from_row({}, feature_date="28/10/2026")


@pytest.mark.parametrize(
    "day",
    [
        pytest.param(datetime(2026, 10, 28), id="datetime"),
        pytest.param(pd.Timestamp("2026-10-28"), id="pandas-timestamp"),
    ],
)
def test_a_feature_date_with_a_time_is_refused(day: object) -> None:
    # A datetime is a date, and its isoformat() was kept: '2026-10-28T00:00:00', not the documented
    # YYYY-MM-DD, which sorts after the same date's '2026-10-28' in the store's date comparison.
    with pytest.raises(
        ValueError,
        match=r"feature_date must be a date or YYYY-MM-DD, got (datetime\.datetime\(2026, 10, 28|Timestamp\('2026-10-28)",
    ):
        record_from_row({}, feature_date=day)


def test_a_feature_date_that_is_not_iso_names_the_argument() -> None:
    with pytest.raises(ValueError, match="feature_date must be a date or YYYY-MM-DD, got '28/10/2026'"):
        record_from_row({}, feature_date="28/10/2026")


def test_pandas_na_is_null() -> None:
    # A row of pandas' nullable dtypes (Int64, string, boolean) holds pd.NA where a value is missing.
    assert plain_value("c", pd.NA) is None
    row = pd.DataFrame({"n": [None]}, dtype="Int64").iloc[0].to_dict()
    assert record_from_row(row, feature_date="2026-10-28") == FeatureRecord("2026-10-28", {"n": None})


@pytest.mark.parametrize(
    "value",
    [np.array(["m7"]), np.array([5]), pd.Series([7]), np.array([1, 2]), np.array([], dtype=int)],
    ids=["one-string", "one-int", "series", "two", "empty"],
)
def test_an_array_is_refused_naming_the_column_not_stored_as_its_element(value: object) -> None:
    """A list column reaches a record as an ndarray (`to_pandas().to_dict()`): one of one element
    was stored as that element (`['m7']` served as `'m7'`), and a longer one failed with numpy's
    "can only convert an array of size 1", naming no column."""
    with pytest.raises(
        TypeError, match=rf"'top_merchants' holds a {type(value).__name__}; the online format"
    ):
        plain_value("top_merchants", value)


def test_a_numpy_timedelta_is_refused_like_a_timedelta() -> None:
    # Its .item() is an int of the dtype's unit (ns here): a number whose unit no reader can know.
    with pytest.raises(TypeError, match="'gap' holds a timedelta64"):
        plain_value("gap", np.timedelta64(5, "ns"))
    with pytest.raises(TypeError, match="'gap' holds a timedelta"):
        plain_value("gap", timedelta(seconds=5))


def test_encoding_a_value_the_format_has_no_place_for_names_the_column() -> None:
    with pytest.raises(
        TypeError, match=r"'n' holds np.int64\(3\) \(int64\), which the online format has no place for"
    ):
        encode_record(FeatureRecord("2026-10-28", {"ok": 1, "n": np.int64(3)}))
    # msgpack's own error named nothing: "Integer value out of range"
    with pytest.raises(ValueError, match="'big' holds 18446744073709551616, outside msgpack's 64-bit"):
        encode_record(FeatureRecord("2026-10-28", {"ok": 1, "big": 2**64}))
    with pytest.raises(TypeError, match="'gap' holds a timedelta"):
        encode_record(FeatureRecord("2026-10-28", {"gap": timedelta(seconds=5)}))


@pytest.mark.parametrize(
    ("entity", "hint"),
    [(b"u1", "id.decode()"), (1, "str(id)"), (np.int64(1), "str(id)")],
    ids=["bytes", "int", "numpy-int"],
)
def test_an_entity_id_that_is_not_text_has_no_key(entity: object, hint: str) -> None:
    # f"{b'u1'}" is "b'u1'": the key of another entity, without a word
    with pytest.raises(
        TypeError,
        match=rf"the key of view 'user_features' takes entity ids as text.*got {re.escape(repr(entity))}.*pass {re.escape(hint)}",
    ):
        feature_key("fl", "user_features", entity)
