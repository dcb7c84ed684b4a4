from __future__ import annotations

from datetime import date, timedelta

import pytest

from featurelake.partitioning import date_range
from featurelake.user_features import plan_tile_build, resume_plan, window_dates

DS = date(2026, 10, 28)


def test_window_is_inclusive_of_ds_minus_w_minus_one() -> None:
    assert window_dates(DS, 90) == (DS - timedelta(days=89), DS)
    assert window_dates(DS, 1) == (DS, DS)
    with pytest.raises(ValueError, match="window_days must be >= 1, got 0"):
        window_dates(DS, 0)
    first_day = date(1, 1, 1)
    assert window_dates(DS, (DS - first_day).days + 1) == (first_day, DS)
    with pytest.raises(
        ValueError,
        match=r"window_days 739918 reaches before year 1 from 2026-10-28; give a window of at most 739917 days",
    ):
        window_dates(DS, (DS - first_day).days + 2)


def test_auto_is_full_without_tiles_and_builds_the_tile_of_ds() -> None:
    start, _ = window_dates(DS, 7)
    raw = set(date_range(DS - timedelta(days=20), DS + timedelta(days=3)))
    mode, dates = plan_tile_build(mode="auto", ds=DS, raw_dates=raw, tile_dates=set(), start=start)
    assert mode == "full"
    assert dates == [DS]


def test_auto_is_incremental_with_tiles_and_builds_ds_and_the_gaps() -> None:
    start, _ = window_dates(DS, 7)
    raw = set(date_range(start, DS))
    tiles = raw - {DS - timedelta(days=3)}  # one gap, and a stale tile for ds that is rebuilt anyway
    mode, dates = plan_tile_build(mode="auto", ds=DS, raw_dates=raw, tile_dates=tiles, start=start)
    assert mode == "incremental"
    assert dates == [DS - timedelta(days=3), DS]


def test_tiles_after_ds_do_not_make_a_run_incremental() -> None:
    start, _ = window_dates(DS, 7)
    raw = set(date_range(start, DS))
    mode, _ = plan_tile_build(
        mode="auto", ds=DS, raw_dates=raw, tile_dates={DS + timedelta(days=1)}, start=start
    )
    assert mode == "full"


def test_full_reads_no_tile_and_rebuilds_only_the_tile_of_ds() -> None:
    start, _ = window_dates(DS, 3)
    raw = {DS, DS - timedelta(days=2)}
    mode, dates = plan_tile_build(mode="full", ds=DS, raw_dates=raw, tile_dates=set(), start=start)
    assert (mode, dates) == ("full", [DS])


def test_incremental_after_a_full_run_builds_the_rest_of_the_window() -> None:
    start, _ = window_dates(DS, 5)
    raw = set(date_range(start, DS)) - {DS - timedelta(days=2)}  # a day with no raw data is not built
    yesterday = DS - timedelta(days=1)
    mode, dates = plan_tile_build(mode="auto", ds=DS, raw_dates=raw, tile_dates={yesterday}, start=start)
    assert mode == "incremental"
    assert dates == [start, start + timedelta(days=1), DS]


def test_rebuild_rebuilds_every_raw_date_of_the_window() -> None:
    start, _ = window_dates(DS, 3)
    raw = {DS, DS - timedelta(days=2), DS - timedelta(days=5)}  # no raw data on ds-1; ds-5 is outside
    mode, dates = plan_tile_build(mode="rebuild", ds=DS, raw_dates=raw, tile_dates=raw, start=start)
    assert (mode, dates) == ("rebuild", [DS - timedelta(days=2), DS])


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="got 'fast'"):
        plan_tile_build(mode="fast", ds=DS, raw_dates=set(), tile_dates=set(), start=DS)


@pytest.mark.parametrize(
    ("saved", "mode", "resumed"),
    [
        pytest.param(None, "auto", ("auto", set()), id="nothing-saved"),
        # The failed full run swapped in the tile of ds: the retry alone would go incremental
        pytest.param('{"mode": "full", "tiles": ["2026-10-28"]}', "auto", ("full", {DS}), id="auto-resumes"),
        # It swapped in some of these tiles before it died: the retry builds them all again
        pytest.param(
            '{"mode": "incremental", "tiles": ["2026-10-27", "2026-10-28"]}',
            "auto",
            ("incremental", {DS - timedelta(days=1), DS}),
            id="its-tiles-again",
        ),
        pytest.param(
            '{"mode": "full", "tiles": ["2026-10-28"]}',
            "rebuild",
            ("rebuild", {DS}),
            id="an-explicit-mode-wins",
        ),
        pytest.param("{not json", "auto", ("auto", set()), id="unreadable"),
        pytest.param('{"mode": "full"}', "auto", ("auto", set()), id="incomplete"),
    ],
)
def test_a_retry_resumes_the_plan_of_the_failed_run(saved: str | None, mode: str, resumed: tuple) -> None:
    assert resume_plan(saved, mode=mode) == resumed
