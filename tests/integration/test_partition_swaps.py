"""Staged Spark writes swapping partitions in while another thread reads the dataset's directories."""

from __future__ import annotations

import os
import threading
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from featurelake.partitioning import date_range, existing_date_partitions, write_partitioned

pytestmark = pytest.mark.integration

DAYS = date_range(date(2026, 3, 1), date(2026, 3, 12))
NAMES = {f"date={day.isoformat()}" for day in DAYS}
ROUNDS = 3


def _events(spark, *, value: int):
    rows = [(day, f"k{k}", value) for day in DAYS for k in range(3)]
    return spark.createDataFrame(rows, "date date, key string, value int")


class _Reader(threading.Thread):
    """Lists the dataset's root, and each partition, until stopped: what a reader that looks for the
    newest date, or for a date's files, finds.

    A listing can span an exchange: the partition's directory opened just before it, its entries
    read after the writer deleted the previous version (then under the staging directory). That
    listing is empty, but the directory it read is no longer the one published under the name (the
    next round lists the new one): `replaced_while_listed`. A partition found empty while its directory
    is still the published one is a partition published empty: `empty`."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.listings = 0
        self.missing: set[str] = set()
        self.empty: set[str] = set()
        self.replaced_while_listed = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.missing |= NAMES - set(os.listdir(self.root))
            for name in NAMES:
                self._list(name)
            self.listings += 1

    def _list(self, name: str) -> None:
        try:
            directory = os.open(self.root / name, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            self.missing.add(name)
            return
        try:  # the open descriptor keeps the directory's inode, so it cannot be reused meanwhile
            if any(n.endswith(".parquet") for n in os.listdir(directory)):
                return
            try:
                published = os.stat(self.root / name).st_ino
            except FileNotFoundError:
                self.missing.add(name)
                return
            if published == os.fstat(directory).st_ino:
                self.empty.add(name)
            else:  # the next round lists the partition now published
                self.replaced_while_listed += 1
        finally:
            os.close(directory)


@pytest.mark.parametrize("as_uri", [pytest.param(False, id="plain-path"), pytest.param(True, id="file-uri")])
def test_a_reader_always_finds_every_published_partition_during_staged_writes(
    spark, tmp_path: Path, as_uri: bool
) -> None:
    root = tmp_path / "events"
    path = root.as_uri() if as_uri else str(root)
    staging = str(tmp_path / "_staging" / "events")
    write_partitioned(_events(spark, value=0), path, ["date"])
    reader = _Reader(root)
    reader.start()
    try:
        for value in range(1, ROUNDS + 1):
            write_partitioned(_events(spark, value=value), path, ["date"], replace=DAYS, staging=staging)
    finally:
        reader.stop.set()
        reader.join()

    assert reader.listings > 0
    # On a local filesystem each partition is exchanged with its staged version in one rename.
    assert not reader.missing, f"a reader found no {sorted(reader.missing)} while they were replaced"
    assert not reader.empty, f"a reader found {sorted(reader.empty)} published with no data file"
    result = spark.read.parquet(path)
    assert result.count() == 3 * len(DAYS)
    assert {row[0] for row in result.select(F.col("value")).distinct().collect()} == {ROUNDS}
    assert existing_date_partitions(spark, path) == set(DAYS)
    assert not (tmp_path / "_staging" / "events").exists()


# Enough files that removing them one by one takes a while.
STALE_FILES = 2000


def test_a_reader_never_sees_part_of_an_output_removed_because_its_input_is_gone(
    spark, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake.partitioning import process_by_partition

    source, target = tmp_path / "in", tmp_path / "out"
    write_partitioned(_events(spark, value=1), str(source), ["date"])
    day = DAYS[0]
    # An earlier output of the date in many files, which the run removes as its input is gone.
    stale = target / f"date={day.isoformat()}"
    stale.mkdir(parents=True)
    for n in range(STALE_FILES):
        pq.write_table(pa.table({"key": [f"k{n}"]}), stale / f"part-{n:05d}.parquet")
    for data_file in (source / f"date={day.isoformat()}").glob("*.parquet"):
        data_file.unlink()
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        # A listing can span the move: the directory opened just before it is renamed aside, its
        # entries read while the staging directory is deleted. That listing is of a directory no
        # longer published under the name, so it is not counted; one of the published directory is.
        while not stop.is_set():
            try:
                directory = os.open(stale, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                seen.add(0)
                continue
            try:
                count = sum(name.endswith(".parquet") for name in os.listdir(directory))
                try:
                    published = os.stat(stale).st_ino == os.fstat(directory).st_ino
                except FileNotFoundError:
                    published = False
                if published:
                    seen.add(count)
            finally:
                os.close(directory)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        done = process_by_partition(
            spark, input_path=str(source), output_path=str(target), dates=[day], transform=lambda d, _: d
        )
    finally:
        stop.set()
        reader.join()

    assert done == []
    assert not stale.exists()
    # The earlier output whole, or none of it: a run killed part-way must not leave some of its rows.
    assert seen <= {0, STALE_FILES}, (
        f"a reader saw {sorted(seen - {0, STALE_FILES})[:5]}... of {STALE_FILES} files"
    )
    assert sorted(p.name for p in target.iterdir()) == []


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no `except Exception` catches it."""


