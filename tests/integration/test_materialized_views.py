"""Delta-table materialized views on real Delta tables (delta-rs): a full rebuild and incremental
MERGEs give the same table, whatever order the dates arrive in, and after a rerun of a rewritten
date; reruns are idempotent; a full refresh takes a changed schema, an incremental one refuses it;
bad input is refused with the path; and Spark reads the table the library wrote."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from featurelake.materialized_views import (
    ConcurrentCommitError,
    refresh_full,
    refresh_incremental,
    refresh_view,
    spark_read_delta_files,
)
from tests.feature_view_partitions import (
    D1,
    D2,
    D3,
    SCHEMA,
    WANT_AS_OF_D3,
    rows_of,
    write_feature_partitions,
    write_partition,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def features(tmp_path: Path) -> Path:
    return write_feature_partitions(tmp_path / "features" / "user_features")


@pytest.mark.parametrize(
    "order",
    [
        pytest.param([D1, D2, D3], id="daily"),
        pytest.param([D3, D1, D2], id="backfill-after-latest"),
        pytest.param([D2, D3, D1, D3], id="out-of-order-with-rerun"),
    ],
)
def test_incremental_merges_equal_a_full_refresh(features: Path, tmp_path: Path, order: list[date]) -> None:
    incremental, full = tmp_path / "views" / "incremental", tmp_path / "views" / "full"
    reports = [refresh_incremental(str(incremental), str(features), ds=day) for day in order]
    assert reports[0].mode == "full", "a view that does not exist yet is built in full"
    assert all(report.mode == "incremental" for report in reports[1:])
    refresh_full(str(full), str(features), as_of=D3)
    got = rows_of(incremental)
    assert got == rows_of(full)
    if order[0] == D3:
        # built in full as of D3 first: a MERGE of an older date never replaces a newer row, and the
        # rows of that very date (b on D1; e and n on D2) are already in the view as they are, so
        # nothing is rewritten (they were, before a MERGE updated only rows that differ)
        assert (reports[1].inserted, reports[1].updated, reports[2].inserted, reports[2].updated) == (
            0,
            0,
            0,
            0,
        )
    assert {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in got} == WANT_AS_OF_D3
    assert next(r for r in got if r["user_id"] == "n")["std_spend"] is None


def test_a_full_refresh_ignores_later_partitions_and_a_rerun_gives_the_same_rows(
    features: Path, tmp_path: Path
) -> None:
    view = tmp_path / "views" / "v"
    first = refresh_view(str(view), str(features), ds=D2, mode="full")
    assert (first.dates_read, first.rows) == (2, 5)
    assert {r["user_id"]: r["feature_date"] for r in rows_of(view)} == {
        "a": D2,
        "b": D1,
        "c": D1,
        "e": D2,
        "n": D2,
    }
    before, files = rows_of(view), set(DeltaTable(str(view)).file_uris())
    again = refresh_view(str(view), str(features), ds=D2, mode="incremental")
    # the same rows again: none is rewritten and nothing is committed (each row was rewritten, with
    # the files holding them, in a new version)
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
    assert again.version == first.version and rows_of(view) == before
    assert [h["operation"] for h in DeltaTable(str(view)).history()] == ["WRITE"]
    assert set(DeltaTable(str(view)).file_uris()) == files


def test_a_rerun_updates_exactly_the_rows_that_changed(features: Path, tmp_path: Path) -> None:
    """A MERGE of the same date updates a view row only when some column differs, a null against a
    value included, and leaves the others as they were."""
    view = tmp_path / "views" / "v"
    refresh_view(str(view), str(features), ds=D1, mode="full")
    before = {r["user_id"]: r for r in rows_of(view)}
    path = next((features / f"date={D1.isoformat()}").glob("*.parquet"))
    table = pq.read_table(path).sort_by("user_id")
    users = table["user_id"].to_pylist()
    assert len(users) >= 3, users
    spend = table["total_spend"].to_pylist()
    spend[0] += 1.0
    std = table["std_spend"].to_pylist()
    std[1] = None if std[1] is not None else 2.5
    table = table.set_column(table.schema.get_field_index("total_spend"), "total_spend", pa.array(spend))
    table = table.set_column(
        table.schema.get_field_index("std_spend"),
        "std_spend",
        pa.array(std, table.schema.field("std_spend").type),
    )
    pq.write_table(table, path)
    report = refresh_view(str(view), str(features), ds=D1, mode="incremental")
    assert (report.inserted, report.updated, report.deleted) == (0, 2, 0)
    after = {r["user_id"]: r for r in rows_of(view)}
    assert (after[users[0]]["total_spend"], after[users[1]]["std_spend"]) == (spend[0], std[1])
    assert {u: after[u] for u in after if u not in users[:2]} == {
        u: before[u] for u in before if u not in users[:2]
    }


def test_bad_input_is_refused_with_its_path(features: Path, tmp_path: Path) -> None:
    view = tmp_path / "views" / "v"
    with pytest.raises(ValueError, match="mode must be one of incremental, full"):
        refresh_view(str(view), str(features), ds=D3, mode="merge")
    with pytest.raises(FileNotFoundError, match="no feature partition on or before 2026-01-01"):
        refresh_full(str(view), str(features), as_of=date(2026, 1, 1))
    refresh_full(str(view), str(features), as_of=D3)
    # a mistyped features path is no dataset whose dates are all gone: the view's rows stay
    with pytest.raises(FileNotFoundError, match=r"features-typo does not exist: check the features path"):
        refresh_incremental(str(view), str(tmp_path / "features-typo"), ds=D3)
    write_partition(features, date(2026, 10, 29), {"a": 1.0})
    duplicated = features / "date=2026-10-29" / "part-00001.snappy.parquet"
    pq.write_table(pq.read_table(features / "date=2026-10-29" / "part-00000.snappy.parquet"), duplicated)
    with pytest.raises(ValueError, match=r"date=2026-10-29 holds an 'user_id' more than once"):
        refresh_incremental(str(view), str(features), ds=date(2026, 10, 29))
    assert {r["user_id"] for r in rows_of(view)} == set(WANT_AS_OF_D3), (
        "a refused MERGE leaves the view as it was"
    )


@pytest.mark.parametrize("mode", ["incremental", "full"])
def test_a_file_uri_of_a_relative_path_is_refused_before_anything_is_read(
    features: Path, tmp_path: Path, monkeypatch, caplog, mode: str
) -> None:
    """delta-rs opens `file:views/v` as `/views/v`: the refresh logged that it was building that view
    in full, then a later path check refused the features. Both are checked first now."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO", logger="featurelake")
    with pytest.raises(ValueError, match=r"^the view file:views/v is not a file:// URI of an absolute path"):
        refresh_view("file:views/v", f"file://{features}", ds=D3, mode=mode)
    with pytest.raises(ValueError, match=r"^the features file:features is not a file:// URI"):
        refresh_view(f"file://{tmp_path}/views/v", "file:features", ds=D3, mode=mode)
    assert not caplog.records
    assert not (tmp_path / "views").exists()


