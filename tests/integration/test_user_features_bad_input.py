"""The user feature job on raw transactions that break the data contract in realistic ways
(docs/data-contract.md, `raw/transactions`): each run fails before it reads a row, naming the path and
what is wrong, and leaves the published features as they were; a rerun after the producer re-lands the
partition gives exactly the result of a run on clean data. Values the contract calls invalid are
quarantined and counted; full and incremental runs agree on them. Library runs share the test
session's local Spark; one real spark-submit checks what reaches Airflow."""

from __future__ import annotations

import math
import shutil
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake.user_features_run import run_user_features
from tests.oracle.edge_case_lake import (
    transactions_table,
    write_categories,
    write_transactions_partition,
)
from tests.support import PROJECT_ROOT, spark_submit

pytestmark = pytest.mark.integration

DS = date(2026, 9, 10)
WINDOW_DAYS = 2
BAD = "part-00001.parquet"


def _row(transaction_id: str, user_id: str | None = "u1", amount: float | None = 10.0, **kw) -> dict:
    day = kw.pop("day", DS)
    return {
        "transaction_id": transaction_id,
        "user_id": user_id,
        "merchant_id": kw.pop("merchant_id", "m1"),
        "category_id": kw.pop("category_id", 1),
        "amount": amount,
        "currency": "USD",
        "transaction_ts": datetime.combine(day, kw.pop("at", time(12)), UTC),
    }


CLEAN_ROWS = [_row("t1", "u1", 10.0), _row("t2", "u2", 20.0)]
LANDED_ROWS = [_row("t3", "u3", 123456.78)]  # the rows the bad file should have held


def _partition(lake: Path, day: date = DS) -> Path:
    return lake / "raw" / "transactions" / f"date={day.isoformat()}"


def _clean_lake(lake: Path) -> Path:
    write_categories(lake)
    write_transactions_partition(lake, partition=DS, rows=CLEAN_ROWS)
    return lake


def _features(lake: Path) -> pd.DataFrame:
    return pd.read_parquet(lake / "features" / "user_features" / f"date={DS.isoformat()}").sort_values(
        "user_id", ignore_index=True
    )


def _run(spark, lake: Path, mode: str = "auto"):
    return run_user_features(spark, ds=DS, lake=str(lake), window_days=WINDOW_DAYS, mode=mode)


def _write(table: pa.Table, **kw) -> Callable[[Path], Path]:
    def land(lake: Path) -> Path:
        pq.write_table(table, _partition(lake) / BAD, **kw)
        return _partition(lake) / BAD

    return land


def _put(relative: str, content: bytes | Callable[[Path], bytes]) -> Callable[[Path], Path]:
    def land(lake: Path) -> Path:
        path = lake / "raw" / "transactions" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content(lake) if callable(content) else content)
        return path

    return land


def _truncated(lake: Path) -> bytes:
    _write(transactions_table(LANDED_ROWS))(lake)
    return (_partition(lake) / BAD).read_bytes()[:200]


def _stale_checksum(lake: Path) -> Path:
    """A file landed with a Hadoop client (which writes `.<name>.crc` beside it), then re-landed
    under its name by another tool (pyarrow), which leaves the old checksum: the file is intact,
    but Spark's local file system checks it against the stale checksum."""
    path = _write(transactions_table([_row("t9", "u9", 1.0)]))(lake)
    landed = path.read_bytes()
    chunks = (landed[i : i + 512] for i in range(0, len(landed), 512))
    checksum = (
        b"crc\0" + (512).to_bytes(4, "big") + b"".join(zlib.crc32(c).to_bytes(4, "big") for c in chunks)
    )
    (path.parent / f".{path.name}.crc").write_bytes(checksum)
    return _write(transactions_table(LANDED_ROWS))(lake)


def _damaged(lake: Path) -> Path:
    """A file whose footer is intact but whose first page header is not: only reading rows finds it."""
    path = _write(transactions_table([_row(f"t{i}", "u3", float(i)) for i in range(3, 2000)]))(lake)
    data = bytearray(path.read_bytes())
    data[4:60] = b"\xff" * 56
    path.write_bytes(bytes(data))
    return path


