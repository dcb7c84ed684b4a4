"""The compute layer's read of a few ids from a large real Parquet partition whose entity column is
not text: only the rows of those ids are read into records, as for a text column."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake import offline_features
from featurelake.feature_records import FeatureRecord

pytestmark = pytest.mark.integration

ROWS = 50_000


def rows_made_into_records(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows of each batch that becomes records (a spy on the real conversion)."""
    seen: list[int] = []
    convert = offline_features.records_from_batches

    def counted(batches, **kwargs):
        def each(batches):
            for batch in batches:
                seen.append(batch.num_rows)
                yield batch

        return convert(each(batches), **kwargs)

    monkeypatch.setattr(offline_features, "records_from_batches", counted)
    return seen


@pytest.mark.parametrize(
    ("ids", "asked", "found"),
    [
        pytest.param(
            pa.array(range(ROWS), pa.int64()), ["7", "49999", "x", "7.0"], ["7", "49999"], id="int64"
        ),
        pytest.param(pa.array(range(ROWS), pa.int32()), ["12", "-1"], ["12"], id="int32"),
        pytest.param(
            pa.array([i + 0.5 for i in range(ROWS)], pa.float64()), ["7.5", "8", "nan"], ["7.5"], id="float"
        ),
    ],
)
def test_a_few_ids_of_a_large_partition_read_only_their_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ids: pa.Array, asked: list[str], found: list[str]
) -> None:
    """Before, a column of ints or floats was filtered on validity alone: every row of the partition
    became a record in Python (50,000 here; a serving miss on a partition of millions of users
    took as long as a publish), then all but the asked ones were dropped."""
    partition = tmp_path / "date=2030-01-01"
    partition.mkdir()
    values = [float(i) for i in range(ROWS)]
    pq.write_table(
        pa.table({"user_id": ids, "v": values}), partition / "part-0.parquet", row_group_size=10_000
    )
    seen = rows_made_into_records(monkeypatch)
    got = offline_features.read_offline_features(str(tmp_path), asked, as_of=date(2030, 1, 1))
    expected_rows = {str(entity): i for i, entity in enumerate(ids.to_pylist())}
    assert got == {
        entity: FeatureRecord("2030-01-01", {"v": float(expected_rows[entity])}) for entity in found
    }
    assert sum(seen) <= len(asked), f"{sum(seen)} rows read into records for {len(asked)} ids"


def test_signed_zeros_and_nan_ids_are_found_as_their_text(tmp_path: Path) -> None:
    """A row group of -0.0 and 0.0 has the statistics min -0.0, max 0.0, from which pyarrow's scan
    filter wrongly concludes that no row is 0.0: the rows are picked after the scan instead."""
    partition = tmp_path / "date=2030-01-01"
    partition.mkdir()
    table = pa.table({"user_id": [-0.0, 0.0, float("nan"), 2.5], "v": [1.0, 2.0, 3.0, 4.0]})
    pq.write_table(table, partition / "part-0.parquet")
    got = offline_features.read_offline_features(
        str(tmp_path), ["0.0", "-0.0", "nan", "2.5"], as_of=date(2030, 1, 1)
    )
    assert got == {
        "-0.0": FeatureRecord("2030-01-01", {"v": 1.0}),
        "0.0": FeatureRecord("2030-01-01", {"v": 2.0}),
        "2.5": FeatureRecord("2030-01-01", {"v": 4.0}),
    }


@pytest.mark.parametrize(
    ("column", "asked", "found"),
    [
        # out of the column's range: no row holds it, and it is no error
        pytest.param(
            pa.array([-128, 0, 127], pa.int8()), ["127", "128", "-129", "-128"], ["-128", "127"], id="int8"
        ),
        pytest.param(pa.array([0, 255], pa.uint8()), ["255", "256", "-1", "0"], ["0", "255"], id="uint8"),
        # a float32 row is found by the text of its float64 value, as its records are keyed
        pytest.param(
            pa.array([0.5, 0.1], pa.float32()),
            ["0.5", "0.10000000149011612", "0.1"],
            ["0.10000000149011612", "0.5"],
            id="float32",
        ),
    ],
)
def test_ids_are_matched_in_the_columns_own_type(
    tmp_path: Path, column: pa.Array, asked: list[str], found: list[str]
) -> None:
    partition = tmp_path / "date=2030-01-01"
    partition.mkdir()
    pq.write_table(pa.table({"user_id": column, "v": [1.0] * len(column)}), partition / "part-0.parquet")

    records = offline_features.read_offline_features(str(tmp_path), asked, as_of=date(2030, 1, 1))

    assert sorted(records) == found


