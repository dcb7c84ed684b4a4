"""The synthetic raw lake: schema and layout as in docs/data-contract.md, determinism, messy rows,
skew, the `featurelake generate` CLI and bad input."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featurelake.cli import LAKE_ENVVAR, app
from featurelake.synthetic import (
    CATEGORIES,
    CATEGORIES_SCHEMA,
    MAX_ROWS_PER_DATE,
    MESSY_ROW_FRACTIONS,
    MESSY_ROW_KINDS,
    PART_FILE,
    REFUND_FRACTION,
    TRANSACTIONS_SCHEMA,
    UNKNOWN_CATEGORY_IDS,
    GenerationSummary,
    build_population,
    generate_lake,
    generate_transactions,
)

START = date(2026, 1, 1)
END = date(2026, 1, 8)
USERS = 3000
SEED = 11


def _partition(lake: Path, day: date) -> Path:
    return lake / "raw" / "transactions" / f"date={day.isoformat()}"


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def _all_files(lake: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(lake)): path.read_bytes() for path in sorted(lake.rglob("*")) if path.is_file()
    }


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    root = tmp_path_factory.mktemp("lake")
    summary = generate_lake(lake=root, start=START, end=END, users=USERS, seed=SEED)
    return root, summary


@pytest.fixture(scope="module")
def transactions(lake: tuple[Path, GenerationSummary]) -> dict[date, pa.Table]:
    root, _ = lake
    return {day: pq.read_table(_partition(root, day) / PART_FILE) for day in _days(START, END)}


# Schema and layout


def test_layout_is_one_file_per_date_directory(lake: tuple[Path, GenerationSummary]) -> None:
    root, summary = lake
    dirs = sorted(p.name for p in (root / "raw" / "transactions").iterdir())
    assert dirs == [f"date={day.isoformat()}" for day in _days(START, END)]
    for day in _days(START, END):
        assert [p.name for p in _partition(root, day).iterdir()] == [PART_FILE]
    assert [p.name for p in (root / "raw" / "categories").iterdir()] == [PART_FILE]
    assert sorted(summary.rows_by_date) == _days(START, END)


def test_transaction_schema_is_exactly_the_contract(lake: tuple[Path, GenerationSummary]) -> None:
    root, _ = lake
    for day in _days(START, END):
        schema = pq.read_schema(_partition(root, day) / PART_FILE)
        assert schema.remove_metadata() == TRANSACTIONS_SCHEMA
        assert schema.names == [
            "transaction_id",
            "user_id",
            "merchant_id",
            "category_id",
            "amount",
            "currency",
            "transaction_ts",
        ]
        assert "date" not in schema.names
        assert schema.field("transaction_ts").type == pa.timestamp("us", tz="UTC")
        assert schema.field("category_id").type == pa.int32()
        assert schema.field("amount").type == pa.float64()


def test_parquet_is_snappy(lake: tuple[Path, GenerationSummary]) -> None:
    root, _ = lake
    metadata = pq.ParquetFile(_partition(root, START) / PART_FILE).metadata
    row_group = metadata.row_group(0)
    assert {row_group.column(i).compression for i in range(row_group.num_columns)} == {"SNAPPY"}


def test_categories_lookup(lake: tuple[Path, GenerationSummary]) -> None:
    root, _ = lake
    categories = pq.read_table(root / "raw" / "categories" / PART_FILE)
    assert categories.schema.remove_metadata() == CATEGORIES_SCHEMA
    ids = categories.column("category_id").to_pylist()
    assert ids == list(range(1, len(CATEGORIES) + 1))
    assert len(ids) == 40
    assert len(set(categories.column("category_group").to_pylist())) == 8
    assert "unknown" not in categories.column("category_group").to_pylist()
    assert not set(ids) & set(UNKNOWN_CATEGORY_IDS)


def test_hive_read_gets_date_from_the_directory_only(lake: tuple[Path, GenerationSummary]) -> None:
    import pyarrow.dataset as ds

    root, summary = lake
    dataset = ds.dataset(root / "raw" / "transactions", format="parquet", partitioning="hive")
    assert dataset.schema.names.count("date") == 1
    assert dataset.count_rows() == summary.total_rows


def test_values_follow_the_contract(transactions: dict[date, pa.Table]) -> None:
    for day, table in transactions.items():
        ts = table.column("transaction_ts")
        assert ts.null_count == 0
        # The UTC date of every timestamp is the partition date.
        assert set(pc.strftime(ts, format="%Y-%m-%d").to_pylist()) == {day.isoformat()}
        assert set(table.column("currency").to_pylist()) == {"USD"}
        assert table.column("transaction_id").null_count == 0
        assert table.column("merchant_id").null_count == 0
        assert table.column("category_id").null_count == 0
        assert all(
            re.fullmatch(rf"t{day:%Y%m%d}-\d{{9}}", t) for t in table.column("transaction_id").to_pylist()
        )
        users = [u for u in table.column("user_id").to_pylist() if u]
        assert all(re.fullmatch(r"u\d{7}", u) for u in users)
        assert all(re.fullmatch(r"m\d{5}", m) for m in table.column("merchant_id").to_pylist())
        amount = table.column("amount").drop_null().to_numpy()
        amount = amount[~np.isnan(amount)]
        np.testing.assert_array_equal(np.round(amount, 2), amount)
        assert (amount != 0).all()


def test_transaction_ids_carry_a_four_digit_year_below_1000_too() -> None:
    """`tYYYYMMDD-`: strftime's %Y gives '999' for the year 999 on glibc, so the id must not use it."""
    day = date(999, 1, 2)
    batch = generate_transactions(
        day=day, population=build_population(users=10, seed=SEED), transactions_per_user_day=1.0
    )
    ids = batch.table.column("transaction_id").to_pylist()
    assert ids
    assert all(re.fullmatch(r"t09990102-\d{9}", t) for t in ids), ids[:3]


