"""The date a full refresh rebuilds a view as of, shared by the delta-rs and delta-spark engines
(featurelake.materialized_views.full_refresh_as_of; no Delta table needed)."""

from __future__ import annotations

from datetime import date

import pytest

from featurelake.materialized_views import full_refresh_as_of

DS = date(2026, 10, 7)


@pytest.mark.parametrize(
    ("newest_in_view", "want"),
    [
        pytest.param(None, DS, id="no-view-or-no-row"),
        pytest.param(date(2026, 10, 1), DS, id="daily-run"),
        pytest.param(DS, DS, id="rerun"),
        pytest.param(date(2026, 10, 28), date(2026, 10, 28), id="backfill-of-an-older-date"),
    ],
)
def test_a_full_refresh_never_takes_the_view_back_in_time(newest_in_view: date | None, want: date) -> None:
    assert full_refresh_as_of("views/v", ds=DS, newest_in_view=newest_in_view) == want
