"""The Dask merchant statistics job on raw transactions that break the data contract
(docs/data-contract.md, `raw/transactions`): each run fails before it sends a task, with one error
naming every offending path and what is wrong, and leaves the previous output as it was. The Parquet
variants that the contract accepts and that this job reads correctly (whether their file comes first
in the window or not) give the same statistics as the contract's own types. One in-process
LocalCluster serves the module."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake.merchant_stats import compute_merchant_stats, dask_client
from tests.integration.test_merchant_stats import files_of, hidden_siblings
from tests.oracle.edge_case_lake import transactions_table, write_transactions_partition

pytestmark = pytest.mark.integration

DS = date(2026, 9, 10)
BEFORE = DS - timedelta(days=1)
WINDOW_DAYS = 2
BAD = "part-00001.parquet"


def _row(transaction_id: str, user_id: str, merchant_id: str, amount: float, day: date, **kw) -> dict:
    return {
        "transaction_id": transaction_id,
        "user_id": user_id,
        "merchant_id": merchant_id,
        "category_id": kw.get("category_id", 7),
        "amount": amount,
        "currency": "USD",
        "transaction_ts": datetime.combine(day, kw.get("at", time(12)), UTC),
    }


def _clean_rows(day: date) -> list[dict]:
    """Rows that a file cast to another file's types would break: a category id above 127 (int8)
    and 32767 (int16), a null one, and microseconds (milliseconds)."""
    return [
        _row(f"c1-{day}", "u1", "m1", 10.0, day, category_id=40_000, at=time(9, 0, 0, 123456)),
        _row(f"c2-{day}", "u2", "m1", 20.0, day, category_id=None, at=time(23, 59, 59, 999999)),
    ]


def _landed_rows(day: date) -> list[dict]:
    """The rows of the file under test: cents that float32 loses, and a refund."""
    return [_row(f"l1-{day}", "u3", "m2", 123456.78, day), _row(f"l2-{day}", "u4", "m2", -5.0, day)]


def _partition(lake: Path, day: date = DS) -> Path:
    return lake / "raw" / "transactions" / f"date={day.isoformat()}"


Landing = Callable[[Path], Path]


def _write(columns: Callable[[list[dict]], dict[str, pa.Array | None]], **options) -> Landing:
    """Land the rows of DS as BAD with some columns replaced: `columns` maps the rows to them."""

    def land(lake: Path) -> Path:
        rows = _landed_rows(DS)
        pq.write_table(transactions_table(rows, **columns(rows)), _partition(lake) / BAD, **options)
        return _partition(lake) / BAD

    return land


def _put(relative: str, content: bytes | Callable[[Path], bytes]) -> Landing:
    def land(lake: Path) -> Path:
        path = _partition(lake) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content(lake) if callable(content) else content)
        return path

    return land


def _partition_as_a_file(lake: Path) -> Path:
    """A producer that wrote the day's rows to a file named as the partition (`date=<BEFORE>`)."""
    partition = _partition(lake, BEFORE)
    shutil.rmtree(partition)
    pq.write_table(transactions_table(_landed_rows(BEFORE)), partition)
    return partition


def _truncated(lake: Path) -> bytes:
    _write(lambda rows: {})(lake)
    return (_partition(lake) / BAD).read_bytes()[:200]


def _garbled_footer(lake: Path) -> bytes:
    """Parquet's magic bytes around a footer that is not one."""
    return b"PAR1" + b"\x07" * 64 + (64).to_bytes(4, "little") + b"PAR1"


def _amount_twice(lake: Path) -> Path:
    """`amount` and `Amount`: which one is the contract's, whatever their case, is unknown."""
    table = transactions_table(_landed_rows(DS))
    pq.write_table(table.append_column("Amount", table.column("amount")), _partition(lake) / BAD)
    return _partition(lake) / BAD


def _ts(rows: list[dict], unit: str = "us", tz: str | None = "UTC") -> pa.Array:
    return pa.array([row["transaction_ts"] for row in rows], pa.timestamp(unit, tz=tz))