def _beside_the_categories(name: str) -> Callable[[Path], Path]:
    """A file in raw/categories besides the lookup (and a hidden `_SUCCESS`, which is ignored)."""

    def land(lake: Path) -> Path:
        (lake / "raw" / "categories" / "_SUCCESS").write_bytes(b"")
        path = lake / "raw" / "categories" / name
        path.write_bytes(b"PAR1 half an upload")
        return path

    return land


def _empty_categories(lake: Path) -> Path:
    """The lookup, replaced as a whole, by an upload that failed: 0 bytes."""
    path = lake / "raw" / "categories" / "part-00000.parquet"
    path.write_bytes(b"")
    return path


def _truncated_categories(lake: Path) -> Path:
    path = lake / "raw" / "categories" / "part-00000.parquet"
    path.write_bytes(path.read_bytes()[:100])
    return path


TS = datetime.combine(DS, time(12), UTC)
# What a producer got wrong, and what the error must say about it.
CONTRACT_BREACHES = [
    pytest.param(_put(f"date={DS}/{BAD}", b""), "empty (0 bytes)", id="zero-byte-file"),
    pytest.param(_put(f"date={DS}/{BAD}", _truncated), "cannot be read as Parquet", id="truncated-file"),
    pytest.param(_damaged, "cannot be read (damaged", id="damaged-data-page"),
    # Spark's ChecksumException, reported as "cannot be read as Parquet (truncated, ...)" of a file
    # that every other reader reads, and that a re-land by the same tool would not fix
    pytest.param(
        _stale_checksum, f"Delete .{BAD}.crc if the file is the one to keep", id="stale-hadoop-checksum"
    ),
    pytest.param(_put(f"date={DS}/rows.csv", b"a,b\n1,2\n"), "not a .parquet file", id="csv-in-partition"),
    pytest.param(_put(f"date={DS}/{BAD}.crc", b"crc"), "not a .parquet file", id="crc-in-partition"),
    pytest.param(
        lambda lake: _put(f"date={DS}/retry/{BAD}", b"")(lake).parent, "a subdirectory", id="subdirectory"
    ),
    pytest.param(
        lambda lake: _put(f"dt={DS - timedelta(days=1)}/{BAD}", b"")(lake).parent, "not a date=", id="dt-dir"
    ),
    pytest.param(
        lambda lake: _put(f"{DS - timedelta(days=1)}/{BAD}", b"")(lake).parent,
        "not a date=",
        id="bare-date-dir",
    ),
    pytest.param(_put(BAD, b""), "not a date=", id="file-at-root"),
    # Spark read every file there: "[FAILED_READ_FILE.NO_HINT] ... is not a Parquet file", no remedy
    pytest.param(
        _beside_the_categories("part-00000.parquet.tmp"),
        "the categories lookup",
        id="partial-upload-beside-the-categories",
    ),
    # Spark's bare "[FAILED_READ_FILE.CANNOT_READ_FILE_FOOTER] ... Could not read footer", no remedy
    pytest.param(_empty_categories, "cannot be read as Parquet", id="zero-byte-categories"),
    pytest.param(_truncated_categories, "cannot be read as Parquet", id="truncated-categories"),
    pytest.param(
        _write(transactions_table(LANDED_ROWS, amount=None)), "no column amount", id="no-amount-column"
    ),
    pytest.param(
        _write(transactions_table(LANDED_ROWS, merchant_id=None)),
        "no column merchant_id",
        id="no-merchant-column",
    ),
    pytest.param(
        _write(transactions_table(LANDED_ROWS).append_column("Amount", pa.array([1.0]))),
        "it has 2 columns named amount (amount, Amount), whatever their case",
        id="amount-twice",
    ),
    pytest.param(
        _write(transactions_table(LANDED_ROWS, amount=pa.array(["123456.78"]))),
        "column amount is BINARY STRING, where the contract has float64",
        id="amount-as-string",
    ),
    pytest.param(
        _write(transactions_table(LANDED_ROWS, amount=pa.array([123456.78], pa.float32()))),
        "column amount is FLOAT",
        id="amount-as-float32",
    ),
    pytest.param(
        _write(
            transactions_table(LANDED_ROWS, amount=pa.array([Decimal("123456.78")], pa.decimal128(10, 2)))
        ),
        "column amount is FIXED_LEN_BYTE_ARRAY DECIMAL",
        id="amount-as-decimal",
    ),
    pytest.param(
        _write(transactions_table(LANDED_ROWS, merchant_id=pa.nulls(len(LANDED_ROWS)))),
        "column merchant_id is INT32 UNKNOWN, where the contract has string (stored with no type, as "
        "pandas and pyarrow write a column whose every value is null: give the writer its type, string",
        id="merchant-id-untyped-nulls",
    ),
    pytest.param(
        _write(transactions_table(LANDED_ROWS, user_id=pa.array([3], pa.int64()))),
        "column user_id is INT64, where the contract has string",
        id="user-id-as-int",
    ),
    pytest.param(
        _write(transactions_table(LANDED_ROWS, category_id=pa.array([1], pa.uint32()))),
        "column category_id is INT32 INTEGER(32,false)",
        id="category-as-uint32",
    ),
    pytest.param(
        _write(transactions_table(LANDED_ROWS, transaction_ts=pa.array([TS.isoformat()]))),
        "column transaction_ts is BINARY STRING",
        id="ts-as-string",
    ),
    pytest.param(
        _write(
            transactions_table(LANDED_ROWS, transaction_ts=pa.array([int(TS.timestamp() * 1e6)], pa.int64()))
        ),
        "column transaction_ts is INT64, where",
        id="ts-as-int64-epoch",
    ),
    pytest.param(
        _write(transactions_table(LANDED_ROWS, transaction_ts=pa.array([DS], pa.date32()))),
        "column transaction_ts is INT32 DATE",
        id="ts-as-date32",
    ),
    pytest.param(
        _write(
            transactions_table(
                LANDED_ROWS, transaction_ts=pa.array([TS.replace(tzinfo=None)], pa.timestamp("us"))
            )
        ),
        "column transaction_ts is INT64 TIMESTAMP(MICROS,false)",
        id="ts-without-time-zone",
    ),
    pytest.param(
        _write(transactions_table(LANDED_ROWS, transaction_ts=pa.array([TS], pa.timestamp("ns", tz="UTC")))),
        "column transaction_ts is INT64 TIMESTAMP(NANOS,true)",
        id="ts-in-nanoseconds",
    ),
]


