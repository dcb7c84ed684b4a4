"""run_user_features in the test session's local Spark, on small hand-made lakes: failed reruns,
withdrawn raw dates, dates with no clean row, out-of-range amounts and a bad categories lookup."""

from __future__ import annotations

import json
import math
import re
import shutil
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from featurelake.synthetic import generate_lake
from featurelake.user_features import with_quarantine_reason
from featurelake.user_features_run import run_user_features
from tests.oracle.edge_case_lake import CATEGORIES, write_categories, write_transactions_partition
from tests.oracle.user_features_duckdb import compute_user_features

pytestmark = pytest.mark.integration

DAYS = [date(2026, 9, 1) + timedelta(days=i) for i in range(7)]
WINDOW_DAYS = 5


def _row(transaction_id: str, user_id: str, day: date, amount: float | None, category_id: int = 1) -> dict:
    return {
        "transaction_id": transaction_id,
        "user_id": user_id,
        "merchant_id": "m1",
        "category_id": category_id,
        "amount": amount,
        "currency": "USD",
        "transaction_ts": datetime.combine(day, time(12), UTC),
    }


def _lake(root: Path, days: list[date], *, amounts: dict[date, float | None] | None = None) -> Path:
    """Users u0..u2 with one transaction a day (of 10, 11 and 12; or of `amounts[day]` each)."""
    lake = root / "lake"
    write_categories(lake, CATEGORIES)
    for i, day in enumerate(days):
        rows = [_row(f"t{i}-{k}", f"u{k}", day, (amounts or {}).get(day, 10.0 + k)) for k in range(3)]
        write_transactions_partition(lake, partition=day, rows=rows)
    return lake


def _run(spark, lake: Path, ds: date, mode: str = "auto"):
    return run_user_features(spark, ds=ds, lake=str(lake), window_days=WINDOW_DAYS, mode=mode)


def _features(lake: Path, ds: date) -> pd.DataFrame:
    return pd.read_parquet(lake / "features" / "user_features" / f"date={ds.isoformat()}").sort_values(
        "user_id", ignore_index=True
    )


@pytest.fixture(scope="module")
def published_lake(spark, tmp_path_factory) -> Path:
    """A lake whose features of DAYS[4] are published, from a full run for DAYS[3] and an
    incremental one for DAYS[4] (which built every tile of its window). Tests work on a copy."""
    lake = _lake(tmp_path_factory.mktemp("published"), DAYS[:5])
    _run(spark, lake, DAYS[3])
    _run(spark, lake, DAYS[4])
    return lake


def _copy(lake: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(lake, tmp_path / "lake"))


def test_a_failed_rerun_keeps_the_published_features(spark, published_lake: Path, tmp_path: Path) -> None:
    lake = _copy(published_lake, tmp_path)
    ds = DAYS[4]
    published = _features(lake, ds)
    assert published["transaction_count"].tolist() == [5, 5, 5]
    # One tile of the window turns unreadable: the rerun fails in the combine, after its other writes.
    tile = next((lake / "tiles" / "user_daily" / f"date={DAYS[1].isoformat()}").glob("*.parquet"))
    table = pq.read_table(tile)
    column = table.schema.get_field_index("amount_micros")
    pq.write_table(table.set_column(column, "amount_micros", pa.array(["x"] * table.num_rows)), tile)
    (tile.parent / f".{tile.name}.crc").unlink(missing_ok=True)
    built = lake / "tiles" / "user_daily" / f"date={ds.isoformat()}" / "_BUILT"
    built_before = built.stat().st_mtime_ns

    # The combine's error, naming the tile: not whatever failed first (any exception passed here,
    # an early crash before any write too).
    with pytest.raises(
        OSError,
        match=rf"the tile file \S*{re.escape(f'/date={DAYS[1].isoformat()}/{tile.name}')} cannot be read "
        rf"\(truncated, or not Parquet\), so the features of {ds.isoformat()} were not written; "
        r"the published ones are as they were\. .*rerun with --mode rebuild",
    ):
        _run(spark, lake, ds, "incremental")

    assert built.stat().st_mtime_ns > built_before, "the run failed before its other writes (ds's tile)"
    pd.testing.assert_frame_equal(_features(lake, ds), published)
    assert not (lake / "_staging" / "user_features" / f"date={ds.isoformat()}").exists()


