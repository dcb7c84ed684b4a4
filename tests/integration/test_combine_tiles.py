"""combine_tiles' contract on the category groups it is given, on hand-made tiles in a local Spark."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException

from featurelake.user_features import TILE_SCHEMA, category_groups, combine_tiles

pytestmark = pytest.mark.integration

DS = date(2026, 9, 10)


def _tile(user: str, merchant: str, group: str, micros: int, day: date) -> tuple:
    ts = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    return (
        user, merchant, group, 1, micros, Decimal(micros * micros), micros / 1e6, ts, micros / 1e6, 0, day,
    )  # fmt: skip


@pytest.fixture()
def tiles(spark):
    rows = [
        _tile("u1", "m1", "dining", 5_000_000, DS),
        _tile("u1", "m2", "travel", 7_000_000, date(2026, 9, 9)),
        _tile("u2", "m1", "dining", 1_000_000, DS),
    ]
    return spark.createDataFrame(rows, TILE_SCHEMA)


def test_extra_groups_change_nothing(tiles) -> None:
    listed = combine_tiles(tiles, ds=DS, groups=category_groups(tiles)).collect()
    widened = combine_tiles(tiles, ds=DS, groups=["aaa", "dining", "travel", "zzz"]).collect()
    assert sorted(listed) == sorted(widened)
    assert {r["user_id"]: r["top_category_group"] for r in listed} == {"u1": "travel", "u2": "dining"}


def test_a_missing_group_fails_the_job_rather_than_pick_a_wrong_one(tiles) -> None:
    with pytest.raises((PySparkException, Py4JJavaError), match="category group missing"):
        combine_tiles(tiles, ds=DS, groups=["dining"]).collect()


def test_a_window_without_tiles_gives_no_rows(spark) -> None:
    empty = spark.createDataFrame([], TILE_SCHEMA)
    assert category_groups(empty) == []
    assert combine_tiles(empty, ds=DS).collect() == []
