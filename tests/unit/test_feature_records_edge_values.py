"""Values at the edges of the online format: numpy scalars whose `.item()` is no plain value, and
text that UTF-8 cannot encode. Each is refused naming the column, never stored as something else."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import msgpack
import numpy as np
import pytest

from featurelake.feature_records import FeatureRecord, decode_record, encode_record, feature_key, plain_value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(np.datetime64("10000-01-01T00:00:00"), id="after-year-9999"),
        pytest.param(np.datetime64("0000-06-01"), id="before-year-1"),
        pytest.param(np.datetime64("10000-01-01", "D"), id="a-date-after-year-9999"),
    ],
)
def test_a_numpy_datetime_outside_pythons_years_is_refused(value: np.datetime64) -> None:
    # Its .item() is an int of microseconds, which was stored as a number where the format holds
    # timestamps as ISO text: a reader got 253402300800000000 back.
    with pytest.raises(ValueError, match=r"feature column 'ts' holds .* outside the years 1 to 9999"):
        plain_value("ts", value)


def test_a_date_through_numpy_is_stored_as_the_same_date_arrow_gives() -> None:
    """A date32 column read through numpy (`to_numpy()`, a custom compute of the layered cache) gave
    datetime64[D] values, stored as the timestamp of their midnight ('2026-01-02T00:00:00Z'), where
    the publish, through Arrow's `to_pylist`, stored the date ('2026-01-02'): one entity's value
    depended on the layer that served it."""
    import pyarrow as pa

    column = pa.array([date(2026, 1, 2), None], pa.date32())
    through_arrow = [plain_value("first_seen", value) for value in column.to_pylist()]
    through_numpy = [plain_value("first_seen", value) for value in column.to_numpy(zero_copy_only=False)]
    assert through_numpy == through_arrow == ["2026-01-02", None]
    assert plain_value("m", np.datetime64("2026-03", "M")) == "2026-03-01"
    assert plain_value("ts", np.datetime64("2026-01-02T03:04:05")) == "2026-01-02T03:04:05Z"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))), id="before-year-1-in-utc"
        ),
        pytest.param(
            datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))), id="after-year-9999-in-utc"
        ),
    ],
)
def test_a_zoned_datetime_outside_pythons_years_in_utc_names_the_column(value: datetime) -> None:
    # Its conversion to UTC failed with a bare OverflowError, "date value out of range".
    with pytest.raises(ValueError, match=r"feature column 'ts' holds .* outside the years 1 to 9999 in UTC"):
        plain_value("ts", value)


@pytest.mark.parametrize(
    "value",
    [pytest.param(np.longdouble(1.5), id="longdouble"), pytest.param(np.clongdouble(1j), id="clongdouble")],
)
def test_a_numpy_scalar_with_no_plain_value_names_the_column(value: object) -> None:
    # np.longdouble(...).item() is a longdouble again: plain_value recursed until RecursionError.
    with pytest.raises(TypeError, match=f"feature column 'x' holds a {type(value).__name__}"):
        plain_value("x", value)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"ok": "a", "name": "caf\udce9"}, id="value"),
        pytest.param({"ok": "a", "caf\udce9": 1}, id="column"),
    ],
)
def test_text_that_utf8_cannot_encode_names_the_column(values: dict[str, object]) -> None:
    # A lone surrogate (bytes decoded with errors="surrogateescape") failed with msgpack's bare
    # UnicodeEncodeError, which named neither the column nor the value.
    with pytest.raises(ValueError, match=r"feature column 'caf\\udce9'|feature column 'name'"):
        encode_record(FeatureRecord("2026-10-28", values))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(msgpack.packb([1, 20261028, {"n": 1}]), id="date-not-text"),
        pytest.param(msgpack.packb([1, "2026-10-28", {b"n": 1}], use_bin_type=True), id="column-bytes"),
    ],
)
def test_decode_refuses_a_record_whose_date_or_columns_the_format_does_not_hold(value: bytes) -> None:
    # These were served as records: a date of 20261028 then failed the cache's and a rebalancing
    # read's date comparison with "'>' not supported between instances of 'int' and 'str'".
    with pytest.raises(ValueError, match="not a featurelake record"):
        decode_record(value)


def test_an_entity_id_that_utf8_cannot_encode_is_named() -> None:
    # The key's .encode() failed with a bare UnicodeEncodeError that named neither id nor view.
    with pytest.raises(
        ValueError, match=r"entity id 'caf\\udce9' of view 'user_features' .* UTF-8 cannot encode"
    ):
        feature_key("fl", "user_features", "caf\udce9")