@pytest.fixture(scope="module")
def published_lake(spark, tmp_path_factory) -> Path:
    """A clean lake whose features of DS are published (a full run). Tests work on a copy."""
    lake = _clean_lake(tmp_path_factory.mktemp("published") / "lake")
    _run(spark, lake)
    return lake


@pytest.fixture(scope="module")
def corrected_features(spark, tmp_path_factory) -> pd.DataFrame:
    """The features of DS from a lake that got the rows right the first time: CLEAN_ROWS and LANDED_ROWS."""
    lake = _clean_lake(tmp_path_factory.mktemp("corrected") / "lake")
    write_transactions_partition(lake, partition=DS, rows=LANDED_ROWS)
    _run(spark, lake)
    return _features(lake)


@pytest.mark.parametrize(("land", "problem"), CONTRACT_BREACHES)
def test_input_that_breaks_the_contract_fails_naming_the_path_and_the_fix(
    spark, published_lake: Path, tmp_path: Path, land: Callable[[Path], Path], problem: str
) -> None:
    lake = Path(shutil.copytree(published_lake, tmp_path / "lake"))
    published = _features(lake)
    path = land(lake)

    with pytest.raises(ValueError) as failed:
        _run(spark, lake)
    said = str(failed.value)
    assert f"{path.relative_to(lake)}" in said, said
    assert problem in said, said
    assert "docs/data-contract.md" in said and "rerun" in said, said
    pd.testing.assert_frame_equal(_features(lake), published)
    assert not (lake / "_staging" / "user_features" / f"date={DS.isoformat()}").exists()