def test_spark_reads_the_delta_table_the_library_wrote(features: Path, tmp_path: Path, spark) -> None:
    view = tmp_path / "views" / "v"
    refresh_full(str(view), str(features), as_of=D2)
    refresh_incremental(str(view), str(features), ds=D3)  # a second version: older files are stale
    frame = spark_read_delta_files(spark, str(view))
    got = sorted((row["user_id"], row["feature_date"], row["total_spend"]) for row in frame.collect())
    assert got == sorted((user, day, spend) for user, (day, spend) in WANT_AS_OF_D3.items())


def test_spark_reads_a_view_whose_rows_were_all_deleted(tmp_path: Path, spark) -> None:
    """A rerun of the only date, rewritten empty, deletes every row: the table's version has no
    file. Spark read it as `spark.read.parquet()` of no path, which fails ("Unable to infer
    schema"); it must read an empty table with the view's columns."""
    features = tmp_path / "features" / "user_features"
    write_partition(features, D1, {"a": 1.0})
    view = tmp_path / "views" / "v"
    refresh_view(str(view), str(features), ds=D1)
    rewrite_partition(features, D1, {})
    assert refresh_view(str(view), str(features), ds=D1).rows == 0
    frame = spark_read_delta_files(spark, str(view))
    assert (frame.columns, frame.count()) == (SCHEMA.names, 0)


@pytest.mark.parametrize("empty", [True, False], ids=["empty-directory", "absent"])
def test_an_empty_date_changes_nothing(features: Path, tmp_path: Path, empty: bool) -> None:
    """A date with no user in its window: the feature job leaves its partition absent, another
    writer may leave it empty. Both refreshes skip it (an incremental one refused an absent date,
    saying to run the feature job, which had run and would leave it absent again)."""
    if empty:
        (features / "date=2026-10-29").mkdir()
    view = tmp_path / "views" / "v"
    full = refresh_view(str(view), str(features), ds=date(2026, 10, 29), mode="full")
    merged = refresh_view(str(view), str(features), ds=date(2026, 10, 29), mode="incremental")
    assert (full.dates_read, full.rows, merged.rows, merged.version) == (3 + empty, 6, 6, full.version)
    assert {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in rows_of(view)} == WANT_AS_OF_D3


def test_only_empty_partitions_are_refused_saying_what_to_do(tmp_path: Path) -> None:
    """The first run of a view on a date with no entity: the error says what to check (it named
    only the partitions). Deliberate: a full refresh never writes an empty view."""
    features = tmp_path / "features" / "user_features"
    (features / f"date={D1}").mkdir(parents=True)
    view = tmp_path / "views" / "v"
    with pytest.raises(
        FileNotFoundError,
        match=r"on or before 2026-10-26 under .* are all empty: a full refresh never replaces a view "
        r"with an empty table.*Check that the feature job wrote these dates",
    ):
        refresh_view(str(view), str(features), ds=D1)
    assert not view.exists()


def rewrite_partition(features: Path, day: date, users: dict[str, float]) -> None:
    """The feature job reruns `day` and writes `users` (an empty dict: no partition, as the job
    leaves a date whose window holds no entity)."""
    shutil.rmtree(features / f"date={day.isoformat()}")
    if users:
        write_partition(features, day, users)


def add_column(features: Path, day: date, name: str, values: list) -> None:
    path = features / f"date={day.isoformat()}" / "part-00000.snappy.parquet"
    pq.write_table(pq.read_table(path).append_column(name, pa.array(values)), path)


def assert_equals_a_full_refresh(view: Path, features: Path, as_of: date, tmp_path: Path) -> None:
    full = tmp_path / "views" / "reference"
    refresh_full(str(full), str(features), as_of=as_of)
    assert pa.schema(DeltaTable(str(view)).schema().to_arrow()) == pa.schema(
        DeltaTable(str(full)).schema().to_arrow()
    )
    assert rows_of(view) == rows_of(full)