# What a producer got wrong, and what the error must say about it, grouped by what the job did with
# it before it checked the files.
CONTRACT_BREACHES = [
    # skipped without a word
    pytest.param(_put("rows.csv", b"l1,u3,m2,7,123456.78\n"), "is not a .parquet file", id="csv"),
    pytest.param(_put(f"{BAD}.crc", b"crc"), "is not a .parquet file", id="crc"),
    pytest.param(lambda lake: _put(f"retry/{BAD}", b"")(lake).parent, "is a subdirectory", id="subdirectory"),
    pytest.param(
        _partition_as_a_file, "is a file where a partition directory belongs", id="partition-as-a-file"
    ),
    # an Arrow error in a staging task that named the file but no fix (on the client, if it came first)
    pytest.param(_put(BAD, b""), "it is empty (0 bytes)", id="zero-byte-file"),
    pytest.param(_put(BAD, _truncated), "it cannot be read as Parquet", id="truncated-file"),
    pytest.param(
        _put(BAD, b"transaction_id,amount\n"), "it cannot be read as Parquet", id="csv-named-parquet"
    ),
    pytest.param(_put(BAD, _garbled_footer), "it cannot be read as Parquet", id="garbled-footer"),
    # read as nulls: the file's rows not counted (a missing category_id: counted, silently null)
    pytest.param(_write(lambda rows: {"amount": None}), "it has no column amount", id="no-amount"),
    pytest.param(
        _write(lambda rows: {"merchant_id": None}), "it has no column merchant_id", id="no-merchant"
    ),
    pytest.param(
        _write(lambda rows: {"category_id": None}), "it has no column category_id", id="no-category"
    ),
    pytest.param(_amount_twice, "it has 2 columns named amount (amount, Amount)", id="amount-twice"),
    # every value null, written without a type: the contract allows nulls, not a column of no type
    pytest.param(
        _write(lambda rows: {"currency": pa.nulls(len(rows))}),
        "column currency is null (Parquet INT32 Null), where the contract has string (stored with no "
        "type, as pandas and pyarrow write a column whose every value is null",
        id="currency-untyped-nulls",
    ),
    # cast to the first file's types: wrong numbers (float32 cents, whole amounts, a merchant "2"),
    # or, when the file comes first, an error in a task that names no file ("Failed to parse 'u2'")
    pytest.param(
        _write(lambda rows: {"amount": pa.array([r["amount"] for r in rows], pa.float32())}),
        "column amount is float (Parquet FLOAT), where the contract has float64",
        id="amount-as-float32",
    ),
    pytest.param(
        _write(lambda rows: {"amount": pa.array([int(r["amount"]) for r in rows], pa.int64())}),
        "column amount is int64",
        id="amount-as-int64",
    ),
    pytest.param(
        _write(lambda rows: {"amount": pa.array([str(r["amount"]) for r in rows])}),
        "column amount is string",
        id="amount-as-string",
    ),
    pytest.param(
        _write(
            lambda rows: {
                "amount": pa.array([Decimal(f"{r['amount']:.2f}") for r in rows], pa.decimal128(10, 2))
            }
        ),
        "column amount is decimal128(10, 2)",
        id="amount-as-decimal",
    ),
    pytest.param(
        _write(lambda rows: {"user_id": pa.array([3, 4], pa.int64())}),
        "column user_id is int64 (Parquet INT64), where the contract has string",
        id="user-id-as-int",
    ),
    pytest.param(
        _write(lambda rows: {"merchant_id": pa.array([2, 2], pa.int64())}),
        "column merchant_id is int64",
        id="merchant-id-as-int",
    ),
    # refused by both jobs: cast without a word when a later file, an error in a task when the first
    pytest.param(
        _write(lambda rows: {"category_id": pa.array([7, 7], pa.uint32())}),
        "column category_id is uint32",
        id="category-as-uint32",
    ),
    pytest.param(
        _write(lambda rows: {"transaction_ts": pa.array([r["transaction_ts"].isoformat() for r in rows])}),
        "column transaction_ts is string (Parquet BYTE_ARRAY String), where the contract has timestamp[us, tz=UTC]",
        id="ts-as-string",
    ),
    pytest.param(
        _write(lambda rows: {"transaction_ts": pa.array([1789041600000000] * 2, pa.int64())}),
        "column transaction_ts is int64",
        id="ts-as-int64-epoch",
    ),
    pytest.param(
        _write(lambda rows: {"transaction_ts": pa.array([DS, DS], pa.date32())}),
        "column transaction_ts is date32[day]",
        id="ts-as-date32",
    ),
    pytest.param(
        _write(lambda rows: {"transaction_ts": _ts(rows, tz=None)}),
        "column transaction_ts is timestamp[us]",
        id="ts-without-time-zone",
    ),
    pytest.param(
        _write(lambda rows: {"transaction_ts": _ts(rows, "ns")}),
        "column transaction_ts is timestamp[ns, tz=UTC]",
        id="ts-in-nanoseconds",
    ),
]


