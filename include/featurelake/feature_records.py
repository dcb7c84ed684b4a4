"""Feature records as the online store holds them: the key of an entity's features and the msgpack
value, a public format written down in docs/online-store.md. Pure functions, pinned to exact bytes by
tests/unit/test_feature_records.py.

A value is the msgpack array `[1, "<feature date>", {column: value}]`: format version 1, the ISO date
the features are for, and a map of plain values (nil, bool, int, float, str). Timestamps are ISO 8601
strings in UTC with a `Z`, dates ISO strings. Any language with msgpack reads it; nothing is pickled.
The feature date sits at a fixed place so that the store's Lua scripts (Redis' built-in cmsgpack)
keep the newer of two records.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import msgpack
import numpy as np

from featurelake.lake import iso_day

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FeatureRecord:
    """One entity's features for one feature date (ISO `YYYY-MM-DD`)."""

    feature_date: str
    values: Mapping[str, Any]


# ':' separates key segments; the others are glob characters, which would make the SCAN pattern of
# a prefix or view match other keys too.
_RESERVED_IN_NAMES = frozenset(":*?[]\\")


def _check_name(kind: str, name: str) -> None:
    if not name or not _RESERVED_IN_NAMES.isdisjoint(name):
        raise ValueError(
            f"{kind} {name!r} must be non-empty and hold none of : * ? [ ] \\ (it is a key segment and "
            "part of a SCAN pattern)"
        )


def feature_key(prefix: str, view: str, entity_id: str) -> bytes:
    """The Redis key of one entity's features: `<prefix>:<view>:<entity_id>`, UTF-8. The id is
    text: b"u1" would make the key of "b'u1'", and 1 that of "1" without a word."""
    _check_name("key prefix", prefix)
    _check_name("feature view", view)
    text_id(entity_id, taken_by=f"the key of view {view!r}")
    if not entity_id:
        raise ValueError(f"an empty entity id has no key in view {view!r}")
    try:
        return f"{prefix}:{view}:{entity_id}".encode()
    except UnicodeEncodeError:  # a lone surrogate, as bytes decoded with surrogateescape give
        raise ValueError(
            f"entity id {entity_id!r} of view {view!r} (or the key prefix {prefix!r}, or the view) holds "
            "text that UTF-8 cannot encode, so it has no key: decode the id's bytes with their real encoding"
        ) from None


def text_id(entity_id: object, *, taken_by: str) -> str:
    """`entity_id`, which must be text as the store's keys hold ids; otherwise a TypeError that names
    `taken_by` (what was given it) and the conversion to pass."""
    if isinstance(entity_id, str):
        return entity_id
    hint = "id.decode()" if isinstance(entity_id, (bytes, bytearray)) else "str(id)"
    raise TypeError(
        f"{taken_by} takes entity ids as text, as the online store's keys hold them; got "
        f"{entity_id!r} ({type(entity_id).__name__}): pass {hint}"
    )


def refuse_one_id(entity_ids: object, *, taken_by: str) -> None:
    """Refuse a string (or bytes) given where an iterable of entity ids belongs: it would be read as
    its characters, each an id of its own (`delete("u1")` deleted the records of "u" and "1")."""
    if isinstance(entity_ids, (str, bytes, bytearray)):
        raise TypeError(
            f"{taken_by} takes an iterable of entity ids, got the string {entity_ids!r}; "
            f"pass a list such as [{entity_ids!r}]"
        )


def key_pattern(prefix: str, view: str | None = None) -> str:
    """The SCAN pattern of every key under `prefix` (of one view, when given)."""
    _check_name("key prefix", prefix)
    if view is None:
        return f"{prefix}:*"
    _check_name("feature view", view)
    return f"{prefix}:{view}:*"


def entity_of_key(key: bytes, *, prefix: str, view: str) -> str:
    """The entity id inside a key built by `feature_key(prefix, view, ...)`."""
    head = f"{prefix}:{view}:".encode()
    if not key.startswith(head):
        raise ValueError(f"key {key!r} is not in view {view!r} under prefix {prefix!r}")
    return key[len(head) :].decode()


# msgpack's integers: signed 64-bit, and unsigned up to 2**64 - 1.
_INT_RANGE = (-(2**63), 2**64 - 1)