@pytest.mark.parametrize(
    ("rerun", "rewritten", "want"),
    [
        # c takes back its row of D1, d (new on D3) has none left: deleted
        pytest.param(D3, {"a": 21.5}, {"a": (D3, 21.5), "c": (D1, 3.0)}, id="latest-date"),
        # after D3: e and n had only D2, a and c keep their rows of D3
        pytest.param(D2, {"c": 13.0}, {"a": (D3, 21.0), "c": (D3, 23.0)}, id="older-date"),
        # the feature job now finds nobody on D3: a back to D2, c back to D1, d deleted
        pytest.param(D3, {}, {"a": (D2, 11.0), "c": (D1, 3.0)}, id="emptied-date"),
    ],
)
def test_a_rerun_of_a_rewritten_date_equals_a_full_refresh(
    features: Path, tmp_path: Path, rerun: date, rewritten: dict[str, float], want: dict
) -> None:
    view = tmp_path / "views" / "v"
    for day in (D1, D2, D3):
        refresh_incremental(str(view), str(features), ds=day)
    before = {r["user_id"] for r in rows_of(view)}
    rewrite_partition(features, rerun, rewritten)
    report = refresh_incremental(str(view), str(features), ds=rerun)
    assert report.mode == "incremental"
    assert_equals_a_full_refresh(view, features, D3, tmp_path)
    got = {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in rows_of(view)}
    assert {user: got[user] for user in want} == want
    assert report.deleted == len(before - set(got)) > 0
    assert [h["operation"] for h in DeltaTable(str(view)).history(1)] == ["MERGE"], "one commit"


def test_a_rerun_that_drops_an_entity_updates_that_entity_alone(features: Path, tmp_path: Path) -> None:
    """The rows of the date that did not change are left as they are; c, dropped from D3, takes back
    its row of D1. (The condition for a row standing in matched every view row of the date, so the
    unchanged ones were rewritten too.)"""
    view = tmp_path / "views" / "v"
    for day in (D1, D2, D3):
        refresh_incremental(str(view), str(features), ds=day)
    rewrite_partition(features, D3, {"a": 21.0, "d": 24.0})
    report = refresh_incremental(str(view), str(features), ds=D3)
    assert (report.inserted, report.updated, report.deleted) == (0, 1, 0)
    assert_equals_a_full_refresh(view, features, D3, tmp_path)
    assert {r["user_id"]: r["feature_date"] for r in rows_of(view)}["c"] == D1


def test_a_full_refresh_takes_a_new_column_and_an_incremental_one_refuses_it(
    features: Path, tmp_path: Path
) -> None:
    """A feature change adds `new_feature` from D3 on: a full refresh takes it (null for the rows of
    older dates), an incremental one refuses the partition and leaves the table as it was."""
    add_column(features, D3, "new_feature", [7.0, 8.0, 9.0])  # a, c, d
    view = tmp_path / "views" / "v"
    built = refresh_full(str(view), str(features), as_of=D2)
    with pytest.raises(
        ValueError,
        match=r"date=2026-10-28 does not have the columns of the view .*\(columns the view lacks: "
        r"new_feature\).*Refresh the view in full",
    ):
        refresh_incremental(str(view), str(features), ds=D3)
    assert DeltaTable(str(view)).version() == built.version

    refresh_view(str(view), str(features), ds=D3, mode="full")
    rows = {r["user_id"]: r for r in rows_of(view)}
    assert list(next(iter(rows.values()))) == [*SCHEMA.names, "new_feature"]
    assert {user: row["new_feature"] for user, row in rows.items()} == {
        "a": 7.0,
        "b": None,
        "c": 8.0,
        "d": 9.0,
        "e": None,
        "n": None,
    }
    # from now on incremental refreshes go on with the new column: a new date, and a rerun of D3
    # without c, whose row of D1 (without the column) comes back with a null
    D4 = date(2026, 10, 29)
    write_partition(features, D4, {"a": 31.0, "f": 6.0})
    add_column(features, D4, "new_feature", [1.0, 2.0])
    assert refresh_incremental(str(view), str(features), ds=D4).inserted == 1
    rewrite_partition(features, D3, {"a": 21.0, "d": 24.0})
    add_column(features, D3, "new_feature", [7.0, 9.0])
    refresh_incremental(str(view), str(features), ds=D3)
    assert next(r for r in rows_of(view) if r["user_id"] == "c")["new_feature"] is None
    assert_equals_a_full_refresh(view, features, D4, tmp_path)


def test_a_partition_without_a_column_is_null_in_a_full_refresh_and_refused_incrementally(
    features: Path, tmp_path: Path
) -> None:
    D4 = date(2026, 10, 29)
    write_partition(features, D4, {"a": 31.0})
    path = features / f"date={D4}" / "part-00000.snappy.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["std_spend"]), path)
    view = tmp_path / "views" / "v"
    refresh_full(str(view), str(features), as_of=D3)
    with pytest.raises(
        ValueError, match=r"date=2026-10-29 does not have .*\(view columns it lacks: std_spend\)"
    ):
        refresh_incremental(str(view), str(features), ds=D4)
    refresh_full(str(view), str(features), as_of=D4)
    rows = {r["user_id"]: r for r in rows_of(view)}
    assert (rows["a"]["feature_date"], rows["a"]["std_spend"], rows["c"]["std_spend"]) == (D4, None, 23.0 / 3)


