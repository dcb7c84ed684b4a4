"""The Dask merchant statistics job on a real distributed scheduler and worker (the `dask scheduler`
and `dask worker` commands on loopback) and on an in-process LocalCluster, against an independent
DuckDB computation on the same files."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

import featurelake.merchant_stats as merchant_stats
from featurelake.merchant_stats import compute_merchant_stats, dask_client
from featurelake.synthetic import generate_lake
from tests.oracle.edge_case_lake import write_edge_case_lake
from tests.oracle.merchant_stats_duckdb import oracle
from tests.support import VENV_BIN, dask_processes

pytestmark = pytest.mark.integration

DS = date(2026, 8, 20)
WINDOW = 10


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dask-lake") / "lake"
    # days after DS exist too: they must never count
    generate_lake(lake=root, start=DS - timedelta(days=14), end=DS + timedelta(days=2), users=400, seed=11)
    return root


@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory) -> Iterator[str]:
    """`dask scheduler` and one `dask worker` (2 threads, its own process) on loopback."""
    with dask_processes(
        [str(VENV_BIN / "dask"), "worker"], tmp_path_factory.mktemp("dask"), env={}
    ) as address:
        yield address


def assert_matches(got_path: Path, want: pd.DataFrame, ds: date, *, min_merchants: int = 21) -> None:
    got = pd.read_parquet(got_path).sort_values("merchant_id").reset_index(drop=True)
    assert len(got) == len(want) >= min_merchants
    assert (got["stats_date"] == ds).all()
    assert got["merchant_id"].tolist() == want["merchant_id"].tolist()
    for column in ("transaction_count", "unique_users", "active_days"):
        assert got[column].tolist() == want[column].astype("int64").tolist(), column
    for column in ("total_amount", "avg_amount", "refund_share"):
        pd.testing.assert_series_equal(
            got[column], want[column].astype("float64"), rtol=1e-9, check_names=False
        )


def run_merchant_stats(client, lake: Path, tmp_path: Path, *, window_days: int = WINDOW):
    """The job over `window_days` days up to DS, into tmp_path's merchant_stats/date=DS, staging in tmp_path."""
    return compute_merchant_stats(
        client,
        raw_transactions=str(lake / "raw" / "transactions"),
        output=str(tmp_path / "merchant_stats" / f"date={DS}"),
        staging=str(tmp_path / "staging"),
        ds=DS,
        window_days=window_days,
    )


def test_a_distributed_scheduler_computes_the_oracle_stats(
    lake: Path, dask_scheduler: str, tmp_path: Path
) -> None:
    with dask_client(dask_scheduler) as client:
        report = run_merchant_stats(client, lake, tmp_path)
        assert client.scheduler.address == dask_scheduler
    assert_matches(Path(report.output_path), oracle(lake, DS, WINDOW), DS)
    assert report.rows_read > report.rows_counted > 0, "invalid rows were read and not counted"


def test_a_local_cluster_gives_the_same_and_a_rerun_replaces_the_output(lake: Path, tmp_path: Path) -> None:
    # What a failed attempt could leave in the staging directory, where a bucket task reads: a date
    # of bucket 0 holding the whole raw day. It must not count.
    stale = tmp_path / "staging" / "bucket=0" / f"date={DS}"
    stale.mkdir(parents=True)
    raw_day = next((lake / "raw" / "transactions" / f"date={DS}").glob("*.parquet"))
    shutil.copy(raw_day, stale / "part-999-0.parquet")
    want = oracle(lake, DS, WINDOW)
    with dask_client("local") as client:
        for _ in range(2):  # the first run meets the stale files; the rerun replaces its output
            report = run_merchant_stats(client, lake, tmp_path)
            assert_matches(Path(report.output_path), want, DS)
    assert not (tmp_path / "staging").exists(), "the job removes its staging directory"
    with pytest.raises(ValueError, match="window_days must be >= 1"):
        compute_merchant_stats(None, raw_transactions="x", output="y", staging="z", ds=DS, window_days=0)
    # a bare OverflowError before ("date value out of range"), on every retry
    with pytest.raises(
        ValueError, match=r"window_days 800000 reaches before year 1 from .*; give a window of at most"
    ):
        compute_merchant_stats(
            None, raw_transactions="x", output="y", staging="z", ds=DS, window_days=800_000
        )
    # -1 failed a staging task with a bare OverflowError; 0 quietly meant the default
    for buckets in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=rf"buckets must be a whole number >= 1, .*got {buckets!r}"):
            compute_merchant_stats(
                None, raw_transactions="x", output="y", staging="z", ds=DS, buckets=buckets
            )


