"""The lake's pyarrow readers (`featurelake.offline_features`) against an independent DuckDB oracle
written from docs/online-store.md, on random Parquet lakes; and `replace_partition` interrupted at
every step, by an exception or by SIGKILL, as readers see it."""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import signal
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake import arrow_partitions
from featurelake.arrow_partitions import replace_partition
from featurelake.feature_records import FeatureRecord, decode_record, encode_record
from featurelake.offline_features import (
    feature_dates,
    partition_entities,
    partition_records,
    read_offline_features,
)

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1)

# ---------------------------------------------------------------------------------------------
# Random lakes


def _float(rng: random.Random) -> float | None:
    return rng.choice(
        [0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, -5e-324, 2.0**53 + 2, math.pi, None]
        + [rng.uniform(-1e6, 1e6)] * 4
    )


def _float32(rng: random.Random) -> float | None:
    # values a float32 holds exactly: its conversion to a Python float is exact
    return rng.choice([0.0, -0.0, math.nan, math.inf, 1.5, -3.25, 2.0**-149, 3.4028234663852886e38, None])


def _int64(rng: random.Random) -> int | None:
    return rng.choice([-(2**63), 2**63 - 1, 0, -1, None, rng.randrange(-(2**40), 2**40)])


def _uint64(rng: random.Random) -> int | None:
    return rng.choice([2**64 - 1, 2**63, 0, None, rng.randrange(2**62)])


_TEXT = ["", "a", "ü€𝄞", "naïve café", "\x00nul", "x" * 5000, "日本語テキスト", " lead", "trail ", "🙂" * 300]


def _text(rng: random.Random) -> str | None:
    return rng.choice([*_TEXT, None])


_MIN_US, _MAX_US = -62135596800 * 10**6, 253402300799999999  # 0001-01-01 .. 9999-12-31T23:59:59.999999


def _micros(rng: random.Random) -> int | None:
    return rng.choice(
        [
            _MIN_US,
            _MAX_US,
            _MAX_US - 3600 * 10**6,  # the last hour of 9999 in UTC: year 10000 in a zone east of it
            _MIN_US + 3600 * 10**6,
            -1,
            0,
            None,
            rng.randrange(-(10**16), 10**16),
        ]
    )


def _nanos(rng: random.Random) -> int | None:
    # timestamp[ns] spans 1677-2262; sub-microsecond digits before 1970 too
    # (DuckDB reads the int64 extremes as infinities)
    return rng.choice([-1, 1, -(2**63) + 10**6, 2**63 - 10**6, None, rng.randrange(-(2**62), 2**62)])


def _days(rng: random.Random) -> int | None:
    return rng.choice([-719162, 2932896, 0, -1, None, rng.randrange(-10000, 30000)])  # 0001-01-01, 9999-12-31


@dataclass(frozen=True)
class Column:
    """A feature column: its Arrow type and a random value in the raw form pa.array takes."""

    name: str
    type: pa.DataType
    value: Callable[[random.Random], Any]
    # types that hold the same values, which another writer may have given some files
    variants: tuple[pa.DataType, ...] = ()