def test_a_rerun_after_the_partition_is_relanded_gives_the_clean_result(
    spark, published_lake: Path, tmp_path: Path, corrected_features: pd.DataFrame
) -> None:
    """A float32 amount would have lost cents silently (123456.78 as 123456.78125); the failed run
    leaves nothing behind, and the retry after the producer fixed the file is the clean result."""
    lake = Path(shutil.copytree(published_lake, tmp_path / "lake"))
    _write(transactions_table(LANDED_ROWS, amount=pa.array([123456.78], pa.float32())))(lake)
    with pytest.raises(ValueError, match="column amount is FLOAT"):
        _run(spark, lake)

    _write(transactions_table(LANDED_ROWS))(lake)  # re-landed as the contract has it
    report = _run(spark, lake)

    pd.testing.assert_frame_equal(_features(lake), corrected_features, check_exact=True)
    assert _features(lake).set_index("user_id").loc["u3", "total_spend"] == 123456.78
    assert (report.quarantined_rows, report.clean_transactions_in_built_tiles) == (0, 3)


def test_a_quarantine_of_a_bad_landing_is_gone_after_the_fix(
    spark, published_lake: Path, tmp_path: Path, corrected_features: pd.DataFrame
) -> None:
    """A second version of t3 (another amount) quarantines both; once the producer re-lands the
    partition with one version, the rerun's quarantine and counts hold nothing of the bad run."""
    lake = Path(shutil.copytree(published_lake, tmp_path / "lake"))
    _write(transactions_table([*LANDED_ROWS, _row("t3", "u3", 99.0)]))(lake)
    report = _run(spark, lake)
    assert report.quarantined_by_reason == {"conflicting_duplicate": 2}
    assert "u3" not in _features(lake)["user_id"].tolist()

    _write(transactions_table(LANDED_ROWS))(lake)
    report = _run(spark, lake)

    assert (report.quarantined_rows, report.quarantined_by_reason) == (0, {})
    quarantine = lake / "quarantine" / "transactions" / f"date={DS.isoformat()}"
    assert not list(quarantine.glob("*.parquet"))
    pd.testing.assert_frame_equal(_features(lake), corrected_features, check_exact=True)


def test_an_incremental_run_checks_a_late_partition_it_builds(
    spark, published_lake: Path, tmp_path: Path
) -> None:
    """The day before DS lands late, with a stray file: the incremental run of DS, which builds its
    tile, fails naming the file, and says the features of DS were not written."""
    lake = Path(shutil.copytree(published_lake, tmp_path / "lake"))
    published = _features(lake)
    yesterday = DS - timedelta(days=1)
    write_transactions_partition(lake, partition=yesterday, rows=[_row("y1", "u1", 5.0, day=yesterday)])
    (_partition(lake, yesterday) / "rows.csv").write_bytes(b"a,b\n1,2\n")

    with pytest.raises(ValueError) as failed:
        _run(spark, lake, "incremental")

    said = str(failed.value)
    assert f"date={yesterday.isoformat()}/rows.csv is not a .parquet file" in said, said
    assert f"the features of {DS} were not written" in said, said
    pd.testing.assert_frame_equal(_features(lake), published)


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        pytest.param("part-00000.pq", "part-00000.pq is not a .parquet file", id="misnamed-file"),
        pytest.param("sub/part-00000.parquet", "sub/ is a subdirectory", id="subdirectory"),
    ],
)
def test_a_window_date_holding_only_what_no_reader_reads_fails_the_run_and_keeps_its_tile(
    spark, published_lake: Path, tmp_path: Path, entry: str, said: str
) -> None:
    """The day before DS re-landed with its rows where no reader reads them: the run left the date
    out of the window (its 100.0 missing from the totals) and removed its tile as withdrawn."""
    lake = Path(shutil.copytree(published_lake, tmp_path / "lake"))
    yesterday = DS - timedelta(days=1)
    write_transactions_partition(lake, partition=yesterday, rows=[_row("y1", "u1", 100.0, day=yesterday)])
    _run(spark, lake)
    published = _features(lake)
    assert published.set_index("user_id").loc["u1", "total_spend"] == 110.0
    tile = lake / "tiles" / "user_daily" / f"date={yesterday.isoformat()}"
    assert tile.is_dir()
    (data_file,) = _partition(lake, yesterday).glob("*.parquet")
    (_partition(lake, yesterday) / entry).parent.mkdir(parents=True, exist_ok=True)
    data_file.rename(_partition(lake, yesterday) / entry)

    for mode in ("incremental", "full"):
        with pytest.raises(ValueError) as failed:
            _run(spark, lake, mode)
        assert f"date={yesterday.isoformat()}/{said}" in str(failed.value), str(failed.value)
    pd.testing.assert_frame_equal(_features(lake), published)
    assert tile.is_dir()


