"""replace_partition: a partition replaced as a whole, on real files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake.arrow_partitions import remove_leftovers, replace_partition, swap_in

DAY = date(2026, 10, 28)


def test_a_partition_is_replaced_whole_and_a_killed_runs_leftovers_go(tmp_path: Path) -> None:
    first = replace_partition(pa.table({"x": [1, 2]}), str(tmp_path), DAY)
    (first / "stale.parquet").write_bytes(b"from a run before")
    killed = tmp_path / f".{first.name}.0123abcd"  # a run killed while writing
    killed.mkdir()

    second = replace_partition(pa.table({"x": [3]}), f"file://{tmp_path}", DAY)

    assert second == first
    assert [p.name for p in second.iterdir()] == ["part-00000.parquet"]
    assert pq.read_table(second)["x"].to_pylist() == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]

    empty = replace_partition(pa.table({"x": pa.array([], pa.int64())}), str(tmp_path), DAY)
    assert empty.is_dir() and not any(empty.iterdir())


def test_a_relative_dataset_path_is_replaced_in_place(tmp_path: Path, monkeypatch) -> None:
    """`replace_partition(table, ".", day)` failed in `hidden_sibling`: the partition's path had no `/`."""
    monkeypatch.chdir(tmp_path)
    written = replace_partition(pa.table({"x": [1]}), ".", DAY)
    assert (tmp_path / written).resolve() == tmp_path / f"date={DAY.isoformat()}"
    assert pq.read_table(tmp_path / written)["x"].to_pylist() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"date={DAY.isoformat()}"]


@pytest.mark.parametrize("root", ["memory://lake[1]", "memory://team?a", "memory://all*"])
def test_a_glob_character_off_the_local_filesystem_is_refused_before_anything_moves(root: str) -> None:
    """fsspec (here its in-memory filesystem, which shares s3fs's generic code) reads [, * and ? in
    a recursive mv or rm as a glob: swap_in moved a look-alike directory's files (`lake1/out` for
    `lake[1]/out`) and remove_leftovers deleted them."""
    import fsspec

    memory = fsspec.filesystem("memory")
    neighbour = "/lake1/out/keep.parquet"
    memory.pipe(neighbour, b"another dataset's file")
    memory.pipe(f"{root.removeprefix('memory:/')}/.out.new/part-0.parquet", b"new")
    before = sorted(memory.find("/"))
    try:
        with pytest.raises(ValueError, match=r"which fsspec reads as a glob pattern"):
            swap_in(f"{root}/.out.new", f"{root}/out")
        with pytest.raises(ValueError, match=r"Choose a lake location and dataset names without"):
            remove_leftovers(f"{root}/out")
        assert sorted(memory.find("/")) == before
    finally:
        memory.rm("/", recursive=True)


def test_swap_in_off_the_local_filesystem_renames_twice() -> None:
    """The path of a filesystem without an atomic exchange (fsspec's in-memory one): the previous
    output is set aside, the new one takes its place, and the previous one is deleted."""
    import fsspec

    memory = fsspec.filesystem("memory")
    try:
        memory.pipe("/lake/out/old.parquet", b"old")
        memory.pipe("/lake/.out.new/new.parquet", b"new")
        swap_in("memory://lake/.out.new", "memory://lake/out")
        assert sorted(memory.find("/lake")) == ["/lake/out/new.parquet"]
    finally:
        memory.rm("/", recursive=True)


def test_the_dask_jobs_staging_cleanup_refuses_a_glob_character_too() -> None:
    """The merchant-stats job removes its staging directory before it swaps anything: that delete
    removed a look-alike lake's staging (`lake1` for `lake[1]`) before any check ran."""
    import fsspec

    from featurelake.merchant_stats import remove_tree

    memory = fsspec.filesystem("memory")
    try:
        memory.pipe("/lake1/_staging/merchant_stats/date=2026-10-28/b0.parquet", b"another lake's")
        memory.pipe("/lake[1]/_staging/merchant_stats/date=2026-10-28/b0.parquet", b"this lake's")
        before = sorted(memory.find("/"))
        with pytest.raises(ValueError, match=r"which fsspec reads as a glob pattern"):
            remove_tree("memory://lake[1]/_staging/merchant_stats/date=2026-10-28")
        assert sorted(memory.find("/")) == before
    finally:
        memory.rm("/", recursive=True)
