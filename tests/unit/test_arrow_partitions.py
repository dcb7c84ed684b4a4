"""replace_partition: a partition replaced as a whole, on real files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from featurelake.arrow_partitions import replace_partition

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