@pytest.fixture(scope="module")
def client() -> Iterator:
    with dask_client("local") as client:
        yield client


def _clean_lake(lake: Path) -> Path:
    for day in (BEFORE, DS):
        write_transactions_partition(lake, partition=day, rows=_clean_rows(day))
    return lake


def _run(client, lake: Path, output: Path, staging: Path):
    return compute_merchant_stats(
        client,
        raw_transactions=str(lake / "raw" / "transactions"),
        output=str(output),
        staging=str(staging),
        ds=DS,
        window_days=WINDOW_DAYS,
        buckets=4,  # m1 and m2 in different buckets
    )


STATS_COLUMNS = [
    "merchant_id",
    "transaction_count",
    "unique_users",
    "total_amount",
    "refund_share",
    "active_days",
]


def _stats(output: Path) -> list[list]:
    frame = pd.read_parquet(output).sort_values("merchant_id")
    return frame[STATS_COLUMNS].values.tolist()


@pytest.fixture(scope="module")
def published(client, tmp_path_factory) -> Path:
    """A clean lake and its published merchant stats of DS (`<root>/merchant_stats/date=DS`). Tests
    work on copies."""
    root = tmp_path_factory.mktemp("published")
    _clean_lake(root / "lake")
    _run(client, root / "lake", root / "merchant_stats" / f"date={DS}", root / "staging")
    return root