def test_a_column_whose_type_changed_is_refused_naming_the_partition(features: Path, tmp_path: Path) -> None:
    path = features / f"date={D3}" / "part-00000.snappy.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index("transaction_count")
    pq.write_table(table.set_column(index, "transaction_count", pa.array(["21", "23", "24"])), path)
    view = tmp_path / "views" / "v"
    with pytest.raises(
        ValueError,
        match=r"date=2026-10-28: column 'transaction_count' is string, but int64 in the older partitions",
    ):
        refresh_full(str(view), str(features), as_of=D3)
    refresh_full(str(view), str(features), as_of=D2)
    # A full refresh alone would be refused as above: the error asks for the older partitions first.
    with pytest.raises(
        ValueError,
        match=r"columns of another type: transaction_count \(string.*Rerun the feature job for the older "
        r"dates so that every partition has the new type .*then refresh the view in full",
    ):
        refresh_incremental(str(view), str(features), ds=D3)
    for day in (D1, D2):  # what the error says to do
        path = features / f"date={day}" / "part-00000.snappy.parquet"
        table = pq.read_table(path)
        index = table.schema.get_field_index("transaction_count")
        pq.write_table(table.set_column(index, "transaction_count", table[index].cast(pa.string())), path)
    refresh_full(str(view), str(features), as_of=D3)
    assert DeltaTable(str(view)).to_pyarrow_table().schema.field("transaction_count").type == pa.string()


def test_a_null_entity_is_refused_as_a_null(features: Path, tmp_path: Path) -> None:
    D4 = date(2026, 10, 29)
    write_partition(features, D4, {"a": 31.0, "z": 1.0})
    path = features / f"date={D4}" / "part-00000.snappy.parquet"
    pq.write_table(pq.read_table(path).set_column(0, "user_id", pa.array(["a", None])), path)
    view = tmp_path / "views" / "v"
    message = r"date=2026-10-29 has 1 row\(s\) with a null 'user_id'.*rerun it for this date"
    with pytest.raises(ValueError, match=message):
        refresh_full(str(view), str(features), as_of=D4)
    refresh_full(str(view), str(features), as_of=D3)
    with pytest.raises(ValueError, match=message):
        refresh_incremental(str(view), str(features), ds=D4)


def test_a_full_refresh_of_an_older_date_keeps_the_newer_rows(features: Path, tmp_path: Path) -> None:
    """A backfill run with view_refresh=full for an older date must not take the view back in time:
    the next incremental refreshes MERGE one date each and would never bring back the newer rows of
    the entities absent from those dates (d, e, n here)."""
    view = tmp_path / "views" / "v"
    for day in (D1, D2, D3):
        refresh_incremental(str(view), str(features), ds=day)
    backfill = refresh_view(str(view), str(features), ds=D1, mode="full")
    D4 = date(2026, 10, 29)
    write_partition(features, D4, {"a": 31.0})
    refresh_view(str(view), str(features), ds=D4)
    assert_equals_a_full_refresh(view, features, D4, tmp_path)
    assert backfill.as_of == D3.isoformat(), "rebuilt as of the view's newest feature date"