def plain_value(column: str, value: Any) -> Any:
    """`value` as the format holds it; a type the format has no place for is an error naming `column`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise ValueError(
                f"feature column {column!r} holds {value}, outside msgpack's 64-bit integers; store it as "
                "a float or a string"
            )
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, np.datetime64):
        # A date (a date32 column through numpy) is an ISO date, as the same column's
        # `datetime.date` from Arrow is, not the timestamp of its midnight. .item() of a nanosecond
        # datetime64 is an int: go through microseconds (NaT: None).
        is_date = np.datetime_data(value.dtype)[0] in ("D", "W", "M", "Y")
        instant = value.astype("datetime64[D]" if is_date else "datetime64[us]").item()
        if isinstance(instant, int):  # outside a Python date's years, .item() is days or microseconds
            raise ValueError(
                f"feature column {column!r} holds {value}, outside the years 1 to 9999 that the "
                "online format's ISO timestamps hold; clip it, or store it as a number of seconds"
            )
        return plain_value(column, instant)
    if isinstance(value, datetime):
        if value != value:  # pandas' NaT, a datetime that equals nothing
            return None
        if hasattr(value, "to_pydatetime"):  # a pandas Timestamp: its isoformat() shows nanoseconds
            value = value.to_pydatetime(warn=False)
        try:
            utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:  # in UTC, before year 1 or after 9999
            raise ValueError(
                f"feature column {column!r} holds {value}, which is outside the years 1 to 9999 in "
                "UTC, as the online format holds timestamps; clip it, or store it as a number of seconds"
            ) from None
        return utc.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    # numpy scalars, not arrays (a one-element array's .item() is its element: a list column of one
    # value was stored as that value); a timedelta64's .item() is an int of its dtype's unit, which
    # no reader knows
    if isinstance(value, np.generic) and not isinstance(value, np.timedelta64):
        item = value.item()
        # np.longdouble's .item() is a longdouble again, which would recurse without end
        if item is None or isinstance(item, (bool, int, float, str, date)):
            return plain_value(column, item)
    if value is getattr(sys.modules.get("pandas"), "NA", None):  # pandas' nullable dtypes' null
        return None
    raise TypeError(
        f"feature column {column!r} holds a {type(value).__name__}; the online format takes "
        "null, bool, int, float, str, date and datetime values: convert the column to one of them "
        "(a duration to seconds, say)"
    )


def record_from_row(
    row: Mapping[str, Any], *, feature_date: date | str, exclude: Iterable[str] = ()
) -> FeatureRecord:
    """A record of the row's columns but `exclude`, in plain values."""
    skip = set(exclude)
    return FeatureRecord(
        iso_feature_date(feature_date), {c: plain_value(c, v) for c, v in row.items() if c not in skip}
    )


def iso_feature_date(feature_date: date | str) -> str:
    """`feature_date` as records hold it, YYYY-MM-DD. A datetime (a date too) is refused: its
    isoformat() has a time, which the store's date comparison would sort after the plain date."""
    if isinstance(feature_date, date) and not isinstance(feature_date, datetime):
        return feature_date.isoformat()
    if isinstance(feature_date, str):
        try:
            return date.fromisoformat(feature_date).isoformat()
        except ValueError:
            pass
    raise ValueError(
        f"feature_date must be a date or YYYY-MM-DD, got {feature_date!r}; pass the day the "
        "features are for, such as '2026-10-28' (of a datetime, its .date())"
    )


def encode_record(record: FeatureRecord) -> bytes:
    """The record's value bytes (msgpack; map keys in the record's column order). Its values must be
    plain (`plain_value`, which `record_from_row` applies): they are written as they are, unchecked,
    as this runs once per value published. A value msgpack cannot write is an error naming its
    column."""
    try:
        return msgpack.packb([FORMAT_VERSION, record.feature_date, dict(record.values)], use_bin_type=True)
    except UnicodeEncodeError:  # text with a lone surrogate (bytes decoded with surrogateescape)
        for column, value in record.values.items():
            if not all(encodes_as_utf8(text) for text in (column, value) if isinstance(text, str)):
                raise ValueError(
                    f"feature column {column!r} holds text that UTF-8 cannot encode ({value!r}): the "
                    "online format's text is UTF-8; decode the source bytes with their real encoding"
                ) from None
        raise
    except (TypeError, OverflowError) as error:  # a type msgpack has no place for; an int past 64 bits
        for column, value in record.values.items():
            try:
                msgpack.packb(value)
            except (TypeError, OverflowError):
                plain_value(column, value)  # raises, naming the column, for a type with no place
                raise TypeError(
                    f"feature column {column!r} holds {value!r} ({type(value).__name__}), which the "
                    "online format has no place for: build records with record_from_row, or pass "
                    "each value through plain_value"
                ) from None
        raise error