FEATURES = [
    Column("total_spend", pa.float64(), _float, (pa.null(),)),
    Column("ratio32", pa.float32(), _float32),
    Column("transaction_count", pa.int64(), _int64),
    Column("small", pa.int8(), lambda r: r.choice([-128, 127, 0, None]), (pa.int16(), pa.int64())),
    Column("big_unsigned", pa.uint64(), _uint64),
    Column("flag", pa.bool_(), lambda r: r.choice([True, False, None])),
    Column(
        "größe 📦",
        pa.string(),
        _text,
        (pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())),
    ),
    Column(
        "top_category_group",
        pa.large_string(),
        _text,
        (pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())),
    ),
    Column("group_dict", pa.dictionary(pa.int32(), pa.string()), _text),
    Column(
        "last_ts",
        pa.timestamp("us"),
        _micros,
        (pa.timestamp("us"), pa.timestamp("us", "UTC"), pa.timestamp("us", "Asia/Tokyo")),
    ),
    Column("last_ts_utc", pa.timestamp("us", "UTC"), _micros),
    Column("last_ts_tokyo", pa.timestamp("us", "Asia/Tokyo"), _micros),
    Column(
        "last_ts_west",
        pa.timestamp("us", "-05:00"),
        _micros,
        (pa.timestamp("us"), pa.timestamp("us", "UTC"), pa.timestamp("us", "Asia/Tokyo")),
    ),
    Column("ts_ns", pa.timestamp("ns"), _nanos),
    Column("ts_ns_utc", pa.timestamp("ns", "UTC"), _nanos),
    Column("ts_ms", pa.timestamp("ms", "Europe/Paris"), lambda r: r.choice([0, -1, None, 1_700_000_000_123])),
    Column("ts_s", pa.timestamp("s"), lambda r: r.choice([0, -1, None, 1_700_000_000])),
    Column("day", pa.date32(), _days),
    Column("always_null", pa.null(), lambda r: None),
    Column("feature_date", pa.date32(), lambda r: 20000),  # the record's own field: never a value
    Column("x" * 300, pa.float64(), _float),
]

ENTITY_KINDS = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "dictionary": pa.dictionary(pa.int32(), pa.string()),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}


def _entity(rng: random.Random, kind: str, pool: list[Any]) -> Any:
    if rng.random() < 0.3 and pool:
        return rng.choice(pool)  # a duplicate within the date
    if kind in ("string", "large_string", "dictionary"):
        value = rng.choice([f"u{rng.randrange(10**7):07d}", "ü-用户-🙂", "u:1", "id with space", "é" * 2000])
        value = f"{value}{rng.randrange(100)}" if rng.random() < 0.7 else value
    elif kind == "int64":
        value = rng.choice([-(2**63), 2**63 - 1, 0, rng.randrange(-(10**6), 10**6)])
    elif kind == "float64":
        value = rng.choice([1.0, -0.0, 0.0, 2.5, 1e300, math.inf, rng.uniform(-100, 100)])
    else:
        value = rng.random() < 0.5
    pool.append(value)
    return value


@dataclass
class Lake:
    """A random feature dataset on disk, with what each partition was given."""

    root: Path
    entity_kind: str
    dates: list[date] = field(default_factory=list)
    # flags the oracle needs to know nothing about; kept for the log of a failing case
    notes: list[str] = field(default_factory=list)


def _garbage(rng: random.Random) -> bytes:
    return rng.choice([b"", b"PAR1", b"not parquet at all", os.urandom(64)])


def _write_hidden(rng: random.Random, partition: Path) -> None:
    """What writers leave that readers must skip: names starting with `.` or `_`, files and
    directories, some of them valid Parquet of other rows."""
    decoy = pa.table({"user_id": ["hidden"], "total_spend": [666.0]})
    for _ in range(rng.randrange(4)):
        kind = rng.randrange(8)
        if kind == 0:
            (partition / "_SUCCESS").write_bytes(b"")
        elif kind == 1:
            (partition / f".part-{rng.randrange(9)}.parquet.crc").write_bytes(_garbage(rng))
        elif kind == 2:
            nested = partition / "_temporary" / "0" / "_temporary"
            nested.mkdir(parents=True, exist_ok=True)
            (nested / "part-00000.parquet").write_bytes(_garbage(rng))
        elif kind == 3:
            staging = partition / f".spark-staging-{rng.randrange(9)}"
            staging.mkdir(exist_ok=True)
            pq.write_table(decoy, staging / "part-00000.parquet")
        elif kind == 4:
            pq.write_table(decoy, partition / f"_part-{rng.randrange(9)}.parquet")
        elif kind == 5:  # not a data file (`lake.is_data_file`): no .parquet name
            (partition / rng.choice(["README.txt", "part-0.json", "part-00000.parquet.tmp"])).write_bytes(
                b"{}"
            )
        elif kind == 6:  # nor is a subdirectory, as the lake's listings (`lake.is_data_file`) say
            (partition / "backup").mkdir(exist_ok=True)
            pq.write_table(decoy, partition / "backup" / "part-00000.parquet")
        else:
            pq.write_table(decoy, partition / f".part-{rng.randrange(9)}.parquet")