def test_a_full_refresh_fails_when_another_writer_only_added_files_meanwhile(
    features: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other engine's insert-only MERGE commits while the full refresh writes its files: the
    overwrite must fail Delta's conflict check (Airflow retries it), not keep the MERGE's file and
    so hold its entity twice."""
    import deltalake

    view = tmp_path / "views" / "v"
    refresh_full(str(view), str(features), as_of=D3)
    D4 = date(2026, 10, 29)
    write_partition(features, D4, {"f": 6.0})  # a new user only: the MERGE of D4 only inserts
    real_write = deltalake.write_deltalake

    def write_while_a_merge_commits(table_or_uri: str | DeltaTable, data: pa.Table, **kwargs: object) -> None:
        # write_deltalake reads the table's version before it writes its files, then commits
        opened = table_or_uri if isinstance(table_or_uri, DeltaTable) else DeltaTable(table_or_uri)
        monkeypatch.setattr(deltalake, "write_deltalake", real_write)
        assert refresh_incremental(str(view), str(features), ds=D4).inserted == 1
        return real_write(opened, data, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", write_while_a_merge_commits)
    with pytest.raises(ConcurrentCommitError, match=f"^{view}: another writer committed .*concurrent"):
        refresh_full(str(view), str(features), as_of=D4)
    users = [r["user_id"] for r in rows_of(view)]
    assert len(users) == len(set(users)) == len(WANT_AS_OF_D3) + 1
    refresh_full(str(view), str(features), as_of=D4)  # the retry
    assert_equals_a_full_refresh(view, features, D4, tmp_path)


def test_a_merge_refused_for_a_concurrent_commit_names_the_view_and_says_to_run_it_again(
    features: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two MERGEs of the view at once (the two engines' refreshes): the one that commits second is
    refused by Delta's conflict check. delta-rs's error named neither the table nor what to do, and
    advised Snapshot Isolation, under which it would commit over the other's rows."""
    from featurelake import materialized_views

    view = tmp_path / "views" / "v"
    refresh_full(str(view), str(features), as_of=D2)
    real_read = materialized_views.read_feature_partition

    def read_while_another_merge_commits(*args: object, **kwargs: object) -> pa.Table:
        monkeypatch.setattr(materialized_views, "read_feature_partition", real_read)
        assert refresh_incremental(str(view), str(features), ds=D3).mode == "incremental"
        return real_read(*args, **kwargs)

    monkeypatch.setattr(materialized_views, "read_feature_partition", read_while_another_merge_commits)
    with pytest.raises(
        ConcurrentCommitError,
        match=f"^{view}: another writer committed to the view while this refresh ran.*concurrent.*"
        r"nothing of it was committed\. Run the refresh again",
    ):
        refresh_incremental(str(view), str(features), ds=D3)
    assert DeltaTable(str(view)).version() == 1
    assert refresh_incremental(str(view), str(features), ds=D3).updated == 0  # the retry
    assert_equals_a_full_refresh(view, features, D3, tmp_path)


def test_a_refresh_vacuums_the_files_replaced_longer_ago_than_the_retention(
    features: Path, tmp_path: Path
) -> None:
    """Each refresh replaces the table's files; without a vacuum the directory keeps them all, a
    copy of the table per day. Files within the retention (7 days by default) are kept."""
    view = tmp_path / "views" / "v"
    for day in (D1, D2, D3):
        refresh_view(str(view), str(features), ds=day)
    assert DeltaTable(str(view), version=0).to_pyarrow_table().num_rows == 3, "time travel within it"
    DeltaTable(str(view)).alter.set_table_properties(
        {"delta.deletedFileRetentionDuration": "interval 0 hours"}
    )
    refresh_view(str(view), str(features), ds=D3, mode="full")
    on_disk = {path.name for path in view.glob("*.parquet")}
    assert on_disk == {Path(uri).name for uri in DeltaTable(str(view)).file_uris()}
    assert {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in rows_of(view)} == WANT_AS_OF_D3


def split_partition(features: Path, day: date, *, extra: tuple[str, list] | None = None) -> None:
    """The partition of `day` as two data files, as a writer with several tasks leaves it: the first
    row, then the others (with the column `extra`, which the first file lacks, when given)."""
    path = features / f"date={day.isoformat()}" / "part-00000.snappy.parquet"
    table = pq.read_table(path)
    rest = table.slice(1)
    if extra is not None:
        rest = rest.append_column(extra[0], pa.array(extra[1]))
    pq.write_table(table.slice(0, 1), path)
    pq.write_table(rest, path.with_name("part-00001.snappy.parquet"))


def test_a_partition_is_read_as_the_union_of_its_data_files_only(features: Path, tmp_path: Path) -> None:
    """The view reads a partition as the serving path does (offline_features.partition_dataset): the
    columns of all its data files, and no file that is not one (a writer's leftover `.tmp`, a copy
    in a subdirectory). pyarrow alone took the first file's columns and silently dropped a column
    only a later file had; it read a copy in a subdirectory, and failed on a non-Parquet file."""
    split_partition(features, D3, extra=("new_feature", [8.0, 9.0]))  # c, d; a's file lacks it
    (features / f"date={D3}" / "part-00002.snappy.parquet.tmp").write_bytes(b"not parquet")
    copy = features / f"date={D3}" / "backup"
    copy.mkdir()
    shutil.copy(features / f"date={D3}" / "part-00000.snappy.parquet", copy / "part-00000.snappy.parquet")
    view = tmp_path / "views" / "v"
    refresh_full(str(view), str(features), as_of=D2)
    with pytest.raises(
        ValueError, match=r"date=2026-10-28 does not have .*\(columns the view lacks: new_feature\)"
    ):
        refresh_incremental(str(view), str(features), ds=D3)
    refresh_full(str(view), str(features), as_of=D3)
    rows = {r["user_id"]: r for r in rows_of(view)}
    assert {user: (row["feature_date"], row["total_spend"]) for user, row in rows.items()} == WANT_AS_OF_D3
    assert {user: row["new_feature"] for user, row in rows.items() if user in "acd"} == {
        "a": None,
        "c": 8.0,
        "d": 9.0,
    }


@pytest.mark.parametrize("entity_column", ["user-id", "user.id", "UserId"])
def test_an_entity_column_that_is_no_plain_sql_name_is_merged_on(tmp_path: Path, entity_column: str) -> None:
    """The MERGE's condition names the entity column, quoted as delta-spark's refresh quotes it: the
    view was built in full, then every incremental refresh failed in delta-rs's SQL parser ("No
    field named t.user")."""
    features = tmp_path / "features" / "user_features"
    for day, users in ((D1, {"a": 1.0, "b": 2.0}), (D2, {"a": 11.0, "c": 3.0})):
        write_partition(features, day, users)
        path = features / f"date={day.isoformat()}" / "part-00000.snappy.parquet"
        pq.write_table(pq.read_table(path).rename_columns([entity_column, *SCHEMA.names[1:]]), path)
    view = tmp_path / "views" / "v"
    refresh_view(str(view), str(features), ds=D1, entity_column=entity_column)
    report = refresh_view(str(view), str(features), ds=D2, entity_column=entity_column)
    assert (report.mode, report.inserted, report.updated) == ("incremental", 1, 1)
    rows = DeltaTable(str(view)).to_pyarrow_table().sort_by(entity_column).to_pylist()
    assert [(r[entity_column], r["total_spend"]) for r in rows] == [("a", 11.0), ("b", 2.0), ("c", 3.0)]


def test_partitions_with_nanosecond_timestamps_are_merged_as_a_full_refresh_stores_them(
    features: Path, tmp_path: Path
) -> None:
    """A writer such as pandas or Dask stores timestamps in nanoseconds. Delta holds microseconds:
    a full refresh stores them so (truncated), but every incremental refresh then refused the
    partition as "of another type" and said to refresh in full, which changed nothing."""
    for path in features.glob("date=*/*.parquet"):
        table = pq.read_table(path)
        index = table.schema.get_field_index("last_transaction_ts")
        nanos = pc.add(
            table["last_transaction_ts"].cast(pa.timestamp("ns", tz="UTC")), pa.scalar(789, pa.duration("ns"))
        )
        pq.write_table(table.set_column(index, "last_transaction_ts", nanos), path)
    view = tmp_path / "views" / "v"
    refresh_view(str(view), str(features), ds=D2, mode="full")
    assert refresh_view(str(view), str(features), ds=D3).mode == "incremental"
    assert_equals_a_full_refresh(view, features, D3, tmp_path)
    timestamps = {r["user_id"]: r["last_transaction_ts"] for r in rows_of(view)}
    assert timestamps["d"] == datetime(2026, 10, 28, 12, tzinfo=UTC), "truncated to microseconds"


def test_rows_dated_otherwise_than_their_partition_are_refused(features: Path, tmp_path: Path) -> None:
    """A copy of D1's partition under date=D3 (a hand-made backfill, or a job that dates its rows
    wrongly): a full refresh took its rows as D3's, being the newest partition, while a MERGE
    compares feature dates and kept a's row of D2, so the two refreshes gave two tables."""
    shutil.rmtree(features / f"date={D3}")
    shutil.copytree(features / f"date={D1}", features / f"date={D3}")
    view = tmp_path / "views" / "v"
    for day in (D1, D2):
        refresh_incremental(str(view), str(features), ds=day)
    before = rows_of(view)
    message = (
        r"date=2026-10-28 has 3 row\(s\) whose 'feature_date' is not 2026-10-28 \(2026-10-26\).*"
        r"Rerun the feature job for 2026-10-28"
    )
    with pytest.raises(ValueError, match=message):
        refresh_incremental(str(view), str(features), ds=D3)
    with pytest.raises(ValueError, match=message):
        refresh_full(str(tmp_path / "views" / "full"), str(features), as_of=D3)
    assert rows_of(view) == before


def test_a_first_build_fails_when_another_writer_created_the_table_meanwhile(
    features: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two first builds of a view (the daily run's and a backfill's on the other engine): the table
    does not exist when one opens it, and the other creates it, as of a later date, while the first
    reads the partitions. The first overwrote it as of its older date (a view back in time, with d,
    e and n lost, which no later MERGE brings back); it must fail, as against any other commit, and
    its retry keep the newer rows."""
    from featurelake import materialized_views

    view = tmp_path / "views" / "v"
    real_read = materialized_views.latest_per_entity

    def read_while_another_writer_builds(*args: object, **kwargs: object) -> tuple[pa.Table, int]:
        monkeypatch.setattr(materialized_views, "latest_per_entity", real_read)
        assert refresh_incremental(str(view), str(features), ds=D3).mode == "full"
        return real_read(*args, **kwargs)

    monkeypatch.setattr(materialized_views, "latest_per_entity", read_while_another_writer_builds)
    with pytest.raises(DeltaError, match="already exists"):
        refresh_view(str(view), str(features), ds=D1, mode="full")
    assert {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in rows_of(view)} == WANT_AS_OF_D3
    assert refresh_view(str(view), str(features), ds=D1, mode="full").as_of == D3.isoformat()  # the retry
    assert {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in rows_of(view)} == WANT_AS_OF_D3


def test_a_rerun_of_the_same_run_with_view_refresh_full_rebuilds_the_view(
    features: Path, tmp_path: Path
) -> None:
    """The docs' repair: rerun the date's run with view_refresh=full (a backfill with
    --reprocess-behavior completed keeps the run, so its task instance). Its refresh found the run's
    own incremental commit, newest and with the partitions unchanged, and reported it as a retry's:
    no rebuild, and a report of an incremental refresh for a full one."""
    view = tmp_path / "views" / "v"
    refresh_view(str(view), str(features), ds=D2, run_key="daily/2026-10-27")
    merged = refresh_view(str(view), str(features), ds=D3, run_key="daily/2026-10-28")
    assert merged.mode == "incremental"
    rebuilt = refresh_view(str(view), str(features), ds=D3, mode="full", run_key="daily/2026-10-28")
    assert (rebuilt.mode, rebuilt.version) == ("full", merged.version + 1)
    assert DeltaTable(str(view)).history(1)[0]["operation"] == "WRITE"
    retried = refresh_view(str(view), str(features), ds=D3, mode="full", run_key="daily/2026-10-28")
    assert retried == rebuilt, "a retry of the full refresh reports its commit"
    assert {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in rows_of(view)} == WANT_AS_OF_D3


@pytest.mark.parametrize(
    "stored_as",
    [
        pytest.param(pa.timestamp("ns"), id="pandas-datetime64"),
        pytest.param(pa.timestamp("us", tz="UTC"), id="timestamp-utc"),
        pytest.param(pa.string(), id="iso-string"),
    ],
)
def test_a_feature_date_stored_as_a_timestamp_or_a_string_is_a_date_in_the_view(
    features: Path, tmp_path: Path, stored_as: pa.DataType
) -> None:
    """A writer such as pandas stores a date column as datetime64 (or a job writes the ISO string).
    The refreshes checked such rows against their partition's date (as dates), then kept the type:
    a view built so failed later with no path named, a string one at the first MERGE ("Function
    'equal' has no kernel matching input types (string, date32[day])"), a timestamp one at any full
    refresh, the docs' repair ("can't compare datetime.datetime to datetime.date")."""
    for path in features.glob("date=*/*.parquet"):
        table = pq.read_table(path)
        dates = table["feature_date"]
        index = table.schema.get_field_index("feature_date")
        stored = dates.cast(pa.string()) if pa.types.is_string(stored_as) else dates.cast(stored_as)
        pq.write_table(table.set_column(index, "feature_date", stored), path)
    view = tmp_path / "views" / "v"
    for day in (D1, D2, D3):
        refresh_view(str(view), str(features), ds=day)
    assert refresh_view(str(view), str(features), ds=D2, mode="full").as_of == D3.isoformat()
    assert pa.schema(DeltaTable(str(view)).schema().to_arrow()).field("feature_date").type == pa.date32()
    assert {r["user_id"]: (r["feature_date"], r["total_spend"]) for r in rows_of(view)} == WANT_AS_OF_D3
    rewrite_partition(features, D3, {"a": 21.0})  # a rerun of D3 without c and d: c back to D1
    refresh_view(str(view), str(features), ds=D3)
    assert_equals_a_full_refresh(view, features, D3, tmp_path)


def test_a_column_renamed_only_in_case_is_refused_naming_the_partition(
    features: Path, tmp_path: Path
) -> None:
    """The feature job renames total_spend to Total_Spend from D3 on. A full refresh took both as two
    columns, which a Delta table cannot hold (its names are case-insensitive), and failed in
    delta-rs with "Schema error: Duplicate field name (case-insensitive): 'Total_Spend'", naming
    no partition."""
    path = features / f"date={D3}" / "part-00000.snappy.parquet"
    table = pq.read_table(path)
    pq.write_table(
        table.rename_columns(["Total_Spend" if c == "total_spend" else c for c in table.column_names]), path
    )
    view = tmp_path / "views" / "v"
    with pytest.raises(
        ValueError,
        match=r"date=2026-10-28: column 'Total_Spend' differs only in case from 'total_spend' of the older "
        r"partitions.*Rerun the feature job",
    ):
        refresh_full(str(view), str(features), as_of=D3)
    assert not view.exists()


def test_a_column_null_on_every_row_of_the_first_dates_takes_its_type_later(
    features: Path, tmp_path: Path
) -> None:
    """A writer such as pandas stores a column that is None on every row as Arrow's null type (no
    user of D1 has a category group, say). The view built from it holds the column with no type
    (Delta's `void`), and the next incremental refresh, whose partition has the column as strings,
    was refused as a changed feature definition, though none changed. It rebuilds the view in full
    (`test_a_backfill_that_types_a_column_with_no_type_keeps_the_newer_rows_values` says why)."""
    path = features / f"date={D1}" / "part-00000.snappy.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index("top_category_group")
    pq.write_table(table.set_column(index, "top_category_group", pa.nulls(table.num_rows)), path)
    view = tmp_path / "views" / "v"
    refresh_view(str(view), str(features), ds=D1)
    modes = [refresh_view(str(view), str(features), ds=day).mode for day in (D2, D3)]
    assert modes == ["full", "incremental"], "the view is rebuilt once, when the column gets a type"
    assert_equals_a_full_refresh(view, features, D3, tmp_path)
    assert (
        pa.schema(DeltaTable(str(view)).schema().to_arrow()).field("top_category_group").type == pa.string()
    )
    assert {r["user_id"]: r["top_category_group"] for r in rows_of(view) if r["user_id"] in "ab"} == {
        "a": "food",
        "b": None,
    }


def test_a_backfill_that_types_a_column_with_no_type_keeps_the_newer_rows_values(tmp_path: Path) -> None:
    """The view's category column has no type yet (D1 and D2 had none); a rerun of D1 writes it.
    a's row of D2 is newer and stays, null in that column; a MERGE that evolved the view's schema
    (delta-rs's merge_schema) gave it D1's value, on a row it did not update."""
    features = tmp_path / "features" / "user_features"
    for day, users in ((D1, {"a": 1.0, "b": 2.0}), (D2, {"a": 11.0})):
        write_partition(features, day, users)
        path = features / f"date={day.isoformat()}" / "part-00000.snappy.parquet"
        table = pq.read_table(path)
        index = table.schema.get_field_index("top_category_group")
        pq.write_table(table.set_column(index, "top_category_group", pa.nulls(table.num_rows)), path)
    view = tmp_path / "views" / "v"
    refresh_view(str(view), str(features), ds=D2)
    rewrite_partition(features, D1, {"a": 1.0, "b": 2.0})  # now with "food"
    refresh_view(str(view), str(features), ds=D1)
    assert {r["user_id"]: (r["feature_date"], r["top_category_group"]) for r in rows_of(view)} == {
        "a": (D2, None),
        "b": (D1, "food"),
    }
    assert_equals_a_full_refresh(view, features, D2, tmp_path)


def _with_required_column(path: Path, column: str) -> None:
    """The partition file rewritten with `column` NOT NULL, as Spark writes a column it knows has no
    null (a literal, a count)."""
    table = pq.read_table(path)
    index = table.schema.get_field_index(column)
    pq.write_table(table.cast(table.schema.set(index, table.schema.field(index).with_nullable(False))), path)


def test_a_column_not_null_in_older_partitions_takes_a_later_null_in_both_refreshes(
    features: Path, tmp_path: Path
) -> None:
    """D1's and D2's `total_spend` NOT NULL, D3's holding a null (a changed definition, another writer):
    delta-rs refused every refresh as of D3, a full rebuild into an empty directory too ("Column
    'total_spend' is declared as non-nullable but contains null values")."""
    for day in (D1, D2):
        _with_required_column(features / f"date={day}" / "part-00000.snappy.parquet", "total_spend")
    path = features / f"date={D3}" / "part-00000.snappy.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index("total_spend")
    pq.write_table(table.set_column(index, "total_spend", pa.array([None, 1.5, 2.5], pa.float64())), path)

    incremental, full = tmp_path / "views" / "incremental", tmp_path / "views" / "full"
    refresh_full(str(incremental), str(features), as_of=D2)
    refresh_incremental(str(incremental), str(features), ds=D3)
    refresh_full(str(full), str(features), as_of=D3)
    got = [DeltaTable(str(view)).to_pyarrow_table().sort_by("user_id") for view in (incremental, full)]
    assert got[0].to_pylist() == got[1].to_pylist()
    assert None in got[1]["total_spend"].to_pylist()
    assert all(field.nullable for field in got[0].schema)


def test_a_view_with_a_not_null_column_refuses_a_null_incrementally_saying_to_refresh_in_full(
    features: Path, tmp_path: Path
) -> None:
    """A view built before its columns were nullable may hold a NOT NULL column: the incremental
    refresh names the partition and the column, and the full refresh it asks for takes the null."""
    from deltalake import write_deltalake

    view = tmp_path / "views" / "v"
    refresh_full(str(view), str(features), as_of=D2)
    held = DeltaTable(str(view)).to_pyarrow_table()
    index = held.schema.get_field_index("total_spend")
    strict = held.schema.set(index, held.schema.field(index).with_nullable(False))
    write_deltalake(str(view), held.cast(strict), mode="overwrite", schema_mode="overwrite")
    path = features / f"date={D3}" / "part-00000.snappy.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index("total_spend")
    pq.write_table(table.set_column(index, "total_spend", pa.array([None, 1.5, 2.5], pa.float64())), path)

    with pytest.raises(
        ValueError,
        match=r"date=2026-10-28 does not have the columns of the view .*total_spend \(holds nulls, the view's "
        r"column is NOT NULL\).*view_refresh=full",
    ):
        refresh_incremental(str(view), str(features), ds=D3)
    refresh_full(str(view), str(features), as_of=D3)
    assert None in DeltaTable(str(view)).to_pyarrow_table()["total_spend"].to_pylist()


def _write_naive_timestamps(root: Path, day: date, users: list[str], *, files: int) -> None:
    """A partition as pandas writes it: a naive datetime64 timestamp, split in `files` files."""
    import pandas as pd

    partition = root / f"date={day}"
    partition.mkdir(parents=True)
    frame = pd.DataFrame(
        {
            "user_id": users,
            "feature_date": [day] * len(users),
            "total_spend": [float(len(user)) for user in users],
            "last_transaction_ts": pd.to_datetime([f"{day} 12:00"] * len(users)),
        }
    )
    for number in range(files):
        frame.iloc[number::files].to_parquet(partition / f"part-{number}.parquet", index=False)


def test_naive_timestamps_in_one_file_or_several_are_one_column_type(tmp_path: Path) -> None:
    """A partition of several files reads a naive timestamp as UTC, one of one file as it is: the
    view then refused the next date in both modes, as a column of another type, saying to rerun the
    feature job, which changed nothing."""
    features = tmp_path / "features"
    _write_naive_timestamps(features, D1, ["a", "b"], files=1)
    _write_naive_timestamps(features, D2, ["a", "cc"], files=2)
    incremental, full = tmp_path / "views" / "incremental", tmp_path / "views" / "full"
    refresh_view(str(incremental), str(features), ds=D1)
    assert refresh_view(str(incremental), str(features), ds=D2, mode="incremental").mode == "incremental"
    refresh_view(str(full), str(features), ds=D2, mode="full")
    assert rows_of(incremental) == rows_of(full)
    noon = [row["last_transaction_ts"] for row in rows_of(full)]
    assert [(t.date(), t.hour, t.utcoffset()) for t in noon] == [
        (D2, 12, None),
        (D1, 12, None),
        (D2, 12, None),
    ]


@pytest.mark.parametrize("mode", ["incremental", "full"])
def test_a_dictionary_encoded_entity_column_is_read_as_its_values(
    features: Path, tmp_path: Path, mode: str
) -> None:
    """A partition written from pandas with a `category` user_id stores it as a dictionary, which the
    serving path reads as text. The view failed every refresh with Arrow's bare "Function
    'count_distinct' has no kernel matching input types (dictionary<...>)"."""
    reference = tmp_path / "views" / "reference"
    refresh_full(str(reference), str(features), as_of=D3)
    for day in (D1, D2, D3):
        path = features / f"date={day.isoformat()}" / "part-00000.snappy.parquet"
        table = pq.read_table(path)
        index = table.schema.get_field_index("user_id")
        pq.write_table(table.set_column(index, "user_id", table["user_id"].dictionary_encode()), path)
    assert pa.types.is_dictionary(pq.read_table(path).schema.field("user_id").type)
    view = tmp_path / "views" / "v"
    refresh_full(str(view), str(features), as_of=D2)
    assert refresh_view(str(view), str(features), ds=D3, mode=mode).mode == mode
    assert rows_of(view) == rows_of(reference)
