"""`date_range`, the dates a backfill or a window covers."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from featurelake.partitioning import date_range


def test_both_ends_are_included() -> None:
    assert date_range(date(2026, 2, 27), date(2026, 3, 1)) == [
        date(2026, 2, 27),
        date(2026, 2, 28),
        date(2026, 3, 1),
    ]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(datetime(2026, 3, 1, 12), datetime(2026, 3, 3), id="naive"),
        pytest.param(date(2026, 3, 1), datetime(2026, 3, 3, tzinfo=UTC), id="aware-end"),
        pytest.param("2026-03-01", date(2026, 3, 3), id="string"),
    ],
)
def test_bounds_that_are_not_dates_are_refused(start, end) -> None:
    # A start at noon gave [03-01 12:00, 03-02 12:00]: datetimes, and 2026-03-03 missing.
    with pytest.raises(TypeError, match=r"(start|end) must be a datetime\.date, got"):
        date_range(start, end)