@pytest.mark.parametrize("killed_after", range(3))
def test_a_staged_write_killed_between_exchanges_leaves_each_partition_whole(
    spark, tmp_path: Path, monkeypatch, killed_after: int
) -> None:
    import featurelake.partitioning as partitioning

    days = DAYS[:3]
    root, staging = tmp_path / "events", str(tmp_path / "_staging" / "events")
    old = spark.createDataFrame([(day, "k", 1) for day in days], "date date, key string, value int")
    new = spark.createDataFrame([(day, "k", 2) for day in days], "date date, key string, value int")
    write_partitioned(old, str(root), ["date"])
    exchange, exchanges = partitioning._exchanged, []

    def killed(fs, staged, live) -> bool:
        if len(exchanges) == killed_after:
            raise _Killed
        exchanges.append(exchange(fs, staged, live))
        return exchanges[-1]

    monkeypatch.setattr(partitioning, "_exchanged", killed)
    with pytest.raises(_Killed):
        write_partitioned(new, str(root), ["date"], replace=days, staging=staging)
    monkeypatch.undo()

    assert exchanges == [True] * killed_after
    values = spark.read.parquet(str(root)).groupBy("date").agg(F.collect_list("value").alias("v")).collect()
    # The first `killed_after` dates hold the new row, the others the old one: each whole, none missing.
    assert {row["date"]: row["v"] for row in values} == {
        day: [2] if n < killed_after else [1] for n, day in enumerate(days)
    }
    write_partitioned(new, str(root), ["date"], replace=days, staging=staging)
    assert spark.read.parquet(str(root)).orderBy("date").select("value").collect() == [(2,)] * 3
    assert not (tmp_path / "_staging" / "events").exists()


class _RenameKilled:
    """A Hadoop FileSystem whose `killed_at`-th rename (counting from 1) stands for SIGKILL."""

    def __init__(self, fs, killed_at: int) -> None:
        self._fs, self._killed_at, self.renames = fs, killed_at, 0

    def rename(self, source, target) -> bool:
        self.renames += 1
        if self.renames == self._killed_at:
            raise _Killed
        return self._fs.rename(source, target)

    def __getattr__(self, name: str):
        return getattr(self._fs, name)


FRAME = "date date, key string, value int"


def _write(spark, root: Path, staging: str, rows: list[tuple], replace: list[date]) -> None:
    write_partitioned(
        spark.createDataFrame(rows, FRAME), str(root), ["date"], replace=replace, staging=staging
    )