def encodes_as_utf8(text: str) -> bool:
    """Whether UTF-8 can encode `text`: not when it holds a lone surrogate, as JSON's escaped
    "\\ud83d" or bytes decoded with surrogateescape give."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# What msgpack gives back for the format's values (nil aside), with raw=False.
_PLAIN_TYPES = (bool, int, float, str)
_NOT_OURS = "Delete the key if nothing else needs it, or give featurelake its own key_prefix"


def decode_record(value: bytes) -> FeatureRecord:
    """The record held by `value`; an unknown layout or version is an error, never a guess."""
    try:
        decoded = msgpack.unpackb(value, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise ValueError(
            f"not a featurelake record (msgpack failed: {error}): {value[:40]!r}. {_NOT_OURS}"
        ) from error
    if not (isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[2], dict)):
        raise ValueError(f"not a featurelake record (want [version, date, map]): {value[:40]!r}. {_NOT_OURS}")
    if decoded[0] != FORMAT_VERSION:
        raise ValueError(
            f"record format version {decoded[0]!r}; this reader knows {FORMAT_VERSION}. Upgrade featurelake."
        )
    # The date as the write scripts hold it (`record_date` in online_store.py): an int date failed
    # the date comparison of readers with a bare TypeError, and one that is not YYYY-MM-DD
    # ("2026-10-28T10:00:00", "garbage") was served, though it sorted after every later date. The
    # names and values only here (the scripts do not look into the map): bytes names, and bin,
    # lists and maps as values, which the format has not, were served as they were.
    feature_date, columns = decoded[1], decoded[2]
    if not (
        isinstance(feature_date, str)
        and iso_day(feature_date) is not None
        and all(type(name) is str for name in columns)
        and all(column is None or type(column) in _PLAIN_TYPES for column in columns.values())
    ):
        raise ValueError(
            "not a featurelake record (want a YYYY-MM-DD feature date, text column names, and values "
            f"that are nil, bool, int, float or text): {value[:40]!r}. {_NOT_OURS}"
        )
    return FeatureRecord(feature_date, columns)


def entity_keys(ids: Any) -> Any:
    """Entity ids (a pyarrow Array or ChunkedArray) as the text `records_from_batches` keys them by,
    `str(id)`, nulls dropped: a string column as it is, any other (1.0 for a float, True for a bool)
    one value at a time, where pyarrow's cast would write 1 and true."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if pa.types.is_dictionary(ids.type):
        ids = ids.dictionary_decode()
    ids = pc.drop_null(ids)
    if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type):
        return ids.cast(pa.string())  # the same text as str() gives, without a Python loop
    return pa.array([str(value) for value in ids.to_pylist()], pa.string())


def records_from_batches(
    batches: Iterable[Any], *, entity_column: str, feature_date: date | str, exclude: Iterable[str] = ()
) -> Iterator[tuple[str, FeatureRecord]]:
    """(entity id, record) for every row of some pyarrow RecordBatches (or Tables). The entity
    column and `exclude` are left out of the values."""
    skip = {entity_column, *exclude}
    for batch in batches:
        for row in _in_utc(batch, entity_column).to_pylist():
            entity = row[entity_column]
            if entity is None or entity == "":
                raise ValueError(f"a feature row has an empty {entity_column!r}; it cannot be keyed")
            yield str(entity), record_from_row(row, feature_date=feature_date, exclude=skip)


def _in_utc(batch: Any, entity_column: str) -> Any:
    """`batch` with its zoned timestamp columns (not the entity column, whose text is the key) in
    UTC, the same instants: a Python datetime in a zone east of UTC cannot hold the last hours of
    9999 (nor one west of it the first hours of year 1), which the format writes in UTC anyway."""
    import pyarrow as pa

    zoned = [
        column.with_type(pa.timestamp(column.type.unit, "UTC"))
        if pa.types.is_timestamp(column.type) and column.type.tz is not None and column.name != entity_column
        else column
        for column in batch.schema
    ]
    schema = pa.schema(zoned, metadata=batch.schema.metadata)
    return batch if schema.equals(batch.schema) else batch.cast(schema)