def _write_file(
    rng: random.Random, path: Path, columns: list[Column], entity_kind: str, pool: list[Any], rows: int
) -> None:
    entity_type = ENTITY_KINDS[entity_kind]
    arrays, names = [], []
    order = list(columns)
    rng.shuffle(order)
    for column in order:
        if column.name == "user_id":
            ids = [None if rng.random() < 0.03 else _entity(rng, entity_kind, pool) for _ in range(rows)]
            if entity_type == pa.dictionary(pa.int32(), pa.string()):
                arrays.append(pa.array(ids, pa.string()).dictionary_encode())
            else:
                arrays.append(pa.array(ids, entity_type))
        else:
            data_type = rng.choice(column.variants) if column.variants and rng.random() < 0.3 else column.type
            values = [None if pa.types.is_null(data_type) else column.value(rng) for _ in range(rows)]
            if pa.types.is_dictionary(data_type):
                arrays.append(pa.array(values, pa.string()).dictionary_encode())
            else:
                arrays.append(pa.array(values, data_type))
        names.append(column.name)
    pq.write_table(pa.table(arrays, names=names), path, row_group_size=rng.choice([1, 3, 1000]))


def random_lake(rng: random.Random, root: Path) -> Lake:
    """A features dataset of a few `date=` partitions: empty ones, ones with only hidden files,
    ones of many files, files whose columns differ (extra, missing, reordered), zero-row files."""
    lake = Lake(root, rng.choice(list(ENTITY_KINDS)))
    root.mkdir(parents=True)
    columns = [Column("user_id", ENTITY_KINDS[lake.entity_kind], lambda r: None)]
    columns += rng.sample(FEATURES, rng.randrange(1, 7))
    start = rng.choice([date(1, 1, 1), date(2026, 10, 20), date(9999, 12, 20)])
    days = sorted({start + timedelta(days=rng.randrange(0, 12)) for _ in range(rng.randrange(1, 6))})
    for day in days:
        partition = root / f"date={day.isoformat()}"
        partition.mkdir()
        lake.dates.append(day)
        shape = rng.choices(["empty", "hidden-only", "files", "many"], weights=[1, 1, 6, 1])[0]
        lake.notes.append(f"{day}: {shape}")
        if shape != "empty":
            _write_hidden(rng, partition)
        if shape in ("files", "many"):
            pool: list[Any] = []
            for i in range(rng.randrange(1, 4) if shape == "files" else rng.randrange(12, 25)):
                kept = [c for c in columns if c.name == "user_id" or rng.random() < 0.8]
                if rng.random() < 0.05 and len(kept) > 1:  # a file without the entity column
                    kept = [c for c in kept if c.name != "user_id"]
                rows = rng.choice([0, 1, 2, 5, 40])
                _write_file(
                    rng,
                    partition / f"part-{i:05d}-{rng.randrange(99)}.parquet",
                    kept,
                    lake.entity_kind,
                    pool,
                    rows,
                )
    # names that are no partition: hidden copies, and a file named like one
    if rng.random() < 0.3:
        (root / f".date={days[0].isoformat()}.0123abcd").mkdir()
        (root / f".date={days[0].isoformat()}.0123abcd" / "part-0.parquet").write_bytes(b"junk")
    if rng.random() < 0.2:
        (root / f"_date={days[0].isoformat()}").mkdir()
    if rng.random() < 0.2:
        (root / "date=2000-01-01").write_bytes(b"a file, not a partition")
    return lake


