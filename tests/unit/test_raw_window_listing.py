"""How the Dask merchant stats job lists its window of raw partitions (`list_raw_window`), on the
local filesystem through fsspec, with the filesystem's requests counted: an object store bills and
waits for each one; and the error both jobs give for what breaks the contract."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem

from featurelake.raw_contract_arrow import list_raw_window, raw_contract_error

DAYS = ["2026-09-01", "2026-09-02", "2026-09-03", "2026-09-04"]


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """{(method, path): calls} of the local filesystem's listing and metadata requests made by the
    code under test (not those a method makes itself: the local `ls` calls `info`)."""
    counted: Counter = Counter()
    inside: list[str] = []
    for method in ("ls", "info", "isdir", "isfile", "exists", "find", "walk", "glob"):
        original = getattr(LocalFileSystem, method)

        def counting(self, path, *args, _original=original, _method=method, **kwargs):
            if not inside:
                counted[(_method, str(path).rstrip("/"))] += 1
            inside.append(_method)
            try:
                return _original(self, path, *args, **kwargs)
            finally:
                inside.pop()

        monkeypatch.setattr(LocalFileSystem, method, counting)
    return counted


def test_each_window_partition_is_one_request(tmp_path: Path, requests: Counter) -> None:
    root = tmp_path / "raw" / "transactions"
    for day in DAYS[:3]:  # the last date of the window has no partition
        (root / f"date={day}").mkdir(parents=True)
        (root / f"date={day}" / "part-0.parquet").write_bytes(b"x" * 10)
    (root / "date=2026-08-01").mkdir()  # outside the window

    window = list_raw_window(str(root), DAYS)

    assert [(file.path, file.day) for file in window.files] == [
        (f"{root}/date={day}/part-0.parquet", day) for day in DAYS[:3]
    ]
    partitions = {(method, path) for method, path in requests if path != str(root)}
    assert partitions == {("ls", f"{root}/date={day}") for day in DAYS}
    assert all(calls == 1 for calls in requests.values()), requests


def test_a_file_named_as_a_partition_is_named_as_a_stray(tmp_path: Path) -> None:
    # The Spark job refuses it too (user_features_run.raw_layout_problems): its rows have no date.
    root = tmp_path / "raw" / "transactions"
    (root / f"date={DAYS[0]}").mkdir(parents=True)
    (root / f"date={DAYS[0]}" / "part-0.parquet").write_bytes(b"x")
    (root / f"date={DAYS[1]}").write_bytes(b"rows")
    (root / f"date={DAYS[2]}").mkdir()
    (root / f"date={DAYS[2]}" / f"date={DAYS[2]}").write_bytes(b"rows")  # a file of that name inside

    window = list_raw_window(str(root), DAYS)

    assert window.stray == [
        f"{root}/date={DAYS[1]} is a file where a partition directory belongs, which no reader reads",
        f"{root}/date={DAYS[2]}/date={DAYS[2]} is not a .parquet file, which no reader reads",
    ]
    assert [file.path for file in window.files] == [f"{root}/date={DAYS[0]}/part-0.parquet"]


@pytest.mark.parametrize("form", ["relative", "file-uri", "memory-uri"])
def test_a_file_named_as_a_partition_is_found_under_every_form_of_root(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The filesystem gives names in its own form (absolute, no scheme): the root's form must not
    # hide the file, nor turn a partition holding one file into a stray.
    if form == "memory-uri":
        import fsspec

        filesystem = fsspec.filesystem("memory")
        raw = f"memory://{tmp_path.name}/raw/transactions"
        filesystem.pipe(f"{raw}/date={DAYS[0]}/part-0.parquet", b"x")
        filesystem.pipe(f"{raw}/date={DAYS[1]}", b"rows")
        shown = raw
    else:
        root = tmp_path / "raw" / "transactions"
        (root / f"date={DAYS[0]}").mkdir(parents=True)
        (root / f"date={DAYS[0]}" / "part-0.parquet").write_bytes(b"x")
        (root / f"date={DAYS[1]}").write_bytes(b"rows")
        monkeypatch.chdir(tmp_path)
        raw = "raw/transactions" if form == "relative" else f"file://{root}"
        shown = raw

    window = list_raw_window(raw, DAYS)

    assert window.stray == [
        f"{shown}/date={DAYS[1]} is a file where a partition directory belongs, which no reader reads"
    ]
    assert [file.path for file in window.files] == [f"{shown}/date={DAYS[0]}/part-0.parquet"]


def test_a_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="raw/transactions"):
        list_raw_window(str(tmp_path / "raw" / "transactions"), DAYS)


def test_the_contract_error_names_twenty_problems_and_counts_the_rest() -> None:
    problems = [f"lake/date=2026-09-01/part-{n:02d}.parquet: it is empty (0 bytes)" for n in range(25)]
    message = str(raw_contract_error(problems, not_written="the features of 2026-09-01 were not written"))
    assert message.startswith(
        "raw transactions break the data contract (docs/data-contract.md), so the features of "
        "2026-09-01 were not written: lake/date=2026-09-01/part-00.parquet: it is empty (0 bytes); "
    )
    assert "part-19.parquet: it is empty (0 bytes) (and 5 more). Re-land those partitions" in message
    assert "part-20" not in message
    assert "(and" not in str(raw_contract_error(problems[:20], not_written="x"))