def test_timestamps_have_microseconds_and_cover_the_day(transactions: dict[date, pa.Table]) -> None:
    offsets = []
    for day, table in transactions.items():
        micros = table.column("transaction_ts").cast(pa.int64()).to_numpy()
        day_start_us = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000
        offsets.append(micros - day_start_us)
    within_day = np.concatenate(offsets)
    assert within_day.min() >= 0
    assert within_day.max() < 86_400_000_000
    assert (within_day % 1_000_000 != 0).mean() > 0.99
    # Uniform within the day: each 6-hour quarter holds about a quarter of the rows.
    quarters = np.bincount(within_day // 21_600_000_000, minlength=4) / len(within_day)
    np.testing.assert_allclose(quarters, 0.25, atol=0.02)


def test_refund_share(transactions: dict[date, pa.Table]) -> None:
    amount = pa.concat_arrays([t.column("amount").combine_chunks() for t in transactions.values()])
    values = amount.drop_null().to_numpy()
    values = values[~np.isnan(values)]
    assert (values < 0).mean() == pytest.approx(REFUND_FRACTION, abs=0.005)


# Messy rows


def test_messy_rows_of_every_kind_match_the_summary(
    lake: tuple[Path, GenerationSummary], transactions: dict[date, pa.Table]
) -> None:
    _, summary = lake
    counts: Counter[str] = Counter()
    for table in transactions.values():
        user_id = table.column("user_id")
        amount = table.column("amount")
        counts["null_user_id"] += user_id.null_count
        counts["empty_user_id"] += pc.sum(pc.equal(user_id, "")).as_py() or 0
        counts["null_amount"] += amount.null_count
        counts["nan_amount"] += pc.sum(pc.is_nan(amount)).as_py() or 0
        # Duplicates are exact copies, so they are counted by rows beyond the first per transaction_id.
        ids = table.column("transaction_id").to_pylist()
        counts["duplicate_row"] += len(ids) - len(set(ids))
    # Unknown categories are counted on distinct rows: a duplicate may copy one.
    for table in transactions.values():
        distinct = table.slice(0, table.num_rows - _duplicates(table))
        known = pc.is_in(distinct.column("category_id"), value_set=pa.array(range(1, 41), pa.int32()))
        counts["unknown_category_id"] += pc.sum(pc.invert(known)).as_py() or 0
    assert dict(counts) == summary.messy_rows
    assert all(summary.messy_rows[kind] > 0 for kind in MESSY_ROW_KINDS)


def _duplicates(table: pa.Table) -> int:
    ids = table.column("transaction_id").to_pylist()
    return len(ids) - len(set(ids))


def test_messy_fractions_are_near_the_documented_ones() -> None:
    population = build_population(users=20_000, seed=3)
    batch = generate_transactions(day=START, population=population, transactions_per_user_day=5.0)
    distinct_rows = batch.table.num_rows - batch.messy_rows["duplicate_row"]
    for kind, fraction in MESSY_ROW_FRACTIONS.items():
        expected = fraction * distinct_rows
        # Within 5 binomial standard deviations.
        assert abs(batch.messy_rows[kind] - expected) < 5 * math.sqrt(expected) + 1, kind


def test_duplicates_are_exact_copies_of_valid_rows_in_the_same_partition(
    transactions: dict[date, pa.Table],
) -> None:
    for table in transactions.values():
        rows = table.to_pylist()
        by_id: dict[str, list[dict[str, object]]] = {}
        for row in rows:
            by_id.setdefault(row["transaction_id"], []).append(row)
        copies = [versions for versions in by_id.values() if len(versions) > 1]
        assert copies
        for versions in copies:
            first = versions[0]
            assert all(v == first for v in versions), "a duplicate differs from its original"
            assert first["user_id"]
            assert first["amount"] is not None and not math.isnan(first["amount"])


def test_messy_kinds_are_exclusive(transactions: dict[date, pa.Table]) -> None:
    for table in transactions.values():
        user_bad = pc.fill_null(pc.equal(table.column("user_id"), ""), True)
        amount = table.column("amount")
        amount_bad = pc.fill_null(pc.is_nan(amount), True)
        assert not pc.any(pc.and_(user_bad, amount_bad)).as_py()


# Skew


def test_activity_is_heavy_tailed_with_light_users() -> None:
    users, days = 2000, 90
    population = build_population(users=users, seed=SEED)
    per_user = np.zeros(users, dtype=np.int64)
    recent = np.zeros(users, dtype=np.int64)
    end = START + timedelta(days=days - 1)
    for day in _days(START, end):
        table = generate_transactions(day=day, population=population, transactions_per_user_day=0.5).table
        ids = pc.utf8_slice_codeunits(table.column("user_id").drop_null(), 1)
        numbers = np.asarray([int(u) for u in ids.to_pylist() if u])
        counts = np.bincount(numbers, minlength=users)
        per_user += counts
        if day > end - timedelta(days=7):
            recent += counts
    share_of_top_1pct = np.sort(per_user)[::-1][: users // 100].sum() / per_user.sum()
    assert share_of_top_1pct > 0.10
    active = per_user > 0
    assert (per_user == 1).sum() >= 5, "expected users with exactly one transaction in 90 days"
    assert (active & (recent == 0)).sum() >= 50, "expected active users with nothing in the last 7 days"
    assert np.median(per_user) < per_user.mean()


def test_merchants_are_zipf_like() -> None:
    population = build_population(users=5000, seed=SEED)
    table = generate_transactions(day=START, population=population, transactions_per_user_day=2.0).table
    counts = sorted(Counter(table.column("merchant_id").to_pylist()).values(), reverse=True)
    assert population.merchants == 500
    top_10pct = sum(counts[: population.merchants // 10]) / sum(counts)
    assert top_10pct > 0.4


# Determinism


def test_same_arguments_give_byte_identical_files(
    lake: tuple[Path, GenerationSummary], tmp_path: Path
) -> None:
    root, summary = lake
    again = generate_lake(lake=tmp_path, start=START, end=END, users=USERS, seed=SEED)
    assert _all_files(tmp_path) == _all_files(root)
    assert again.rows_by_date == summary.rows_by_date
    assert again.messy_rows == summary.messy_rows


def test_split_range_equals_one_range_whatever_the_workers(
    lake: tuple[Path, GenerationSummary], tmp_path: Path
) -> None:
    root, _ = lake
    middle = START + timedelta(days=3)
    generate_lake(lake=tmp_path, start=START, end=middle, users=USERS, seed=SEED, workers=1)
    generate_lake(lake=tmp_path, start=middle + timedelta(days=1), end=END, users=USERS, seed=SEED, workers=3)
    assert _all_files(tmp_path) == _all_files(root)


def test_a_different_seed_gives_different_data(transactions: dict[date, pa.Table], tmp_path: Path) -> None:
    generate_lake(lake=tmp_path, start=START, end=START, users=USERS, seed=SEED + 1)
    other = pq.read_table(_partition(tmp_path, START) / PART_FILE)
    assert not other.equals(transactions[START])


def test_files_carry_no_wall_clock_metadata(lake: tuple[Path, GenerationSummary]) -> None:
    root, _ = lake
    metadata = pq.ParquetFile(_partition(root, START) / PART_FILE).metadata
    keys = set((metadata.metadata or {}).keys())
    assert keys <= {b"ARROW:schema"}


def test_rerun_replaces_the_date_directory(tmp_path: Path) -> None:
    generate_lake(lake=tmp_path, start=START, end=START, users=100, seed=SEED)
    directory = _partition(tmp_path, START)
    first = (directory / PART_FILE).read_bytes()
    (directory / "part-00001.parquet").write_bytes(b"stale")
    (directory / f".{PART_FILE}.123.tmp").write_bytes(b"left by a crash")
    generate_lake(lake=tmp_path, start=START, end=START, users=100, seed=SEED)
    assert [p.name for p in directory.iterdir()] == [PART_FILE]
    assert (directory / PART_FILE).read_bytes() == first


def test_a_rerun_keeps_identical_files_and_replaces_changed_ones(tmp_path: Path) -> None:
    """The feature job rebuilds a tile whose raw files changed (by name, size or modification time):
    regenerating the same data must not look like a change, and other data must."""
    generate_lake(lake=tmp_path, start=START, end=START, users=100, seed=SEED)
    part = _partition(tmp_path, START) / PART_FILE
    categories = tmp_path / "raw" / "categories" / PART_FILE
    past = 1_000_000_000
    for path in (part, categories):
        os.utime(path, ns=(past, past))
    generate_lake(lake=tmp_path, start=START, end=START, users=100, seed=SEED)
    assert part.stat().st_mtime_ns == categories.stat().st_mtime_ns == past
    generate_lake(lake=tmp_path, start=START, end=START, users=200, seed=SEED)
    assert part.stat().st_mtime_ns != past, "another population's rows replace the file"
    assert categories.stat().st_mtime_ns == past


def test_zero_rate_writes_empty_partitions_with_the_schema(tmp_path: Path) -> None:
    summary = generate_lake(
        lake=tmp_path, start=START, end=START, users=10, seed=SEED, transactions_per_user_day=0.0
    )
    table = pq.read_table(_partition(tmp_path, START) / PART_FILE)
    assert table.num_rows == 0 == summary.total_rows
    assert table.schema.remove_metadata() == TRANSACTIONS_SCHEMA


def test_progress_is_called_once_per_date_in_order(tmp_path: Path) -> None:
    seen: list[tuple[date, int]] = []
    summary = generate_lake(
        lake=tmp_path,
        start=START,
        end=START + timedelta(days=4),
        users=50,
        seed=SEED,
        progress=lambda day, rows: seen.append((day, rows)),
    )
    assert seen == list(summary.rows_by_date.items())
    assert [day for day, _ in seen] == _days(START, START + timedelta(days=4))


# Bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"end": START - timedelta(days=1)}, "is before start", id="end-before-start"),
        pytest.param({"users": 0}, "users must be >= 1", id="no-users"),
        pytest.param({"seed": -1}, "seed must be >= 0", id="negative-seed"),
        pytest.param({"transactions_per_user_day": -0.1}, "transactions_per_user_day", id="negative-rate"),
        pytest.param({"transactions_per_user_day": math.nan}, "transactions_per_user_day", id="nan-rate"),
        pytest.param({"workers": 0}, "workers must be >= 1", id="no-workers"),
    ],
)
def test_bad_input_raises_a_clear_error(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"lake": tmp_path, "start": START, "end": START, "users": 10, "seed": 1}
    with pytest.raises(ValueError, match=message):
        generate_lake(**{**arguments, **kwargs})  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir()), "nothing is written on bad input"


# CLI

runner = CliRunner()


def test_cli_generate_writes_the_lake_and_prints_a_summary(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "generate",
            "--start",
            "2026-01-01",
            "--end",
            "2026-01-03",
            "--users",
            "200",
            "--seed",
            "5",
            "--lake",
            str(tmp_path),
            "--transactions-per-user-day",
            "1.5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rows/s" in result.output
    assert "duplicate_row" in result.output
    assert sorted(p.name for p in (tmp_path / "raw" / "transactions").iterdir()) == [
        "date=2026-01-01",
        "date=2026-01-02",
        "date=2026-01-03",
    ]
    direct = generate_transactions(
        day=date(2026, 1, 2), population=build_population(users=200, seed=5), transactions_per_user_day=1.5
    )
    written = pq.read_table(_partition(tmp_path, date(2026, 1, 2)) / PART_FILE)
    assert written.equals(direct.table)


def test_cli_takes_the_lake_from_the_airflow_variable(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["generate", "--start", "2026-01-01", "--end", "2026-01-01", "--users", "10", "--seed", "1"],
        env={LAKE_ENVVAR: str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    assert (_partition(tmp_path, START) / PART_FILE).exists()


def test_cli_takes_a_file_uri_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DAGs accept a `file://` lake root, and so does the generator: nothing lands elsewhere."""
    monkeypatch.chdir(tmp_path)
    lake = tmp_path / "lake"
    result = runner.invoke(
        app,
        ["generate", "--start", "2026-01-01", "--end", "2026-01-01", "--users", "10", "--seed", "1"],
        env={LAKE_ENVVAR: f"file://{lake}"},
    )
    assert result.exit_code == 0, result.output
    assert (_partition(lake, START) / PART_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake"]


def test_cli_refuses_an_object_store_lake_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        ["generate", "--start", "2026-01-01", "--end", "2026-01-01", "--users", "10", "--seed", "1"],
        env={LAKE_ENVVAR: "s3://bucket/lake"},
    )
    assert result.exit_code == 2, result.output
    assert "s3://bucket/lake is not a local path" in " ".join(result.output.split())
    assert not any(tmp_path.iterdir()), "nothing is written"


@pytest.mark.parametrize("lake", ["", "file://"])
def test_cli_refuses_an_empty_lake_instead_of_writing_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lake: str
) -> None:
    """An empty --lake (or Variable) names no directory: it must not mean the current one."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "generate",
            "--start",
            "2026-01-01",
            "--end",
            "2026-01-01",
            "--users",
            "10",
            "--seed",
            "1",
            "--lake",
            lake,
        ],
    )
    assert result.exit_code == 2, result.output
    assert f"lake {lake!r} names no directory" in " ".join(result.output.split())
    assert not any(tmp_path.iterdir()), "nothing is written"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--start", "2026-01-05", "--end", "2026-01-01", "--users", "10"], "before start", id="order"
        ),
        pytest.param(
            ["--start", "2026-01-01", "--end", "2026-01-01", "--users", "0"], "users must be", id="users"
        ),
        pytest.param(["--start", "01/01/2026", "--end", "2026-01-01", "--users", "10"], "start", id="format"),
    ],
)
def test_cli_rejects_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["generate", *args, "--seed", "1", "--lake", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output


def _no_population(**kwargs: object) -> None:
    # Without the check, these volumes would allocate tens of GiB: fail the test instead.
    pytest.fail(f"a population was built for {kwargs}")


@pytest.mark.parametrize(
    ("users", "rate"),
    [
        pytest.param(10, 1e300, id="rate-overflowing-numpy-poisson"),
        pytest.param(10, 1e8, id="huge-rate"),
        pytest.param(MAX_ROWS_PER_DATE + 1, 1.0, id="huge-users"),
        # a mean this close to the ids one array holds passed, then failed after drawing every column
        pytest.param(113_000_000, 1.0, id="no-room-for-the-draw-and-the-duplicates"),
    ],
)
def test_too_many_rows_per_date_are_refused_before_anything_is_allocated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, users: int, rate: float
) -> None:
    monkeypatch.setattr("featurelake.synthetic.build_population", _no_population)
    with pytest.raises(
        ValueError,
        match=r"rows per date, more than one date file holds with its duplicate rows \(112,357,354\)",
    ):
        generate_lake(
            lake=tmp_path, start=START, end=START, users=users, seed=1, transactions_per_user_day=rate
        )
    assert not any(tmp_path.iterdir()), "nothing is written"