# ---------------------------------------------------------------------------------------------
# The oracle: DuckDB reads the data files; the plain values follow docs/online-store.md


def _data_files(partition: Path) -> list[Path]:
    """The data files of a partition: `*.parquet` files directly in it, hidden names (`.`, `_`)
    skipped (docs/data-contract.md), in path order."""
    return sorted(
        p
        for p in partition.iterdir()
        if p.is_file() and p.name.endswith(".parquet") and not p.name.startswith((".", "_"))
    )


def _iso_utc(micros: int) -> str:
    moment = EPOCH + timedelta(microseconds=micros)
    return moment.isoformat() + "Z"


def _oracle_plain(duck_type: str, value: Any) -> Any:
    """A DuckDB value (epoch micro- or nanoseconds for timestamps) as the online format holds it."""
    if value is None:
        return None
    if duck_type.startswith("TIMESTAMP"):
        return _iso_utc(value // 1000 if "NS" in duck_type else value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, date):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class Expected:
    """What a partition should give: its keyed records in order, or the error reading it raises."""

    records: list[tuple[str, FeatureRecord]] | None  # None: partition_records must fail
    entities: list[str] | None  # None: partition_entities must fail
    error: str | None = None
    any_rows: bool = False
    # records that the compute layer answers with (null ids left out, the last of an id wins)
    keyed: dict[str, FeatureRecord] = field(default_factory=dict)


@functools.cache
def oracle_partition(partition: Path, day: date, entity_column: str = "user_id") -> Expected:
    files = _data_files(partition)
    if not files:
        return Expected([], [])
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    listing = "[" + ", ".join(f"'{f!s}'" for f in files) + "]"
    source = f"read_parquet({listing}, union_by_name = true, filename = true, file_row_number = true)"
    described = connection.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    types = {name: str(kind) for name, kind, *_ in described if name not in ("filename", "file_row_number")}
    if entity_column not in types:
        message = f"has no entity column {entity_column!r}"
        return Expected(None, None, error=message)
    selected = []
    for name, kind in types.items():
        quoted = '"' + name.replace('"', '""') + '"'
        if kind.startswith("TIMESTAMP") and name != entity_column:
            selected.append(f"{'epoch_ns' if 'NS' in kind else 'epoch_us'}({quoted})")
        else:
            selected.append(quoted)
    order = " ".join(f"WHEN '{f}' THEN {i}" for i, f in enumerate(files))
    rows = connection.execute(
        f"SELECT {', '.join(selected)} FROM {source} ORDER BY CASE filename {order} END, file_row_number"
    ).fetchall()
    names = list(types)
    skip = {entity_column, "feature_date", "date"}
    records, entities, keyed = [], [], {}
    empty_ids = 0
    for row in rows:
        values = dict(zip(names, row, strict=True))
        entity = values[entity_column]
        if entity is None or entity == "":
            empty_ids += 1
            continue
        key = str(entity)
        record = FeatureRecord(
            day.isoformat(), {n: _oracle_plain(types[n], v) for n, v in values.items() if n not in skip}
        )
        records.append((key, record))
        entities.append(key)
        keyed[key] = record
    if empty_ids:
        return Expected(None, entities, error="empty", any_rows=True, keyed=keyed)
    return Expected(records, entities, any_rows=bool(rows), keyed=keyed)


def oracle_offline(lake: Lake, ids: list[str], as_of: date) -> dict[str, FeatureRecord] | str:
    """`read_offline_features` by the docs: the newest partition on or before `as_of` (an empty one
    holds no entity), the records of `ids` it holds; an error message when it cannot be read."""
    candidates = [d for d in lake.dates if d <= as_of]
    if not candidates or not ids:
        return {}
    expected = oracle_partition(lake.root / f"date={candidates[-1].isoformat()}", candidates[-1])
    if expected.records is None and expected.error != "empty":
        return expected.error or "error"
    return {i: expected.keyed[i] for i in ids if i in expected.keyed}


# ---------------------------------------------------------------------------------------------
# Comparison, bit-exact


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return a == b


def _same_record(got: FeatureRecord, want: FeatureRecord) -> bool:
    return (
        got.feature_date == want.feature_date
        and list(got.values) == list(want.values)
        and all(_same(got.values[k], want.values[k]) for k in want.values)
    )


def _diff(got: FeatureRecord, want: FeatureRecord) -> str:
    if list(got.values) != list(want.values):
        return f"columns {list(got.values)} != {list(want.values)}"
    bad = {
        k: (got.values[k], want.values[k]) for k in want.values if not _same(got.values[k], want.values[k])
    }
    return f"values (got, want) {bad}"


def check_partition(lake: Lake, day: date, rng: random.Random) -> int:
    """partition_records, partition_entities and the encoding against the oracle; returns the
    number of records compared."""
    partition = lake.root / f"date={day.isoformat()}"
    want = oracle_partition(partition, day)
    context = f"{partition} ({lake.entity_kind}; {lake.notes})"
    if want.records is None:
        gen = partition_records(str(partition), feature_date=day, batch_size=rng.choice([1, 7, 10_000]))
        with pytest.raises(ValueError, match=r"entity column|empty"):
            first = next(gen)
            pytest.fail(f"{context}: a record before the error: {first}")
    else:
        got = list(partition_records(str(partition), feature_date=day, batch_size=rng.choice([1, 7, 10_000])))
        assert [k for k, _ in got] == [k for k, _ in want.records], context
        for (key, record), (_, expected) in zip(got, want.records, strict=True):
            assert _same_record(record, expected), f"{context}: {key!r}: {_diff(record, expected)}"
            # the record round-trips the msgpack format bit for bit
            assert _same_record(decode_record(encode_record(record)), expected), context
    if want.entities is None:
        with pytest.raises(ValueError, match="entity column"):
            partition_entities(str(partition))
    else:
        assert partition_entities(str(partition)).to_pylist() == want.entities, context
    return len(want.records or [])


def check_offline(lake: Lake, rng: random.Random) -> None:
    everyone: list[str] = []
    for day in lake.dates:
        everyone += list(oracle_partition(lake.root / f"date={day.isoformat()}", day).keyed)
    ids = [*rng.sample(everyone, min(len(everyone), rng.randrange(0, 6))), "nobody", "ü-nobody"]
    rng.shuffle(ids)
    for as_of in {
        lake.dates[0] - timedelta(days=1) if lake.dates[0] > date.min else date.min,
        *lake.dates,
        date.max,
    }:
        want = oracle_offline(lake, ids, as_of)
        context = f"{lake.root} as of {as_of} ({lake.entity_kind}; {lake.notes}) ids {ids}"
        if isinstance(want, str):
            with pytest.raises(ValueError, match=want):
                read_offline_features(str(lake.root), ids, as_of=as_of)
            continue
        got = read_offline_features(str(lake.root), ids, as_of=as_of)
        assert sorted(got) == sorted(want), context
        for key, record in want.items():
            assert _same_record(got[key], record), f"{context}: {key!r}: {_diff(got[key], record)}"


def run_lake_case(seed: int, tmp_path: Path) -> int:
    rng = random.Random(seed)
    lake = random_lake(rng, tmp_path / f"case-{seed}" / "features" / "user_features")
    assert feature_dates(str(lake.root)) == lake.dates
    compared = sum(check_partition(lake, day, rng) for day in lake.dates)
    check_offline(lake, rng)
    return compared


CASES = int(os.environ.get("FEATURELAKE_READ_CASES", "100"))


def test_random_lakes_read_as_the_oracle_says(tmp_path: Path) -> None:
    compared = 0
    for seed in range(CASES):
        compared += run_lake_case(seed, tmp_path)
    log.info("%d random lakes, %d records compared with the oracle", CASES, compared)
    assert compared > CASES  # the lakes are not all empty


# ---------------------------------------------------------------------------------------------
# replace_partition interrupted: an exception or SIGKILL at each step, as readers see it

# The audit events of the calls that change the filesystem (renames, directory creation and
# removal); `ctypes.call_function` too, for a rename done through libc.
_MUTATIONS = frozenset(
    {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "shutil.move", "ctypes.call_function"}
)


def _replace_in_child(
    table: pa.Table, dataset: Path, day: date, *, step: int, how: str, exchange: bool = True
) -> str:
    """Run replace_partition in a forked child, interrupted at its `step`-th filesystem change
    (`how`: "kill" SIGKILLs the child there, "raise" raises OSError from it), if it makes that
    many. `exchange=False`: as on a filesystem with no atomic exchange of two directories.
    Returns "done", "raised" or "killed"."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            if not exchange:
                arrow_partitions.exchange_paths = lambda _first, _second: False
            seen = 0

            def interrupt(event: str, _args: tuple) -> None:
                nonlocal seen
                if event in _MUTATIONS:
                    seen += 1
                    if seen == step and how == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    if seen == step:
                        raise OSError(f"injected at change {step} ({event})")

            sys.addaudithook(interrupt)
            replace_partition(table, str(dataset), day)
        except BaseException:  # the parent reads the outcome from the exit code
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return "killed"
    return {0: "done", 3: "raised"}[os.waitstatus_to_exitcode(status)]


def _version(day: date, seed: int, rng: random.Random) -> pa.Table:
    """A table of one run: its columns differ between runs, so that a mix would show."""
    rows = rng.choice([0, 1, 3, 50])
    return pa.table(
        {
            "user_id": [f"u{seed}-{i}" for i in range(rows)],
            f"value_{seed % 3}": [float(seed)] * rows,
            "run": pa.array([seed] * rows, pa.int64()),
        }
    )


def _seen(dataset: Path, day: date) -> list[tuple[str, FeatureRecord]] | None:
    """What a reader sees of the date: None when it lists no such partition."""
    if day not in feature_dates(str(dataset)):
        return None
    return list(partition_records(str(dataset / f"date={day.isoformat()}"), feature_date=day))


def _records(table: pa.Table, day: date) -> list[tuple[str, FeatureRecord]]:
    return [(row.pop("user_id"), FeatureRecord(day.isoformat(), row)) for row in table.to_pylist()]


def _set_aside(dataset: Path, day: date) -> list[str]:
    return sorted(p.name for p in dataset.glob(f".date={day.isoformat()}.old-*"))


def run_crash_sequence(seed: int, root: Path, runs: int, *, exchange: bool = True) -> dict[str, int]:
    """Random runs of replace_partition on one date, each interrupted at a random change or not,
    with a neighbouring date that must never change. Without `exchange`, a run killed between
    its two renames leaves no partition for a moment, but its previous output aside, never lost."""
    rng = random.Random(seed)
    day, neighbour = date(2026, 10, 28), date(2026, 10, 27)
    dataset = root / f"seq-{seed}" / "features"
    replace_partition(pa.table({"user_id": ["n"], "v": [1.0]}), str(dataset), neighbour)
    neighbour_records = _seen(dataset, neighbour)
    committed: list[tuple[str, FeatureRecord]] | None = None
    outcomes: dict[str, int] = {}
    for run in range(runs):
        table = _version(day, seed * 1000 + run, rng)
        # a run makes 3 to 12 changes (more when it removes a killed run's leftovers first)
        step, how = rng.randrange(1, 14), rng.choice(["kill", "raise"])
        outcome = _replace_in_child(table, dataset, day, step=step, how=how, exchange=exchange)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        seen = _seen(dataset, day)
        new = _records(table, day)
        context = f"seed {seed} run {run}: {how} at change {step} ({outcome}, exchange={exchange})"
        if outcome == "done":
            assert seen == new, context
        elif seen is None and committed is not None and not exchange:
            # between the two renames: the previous output must wait aside for the next run
            assert len(_set_aside(dataset, day)) == 1, f"{context}: the previous partition is lost"
            continue
        else:
            assert seen in (committed, new), f"{context}: a reader sees neither the old nor the new partition"
        committed = seen
        assert _seen(dataset, neighbour) == neighbour_records, context
    # a retry that succeeds leaves exactly its files, and nothing hidden beside them
    table = _version(day, seed * 1000 + runs, rng)
    replace_partition(table, str(dataset), day)
    assert _seen(dataset, day) == _records(table, day)
    partition = dataset / f"date={day.isoformat()}"
    assert sorted(p.name for p in partition.iterdir()) == (["part-00000.parquet"] if table.num_rows else [])
    assert sorted(p.name for p in dataset.iterdir()) == [f"date={neighbour}", f"date={day}"]
    return outcomes


CRASH_SEQUENCES = int(os.environ.get("FEATURELAKE_CRASH_SEQUENCES", "12"))


def test_replace_partition_interrupted_anywhere_shows_the_old_or_the_new_partition(tmp_path: Path) -> None:
    totals: dict[str, int] = {}
    for seed in range(CRASH_SEQUENCES):
        for outcome, count in run_crash_sequence(seed, tmp_path, runs=6, exchange=seed % 3 != 2).items():
            totals[outcome] = totals.get(outcome, 0) + count
    log.info("replace_partition runs by outcome: %s", totals)
    assert totals.get("killed") and totals.get("raised") and totals.get("done")


# ---------------------------------------------------------------------------------------------
# The cases the random lakes found, each as it was met

DAY = date(2026, 10, 28)


def _partition(tmp_path: Path, *tables: pa.Table) -> Path:
    partition = tmp_path / f"date={DAY.isoformat()}"
    partition.mkdir()
    for i, table in enumerate(tables):
        pq.write_table(table, partition / f"part-{i:05d}.parquet")
    return partition


def test_a_column_only_later_files_hold_is_in_their_records(tmp_path: Path) -> None:
    # pyarrow's discovery took the first file's columns: `spend_7d` was dropped without a word,
    # and the zero-row file's `old` column put a null in every record.
    partition = _partition(
        tmp_path,
        pa.table({"user_id": pa.array([], pa.string()), "old": pa.array([], pa.int64())}),
        pa.table({"user_id": ["a"], "total_spend": [1.5]}),
        pa.table({"spend_7d": [2.5], "user_id": ["b"], "total_spend": [3.5]}),
    )
    assert list(partition_records(str(partition), feature_date=DAY)) == [
        ("a", FeatureRecord("2026-10-28", {"old": None, "total_spend": 1.5, "spend_7d": None})),
        ("b", FeatureRecord("2026-10-28", {"old": None, "total_spend": 3.5, "spend_7d": 2.5})),
    ]
    assert read_offline_features(str(tmp_path), ["b"], as_of=DAY)["b"].values["spend_7d"] == 2.5


def test_files_that_type_a_column_differently_are_read_as_one_type(tmp_path: Path) -> None:
    # An all-null column (null type) first failed the read ("Unsupported cast from double to
    # null"), and an int32 first failed on the int64 values of a later file.
    partition = _partition(
        tmp_path,
        pa.table({"user_id": ["a"], "std_spend": pa.nulls(1), "n": pa.array([1], pa.int32())}),
        pa.table({"user_id": ["b"], "std_spend": [0.5], "n": pa.array([2**40], pa.int64())}),
        pa.table({"user_id": pa.array(["c"]).dictionary_encode(), "std_spend": [1.0], "n": [3]}),
    )
    assert list(partition_records(str(partition), feature_date=DAY)) == [
        ("a", FeatureRecord("2026-10-28", {"std_spend": None, "n": 1})),
        ("b", FeatureRecord("2026-10-28", {"std_spend": 0.5, "n": 2**40})),
        ("c", FeatureRecord("2026-10-28", {"std_spend": 1.0, "n": 3})),
    ]
    (partition / "part-00003.parquet").write_bytes(b"")
    pq.write_table(pa.table({"user_id": ["d"], "n": ["three"]}), partition / "part-00003.parquet")
    with pytest.raises(ValueError, match=r"date=2026-10-28: its data files disagree on a column's type"):
        next(partition_records(str(partition), feature_date=DAY))


@pytest.mark.parametrize("ids", [[7, None, 8], [1.5, None], [True, None]], ids=["int", "float", "bool"])
def test_the_compute_layer_skips_null_ids_whatever_the_column_type(tmp_path: Path, ids: list) -> None:
    # A text column's null ids were left out, and any other type's failed the read: "a feature
    # row has an empty 'user_id'", though no one asked for it.
    _partition(tmp_path, pa.table({"user_id": ids, "v": [float(i) for i in range(len(ids))]}))
    assert read_offline_features(str(tmp_path), [str(ids[0]), "nobody"], as_of=DAY) == {
        str(ids[0]): FeatureRecord("2026-10-28", {"v": 0.0})
    }


def test_only_data_files_directly_in_the_partition_are_read(tmp_path: Path) -> None:
    # A README failed the read ("Could not read schema ... Is this a 'parquet' file?"), and the
    # rows of a subdirectory's file were published: `lake.is_data_file` says neither is data.
    partition = _partition(tmp_path, pa.table({"user_id": ["a"], "v": [1.0]}))
    (partition / "README.txt").write_text("copied from the old lake")
    (partition / "backup").mkdir()
    pq.write_table(pa.table({"user_id": ["z"], "v": [9.0]}), partition / "backup" / "part-00000.parquet")
    assert [e for e, _ in partition_records(str(partition), feature_date=DAY)] == ["a"]
    assert partition_entities(str(partition)).to_pylist() == ["a"]


def test_a_run_killed_between_its_renames_leaves_the_previous_partition(tmp_path: Path) -> None:
    # The run renamed the partition aside, then died before renaming the new one in: readers saw
    # no date (the compute layer answered from an older one, a publish removed the date's
    # records), until a rerun; which deleted the set-aside partition first.
    dataset = tmp_path / "features"
    old = pa.table({"user_id": ["a"], "run": [1]})
    replace_partition(old, str(dataset), DAY)
    new = pa.table({"user_id": ["b"], "run": [2]})
    # changes: 1 mkdir of the new version, 2-3 the first rename (shutil.move, os.rename)
    assert _replace_in_child(new, dataset, DAY, step=4, how="kill") == "killed"
    assert _seen(dataset, DAY) in (_records(old, DAY), _records(new, DAY))


def test_without_an_atomic_exchange_a_killed_runs_partition_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where directories cannot be exchanged in one rename (the two-rename path), the next run
    # deleted the partition that the killed run had set aside: a failure of that run lost it.
    dataset = tmp_path / "features"
    old = pa.table({"user_id": ["a"], "run": [1]})
    replace_partition(old, str(dataset), DAY)
    new = pa.table({"user_id": ["b"], "run": [2]})
    assert _replace_in_child(new, dataset, DAY, step=4, how="kill", exchange=False) == "killed"
    assert _seen(dataset, DAY) is None, "between the renames, until the next run, no partition"

    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(arrow_partitions.pq, "write_table", fail)
    with pytest.raises(OSError, match="disk full"):
        replace_partition(new, str(dataset), DAY)
    assert _seen(dataset, DAY) == _records(old, DAY)
    assert sorted(p.name for p in dataset.iterdir()) == [f"date={DAY.isoformat()}"]