def test_the_date_of_ds_landed_under_another_name_is_named(spark, tmp_path: Path) -> None:
    """Rows of DS in `dt=<ds>/` were reported as "date=<ds> is missing or empty", naming neither the
    directory nor the fix."""
    lake = _clean_lake(tmp_path / "lake")
    write_transactions_partition(
        lake, partition=DS - timedelta(days=1), rows=[_row("y1", "u1", 5.0, day=DS - timedelta(days=1))]
    )
    _partition(lake).rename(lake / "raw" / "transactions" / f"dt={DS.isoformat()}")
    with pytest.raises(ValueError, match=rf"dt={DS.isoformat()}/: not a date=YYYY-MM-DD partition directory"):
        _run(spark, lake)


def test_one_failed_run_names_every_offending_path_of_the_window(spark, tmp_path: Path) -> None:
    """A producer had to fail one run per problem: the listing raised at the first misnamed `date=`
    directory, and the root's strays were named before the partitions' files were looked at."""
    lake = _clean_lake(tmp_path / "lake")
    root = lake / "raw" / "transactions"
    yesterday = DS - timedelta(days=1)
    write_transactions_partition(lake, partition=yesterday, rows=[_row("y1", "u1", 5.0, day=yesterday)])
    offending = [
        root / "date=2026-9-9",
        root / f"date={DS.isoformat()}T00",
        root / f"dt={DS.isoformat()}",
        _partition(lake, yesterday) / "rows.csv",
        _partition(lake) / BAD,
    ]
    for directory in offending[:3]:
        directory.mkdir()
    offending[3].write_text("a,b\n")
    offending[4].write_bytes(b"")
    for mode in ("incremental", "full"):
        with pytest.raises(ValueError) as failed:
            _run(spark, lake, mode)
        said = str(failed.value)
        for path in offending:
            assert str(path.relative_to(lake)) in said, (path, said)


def test_a_run_lists_each_raw_directory_once(
    spark, published_lake: Path, tmp_path: Path, monkeypatch
) -> None:
    """The run's one listing of raw/transactions (its root, then each partition) serves the plan,
    the tiles' fingerprints and the contract checks: on an object store each listing is a request."""
    import sys

    lake = Path(shutil.copytree(published_lake, tmp_path / "lake"))
    yesterday = DS - timedelta(days=1)
    write_transactions_partition(lake, partition=yesterday, rows=[_row("y1", "u1", 5.0, day=yesterday)])
    listed: list[str] = []

    class CountedListings:
        def __init__(self, fs) -> None:
            self._fs = fs

        def listStatus(self, path):
            listed.append(str(path))
            return self._fs.listStatus(path)

        def __getattr__(self, name: str):
            return getattr(self._fs, name)

    from featurelake.partitioning import hadoop_file_system

    def counted(spark, path: str):
        fs, hadoop_path = hadoop_file_system(spark, path)
        return CountedListings(fs), hadoop_path

    # wherever the library has it: a module that imported it by name holds its own reference
    for name, module in list(sys.modules.items()):
        if (
            name.startswith("featurelake.")
            and getattr(module, "hadoop_file_system", None) is hadoop_file_system
        ):
            monkeypatch.setattr(module, "hadoop_file_system", counted)
    _run(spark, lake, "full")

    raw = (lake / "raw" / "transactions").resolve()
    raw_listings = sorted(p.removeprefix("file:") for p in listed if f"{raw}" in p.removeprefix("file:"))
    assert raw_listings == sorted(
        [str(raw), str(_partition(raw.parent.parent, yesterday)), str(_partition(raw.parent.parent))]
    ), listed