def test_the_largest_mean_leaves_room_for_its_draw_and_its_duplicates() -> None:
    """The rows of a date are a Poisson draw around the mean plus about 0.5% duplicate copies, and
    their ids must fit one Arrow string array: at the largest mean accepted, ten standard deviations
    of the draw and the copies still fit."""
    from featurelake.synthetic import _MAX_IDS_PER_DATE

    duplicates = MESSY_ROW_FRACTIONS["duplicate_row"]
    assert MAX_ROWS_PER_DATE * (1 + duplicates) + 10 * MAX_ROWS_PER_DATE**0.5 <= _MAX_IDS_PER_DATE
    assert MAX_ROWS_PER_DATE > 0.99 * _MAX_IDS_PER_DATE


def test_one_date_with_too_many_rows_is_refused_naming_the_inputs() -> None:
    population = build_population(users=10, seed=SEED)
    with pytest.raises(ValueError, match=r"= 10 \* 1e\+300 = 1e\+301 rows per date.*lower users"):
        generate_transactions(day=START, population=population, transactions_per_user_day=1e300)


def test_cli_refuses_too_many_rows_per_date_before_allocating_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 users at 1e8 transactions a day would allocate gigabytes, and 1e300 overflowed numpy's
    Poisson draw with a message naming neither option."""
    monkeypatch.setattr("featurelake.synthetic.build_population", _no_population)
    for rate in ("1e8", "1e300"):
        result = runner.invoke(
            app,
            [
                "generate",
                *("--start", "2026-01-01", "--end", "2026-01-01", "--users", "10", "--seed", "1"),
                *("--lake", str(tmp_path), "--transactions-per-user-day", rate),
            ],
        )
        assert result.exit_code == 2, result.output
        assert "lower users or transactions_per_user_day" in " ".join(result.output.split())
    assert not any(tmp_path.iterdir()), "nothing is written"


def _lake_that_is_a_file(tmp_path: Path) -> tuple[Path, Path]:
    lake = tmp_path / "lake"
    lake.write_text("not a directory")
    return lake, lake / "raw" / "categories"


def _date_directory_that_is_a_file(tmp_path: Path) -> tuple[Path, Path]:
    lake = tmp_path / "lake"
    taken = _partition(lake, START)
    taken.parent.mkdir(parents=True)
    taken.write_text("not a directory")
    return lake, taken


@pytest.mark.parametrize(
    "make_lake",
    [
        pytest.param(_lake_that_is_a_file, id="lake-is-a-file"),
        pytest.param(_date_directory_that_is_a_file, id="partition-is-a-file"),
    ],
)
def test_cli_refuses_a_lake_it_cannot_write_without_a_traceback(
    tmp_path: Path, make_lake: Callable[[Path], tuple[Path, Path]]
) -> None:
    lake, named = make_lake(tmp_path)
    result = runner.invoke(
        app,
        [
            "generate",
            *("--start", "2026-01-01", "--end", "2026-01-01", "--users", "10", "--seed", "1"),
            *("--lake", str(lake)),
        ],
    )
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, OSError), "no traceback"
    output = " ".join(result.output.split())
    assert f"cannot write the lake {lake}" in output
    assert str(named) in output
    assert "pass --lake a writable directory" in output


def test_cli_reports_an_unwritable_lake_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root, chmod cannot make a directory unwritable here, so the write itself is refused."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "raw"))

    monkeypatch.setattr(Path, "mkdir", refuse)
    result = runner.invoke(
        app,
        [
            "generate",
            *("--start", "2026-01-01", "--end", "2026-01-01", "--users", "10", "--seed", "1"),
            *("--lake", str(tmp_path)),
        ],
    )
    assert result.exit_code == 2, result.output
    assert f"cannot write the lake {tmp_path}: Permission denied: {tmp_path / 'raw'}" in " ".join(
        result.output.split()
    )


def test_cli_prints_an_error_naming_a_path_verbatim_even_with_brackets(tmp_path: Path) -> None:
    """Error messages hold the caller's paths: they are text, not rich markup (`[/x]` raised
    MarkupError with a traceback)."""
    result = runner.invoke(
        app,
        [
            "generate",
            *("--start", "2026-01-01", "--end", "2026-01-01", "--users", "10", "--seed", "1"),
            *("--lake", "s3://bucket/[/x]"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "error: lake s3://bucket/[/x] is not a local path" in result.output


def test_cli_prints_the_lake_of_its_summary_verbatim_even_with_brackets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary names the lake as given, not as rich markup: `[a]` vanished from it, and `[/q]`
    raised MarkupError with a traceback (exit 1) after the whole lake was written."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "generate",
            *("--start", "2026-01-01", "--end", "2026-01-01", "--users", "10", "--seed", "1"),
            *("--lake", "b[a]ck/z[/q]"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "b[a]ck/z[/q]" in result.output
    assert (_partition(tmp_path / "b[a]ck" / "z[" / "q]", START) / PART_FILE).is_file()


def test_cli_prints_a_long_lake_of_its_summary_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lake longer than the value column (80 characters wide when not a terminal) is folded onto
    more lines, not cut short with an ellipsis."""
    monkeypatch.chdir(tmp_path)
    lake = "lake-" + "x" * 50 + "/" + "y" * 60 + "/end"
    result = runner.invoke(
        app,
        [
            "generate",
            *("--start", "2026-01-01", "--end", "2026-01-01", "--users", "10", "--seed", "1"),
            *("--lake", lake),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [line.split("│")[1:3] for line in result.output.splitlines() if line.count("│") == 3]
    printed = ""
    for what, value in rows:
        if what.strip() not in ("", "lake"):
            if printed:
                break
            continue
        printed += value.strip()
    assert printed == lake


def test_cli_writes_nothing_under_the_current_directory_for_a_file_uri_with_a_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "generate",
            *("--start", "2026-01-01", "--end", "2026-01-01", "--users", "10", "--seed", "1"),
            *("--lake", f"file://localhost{tmp_path}/lake"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "is not a file:// URI of an absolute path" in result.output
    assert not any(tmp_path.iterdir()), "nothing is written"


def test_cli_reports_running_out_of_memory_naming_what_to_lower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A population too large for this machine's memory: a message, not numpy's traceback."""

    def exhausted(**kwargs: object) -> None:
        raise MemoryError("Unable to allocate 7.45 GiB for an array")

    monkeypatch.setattr("featurelake.synthetic.build_population", exhausted)
    result = runner.invoke(
        app,
        [
            "generate",
            *("--start", "2026-01-01", "--end", "2026-01-01", "--users", "100000000", "--seed", "1"),
            *("--lake", str(tmp_path)),
        ],
    )
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, MemoryError)
    output = " ".join(result.output.split())
    assert "out of memory generating 100,000,000 users" in output
    assert "lower --users, --transactions-per-user-day or --workers" in output


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_cli_merchant_api_rejects_a_port_out_of_range_before_announcing_it(port: str) -> None:
    result = runner.invoke(app, ["merchant-api", "--port", port])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--port'" in result.output
    assert "merchant API sandbox on" not in result.output


def test_cli_without_a_command_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "generate" in result.output


def test_cli_help_promises_only_the_commands_it_has() -> None:
    """The CLI runs no feature job (Airflow does): its description said it did."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    described = " ".join(result.output.split())
    assert "synthetic raw data for the lake, and the merchant profile API sandbox" in described
    assert "feature jobs" not in described