def test_ids_and_features_stored_as_string_views_are_read_by_id_and_checked_for_empty_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow writes a string view column's type into the file, and reads it back as a view. A
    read by id failed (Arrow has no filter kernel for views, nor can it prune row groups by their
    statistics), and so did the check for empty ids of a partition with a plain-string file too.
    Now views read as large strings, and the rows of the asked ids are picked after the scan."""
    root = tmp_path / "features"
    partition = root / "date=2030-01-01"
    partition.mkdir(parents=True)
    views = pa.table(
        {
            "user_id": pa.array([f"u{i}" for i in range(ROWS)], pa.string_view()),
            "tier": pa.array(["a"] * ROWS, pa.string_view()),
        }
    )
    pq.write_table(views, partition / "part-0.parquet", row_group_size=10_000)
    assert pq.read_schema(partition / "part-0.parquet").field("user_id").type == pa.string_view()
    seen = rows_made_into_records(monkeypatch)

    records = offline_features.read_offline_features(
        str(root), ["u7", "u49999", "nobody"], as_of=date(2030, 1, 2)
    )

    assert records == {
        "u7": FeatureRecord(feature_date="2030-01-01", values={"tier": "a"}),
        "u49999": FeatureRecord(feature_date="2030-01-01", values={"tier": "a"}),
    }
    assert sum(seen) == 2
    published = dict(offline_features.partition_records(str(partition), feature_date=date(2030, 1, 1)))
    assert len(published) == ROWS and published["u3"].values == {"tier": "a"}

    # A second file of plain strings, with an empty id: the publish names it, whatever the types.
    pq.write_table(pa.table({"user_id": ["u-x", ""], "tier": ["b", "b"]}), partition / "part-1.parquet")
    with pytest.raises(ValueError, match=r"date=2030-01-01: 1 feature rows have an empty 'user_id'"):
        next(offline_features.partition_records(str(partition), feature_date=date(2030, 1, 1)))
    assert offline_features.read_offline_features(str(root), ["u-x"], as_of=date(2030, 1, 1)) == {
        "u-x": FeatureRecord(feature_date="2030-01-01", values={"tier": "b"})
    }


def test_a_read_lists_the_partition_it_reads_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Once before the read and once after, to check that no writer swapped it meanwhile; the read
    # itself takes its files from the first listing. It listed the partition a third time, each a
    # request on an object store.
    import pyarrow.fs as pafs

    partition = tmp_path / "features" / "date=2026-10-28"
    partition.mkdir(parents=True)
    for n in range(3):
        pq.write_table(pa.table({"user_id": [f"u{n}"], "spend": [float(n)]}), partition / f"part-{n}.parquet")
    (partition / "_SUCCESS").write_bytes(b"")
    listed: list[str] = []

    class CountedListings(pafs.LocalFileSystem):
        def get_file_info(self, paths_or_selector):
            if isinstance(paths_or_selector, pafs.FileSelector):
                listed.append(paths_or_selector.base_dir)
            return super().get_file_info(paths_or_selector)

    monkeypatch.setattr(offline_features, "arrow_filesystem", lambda location: (CountedListings(), location))

    records = offline_features.read_offline_features(
        str(tmp_path / "features"), ["u0", "u2", "u9"], as_of=date(2026, 10, 30)
    )

    assert records == {
        "u0": FeatureRecord("2026-10-28", {"spend": 0.0}),
        "u2": FeatureRecord("2026-10-28", {"spend": 2.0}),
    }
    assert listed.count(str(partition)) == 2, listed
    assert listed.count(str(tmp_path / "features")) == 1, listed


def test_a_read_of_a_partition_of_several_files_reads_each_footer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The footers were read twice: to unify the files' schemas, and again to see whether a file
    # stores string views. Each open is a request on an object store. Counted on an fsspec local
    # filesystem behind pyarrow, as an object store's would be.
    from collections import Counter

    import pyarrow.fs as pafs
    from fsspec.implementations.local import LocalFileSystem

    partition = tmp_path / "features" / "date=2026-10-28"
    partition.mkdir(parents=True)
    for n in range(3):
        pq.write_table(pa.table({"user_id": [f"u{n}"], "spend": [float(n)]}), partition / f"part-{n}.parquet")
    opens: Counter[str] = Counter()

    class CountedOpens(LocalFileSystem):
        def _open(self, path, mode="rb", **kwargs):
            opens[Path(path).name] += 1
            return super()._open(path, mode=mode, **kwargs)

    def counted(location: str):
        return pafs.PyFileSystem(pafs.FSSpecHandler(CountedOpens(skip_instance_cache=True))), location

    monkeypatch.setattr(offline_features, "arrow_filesystem", counted)

    records = offline_features.read_offline_features(
        str(tmp_path / "features"), ["u0", "u2"], as_of=date(2026, 10, 28)
    )

    assert records == {
        "u0": FeatureRecord("2026-10-28", {"spend": 0.0}),
        "u2": FeatureRecord("2026-10-28", {"spend": 2.0}),
    }
    # Each file's footer once, each file once by the scan, and the first once more, when pyarrow
    # infers the dataset's schema from it: 9 before.
    assert sum(opens.values()) <= 7, opens


@pytest.mark.parametrize("directory", ["pct%20lake", "hash#lake", "q?lake", "my lake"])
def test_a_file_uri_is_read_where_the_writers_wrote(tmp_path: Path, directory: str) -> None:
    """pyarrow's own URI parsing decoded `%20` and cut the path at `#` or `?`: the records a
    writer had put under the literal path were not found (no error), and a space was refused."""
    from featurelake.arrow_partitions import replace_partition
    from featurelake.lake import LakeLayout

    root = tmp_path / directory
    layout = LakeLayout(f"file://{root}")
    table = pa.table({"user_id": ["u1", "u2"], "total_spend": [3.5, 4.0]})
    replace_partition(table, layout.user_features, date(2030, 1, 2))
    assert (root / "features" / "user_features" / "date=2030-01-02").is_dir()
    assert offline_features.feature_dates(layout.user_features) == [date(2030, 1, 2)]
    records = offline_features.read_offline_features(layout.user_features, ["u2"], as_of=date(2030, 1, 5))
    assert list(records) == ["u2"]
    assert records["u2"].feature_date == "2030-01-02"
    assert records["u2"].values["total_spend"] == 4.0
