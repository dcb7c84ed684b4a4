"""Records round-trip the online format exactly (docs/online-store.md): random rows through
record_from_row, encode_record and decode_record, compared bit for bit with what the page says."""

from __future__ import annotations

import math
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import msgpack
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurelake.feature_records import (
    FeatureRecord,
    decode_record,
    encode_record,
    record_from_row,
    records_from_batches,
)

_ZONES = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12, minutes=30))]
)


@st.composite
def _moments(draw: st.DrawFn) -> datetime:
    zone = draw(_ZONES)
    # an aware datetime whose UTC instant stays within Python's years 1-9999
    low = datetime(1, 1, 2) if zone else datetime.min
    high = datetime(9999, 12, 30) if zone else datetime.max
    return draw(st.datetimes(min_value=low, max_value=high)).replace(tzinfo=zone)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.text(),
    st.dates(),
    _moments(),
)


def _documented(value: Any) -> Any:
    """The value as the page says the format holds it, written from the page alone."""
    if isinstance(value, float) and math.isnan(value):
        return None  # "NaN (and pandas' NA) is stored as nil"
    if isinstance(value, datetime):  # "ISO 8601 strings in UTC with a Z"; a naive one is in UTC
        instant = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return instant.isoformat() + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return value


def _bits(value: Any) -> Any:
    """A value with its type, floats by their bits: -0.0 is not 0.0, and 1 is not 1.0 nor True."""
    if isinstance(value, float):
        return ("float", struct.pack(">d", value))
    return (type(value).__name__, value)


@settings(max_examples=400, deadline=None)
@given(
    row=st.dictionaries(st.text(min_size=1), _VALUES, max_size=8),
    day=st.dates(),
)
def test_a_record_round_trips_bit_for_bit(row: dict[str, Any], day: date) -> None:
    record = record_from_row(row, feature_date=day)
    value = encode_record(record)
    decoded = decode_record(value)

    assert decoded.feature_date == day.isoformat()
    assert list(decoded.values) == list(row), "the map keeps the row's column order"
    assert {k: _bits(v) for k, v in decoded.values.items()} == {
        k: _bits(_documented(v)) for k, v in row.items()
    }
    # the documented layout: [1, date, map]; floats as 64-bit floats, so no digit is lost
    raw = msgpack.unpackb(value, raw=False)
    assert raw[:2] == [1, day.isoformat()]
    floats = sum(isinstance(v, float) for v in decoded.values.values())
    assert value.count(b"\xcb") >= floats
    assert encode_record(decoded) == value, "a decoded record encodes to the same bytes"


@pytest.mark.parametrize(
    ("arrow_type", "micros", "iso"),
    [
        pytest.param(
            pa.timestamp("us", "Asia/Tokyo"),
            253402297199000000,
            "9999-12-31T22:59:59Z",
            id="east-of-utc-in-9999",
        ),
        pytest.param(
            pa.timestamp("us", "-05:00"), -62135596800000000, "0001-01-01T00:00:00Z", id="west-of-utc-in-1"
        ),
        pytest.param(
            pa.timestamp("us", "UTC"),
            253402300799999999,
            "9999-12-31T23:59:59.999999Z",
            id="utc-last-microsecond",
        ),
    ],
)
def test_zoned_timestamps_at_the_ends_of_the_calendar_are_written_in_utc(
    arrow_type: pa.DataType, micros: int, iso: str
) -> None:
    # The instant exists in UTC, where the format writes it; pyarrow made a datetime in the
    # column's zone first, which is year 10000 (or 0) there: OverflowError, in the middle of a
    # publish that had written the earlier batches.
    batch = pa.record_batch(
        {"user_id": ["a", "b"], "ts": pa.array([0, micros], pa.timestamp("us")).cast(arrow_type)}
    )
    assert list(records_from_batches([batch], entity_column="user_id", feature_date="2026-10-28")) == [
        ("a", FeatureRecord("2026-10-28", {"ts": "1970-01-01T00:00:00Z"})),
        ("b", FeatureRecord("2026-10-28", {"ts": iso})),
    ]


def test_a_zoned_entity_column_keeps_its_text() -> None:
    # the key is str(id) of the column's own values: only feature columns are moved to UTC
    moment = pa.array([0], pa.timestamp("us")).cast(pa.timestamp("us", "+02:00"))
    records = records_from_batches(
        [pa.table({"user_id": moment, "v": [1]})], entity_column="user_id", feature_date="2026-10-28"
    )
    assert [key for key, _ in records] == ["1970-01-01 02:00:00+02:00"]


@pytest.mark.parametrize("empty", [None, ""], ids=["null", "empty-text"])
def test_a_row_without_an_entity_id_is_refused_naming_the_column(empty: str | None) -> None:
    # the rows before it come out; the row itself could be keyed by no id
    batch = pa.record_batch({"user_id": ["a", empty], "v": [1, 2]})
    records = records_from_batches([batch], entity_column="user_id", feature_date="2026-10-28")
    assert next(records) == ("a", FeatureRecord("2026-10-28", {"v": 1}))
    with pytest.raises(ValueError, match="a feature row has an empty 'user_id'; it cannot be keyed"):
        next(records)