def test_invalid_values_are_quarantined_and_both_modes_agree_to_the_bit(spark, tmp_path: Path) -> None:
    """Infinite, too large and -0.0 amounts, ids with spaces or in two Unicode forms, a row of another
    date and a transaction_id with two contents, over two days: full and incremental runs give the
    same bits (the sign of -0.0 included) and the same counts; every valid row counts."""
    yesterday = DS - timedelta(days=1)
    rows = {
        yesterday: [_row("y1", "u1", -0.0, day=yesterday), _row("y2", "u1", 5.0, day=yesterday)],
        DS: [
            _row("t1", "u1", 0.0),
            _row("t2", "u1", math.inf),
            _row("t3", "u1", -math.inf),
            _row("t4", "u1", 9.000001e12),
            _row("t5", "u1", 9e12),
            _row("t6", " u1", 1.0),
            _row("t7", "   ", 2.0),
            _row("t8", "\u00fc", 3.0),
            _row("t9", "u\u0308", 4.0),
            _row("t10", "u2", 7.0, day=yesterday),  # its ts is on the day before its partition
            _row("t11", "u2", 8.0),
            _row("t11", "u2", 8.5),
            _row("t12", "u2", -0.0),
            _row("t12", "u2", 0.0),  # equal to the row above: an exact copy
        ],
    }
    by_mode = {}
    for mode in ("full", "incremental"):
        lake = tmp_path / mode
        write_categories(lake)
        for day, day_rows in rows.items():
            write_transactions_partition(lake, partition=day, rows=day_rows)
        report = _run(spark, lake, mode)
        by_mode[mode] = _features(lake)
        assert report.quarantined_by_reason == {
            "conflicting_duplicate": 2,
            "date_mismatch": 1,
            "invalid_amount": 3,
        }, mode
        assert report.duplicate_rows_dropped == 1, mode
    full, incremental = by_mode["full"], by_mode["incremental"]
    pd.testing.assert_frame_equal(full, incremental, check_exact=True)
    for column in ("total_spend", "max_spend", "last_amount", "spend_7d"):
        assert np.signbit(full[column]).tolist() == np.signbit(incremental[column]).tolist(), column
    got = full.set_index("user_id")
    assert got.index.tolist() == ["   ", " u1", "u1", "u2", "u\u0308", "\u00fc"]
    assert got.loc["u1", "transaction_count"] == 4  # y1, y2, t1, t5
    assert got.loc["u1", "total_spend"] == 9e12 + 5.0
    assert got.loc["u2", "transaction_count"] == 1  # t12 once


def test_text_that_is_not_utf8_is_quarantined_and_the_outputs_stay_readable(spark, tmp_path: Path) -> None:
    """The contract accepts ids as plain Parquet BINARY, whose bytes Spark read as strings unchecked:
    a user id b"u\\xff" became a feature row that neither pyarrow nor DuckDB could read. Such rows
    are quarantined (`invalid_utf8`), with U+FFFD for each invalid sequence, in both modes."""
    table = transactions_table([_row("t3", "u3", 1.0), _row("t4", "u4", 2.0), _row("t5", "u5", 3.0)])

    def binary(values: list[bytes]) -> pa.Array:
        return pa.array(values, pa.binary())

    table = table.set_column(
        table.schema.get_field_index("user_id"), "user_id", binary([b"u\xff\xfe", b"u4", b"u5"])
    )
    table = table.set_column(
        table.schema.get_field_index("merchant_id"), "merchant_id", binary([b"m1", b"m\xc3", b"m1"])
    )
    # A STRING column is UTF-8 by the Parquet format, but a writer can break it (pyarrow's
    # from_buffers, Spark's CAST(binary AS STRING)): its user_id is checked too.
    string = transactions_table([_row("t6", "u6", 4.0), _row("t7", "u7", 5.0)])
    not_utf8 = pa.Array.from_buffers(
        pa.string(), 2, [None, pa.array([0, 2, 4], pa.int32()).buffers()[1], pa.py_buffer(b"v\xfeu7")]
    )
    string = string.set_column(string.schema.get_field_index("user_id"), "user_id", not_utf8)
    for mode in ("full", "incremental"):
        lake = _clean_lake(tmp_path / mode)
        pq.write_table(table, _partition(lake) / BAD, store_schema=False)
        pq.write_table(string, _partition(lake) / "part-00002.parquet")
        report = _run(spark, lake, mode)
        assert report.quarantined_by_reason == {"invalid_utf8": 3}, mode
        assert _features(lake)["user_id"].tolist() == ["u1", "u2", "u5", "u7"], mode
        quarantine = pq.read_table(lake / "quarantine" / "transactions" / f"date={DS.isoformat()}")
        assert sorted(
            zip(
                quarantine["transaction_id"].to_pylist(),
                quarantine["user_id"].to_pylist(),
                quarantine["merchant_id"].to_pylist(),
                strict=True,
            )
        ) == [("t3", "u\ufffd\ufffd", "m1"), ("t4", "u4", "m\ufffd"), ("t6", "v\ufffd", "m1")], mode


