"""When an incremental run may carry yesterday's features forward (pure logic; the Spark side is
tested in tests/integration/test_user_features_job.py)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from featurelake.partitioning import date_range
from featurelake.user_features import (
    WINDOW_STATE_FORMAT,
    WindowState,
    carry_forward_blocker,
    window_change_dates,
    window_state_tiles,
)

DS = date(2026, 10, 28)
YESTERDAY = DS - timedelta(days=1)
W = 90


def listing(start: date, end: date, *, job: str = "a") -> dict[date, list[str]]:
    return {d: [f"part-00000-{job}{d:%m%d}.snappy.parquet"] for d in date_range(start, end)}


def yesterdays_state(tiles: dict[date, list[str]], **changes) -> WindowState:
    fields = {
        "ds": YESTERDAY,
        "window_days": W,
        "tile_files": window_state_tiles(tiles, ds=YESTERDAY, window_days=W),
        "feature_files": ["part-00000-f.snappy.parquet"],
        "groups": ["dining", "unknown"],
    }
    return WindowState(**(fields | changes))


def blocker(state: WindowState | None, tiles: dict[date, list[str]], feature_files=None) -> str | None:
    return carry_forward_blocker(
        state,
        ds=DS,
        window_days=W,
        tile_files=tiles,
        previous_feature_files=["part-00000-f.snappy.parquet"] if feature_files is None else feature_files,
    )


def test_the_change_dates_are_the_entering_day_and_the_days_leaving_the_windows() -> None:
    assert window_change_dates(DS, 90) == [DS - timedelta(days=90), DS - timedelta(days=7), DS]
    # A window shorter than the 7-day features: ds-7 is outside both windows, which only costs work.
    assert window_change_dates(DS, 1) == [DS - timedelta(days=7), DS - timedelta(days=1), DS]
    assert window_change_dates(DS, 7) == [DS - timedelta(days=7), DS]


def test_the_state_round_trips_through_json() -> None:
    state = yesterdays_state(listing(DS - timedelta(days=119), DS))
    assert WindowState.from_json(state.to_json()) == state
    assert state.format == WINDOW_STATE_FORMAT
    assert len(state.tile_files) == W
    assert min(state.tile_files) == YESTERDAY - timedelta(days=W - 1)


def test_unchanged_tiles_allow_carrying_forward_whatever_ds_adds() -> None:
    tiles = listing(DS - timedelta(days=119), YESTERDAY)
    state = yesterdays_state(tiles)
    # The run for ds has since written the tile of ds (and tiles after ds may exist): not in the
    # window of ds-1, so they do not matter.
    now = tiles | listing(DS, DS + timedelta(days=2), job="b")
    assert blocker(state, now) is None


def test_a_rewritten_tile_in_yesterdays_window_blocks_and_is_named() -> None:
    tiles = listing(DS - timedelta(days=119), DS)
    state = yesterdays_state(tiles)
    rerun = DS - timedelta(days=30)
    assert blocker(state, tiles | listing(rerun, rerun, job="b")) == (
        f"tiles of {rerun} changed after the features of {YESTERDAY}"
    )
    # The day leaving the window counts too: its users are found from it.
    leaving = DS - timedelta(days=W)
    assert str(leaving) in blocker(state, tiles | listing(leaving, leaving, job="b"))
    # A tile that appeared, or disappeared, since.
    gap = DS - timedelta(days=10)
    with_gap = {d: names for d, names in tiles.items() if d != gap}
    assert str(gap) in blocker(yesterdays_state(with_gap), tiles)
    assert str(gap) in blocker(state, with_gap)


@pytest.mark.parametrize(
    ("state_changes", "feature_files", "expected"),
    [
        ({"window_days": 30}, None, "a 30-day window, not 90"),
        ({"format": WINDOW_STATE_FORMAT + 1}, None, f"state format {WINDOW_STATE_FORMAT + 1}"),
        ({"ds": YESTERDAY - timedelta(days=1)}, None, f"is for {YESTERDAY - timedelta(days=1)}"),
        ({}, ["part-00000-g.snappy.parquet"], "not the ones its window state names"),
        ({"feature_files": []}, [], "not the ones its window state names"),
    ],
)
def test_other_states_block(state_changes, feature_files, expected) -> None:
    tiles = listing(DS - timedelta(days=119), DS)
    assert expected in blocker(yesterdays_state(tiles, **state_changes), tiles, feature_files)


def test_no_state_blocks() -> None:
    assert "no window state" in blocker(None, listing(DS - timedelta(days=119), DS))
