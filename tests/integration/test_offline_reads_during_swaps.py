"""The compute layer's read of a date partition while a real writer swaps new versions of it in
(`arrow_partitions.swap_in`, as the Dask job does; Spark's staged write renames the same way): every
read gives one whole version, never an error, a mix of two versions, or nothing from a listing of a
directory being deleted."""

from __future__ import annotations

import threading
import uuid
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake import arrow_partitions
from featurelake.arrow_partitions import hidden_sibling, swap_in
from featurelake.offline_features import read_offline_features

pytestmark = pytest.mark.integration

DAY = date(2030, 1, 1)
# Two files per version, named anew by each write (as Spark and Dask name theirs).
FILES = (["u1", "u2"], ["u3"])
IDS = ["u1", "u2", "u3"]
# Read until both are reached, however long a busy machine takes: no clock bounds the test.
READS = 200
SWAPS = 30


def write_version(target: Path, version: int) -> None:
    staged = Path(hidden_sibling(str(target), uuid.uuid4().hex))
    staged.mkdir()
    for number, ids in enumerate(FILES):
        table = pa.table({"user_id": ids, "version": [version] * len(ids)})
        pq.write_table(table, staged / f"part-{number:05d}-{uuid.uuid4().hex}.parquet")
    swap_in(str(staged), str(target))


@pytest.mark.parametrize(
    "exchange",
    [
        pytest.param(True, id="atomic-exchange"),
        # swap_in's path off Linux (and Spark's): between the two renames there is no directory
        pytest.param(False, id="two-renames"),
    ],
)
def test_reads_during_swaps_give_one_whole_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    """Before, some reads in a hundred failed with FileNotFoundError (a file listed in the previous
    version, deleted before it was opened), and some gave {} or part of the ids (a listing of the
    previous directory while its files were deleted): a serving miss found no features."""
    if not exchange:
        monkeypatch.setattr(arrow_partitions, "exchange_paths", lambda first, second: False)
    features = tmp_path / "features" / "user_features"
    features.mkdir(parents=True)
    target = features / f"date={DAY.isoformat()}"
    write_version(target, 0)
    stop = threading.Event()
    # The writer swaps again only once a read that began after its last swap has ended: the reads
    # and swaps run at once, but whatever the machine's speed no read overlaps more than one swap,
    # which its retries (READ_ATTEMPTS, 5) get past. A fixed pause between swaps let a slow read
    # overlap five.
    turns = threading.Condition()
    swaps = [0]
    read_after_swap = [0]  # the most swaps done when a read that has ended began

    def rewrite() -> None:
        version = 1
        while not stop.is_set():
            write_version(target, version)
            with turns:
                swaps[0] = version
                turns.wait_for(lambda v=version: stop.is_set() or read_after_swap[0] >= v)
            version += 1

    writer = threading.Thread(target=rewrite, name="rewrite-partition")
    writer.start()
    reads, failures = 0, []
    try:
        while reads < READS or swaps[0] < SWAPS:
            assert writer.is_alive(), "the writer thread died; see its traceback above"
            reads += 1
            with turns:
                swaps_before = swaps[0]
            try:
                got = read_offline_features(str(features), IDS, as_of=DAY)
            except Exception as error:  # every failure is counted, and shown
                failures.append(f"{type(error).__name__}: {error}")
                continue
            finally:
                with turns:
                    read_after_swap[0] = swaps_before
                    turns.notify_all()
            versions = {record.values["version"] for record in got.values()}
            if not exchange and not got:
                continue  # the documented instant with no directory: no date to read
            if sorted(got) != IDS or len(versions) != 1:
                failures.append(f"ids {sorted(got)}, versions {sorted(versions)}")
    finally:
        with turns:
            stop.set()
            turns.notify_all()
        writer.join()
    assert reads >= READS and swaps[0] >= SWAPS
    assert not failures, f"{len(failures)} of {reads} reads failed or mixed versions, e.g. {failures[:3]}"