def test_files_read_in_pieces_of_row_groups_give_the_oracle_stats(
    lake: Path, tmp_path: Path, monkeypatch
) -> None:
    """Each raw file rewritten with row groups of 100 rows, and each task given one row group
    (PIECE_BYTES of 1): several pieces per file, the same stats as whole files."""
    import pyarrow.parquet as pq

    split = tmp_path / "lake"
    shutil.copytree(lake, split)
    for path in (split / "raw" / "transactions").glob("date=*/*.parquet"):
        pq.write_table(pq.read_table(path), path, row_group_size=100)
    monkeypatch.setattr(merchant_stats, "PIECE_BYTES", 1)
    with dask_client("local") as client:
        report = run_merchant_stats(client, split, tmp_path)
    assert_matches(Path(report.output_path), oracle(lake, DS, WINDOW), DS)
    window = [DS - timedelta(days=offset) for offset in range(WINDOW)]
    files = [
        path for day in window for path in (split / "raw" / "transactions" / f"date={day}").glob("*.parquet")
    ]
    pieces = sum(pq.ParquetFile(path).metadata.num_row_groups for path in files)
    assert pieces > 2 * len(files)
    # the default buckets: one per 4 dates of the window, as small as these are, however many
    # pieces they are read in (merchant_stats.bucket_units)
    assert report.buckets == merchant_stats.default_bucket_count(WINDOW) == 3