def _copy(published: Path, tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(published / "lake", tmp_path / "lake")
    shutil.copytree(published / "merchant_stats", tmp_path / "merchant_stats")
    return tmp_path / "lake", tmp_path / "merchant_stats" / f"date={DS}"


@pytest.mark.parametrize(("land", "said"), CONTRACT_BREACHES)
def test_a_contract_breach_fails_before_any_task_naming_the_path(
    client, published: Path, tmp_path: Path, land: Landing, said: str
) -> None:
    lake, output = _copy(published, tmp_path)
    previous = files_of(output)
    offending = land(lake)
    with pytest.raises(ValueError) as failure:
        _run(client, lake, output, tmp_path / "staging")
    message = str(failure.value)
    assert f"{offending}: {said}" in message or f"{offending} {said}" in message, message
    assert f"merchant stats of {DS} were not written" in message
    assert "Re-land" in message and "starting with . or _" in message
    assert files_of(output) == previous, "the failed run changed the previous output"
    assert hidden_siblings(output) == []
    assert not (tmp_path / "staging").exists(), "a task was sent: the staging directory was made"


def test_one_error_names_every_offending_path_of_the_window(client, published: Path, tmp_path: Path) -> None:
    lake, output = _copy(published, tmp_path)
    (_partition(lake, BEFORE) / "rows.csv").write_bytes(b"")
    pq.write_table(transactions_table(_landed_rows(BEFORE), amount=None), _partition(lake, BEFORE) / BAD)
    (_partition(lake) / BAD).write_bytes(b"")
    # outside the window: never listed
    (_partition(lake, DS - timedelta(days=WINDOW_DAYS)) / BAD).mkdir(parents=True)
    with pytest.raises(ValueError) as failure:
        _run(client, lake, output, tmp_path / "staging")
    message = str(failure.value)
    assert f"{_partition(lake, BEFORE) / 'rows.csv'} is not a .parquet file" in message
    assert f"{_partition(lake, BEFORE) / BAD}: it has no column amount" in message
    assert f"{_partition(lake) / BAD}: it is empty (0 bytes)" in message
    assert str(DS - timedelta(days=WINDOW_DAYS)) not in message


def _columns(**replace: Callable[[list[dict]], pa.Array]) -> Callable[[list[dict]], pa.Table]:
    return lambda rows: transactions_table(rows, **{name: array(rows) for name, array in replace.items()})


def _renamed(old: str, new: str) -> Callable[[list[dict]], pa.Table]:
    def table(rows: list[dict]) -> pa.Table:
        contract = transactions_table(rows)
        return contract.rename_columns([new if name == old else name for name in contract.column_names])

    return table


# Parquet forms of the contract's types that both jobs accept (RAW_ARROW_TYPES, RAW_PARQUET_TYPES):
# (the landed rows as a table, write options). Read as Dask's read_parquet read them, a first file
# of int8, int16 or milliseconds failed on a later file's values, binary and dictionary strings
# came as bytes and categoricals, and `Amount` was not `amount`.
ACCEPTED_VARIANTS = [
    pytest.param(_columns(), {"store_schema": False}, id="no-arrow-schema"),
    pytest.param(
        _columns(), {"use_deprecated_int96_timestamps": True, "store_schema": False}, id="ts-as-int96"
    ),
    pytest.param(
        _columns(transaction_ts=lambda rows: _ts(rows, tz="Europe/Paris")), {}, id="ts-in-another-zone"
    ),
    pytest.param(_columns(transaction_ts=lambda rows: _ts(rows, "ms")), {}, id="ts-in-milliseconds"),
    pytest.param(
        _columns(user_id=lambda rows: pa.array([r["user_id"] for r in rows], pa.large_string())),
        {},
        id="large-strings",
    ),
    pytest.param(  # as Polars writes them: its stored Arrow schema names string_view
        _columns(user_id=lambda rows: pa.array([r["user_id"] for r in rows], pa.string_view())),
        {},
        id="string-views",
    ),
    pytest.param(
        _columns(
            merchant_id=lambda rows: pa.array([r["merchant_id"].encode() for r in rows], pa.binary_view())
        ),
        {},
        id="merchant-id-as-binary-view",
    ),
    pytest.param(
        _columns(merchant_id=lambda rows: pa.array([r["merchant_id"].encode() for r in rows], pa.binary())),
        {"store_schema": False},
        id="merchant-id-as-binary",
    ),
    pytest.param(
        _columns(merchant_id=lambda rows: pa.array([r["merchant_id"] for r in rows]).dictionary_encode()),
        {},
        id="merchant-id-as-arrow-dictionary",
    ),
    pytest.param(_columns(category_id=lambda rows: pa.array([7, 7], pa.int8())), {}, id="category-as-int8"),
    pytest.param(_columns(category_id=lambda rows: pa.array([7, 7], pa.int16())), {}, id="category-as-int16"),
    pytest.param(_renamed("amount", "Amount"), {}, id="amount-in-other-case"),
]


@pytest.mark.parametrize("first", [True, False], ids=["first-file", "later-file"])
@pytest.mark.parametrize(("table", "options"), ACCEPTED_VARIANTS)
def test_accepted_variants_give_the_contract_types_stats(
    client, published: Path, tmp_path: Path, table, options: dict, first: bool
) -> None:
    """A variant file of the window's first date, or of its last, gives the stats of the same rows
    in the contract's types (the clean files hold category ids above 127 and 32767, and
    microseconds, which a cast to a first file's types broke)."""
    day = BEFORE if first else DS
    want_lake, variant_lake = _clean_lake(tmp_path / "want"), _clean_lake(tmp_path / "variant")
    rows = _landed_rows(day)
    name = "a-landed.parquet" if first else BAD  # before or after the clean part-00000.parquet
    pq.write_table(transactions_table(rows), _partition(want_lake, day) / name)
    pq.write_table(table(rows), _partition(variant_lake, day) / name, **options)
    _run(client, want_lake, tmp_path / "want-out", tmp_path / "staging")
    _run(client, variant_lake, tmp_path / "variant-out", tmp_path / "staging")
    want = _stats(tmp_path / "want-out")
    assert [row[0] for row in want] == ["m1", "m2"]
    assert want[1][1:4] == [2, 2, 123451.78]
    assert _stats(tmp_path / "variant-out") == want


def test_rows_whose_text_is_not_utf8_do_not_count_and_the_run_completes(client, tmp_path: Path) -> None:
    """Data contract rule 7. A plain BINARY column holds any bytes, and a writer can break a STRING
    one; pyarrow refused the cast to text, so one such row failed the task on every try (while the
    user feature job quarantines it). Now such a row is read, logged and not counted, like any
    invalid row, and the stats are those of the lake without it."""
    rows = [
        _row("t3", "u3", "m1", 1.0, DS),
        _row("t4", "u4", "m1", 2.0, DS),
        _row("t5", "u5", "m1", 3.0, DS),
        _row("t8", "u8", "m2", 6.0, DS),
    ]
    table = transactions_table(
        rows,
        user_id=pa.array([b"u\xff\xfe", b"u4", b"u5", b"u8"], pa.binary()),
        merchant_id=pa.array([b"m1", b"m\xc3", b"m1", b"m2"], pa.binary()),
        currency=pa.array([b"USD", b"USD", b"USD", b"US\xff"], pa.binary()),
    )
    # A STRING column whose bytes are not UTF-8 (pyarrow's from_buffers, Spark's CAST(binary AS STRING)).
    string = transactions_table([_row("t6", "u6", "m1", 4.0, DS), _row("t7", "u7", "m2", 5.0, DS)])
    not_utf8 = pa.Array.from_buffers(
        pa.string(), 2, [None, pa.array([0, 2, 4], pa.int32()).buffers()[1], pa.py_buffer(b"v\xfeu7")]
    )
    string = string.set_column(string.schema.get_field_index("user_id"), "user_id", not_utf8)
    lake, want_lake = _clean_lake(tmp_path / "lake"), _clean_lake(tmp_path / "want")
    pq.write_table(table, _partition(lake) / BAD, store_schema=False)
    pq.write_table(string, _partition(lake) / "part-00002.parquet")
    # The same lake with the valid rows alone: t5 and t7.
    write_transactions_partition(
        want_lake, partition=DS, rows=[_row("t5", "u5", "m1", 3.0, DS), _row("t7", "u7", "m2", 5.0, DS)]
    )
    report = _run(client, lake, tmp_path / "out", tmp_path / "staging")
    want = _run(client, want_lake, tmp_path / "want-out", tmp_path / "staging")
    assert _stats(tmp_path / "out") == _stats(tmp_path / "want-out")
    assert [row[0] for row in _stats(tmp_path / "out")] == ["m1", "m2"]
    assert (report.rows_read, report.rows_counted) == (want.rows_read + 4, want.rows_counted)
    assert not (tmp_path / "staging").exists()


def test_int96_timestamps_read_as_spark_reads_them(client, tmp_path: Path) -> None:
    """INT96 (Impala's, Hive's, old Spark's) carries nanoseconds and dates far from now. pyarrow read
    it as nanoseconds: a value with nanoseconds failed the cast to microseconds, and 9999-12-31 (a
    sentinel) wrapped around to 1816, each failing every try with "a data page is damaged". Now it
    is read in microseconds, truncated as Spark reads it: the first row counts, the sentinel is a
    date mismatch (rule 6), as in the feature job."""
    nanos = pa.array([1_789_041_600_000_000_123], pa.timestamp("ns", tz="UTC"))  # DS 12:00, and 123 ns
    sentinel = pa.array([datetime(9999, 12, 31, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
    lake, want_lake = _clean_lake(tmp_path / "lake"), _clean_lake(tmp_path / "want")
    for name, row, ts in (
        (BAD, _row("n1", "u3", "m2", 7.0, DS), nanos),
        ("part-00002.parquet", _row("n2", "u4", "m2", 8.0, DS), sentinel),
    ):
        table = transactions_table([row], transaction_ts=ts)
        pq.write_table(
            table, _partition(lake) / name, use_deprecated_int96_timestamps=True, store_schema=False
        )
    assert pq.ParquetFile(_partition(lake) / BAD).schema.column(6).physical_type == "INT96"
    write_transactions_partition(want_lake, partition=DS, rows=[_row("n1", "u3", "m2", 7.0, DS)])
    report = _run(client, lake, tmp_path / "out", tmp_path / "staging")
    want = _run(client, want_lake, tmp_path / "want-out", tmp_path / "staging")
    assert _stats(tmp_path / "out") == _stats(tmp_path / "want-out")
    assert (report.rows_read, report.rows_counted) == (want.rows_read + 1, want.rows_counted)


def test_a_damaged_data_page_fails_naming_the_file(client, published: Path, tmp_path: Path) -> None:
    """A file whose footer is intact but whose first page is not passes the footer checks; the task
    that reads it fails naming the file and what to do, and the previous output stays."""
    lake, output = _copy(published, tmp_path)
    previous = files_of(output)
    path = _partition(lake) / BAD
    pq.write_table(transactions_table([_row(f"d{i}", "u3", "m2", float(i), DS) for i in range(2000)]), path)
    data = bytearray(path.read_bytes())
    data[4:60] = b"\xff" * 56
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as failure:
        _run(client, lake, output, tmp_path / "staging")
    message = str(failure.value)
    assert f"the raw file {path} could not be read" in message, message
    assert "Re-land that partition" in message, message
    assert files_of(output) == previous
    assert hidden_siblings(output) == []
    assert not (tmp_path / "staging").exists(), "the failed run left its staging"


def test_the_contract_columns_are_the_feature_jobs() -> None:
    from featurelake.raw_contract_arrow import RAW_ARROW_TYPES
    from featurelake.synthetic import TRANSACTIONS_SCHEMA as GENERATED
    from featurelake.user_features import RAW_DATA_COLUMNS
    from featurelake.user_features_run import RAW_PARQUET_TYPES

    assert tuple(RAW_ARROW_TYPES) == RAW_DATA_COLUMNS == tuple(GENERATED.names) == tuple(RAW_PARQUET_TYPES)


def _remove_partition(partition: Path) -> None:
    shutil.rmtree(partition)


def _leave_only_markers(partition: Path) -> None:
    for entry in partition.iterdir():
        entry.unlink()
    (partition / "_SUCCESS").write_bytes(b"")
    (partition / ".part-00000.parquet.tmp").write_bytes(b"PAR1")  # an upload in flight


@pytest.mark.parametrize(
    "unland",
    [
        pytest.param(_remove_partition, id="missing"),
        pytest.param(_leave_only_markers, id="only-marker-and-hidden-files"),
    ],
)
def test_a_ds_partition_that_has_not_landed_fails_naming_it(
    client, published: Path, tmp_path: Path, unland: Callable[[Path], None]
) -> None:
    """Run alone (not after the DAG's check_raw_partition), the job wrote the stats of DS from the
    window's other date, as if DS had no transaction."""
    lake, output = _copy(published, tmp_path)
    previous = files_of(output)
    unland(_partition(lake))
    with pytest.raises(FileNotFoundError) as failure:
        _run(client, lake, output, tmp_path / "staging")
    message = str(failure.value)
    assert (
        f"no raw transactions for {DS}: {_partition(lake)} is missing or holds no *.parquet file" in message
    )
    assert "Land that day's data" in message and f"merchant stats of {DS} were not written" in message
    assert files_of(output) == previous, "the failed run changed the previous output"
    assert not (tmp_path / "staging").exists(), "a task was sent: the staging directory was made"


def test_an_earlier_date_of_the_window_may_have_no_partition(client, published: Path, tmp_path: Path) -> None:
    """The lake's first days: a window reaching before them counts the dates it has."""
    lake, output = _copy(published, tmp_path)
    shutil.rmtree(_partition(lake, BEFORE))
    report = _run(client, lake, output, tmp_path / "staging")
    assert report.rows_counted == len(_clean_rows(DS))
    assert _stats(output) == [["m1", 2, 2, 30.0, 0.0, 1]]
