"""A run lists the root of each dataset it plans from, and only the date partitions of its window:
listings that grew with the lake's history (each a request on an object store) listed every raw,
tile and quarantine partition the lake had ever held."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from featurelake.partitioning import hadoop_file_system
from featurelake.user_features_run import run_user_features
from tests.oracle.edge_case_lake import CATEGORIES, write_categories, write_transactions_partition

pytestmark = pytest.mark.integration

DS = date(2026, 9, 10)
WINDOW_DAYS = 2
# Before the window of DS, in it, and after DS.
DAYS = [DS - timedelta(days=4), DS - timedelta(days=3), DS - timedelta(days=1), DS, DS + timedelta(days=1)]


def _row(transaction_id: str, day: date, amount: float | None = 10.0) -> dict:
    return {
        "transaction_id": transaction_id,
        "user_id": "u1",
        "merchant_id": "m1",
        "category_id": 1,
        "amount": amount,  # None: quarantined, so the date has a quarantine partition
        "currency": "USD",
        "transaction_ts": datetime.combine(day, time(12), UTC),
    }


class CountedListings:
    """A Hadoop FileSystem that records the path of each listStatus call."""

    def __init__(self, fs, listed: list[str]) -> None:
        self._fs = fs
        self._listed = listed

    def listStatus(self, path):
        self._listed.append(str(path).removeprefix("file:"))
        return self._fs.listStatus(path)

    def __getattr__(self, name: str):
        return getattr(self._fs, name)


def record_listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the path of each listStatus call the library makes, in order."""
    listed: list[str] = []

    def counted(spark, path: str):
        fs, hadoop_path = hadoop_file_system(spark, path)
        return CountedListings(fs, listed), hadoop_path

    # wherever the library has it: a module that imported it by name holds its own reference
    for name, module in list(sys.modules.items()):
        if (
            name.startswith("featurelake.")
            and getattr(module, "hadoop_file_system", None) is hadoop_file_system
        ):
            monkeypatch.setattr(module, "hadoop_file_system", counted)
    return listed


def test_a_run_lists_no_partition_outside_its_window(spark, tmp_path: Path, monkeypatch) -> None:
    lake = tmp_path / "lake"
    write_categories(lake, CATEGORIES)
    for day in DAYS:
        write_transactions_partition(
            lake, partition=day, rows=[_row(f"t{day}", day), _row(f"q{day}", day, None)]
        )
    # Tiles and quarantine of the earlier days, and of the day after DS.
    for day in (DAYS[1], DS + timedelta(days=1)):
        run_user_features(spark, ds=day, lake=str(lake), window_days=WINDOW_DAYS, mode="rebuild")
    listed = record_listings(monkeypatch)

    report = run_user_features(spark, ds=DS, lake=str(lake), window_days=WINDOW_DAYS, mode="auto")

    # DS's tile is there (built by the run of the day after), the day before's is not
    assert (report.mode, report.tiles_built) == ("incremental", [DAYS[2].isoformat(), DS.isoformat()])
    root = str(lake.resolve())
    outside = [d.isoformat() for d in DAYS if not DS - timedelta(days=WINDOW_DAYS - 1) <= d <= DS]
    partitions_outside = sorted(
        path
        for path in listed
        for dataset in ("raw/transactions", "tiles/user_daily", "quarantine/transactions")
        for day in outside
        if path.startswith(f"{root}/{dataset}/date={day}")
    )
    assert partitions_outside == [], partitions_outside
    window_partitions = {f"{root}/raw/transactions/date={day}" for day in (DAYS[2], DS)}
    window_partitions.add(f"{root}/tiles/user_daily/date={DS}")
    assert window_partitions <= set(listed), sorted(set(listed))
    # The tile root twice: once to plan (it was listed twice for that, to find withdrawn dates and
    # then built ones), once to read the window's tiles after this run's are swapped in.
    assert listed.count(f"{root}/tiles/user_daily") == 2, listed
    assert listed.count(f"{root}/raw/transactions") == 1, listed
    # The quarantine root twice: once to plan (withdrawn dates), once to count the built dates'
    # quarantine after it is swapped in (that was two listings).
    assert listed.count(f"{root}/quarantine/transactions") == 2, listed

    # Nor do the tiles outside the window count: the features are those of a full run, from raw.
    output = str(lake / "features" / "user_features" / f"date={DS}")
    incremental = spark.read.parquet(output).collect()
    assert (
        run_user_features(spark, ds=DS, lake=str(lake), window_days=WINDOW_DAYS, mode="full").mode == "full"
    )
    full = spark.read.parquet(output).collect()
    assert incremental == full and full[0]["transaction_count"] == 2, full  # DS-1 and DS


def test_a_tile_partition_outside_the_window_is_not_read_or_listed_by_spark(spark, tmp_path: Path) -> None:
    """A subdirectory left in an old tile partition (a copy made by hand) made Spark's listing of
    the whole tile dataset fail every later run, as a read of its root lists every partition."""
    lake = tmp_path / "lake"
    write_categories(lake, CATEGORIES)
    for day in DAYS[:4]:
        write_transactions_partition(lake, partition=day, rows=[_row(f"t{day}", day)])
    run_user_features(spark, ds=DAYS[1], lake=str(lake), window_days=WINDOW_DAYS, mode="rebuild")
    old_tile = lake / "tiles" / "user_daily" / f"date={DAYS[0]}"
    copy = old_tile / "copy=1"
    copy.mkdir()
    for file in old_tile.glob("*.parquet"):
        (copy / file.name).write_bytes(file.read_bytes())

    report = run_user_features(spark, ds=DS, lake=str(lake), window_days=WINDOW_DAYS, mode="incremental")

    assert (report.users_written, report.tiles_built) == (1, [DAYS[2].isoformat(), DS.isoformat()])


def test_an_incremental_run_lists_the_quarantine_of_the_dates_it_builds_only(
    spark, tmp_path: Path, monkeypatch
) -> None:
    """The run counts the quarantine of the dates it built; it listed every quarantine partition
    of its window to find them, each a request on an object store."""
    lake = tmp_path / "lake"
    write_categories(lake, CATEGORIES)
    days = [DS - timedelta(days=2), DS - timedelta(days=1), DS]
    for day in days:
        write_transactions_partition(
            lake, partition=day, rows=[_row(f"t{day}", day), _row(f"q{day}", day, None)]
        )
    run_user_features(spark, ds=days[1], lake=str(lake), window_days=3, mode="rebuild")
    listed = record_listings(monkeypatch)

    report = run_user_features(spark, ds=DS, lake=str(lake), window_days=3, mode="incremental")

    assert (report.tiles_built, report.quarantined_by_reason) == ([DS.isoformat()], {"missing_amount": 1})
    quarantine = f"{lake.resolve()}/quarantine/transactions/date="
    assert sorted(path for path in listed if path.startswith(quarantine)) == [f"{quarantine}{DS}"]