def test_a_day_split_into_many_files_gives_as_many_buckets_as_a_day_in_one(
    lake: Path, tmp_path: Path
) -> None:
    """Each raw day rewritten as 6 files, as a Spark writer splits it: the buckets were counted by
    files read, and each file's task wrote one staged file per bucket (files per day squared)."""
    import pyarrow.parquet as pq

    split = tmp_path / "lake"
    shutil.copytree(lake, split)
    for path in (split / "raw" / "transactions").glob("date=*/*.parquet"):
        table = pq.read_table(path)
        path.unlink()
        step = -(-table.num_rows // 6)
        for number in range(6):
            pq.write_table(table.slice(number * step, step), path.parent / f"part-{number:05d}.parquet")
    with dask_client("local") as client:
        report = run_merchant_stats(client, split, tmp_path)
    assert_matches(Path(report.output_path), oracle(lake, DS, WINDOW), DS)
    assert report.buckets == merchant_stats.default_bucket_count(WINDOW) == 3


def test_bucket_units_count_dates_and_large_days_by_their_bytes() -> None:
    unit = merchant_stats.BUCKET_UNIT_BYTES
    days = ["2026-08-01"] * 3 + ["2026-08-02", "2026-08-03"]
    sizes = [[10], [20, 30], [], [unit * 2 + 1], []]  # a file with no row group holds no rows
    by_day = merchant_stats.day_bytes(days, sizes)
    assert by_day == {"2026-08-01": 60, "2026-08-02": unit * 2 + 1}
    assert merchant_stats.bucket_units(by_day) == 1 + 3
    # a date of exactly one unit counts once; one byte more, twice
    assert merchant_stats.bucket_units({"2026-08-01": unit, "2026-08-02": unit + 1}) == 1 + 2
    assert merchant_stats.bucket_units({}) == 0
    # a bucket gets at most BUCKET_DAY_BYTES of the largest date: a short window of large days
    # gave a bucket up to 1 GiB of one date (one bucket per 4 units)
    day = merchant_stats.BUCKET_DAY_BYTES
    assert merchant_stats.default_bucket_count(4, largest_day_bytes=4 * 256 * 2**20) == 16
    assert merchant_stats.default_bucket_count(120, largest_day_bytes=day) == 30
    assert merchant_stats.default_bucket_count(1, largest_day_bytes=3 * day - 1) == 3


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def hidden_siblings(output: Path) -> list[str]:
    return sorted(path.name for path in output.parent.iterdir() if path.name.startswith("."))


def test_a_failed_run_leaves_the_previous_output_and_a_clean_rerun_replaces_it(
    lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "merchant_stats" / f"date={DS}"
    run = {
        "raw_transactions": str(lake / "raw" / "transactions"),
        "output": str(output),
        "staging": str(tmp_path / "staging"),
        "ds": DS,
        "buckets": 4,
    }
    real_bucket_stats = merchant_stats.merchant_stats_of_bucket
    seen_mid_run: dict[str, object] = {}

    def bucket_3_fails_last(bucket: int, **kwargs):
        """Bucket 3 fails once the other buckets' files are written: the new output is 3/4 done."""
        if bucket != 3:
            return real_bucket_stats(bucket, **kwargs)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            written = sorted(output.parent.glob(".*/part.*.parquet"))
            if len(written) == 3:
                break
            time.sleep(0.05)
        seen_mid_run["new_files"] = [path.name for path in written]
        seen_mid_run["output"] = files_of(output)  # what a reader of the date sees meanwhile
        raise OSError("worker lost while computing bucket 3")

    with dask_client("local") as client:
        # the previous output: a shorter window, so that its replacement differs
        compute_merchant_stats(client, **run, window_days=WINDOW - 3)
        previous = files_of(output)
        previous_frame = pd.read_parquet(output)
        assert sorted(previous) == [f"part.{i}.parquet" for i in range(4)]

        monkeypatch.setattr(merchant_stats, "merchant_stats_of_bucket", bucket_3_fails_last)
        with pytest.raises(OSError, match="worker lost while computing bucket 3"):
            compute_merchant_stats(client, **run, window_days=WINDOW)
        assert seen_mid_run["new_files"] == ["part.0.parquet", "part.1.parquet", "part.2.parquet"]
        assert seen_mid_run["output"] == previous, "readers saw the output change during the run"
        assert files_of(output) == previous, "the failed run changed the previous output"
        pd.testing.assert_frame_equal(pd.read_parquet(output), previous_frame)
        # a reader of the whole dataset sees one complete date, whatever the failed run left
        dataset = pd.read_parquet(output.parent)
        assert len(dataset) == len(previous_frame)

        monkeypatch.undo()
        report = compute_merchant_stats(client, **run, window_days=WINDOW)
        assert_matches(output, oracle(lake, DS, WINDOW), DS)
        assert report.rows_read > report.rows_counted > 0
        replaced = files_of(output)
        assert sorted(replaced) == sorted(previous) and replaced != previous
        assert hidden_siblings(output) == [], "the rerun removes what the failed run left"

        # a retry of a successful run gives the same files
        compute_merchant_stats(client, **run, window_days=WINDOW)
        assert files_of(output) == replaced
        assert hidden_siblings(output) == []


def test_rows_with_a_null_or_mismatched_timestamp_do_not_count(tmp_path: Path) -> None:
    """The edge-case lake of the user features has every invalid kind of the data contract, the null
    transaction_ts and the timestamp on another UTC date than its partition included."""
    window = 90
    lake = tmp_path / "lake"
    write_edge_case_lake(lake, ds=DS, window_days=window)
    with dask_client("local") as client:
        report = run_merchant_stats(client, lake, tmp_path, window_days=window)
    got = pd.read_parquet(report.output_path).set_index("merchant_id")
    # m17: rows at 00:00:00 and 23:59:59.999999 UTC of their date count; a 500.00 row filed under the
    # next date does not
    assert got.loc["m17", ["transaction_count", "total_amount", "active_days"]].tolist() == [2, 3.0, 1]
    # m18 has only invalid rows: the otherwise valid ones have a null ts or one on another date
    assert "m18" not in got.index
    # 57 raw rows in the window: 9 invalid by the contract's rules 1-4, 4 by rule 4a (infinite or
    # above 9e12), 3 by rules 5 and 6 (a null ts, two timestamps on another date), and 3 valid ones
    # with a null merchant_id
    assert (report.rows_read, report.rows_counted) == (57, 57 - 9 - 4 - 3 - 3)
    want = oracle(lake, DS, window)
    assert "m17" in set(want["merchant_id"]) and "m18" not in set(want["merchant_id"])
    assert_matches(Path(report.output_path), want, DS, min_merchants=15)


def test_files_of_dates_outside_the_window_are_never_opened(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=DS - timedelta(days=6), end=DS + timedelta(days=1), users=300, seed=3)
    window = 3
    want = oracle(lake, DS, window)
    raw = lake / "raw" / "transactions"
    # the oldest date (where Dask's discovery read the schema) and a later one: not Parquet
    for day in (DS - timedelta(days=6), DS - timedelta(days=window), DS + timedelta(days=1)):
        (raw / f"date={day}" / "part-00000.parquet").write_bytes(b"not parquet")
    # temporary and marker files, which the data contract says readers ignore, in a window date
    (raw / f"date={DS}" / ".part-00001.parquet").write_bytes(b"half a file")
    (raw / f"date={DS}" / "_SUCCESS").write_bytes(b"")
    with dask_client("local") as client:
        report = run_merchant_stats(client, lake, tmp_path, window_days=window)
    assert_matches(Path(report.output_path), want, DS)


def test_a_failed_run_removes_its_staging_and_leaves_the_previous_output(lake: Path, tmp_path: Path) -> None:
    """A corrupt file in the window's last date fails the staging step after other dates were staged. The
    failed run left `_staging/` holding a copy of the window's valid rows, which only a later run of
    the same date removed: a date that is not retried kept it for good."""
    broken = tmp_path / "lake"
    shutil.copytree(lake, broken)
    output = tmp_path / "merchant_stats" / f"date={DS}"
    staging = tmp_path / "staging"
    with dask_client("local") as client:
        run_merchant_stats(client, broken, tmp_path)
        previous = files_of(output)
        corrupt = broken / "raw" / "transactions" / f"date={DS}" / "part-00000.parquet"
        corrupt.write_bytes(b"not parquet")
        with pytest.raises(Exception, match=str(corrupt)):
            run_merchant_stats(client, broken, tmp_path)
    assert not staging.exists(), sorted(str(path.relative_to(staging)) for path in staging.rglob("*"))[:5]
    assert files_of(output) == previous
    assert hidden_siblings(output) == []