def _killed_at_the_second_rename(spark, monkeypatch, root: Path, staging: str, rows: list[tuple]) -> list:
    """Publish the value 1 for DAYS[:2], then write `rows` replacing both dates by two renames each
    (as off a local filesystem), killed at the second rename. Returns the filesystems it opened."""
    import featurelake.partitioning as partitioning

    write_partitioned(spark.createDataFrame([(day, "k", 1) for day in DAYS[:2]], FRAME), str(root), ["date"])
    opened, killing = partitioning.hadoop_file_system, []

    def renames_killed(spark_session, path):
        fs, hadoop_path = opened(spark_session, path)
        killing.append(_RenameKilled(fs, killed_at=2))
        return killing[-1], hadoop_path

    monkeypatch.setattr(partitioning, "_exchanged", lambda fs, staged, live: False)
    monkeypatch.setattr(partitioning, "hadoop_file_system", renames_killed)
    with pytest.raises(_Killed):
        _write(spark, root, staging, rows, replace=DAYS[:2])
    monkeypatch.undo()
    return killing


def test_a_staged_write_killed_between_its_two_renames_puts_the_partition_back_on_the_next_run(
    spark, tmp_path: Path, monkeypatch
) -> None:
    """Off a local filesystem (HDFS, S3A) a partition is replaced by two renames: the published one
    aside into the staging directory, the new one in. A run killed between them leaves the date
    unpublished; the next run with that staging directory puts it back even if it writes other dates."""
    root, staging = tmp_path / "events", str(tmp_path / "_staging" / "events")
    # Rename 1 sets DAYS[0]'s published partition aside; rename 2, moving the new one in, is killed.
    killing = _killed_at_the_second_rename(spark, monkeypatch, root, staging, [(DAYS[0], "k", 2)])
    assert [fs.renames for fs in killing if fs.renames] == [2]
    assert not (root / f"date={DAYS[0].isoformat()}").exists()  # what the kill left: the date set aside

    _write(spark, root, staging, [(DAYS[1], "k", 3)], replace=[DAYS[1]])

    rows = spark.read.parquet(str(root)).orderBy("date").select("date", "value").collect()
    assert [(row["date"], row["value"]) for row in rows] == [(DAYS[0], 1), (DAYS[1], 3)]
    assert not (tmp_path / "_staging" / "events").exists()


def test_a_replace_date_removed_on_purpose_is_not_put_back_after_a_kill(
    spark, tmp_path: Path, monkeypatch
) -> None:
    """A `replace` date with no new rows is renamed aside and nothing moves in: a run killed right
    after leaves that date removed, as the run meant, and the next run does not bring it back."""
    root, staging = tmp_path / "events", str(tmp_path / "_staging" / "events")
    # Rename 1 sets DAYS[0]'s partition aside (nothing is staged for it); rename 2, DAYS[1]'s, is killed.
    _killed_at_the_second_rename(spark, monkeypatch, root, staging, [(DAYS[1], "k", 2)])

    _write(spark, root, staging, [(DAYS[1], "k", 3)], replace=[DAYS[1]])

    rows = spark.read.parquet(str(root)).select("date", "value").collect()
    assert [(row["date"], row["value"]) for row in rows] == [(DAYS[1], 3)]


def test_process_by_partition_refuses_a_missing_input_path_and_keeps_every_output(
    spark, tmp_path: Path
) -> None:
    from featurelake.partitioning import process_by_partition

    source, target = tmp_path / "in", tmp_path / "out"
    write_partitioned(_events(spark, value=1), str(source), ["date"])
    process_by_partition(
        spark, input_path=str(source), output_path=str(target), dates=DAYS[:2], transform=lambda d, _: d
    )
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*.parquet"))

    with pytest.raises(FileNotFoundError, match=r"input_path .*/ins does not exist, so no output under"):
        process_by_partition(
            spark,
            input_path=str(tmp_path / "ins"),
            output_path=str(target),
            dates=DAYS[:2],
            transform=lambda d, _: d,
        )
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*.parquet")) == before
    assert len(before) >= 2