def test_a_truncated_tile_fails_naming_it_and_a_rebuild_repairs_it(
    spark, published_lake: Path, tmp_path: Path
) -> None:
    lake = _copy(published_lake, tmp_path)
    ds = DAYS[4]
    published = _features(lake, ds)
    partition = lake / "tiles" / "user_daily" / f"date={DAYS[1].isoformat()}"
    tile = next(partition.glob("*.parquet"))  # its marker stays: the tile counts as built
    tile.write_bytes(tile.read_bytes()[: tile.stat().st_size // 2])
    (tile.parent / f".{tile.name}.crc").unlink(missing_ok=True)

    with pytest.raises(OSError, match=rf"the tile file \S*{partition}/{tile.name} cannot be read") as failed:
        _run(spark, lake, ds, "incremental")
    assert "rerun with --mode rebuild" in str(failed.value)
    pd.testing.assert_frame_equal(_features(lake, ds), published)

    assert DAYS[1].isoformat() in _run(spark, lake, ds, "rebuild").tiles_built
    pd.testing.assert_frame_equal(_features(lake, ds), published)


def test_tiles_of_a_withdrawn_raw_date_stop_counting(spark, published_lake: Path, tmp_path: Path) -> None:
    lake = _copy(published_lake, tmp_path)
    ds = DAYS[4]
    shutil.rmtree(lake / "raw" / "transactions" / f"date={DAYS[1].isoformat()}")  # the producer withdrew it

    by_mode = {}
    for mode in ("incremental", "rebuild", "full"):
        _run(spark, lake, ds, mode)
        by_mode[mode] = _features(lake, ds)
    assert by_mode["full"]["transaction_count"].tolist() == [4, 4, 4]
    pd.testing.assert_frame_equal(by_mode["incremental"], by_mode["full"])
    pd.testing.assert_frame_equal(by_mode["rebuild"], by_mode["full"])
    assert not (lake / "tiles" / "user_daily" / f"date={DAYS[1].isoformat()}").exists()


def test_tiles_of_rewritten_raw_data_or_categories_are_rebuilt(
    spark, published_lake: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tile remembers the raw files and the categories lookup it was built from (its marker), so a
    producer re-landing a past date, or a lake regenerated with other data, is picked up."""
    lake = _copy(published_lake, tmp_path)
    ds = DAYS[4]
    relanded = lake / "raw" / "transactions" / f"date={DAYS[1].isoformat()}"
    shutil.rmtree(relanded)
    write_transactions_partition(
        lake, partition=DAYS[1], rows=[_row(f"t1-{k}", f"u{k}", DAYS[1], 100.0 + k) for k in range(3)]
    )

    report = _run(spark, lake, ds, "incremental")
    assert report.tiles_built == [DAYS[1].isoformat(), ds.isoformat()]
    incremental = _features(lake, ds)
    _run(spark, lake, ds, "full")
    pd.testing.assert_frame_equal(incremental, _features(lake, ds))
    assert _run(spark, lake, ds, "incremental").tiles_built == [ds.isoformat()], "nothing else changed"

    # Another categories lookup. A full run rebuilds the tile of ds alone, and says so of the others
    # (it said "rebuilding it" of every one); then an incremental run rebuilds every tile of the
    # window, as mode=rebuild would.
    write_categories(lake, [(cid, name, "other") for cid, name, _ in CATEGORIES])
    with caplog.at_level("WARNING", logger="featurelake.user_features_run"):
        assert _run(spark, lake, ds, "full").tiles_built == [ds.isoformat()]
    said = {m.split()[3]: m.split(": ")[-1] for m in caplog.messages if m.startswith("the tile of")}
    left = "this full run reads the raw data instead, and leaves it to the next run that combines tiles"
    assert said == {**{d.isoformat(): left for d in DAYS[:4]}, ds.isoformat(): "rebuilding it"}
    report = _run(spark, lake, ds, "incremental")
    assert report.tiles_built == [d.isoformat() for d in DAYS[: ds.toordinal() - DAYS[0].toordinal() + 1]]
    incremental = _features(lake, ds)
    assert set(incremental["top_category_group"]) == {"other"}
    _run(spark, lake, ds, "full")
    pd.testing.assert_frame_equal(incremental, _features(lake, ds))


def test_a_categories_lookup_written_as_one_file_is_tracked_like_a_directory(
    spark, published_lake: Path, tmp_path: Path
) -> None:
    """`raw/categories` written as one Parquet file (pandas' `to_parquet("raw/categories")`), not a
    directory of them: the job reads it, and its tiles' markers named none of it, since the
    lookup's fingerprint kept `*.parquet` names only. Another lookup written there then left every
    tile current, and incremental runs kept the old groups where a full run took the new ones."""
    lake = _copy(published_lake, tmp_path)
    ds = DAYS[4]
    lookup = lake / "raw" / "categories"

    def write_lookup_file(group: str | None) -> None:
        shutil.rmtree(lookup) if lookup.is_dir() else lookup.unlink()
        write_categories(tmp_path / "written", [(cid, n, group or g) for cid, n, g in CATEGORIES])
        shutil.move(tmp_path / "written" / "raw" / "categories" / "part-00000.parquet", lookup)

    write_lookup_file(None)  # the same rows, as one file: the tiles are rebuilt from it once
    assert len(_run(spark, lake, ds, "incremental").tiles_built) == 5
    assert _run(spark, lake, ds, "incremental").tiles_built == [ds.isoformat()], "nothing changed"

    write_lookup_file("other")
    report = _run(spark, lake, ds, "incremental")
    assert report.tiles_built == [d.isoformat() for d in DAYS[:5]]
    incremental = _features(lake, ds)
    assert set(incremental["top_category_group"]) == {"other"}
    _run(spark, lake, ds, "full")
    pd.testing.assert_frame_equal(incremental, _features(lake, ds))


def test_tiles_of_another_tile_format_are_rebuilt(spark, published_lake: Path, tmp_path: Path) -> None:
    """A tile's marker named its sources but not the code that built it: tiles built before a change
    of what they hold (exact cents above 2**32, 2026-12-06) were combined as current, and
    incremental runs differed from full ones until someone ran `rebuild`. A marker names the tile
    format now; a tile of another one, or of no named one, is rebuilt."""
    from featurelake.user_features import TILE_BUILT_MARKER, TILE_FORMAT

    lake = _copy(published_lake, tmp_path)
    ds = DAYS[4]
    tiles = lake / "tiles" / "user_daily"
    older = tiles / f"date={DAYS[1].isoformat()}" / TILE_BUILT_MARKER
    marker = json.loads(older.read_text())
    assert marker["tile_format"] == TILE_FORMAT
    older.write_text(json.dumps({**marker, "tile_format": TILE_FORMAT - 1}, separators=(",", ":")))
    (tiles / f"date={DAYS[2].isoformat()}" / TILE_BUILT_MARKER).write_text("")  # before markers had text
    for day in DAYS[1:3]:  # Hadoop's checksums of the markers' old text
        (tiles / f"date={day.isoformat()}" / f".{TILE_BUILT_MARKER}.crc").unlink()

    report = _run(spark, lake, ds, "incremental")
    assert report.tiles_built == [DAYS[1].isoformat(), DAYS[2].isoformat(), ds.isoformat()]
    assert json.loads(older.read_text())["tile_format"] == TILE_FORMAT
    incremental = _features(lake, ds)
    _run(spark, lake, ds, "full")
    pd.testing.assert_frame_equal(incremental, _features(lake, ds))
    assert _run(spark, lake, ds, "incremental").tiles_built == [ds.isoformat()], "nothing else changed"


def test_a_retry_after_the_report_failed_reports_what_the_run_did(spark, tmp_path: Path) -> None:
    """The run deleted its plan before the entry point wrote its report: when that write failed, the
    retry planned afresh, found the tile of ds the failed run had built, and ran `incremental` where
    the run had been `full` (other tiles built, another quarantine count, in the task's XCom)."""
    lake = _lake(tmp_path, DAYS[:5])
    ds = DAYS[4]

    def failing(report) -> None:
        raise OSError("the lake refused the report")

    with pytest.raises(OSError, match="refused the report"):
        run_user_features(
            spark, ds=ds, lake=str(lake), window_days=WINDOW_DAYS, mode="auto", write_report=failing
        )
    written = []
    retry = run_user_features(
        spark, ds=ds, lake=str(lake), window_days=WINDOW_DAYS, mode="auto", write_report=written.append
    )
    assert written == [retry]
    assert (retry.mode, retry.tiles_built) == ("full", [ds.isoformat()])
    assert _run(spark, lake, ds).mode == "incremental", "the plan is gone once the report is written"


def test_a_date_with_no_clean_row_is_built_and_reported_once(spark, tmp_path: Path) -> None:
    lake = _lake(tmp_path, DAYS, amounts={DAYS[2]: None})  # a broken feed day: every amount missing
    _run(spark, lake, DAYS[3])  # full
    second = _run(spark, lake, DAYS[4])  # builds the window's other tiles and quarantines DAYS[2]
    assert DAYS[2].isoformat() in second.tiles_built
    assert second.quarantined_by_reason == {"missing_amount": 3}

    for day in DAYS[5:]:
        report = _run(spark, lake, day)
        assert report.tiles_built == [day.isoformat()]
        assert report.quarantined_rows == 0
    assert _features(lake, DAYS[6])["transaction_count"].tolist() == [4, 4, 4]
    empty_tile = lake / "tiles" / "user_daily" / f"date={DAYS[2].isoformat()}"
    assert (empty_tile / "_BUILT").is_file()  # the marker of a built tile (docs/features.md)
    assert not list(empty_tile.glob("*.parquet"))


@pytest.mark.parametrize("amount", [math.inf, -math.inf, 1e13], ids=["inf", "minus-inf", "1e13"])
def test_an_amount_too_large_for_micro_units_is_quarantined(spark, tmp_path: Path, amount: float) -> None:
    lake = _lake(tmp_path, DAYS[:2])
    write_transactions_partition(lake, partition=DAYS[1], rows=[_row("t-big", "u9", DAYS[1], amount)])

    report = _run(spark, lake, DAYS[1], "full")

    assert report.quarantined_by_reason == {"invalid_amount": 1}
    quarantined = pd.read_parquet(lake / "quarantine" / "transactions")
    assert quarantined["transaction_id"].tolist() == ["t-big"]
    want = compute_user_features(lake=lake, ds=DAYS[1], window_days=WINDOW_DAYS)
    assert _features(lake, DAYS[1])["user_id"].tolist() == want["user_id"].tolist() == ["u0", "u1", "u2"]


def test_the_amount_bound_is_inclusive_and_rules_keep_their_order(spark) -> None:
    day = DAYS[0]
    ts = datetime.combine(day, time(12), UTC)
    rows = [
        ("t1", "u1", 9e12, ts),
        ("t2", "u1", -9e12, ts),
        ("t3", "u1", 9.000000001e12, ts),
        ("t4", "u1", math.nan, ts),
        ("t5", "", math.inf, ts),
        ("t6", "u1", math.inf, None),
    ]
    frame = spark.createDataFrame(
        rows, "transaction_id string, user_id string, amount double, transaction_ts timestamp"
    ).withColumn("date", F.lit(day))
    reasons = {r["transaction_id"]: r["reason"] for r in with_quarantine_reason(frame).collect()}
    assert reasons == {
        "t1": None,
        "t2": None,
        "t3": "invalid_amount",
        "t4": "nan_amount",
        "t5": "missing_user_id",
        "t6": "invalid_amount",
    }


def test_a_category_id_with_two_groups_fails_naming_it(spark, tmp_path: Path) -> None:
    lake = _lake(tmp_path, DAYS[:1])
    write_categories(
        lake, [(1, "cafe", "dining"), (1, "supermarket", "groceries"), (2, "x", "y"), (2, "x", "y")]
    )

    with pytest.raises(
        ValueError,
        match=r"raw/categories gives several category groups to category_id 1: dining, groceries\.",
    ):
        _run(spark, lake, DAYS[0], "full")

    # The same row twice is harmless.
    write_categories(lake, [(1, "cafe", "dining"), (1, "cafe", "dining")])
    assert _run(spark, lake, DAYS[0], "full").users_written == 3


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        pytest.param([], "holds no row: every top_category_group would be 'unknown'", id="no-row"),
        pytest.param(
            [(None, "cafe", "dining"), (2, "x", "y")], "has 1 row(s) with a null category_id", id="null-id"
        ),
        pytest.param(
            [(1, "cafe", None), (2, "x", ""), (3, "y", "unknown"), (4, "z", "travel")],
            "gives category_id 1, 2, 3 a null, empty or 'unknown' category_group",
            id="unnamed-groups",
        ),
    ],
)
def test_a_lookup_that_names_no_group_fails_naming_it(
    spark, tmp_path: Path, rows: list[tuple[int | None, str, str | None]], said: str
) -> None:
    """Each of these lookups has the contract's columns, and made every user's top group `unknown`
    (or some users'), in a run that succeeded without a word."""
    lake = _lake(tmp_path, DAYS[:1])
    _lookup(
        lake,
        pa.table(
            {
                "category_id": pa.array([r[0] for r in rows], pa.int32()),
                "category_name": pa.array([r[1] for r in rows], pa.string()),
                "category_group": pa.array([r[2] for r in rows], pa.string()),
            }
        ),
    )
    with pytest.raises(
        ValueError, match=rf"the categories lookup \S*raw/categories {re.escape(said)}.*and rerun"
    ):
        _run(spark, lake, DAYS[0], "full")
    assert not (lake / "features" / "user_features" / f"date={DAYS[0].isoformat()}").exists()


def test_a_missing_lookup_fails_naming_it_and_the_fix(spark, tmp_path: Path) -> None:
    """Spark's bare `[PATH_NOT_FOUND] Path does not exist` said neither what the path was for nor
    what to do."""
    lake = _lake(tmp_path, DAYS[:1])
    shutil.rmtree(lake / "raw" / "categories")
    with pytest.raises(
        FileNotFoundError,
        match=r"the categories lookup \S*raw/categories does not exist: .* Land it as "
        r"raw/categories/part-00000\.parquet",
    ):
        _run(spark, lake, DAYS[0], "full")


def test_features_set_aside_by_a_killed_swap_are_put_back_by_a_run_of_another_date(
    spark, published_lake: Path, tmp_path: Path
) -> None:
    """Off a local filesystem (HDFS, S3A) a swap takes two renames. A rerun of DAYS[3] killed between
    them left its published features in its staging directory, `_replaced/`, and the new ones staged.
    The next run, of another date, deleted nothing of that directory, but never put them back
    either: every reader found DAYS[3] without features."""
    lake = _copy(published_lake, tmp_path)
    day = DAYS[3]
    published = _features(lake, day)
    name = f"date={day.isoformat()}"
    staged = lake / "_staging" / "user_features" / name / "features" / "user_features"
    (staged / "_replaced").mkdir(parents=True)
    shutil.move(lake / "features" / "user_features" / name, staged / "_replaced" / name)
    shutil.copytree(staged / "_replaced" / name, staged / name)  # the new version, never moved in
    assert not (lake / "features" / "user_features" / name).exists()

    _run(spark, lake, DAYS[4])

    pd.testing.assert_frame_equal(_features(lake, day), published, check_exact=True)


def test_a_last_amount_of_zero_has_no_sign(spark, tmp_path: Path) -> None:
    """-0.0 equals 0.0 (docs/data-contract.md): exact copies differing only there are one
    transaction, and the copy ranked first gave last_amount its sign, which a full and an
    incremental run could rank differently."""
    lake = _lake(tmp_path, DAYS[:2], amounts={DAYS[1]: -0.0})
    for mode in ("full", "incremental"):
        _run(spark, lake, DAYS[1], mode)
        last = _features(lake, DAYS[1])["last_amount"].tolist()
        assert [math.copysign(1.0, value) for value in last] == [1.0, 1.0, 1.0], (mode, last)


def _lookup(lake: Path, table: pa.Table) -> None:
    pq.write_table(table, lake / "raw" / "categories" / "part-00000.parquet")


def test_a_lookup_written_by_pandas_with_int64_ids_gives_the_same_features(spark, tmp_path: Path) -> None:
    """pandas writes category_id as int64, which Spark refused with a bare "Expected Spark type int,
    actual Parquet type INT64"."""
    lake = _lake(tmp_path, DAYS[:1])
    want = _run(spark, lake, DAYS[0], "full").users_written
    features = _features(lake, DAYS[0])
    ids, names, groups = zip(*CATEGORIES, strict=True)
    _lookup(
        lake,
        pa.table(
            {"category_id": pa.array(ids, pa.int64()), "category_name": names, "category_group": groups}
        ),
    )
    assert _run(spark, lake, DAYS[0], "full").users_written == want
    pd.testing.assert_frame_equal(_features(lake, DAYS[0]), features, check_exact=True)


@pytest.mark.parametrize(
    ("table", "said"),
    [
        pytest.param(
            pa.table(
                {"category_id": pa.array([1], pa.int32()), "category_name": ["cafe"], "group": ["dining"]}
            ),
            "category_group is missing, not a string",
            id="group-renamed",
        ),
        pytest.param(
            pa.table({"category_id": ["1"], "category_name": ["cafe"], "category_group": ["dining"]}),
            "category_id is string, not an integer",
            id="id-as-text",
        ),
        pytest.param(
            pa.table(
                {
                    "category_id": pa.array([2**40], pa.int64()),
                    "category_name": ["x"],
                    "category_group": ["y"],
                }
            ),
            "has a category_id outside int32",
            id="id-too-large",
        ),
    ],
)
def test_a_lookup_that_breaks_the_contract_fails_naming_it(
    spark, tmp_path: Path, table: pa.Table, said: str
) -> None:
    """Read with the contract's schema forced on it, a lookup whose group column was named `group`
    read as nulls: every user's top group was `unknown`, and the run succeeded."""
    lake = _lake(tmp_path, DAYS[:1])
    _lookup(lake, table)
    with pytest.raises(ValueError, match=rf"the categories lookup \S*raw/categories .*{re.escape(said)}"):
        _run(spark, lake, DAYS[0], "full")
    assert not (lake / "features" / "user_features" / f"date={DAYS[0].isoformat()}").exists()


def test_a_rerun_with_no_clean_rows_left_empties_the_date(spark, tmp_path: Path) -> None:
    # In the session, not by spark-submit (test_user_features_job.py): two spark-submits took two
    # minutes on a slow machine, and the job's entry point is covered there.
    lake = tmp_path / "lake"
    ds = date(2026, 9, 10)  # as in test_user_features_job.py: its two days hold no row without a user id
    generate_lake(lake=lake, start=ds - timedelta(days=1), end=ds, users=20, seed=3)
    assert _run(spark, lake, ds, "full").users_written > 0

    # The window's raw data is re-landed with every amount missing: no user has a clean row left.
    for file in (lake / "raw" / "transactions").glob("date=*/*.parquet"):
        table = pq.read_table(file)
        amounts = pa.nulls(table.num_rows, table.schema.field("amount").type)
        pq.write_table(table.set_column(table.schema.get_field_index("amount"), "amount", amounts), file)
    report = _run(spark, lake, ds, "full")

    assert report.users_written == 0
    assert report.quarantined_by_reason == {"missing_amount": report.quarantined_rows}
    assert not list((lake / "features" / "user_features").glob(f"date={ds.isoformat()}/*.parquet"))


def test_a_lake_whose_path_holds_glob_characters_reports_its_own_users(spark, tmp_path: Path) -> None:
    """The count of the written users read the features path as a Spark pattern: under `lake[1]` it
    matched a sibling `lake1`'s partition (its user count reported), or nothing (PATH_NOT_FOUND after
    the features were published, with no report, on every retry)."""
    lake = _lake(tmp_path / "lake[1]", DAYS[:3])
    sibling = _lake(tmp_path / "lake1", DAYS[:3])
    _run(spark, sibling, DAYS[2])
    features = sibling / "features" / "user_features" / f"date={DAYS[2].isoformat()}"
    for path in features.glob("*.parquet"):
        path.unlink()
        (path.parent / f".{path.name}.crc").unlink(missing_ok=True)
    pq.write_table(pa.table({"user_id": ["u0"]}), features / "part-00000.parquet")  # 1 user
    report = _run(spark, lake, DAYS[2])
    assert report.users_written == len(_features(lake, DAYS[2])) == 3