def test_spark_submit_reports_the_bad_file_and_writes_no_report(published_lake: Path, tmp_path: Path) -> None:
    """What the Airflow task shows: spark-submit fails, its output names the file and the fix, and no
    report is written (the operator then fails the task rather than return an earlier one)."""
    lake = Path(shutil.copytree(published_lake, tmp_path / "lake"))
    report = lake / "_metrics" / "user_features" / f"date={DS.isoformat()}.json"
    report.unlink(missing_ok=True)
    _write(transactions_table(LANDED_ROWS, transaction_ts=pa.array([DS], pa.date32())))(lake)

    result = spark_submit(
        PROJECT_ROOT / "spark_jobs" / "user_features.py", "--ds", DS.isoformat(), "--lake", str(lake)
    )

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"date={DS.isoformat()}/{BAD}: column transaction_ts is INT32 DATE" in output, output[-4000:]
    assert "Re-land those partitions" in output
    assert not report.exists()


@pytest.mark.parametrize("alone", [True, False], ids=["alone", "beside-a-landed-file"])
def test_the_partition_check_does_not_pass_an_empty_file(tmp_path: Path, alone: bool) -> None:
    """A 0-byte *.parquet (an upload in flight, or one that failed) is no Parquet file: the check fails
    and its retries give the upload time, rather than pass a partition the job cannot read."""
    from featurelake_airflow.operators.raw_partition import RawPartitionCheckOperator

    lake = tmp_path / "lake"
    _partition(lake).mkdir(parents=True)
    if not alone:
        write_transactions_partition(lake, partition=DS, rows=CLEAN_ROWS)
    (_partition(lake) / BAD).write_bytes(b"")
    check = RawPartitionCheckOperator(task_id="check", lake=str(lake), ds=DS.isoformat())
    with pytest.raises(
        FileNotFoundError, match=rf"date={DS.isoformat()} holds empty \(0-byte\) files.*{BAD}"
    ):
        check.execute(context={})

    _write(transactions_table(LANDED_ROWS))(lake)  # the upload completes
    assert check.execute(context={})["files"] == (1 if alone else 2)


def test_the_partition_check_names_a_partition_landed_as_a_file(tmp_path: Path) -> None:
    """`date=<ds>` written as a file (docs/data-contract.md names that mistake) failed the check with
    a bare NotADirectoryError, on every retry; it now says where the file belongs, without retrying."""
    from airflow.sdk.exceptions import AirflowFailException

    from featurelake_airflow.operators.raw_partition import RawPartitionCheckOperator

    lake = tmp_path / "lake"
    _partition(lake).parent.mkdir(parents=True)
    pq.write_table(transactions_table(LANDED_ROWS), _partition(lake))
    check = RawPartitionCheckOperator(task_id="check", lake=str(lake), ds=DS.isoformat())
    with pytest.raises(
        AirflowFailException,
        match=rf"raw partition \S+/raw/transactions/date={DS.isoformat()} is a file where the partition's "
        rf"directory belongs. Move it to \S+/date={DS.isoformat()}/part-00000\.parquet",
    ):
        check.execute(context={})

    landed = _partition(lake).read_bytes()
    _partition(lake).unlink()
    _partition(lake).mkdir()
    (_partition(lake) / "part-00000.parquet").write_bytes(landed)  # moved where it belongs
    assert check.execute(context={})["files"] == 1
