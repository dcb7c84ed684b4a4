"""Deterministic synthetic raw transactions and the categories lookup, in the layout of
docs/data-contract.md.

Determinism: the user population depends only on (seed, users), and each date's rows only on the
population, the rate and a random generator seeded from (seed, date). So the same arguments give
byte-identical files, and generating a range in pieces gives the same partitions as generating it in
one go (with the same numpy and pyarrow versions).

Every column is built with vectorised numpy and handed to pyarrow as buffers: no Python loop per row.
"""

from __future__ import annotations

import filecmp
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurelake.lake import LakeLayout, local_path
from featurelake.partitioning import date_range

log = logging.getLogger(__name__)

PART_FILE: Final = "part-00000.parquet"
CURRENCY: Final = "USD"

TRANSACTIONS_SCHEMA: Final = pa.schema(
    [
        pa.field("transaction_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("merchant_id", pa.string()),
        pa.field("category_id", pa.int32()),
        pa.field("amount", pa.float64()),
        pa.field("currency", pa.string()),
        pa.field("transaction_ts", pa.timestamp("us", tz="UTC")),
    ]
)
"""The columns of every raw transactions file. The date is in the directory name only."""

CATEGORIES_SCHEMA: Final = pa.schema(
    [
        pa.field("category_id", pa.int32()),
        pa.field("category_name", pa.string()),
        pa.field("category_group", pa.string()),
    ]
)

# (category_group, category_name, typical amount in USD); category_id is the 1-based position.
CATEGORIES: Final[tuple[tuple[str, str, float], ...]] = (
    ("groceries", "supermarket", 55.0),
    ("groceries", "convenience_store", 12.0),
    ("groceries", "bakery", 9.0),
    ("groceries", "butcher", 30.0),
    ("groceries", "farmers_market", 22.0),
    ("dining", "restaurant", 48.0),
    ("dining", "fast_food", 11.0),
    ("dining", "cafe", 7.0),
    ("dining", "bar", 32.0),
    ("dining", "food_delivery", 28.0),
    ("transport", "fuel", 45.0),
    ("transport", "public_transit", 3.0),
    ("transport", "rideshare", 18.0),
    ("transport", "parking", 8.0),
    ("transport", "tolls", 6.0),
    ("shopping", "clothing", 60.0),
    ("shopping", "electronics", 180.0),
    ("shopping", "home_goods", 70.0),
    ("shopping", "books", 20.0),
    ("shopping", "sporting_goods", 65.0),
    ("entertainment", "streaming", 14.0),
    ("entertainment", "cinema", 25.0),
    ("entertainment", "concerts", 90.0),
    ("entertainment", "video_games", 40.0),
    ("entertainment", "theme_parks", 120.0),
    ("travel", "airlines", 350.0),
    ("travel", "hotels", 210.0),
    ("travel", "car_rental", 160.0),
    ("travel", "travel_agency", 600.0),
    ("travel", "cruises", 1200.0),
    ("health", "pharmacy", 24.0),
    ("health", "doctor", 110.0),
    ("health", "dentist", 150.0),
    ("health", "gym", 40.0),
    ("health", "optician", 130.0),
    ("utilities", "electricity", 95.0),
    ("utilities", "water", 45.0),
    ("utilities", "internet", 60.0),
    ("utilities", "mobile_phone", 50.0),
    ("utilities", "insurance", 140.0),
)

UNKNOWN_CATEGORY_IDS: Final = range(1000, 1010)
"""category_id values of the `unknown_category_id` messy rows: never present in the lookup."""

# Messy rows, as a share of each date's generated transactions. The first five kinds are exclusive:
# a row has at most one of them. `duplicate_row` rows are extra exact copies of rows that are
# otherwise valid (no null/empty user_id, no null/NaN amount), written to the end of the same file.
MESSY_ROW_FRACTIONS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "null_user_id": 0.002,
        "empty_user_id": 0.0005,
        "null_amount": 0.001,
        "nan_amount": 0.001,
        "unknown_category_id": 0.005,
        "duplicate_row": 0.005,
    }
)
MESSY_ROW_KINDS: Final = tuple(MESSY_ROW_FRACTIONS)
INVALID_ROW_KINDS: Final = ("null_user_id", "empty_user_id", "null_amount", "nan_amount")
"""Messy kinds the feature job quarantines; `unknown_category_id` rows are valid (group 'unknown')."""

REFUND_FRACTION: Final = 0.03
"""Share of transactions that are refunds (negative amount)."""

# The population: heavy-tailed activity, Zipf-popular merchants, a few favourite merchants per user.
ACTIVITY_SIGMA: Final = 1.6
"""Sigma of the lognormal activity weights: the top 1% of users make about a quarter of transactions."""
MERCHANT_ZIPF_EXPONENT: Final = 1.1
MIN_MERCHANTS: Final = 50
USERS_PER_MERCHANT: Final = 10
FAVOURITE_MERCHANTS: Final = 3
FAVOURITE_SHARE: Final = 0.6
"""Share of a user's transactions at one of their favourite merchants; the rest follow popularity."""
MERCHANT_PRICE_SIGMA: Final = 0.35
TRANSACTION_PRICE_SIGMA: Final = 0.6

DEFAULT_WORKERS: Final = 2
"""Threads that build and write dates at once; the output is the same for any number."""

_MICROS_PER_DAY: Final = 86_400_000_000
_EPOCH: Final = date(1970, 1, 1)
_TRANSACTION_ID_DIGITS: Final = 9
_MAX_STRING_BYTES: Final = 2**31 - 1
_MAX_IDS_PER_DATE: Final = _MAX_STRING_BYTES // len(f"t20260101-{0:0{_TRANSACTION_ID_DIGITS}d}")
MAX_ROWS_PER_DATE: Final = int(
    (_MAX_IDS_PER_DATE - 10 * math.sqrt(_MAX_IDS_PER_DATE)) / (1 + MESSY_ROW_FRACTIONS["duplicate_row"])
)
"""Most expected rows (users * transactions_per_user_day) of one date: its transaction ids must fit
in one Arrow string array (_MAX_IDS_PER_DATE), and the rows are a Poisson draw around the mean plus
duplicate copies. So the mean leaves room for the copies and ten standard deviations of the draw: a
mean just below the array's size passed the check, drew every column (gigabytes), then failed."""
# Stream tags keep the population's and the dates' generators independent for the same seed.
_POPULATION_STREAM: Final = 0
_DATE_STREAM: Final = 1
# '0000'..'9999' as ASCII, each packed into one uint32 in native byte order.
_DIGIT_QUADS: Final = (
    (np.stack([np.arange(10_000) // 10**power % 10 for power in (3, 2, 1, 0)], axis=1) + ord("0"))
    .astype(np.uint8)
    .view(np.uint32)
    .ravel()
)
# Dictionary encoding where values repeat a lot; ids that are (nearly) unique per file gain little
# from it and cost a hash lookup per row.
_DICTIONARY_COLUMNS: Final = ["merchant_id", "category_id", "currency"]


def id_width(count: int, *, min_digits: int) -> int:
    """Digits of a zero-padded id for `count` distinct values (ids run 0..count-1)."""
    return max(min_digits, len(str(max(count - 1, 0))))


@dataclass(frozen=True)
class UserPopulation:
    """Who transacts how often and where. Depends only on (seed, users)."""

    seed: int
    users: int
    activity_cdf: np.ndarray
    """Cumulative share of transactions of users 0..i (float64, last value 1.0)."""
    favourite_merchants: np.ndarray
    """(users, FAVOURITE_MERCHANTS) merchant indexes each user often returns to."""
    merchant_cdf: np.ndarray
    """Cumulative Zipf popularity of merchants 0..j."""
    merchant_category: np.ndarray
    """1-based category_id of each merchant (int32)."""
    merchant_price: np.ndarray
    """Typical amount in USD of each merchant."""

    @property
    def merchants(self) -> int:
        return len(self.merchant_category)

    @property
    def user_digits(self) -> int:
        return id_width(self.users, min_digits=7)

    @property
    def merchant_digits(self) -> int:
        return id_width(self.merchants, min_digits=5)


def build_population(*, users: int, seed: int) -> UserPopulation:
    """The user population for (seed, users): activity weights, merchants and favourites."""
    _check_users_and_seed(users=users, seed=seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _POPULATION_STREAM]))

    activity = rng.lognormal(mean=0.0, sigma=ACTIVITY_SIGMA, size=users)
    activity_cdf = np.cumsum(activity)
    activity_cdf /= activity_cdf[-1]

    merchants = max(MIN_MERCHANTS, users // USERS_PER_MERCHANT)
    popularity = 1.0 / np.arange(1, merchants + 1, dtype=np.float64) ** MERCHANT_ZIPF_EXPONENT
    # Shuffle so that merchant ids carry no rank; m00000 is not always the most popular.
    popularity = popularity[rng.permutation(merchants)]
    merchant_cdf = np.cumsum(popularity)
    merchant_cdf /= merchant_cdf[-1]

    # Some categories have many more merchants than others (Zipf over a shuffled category order).
    category_weights = 1.0 / np.arange(1, len(CATEGORIES) + 1, dtype=np.float64) ** 0.8
    category_weights = category_weights[rng.permutation(len(CATEGORIES))]
    category_weights /= category_weights.sum()
    merchant_category = rng.choice(len(CATEGORIES), size=merchants, p=category_weights).astype(np.int32) + 1
    typical = np.array([typical for _, _, typical in CATEGORIES], dtype=np.float64)
    merchant_price = typical[merchant_category - 1] * rng.lognormal(0.0, MERCHANT_PRICE_SIGMA, merchants)

    picks = users * FAVOURITE_MERCHANTS
    favourite = _draw(merchant_cdf, _sorted_uniforms(rng, picks))[rng.permutation(picks)]
    favourite_merchants = favourite.reshape(users, FAVOURITE_MERCHANTS)
    return UserPopulation(
        seed=seed,
        users=users,
        activity_cdf=activity_cdf,
        favourite_merchants=favourite_merchants,
        merchant_cdf=merchant_cdf,
        merchant_category=merchant_category,
        merchant_price=merchant_price,
    )


@dataclass(frozen=True)
class DayBatch:
    """One date's raw transactions and how many messy rows of each kind they hold."""

    day: date
    table: pa.Table
    messy_rows: dict[str, int]


def generate_transactions(
    *, day: date, population: UserPopulation, transactions_per_user_day: float
) -> DayBatch:
    """The raw transactions of one UTC date, from a generator seeded by (population.seed, day).

    Rows are in transaction_ts order with transaction ids `tYYYYMMDD-NNNNNNNNN` rising with time;
    duplicate rows follow at the end of the table.
    """
    _check_rate(transactions_per_user_day)
    _check_rows_per_date(users=population.users, transactions_per_user_day=transactions_per_user_day)
    rng = np.random.default_rng(np.random.SeedSequence([population.seed, _DATE_STREAM, day.toordinal()]))
    n = int(rng.poisson(population.users * transactions_per_user_day))

    # Draws happen in a fixed order; changing it changes every file for every seed. No sort: sorted
    # uniforms come from normalised partial sums of exponentials in O(n). Timestamps are drawn
    # sorted, so rows come out in time order; users are drawn sorted (CDF lookups on sorted keys
    # are several times faster) and then shuffled onto the rows, and so are popular merchants.
    offset_us = np.minimum((_sorted_uniforms(rng, n) * _MICROS_PER_DAY).astype(np.int64), _MICROS_PER_DAY - 1)
    user = _draw(population.activity_cdf, _sorted_uniforms(rng, n))[rng.permutation(n)]
    # A 1-D gather on the flattened (users, FAVOURITE_MERCHANTS) array: 2-D fancy indexing is slower.
    pick = user * FAVOURITE_MERCHANTS + rng.integers(0, FAVOURITE_MERCHANTS, n)
    merchant = population.favourite_merchants.ravel()[pick]
    elsewhere = np.flatnonzero(rng.random(n) >= FAVOURITE_SHARE)
    popular = _draw(population.merchant_cdf, _sorted_uniforms(rng, len(elsewhere)))
    merchant[elsewhere] = popular[rng.permutation(len(elsewhere))]
    price = population.merchant_price[merchant] * rng.lognormal(0.0, TRANSACTION_PRICE_SIGMA, n)
    amount = np.maximum(np.round(price, 2), 0.01)
    amount[rng.random(n) < REFUND_FRACTION] *= -1.0
    kind_draw = rng.random(n)
    duplicate_draw = rng.random(n)
    category = population.merchant_category[merchant]

    # Exclusive messy kinds from consecutive slices of [0, 1) of one uniform draw per row.
    masks: dict[str, np.ndarray] = {}
    low = 0.0
    for kind in MESSY_ROW_KINDS:
        if kind == "duplicate_row":
            continue
        high = low + MESSY_ROW_FRACTIONS[kind]
        masks[kind] = (kind_draw >= low) & (kind_draw < high)
        low = high
    unknown = masks["unknown_category_id"]
    category[unknown] = rng.integers(
        UNKNOWN_CATEGORY_IDS.start, UNKNOWN_CATEGORY_IDS.stop, int(unknown.sum()), dtype=np.int32
    )
    amount[masks["nan_amount"]] = np.nan
    invalid = np.zeros(n, dtype=bool)
    for kind in INVALID_ROW_KINDS:
        invalid |= masks[kind]
    duplicated = np.flatnonzero((duplicate_draw < MESSY_ROW_FRACTIONS["duplicate_row"]) & ~invalid)
    messy = {kind: int(mask.sum()) for kind, mask in masks.items()}
    messy["duplicate_row"] = len(duplicated)

    def with_copies(values: np.ndarray) -> np.ndarray:
        """`values` followed by the values of the duplicated rows."""
        return np.concatenate((values, values[duplicated]))

    day_start_us = (day - _EPOCH).days * _MICROS_PER_DAY
    rows = n + len(duplicated)
    columns = [
        _id_strings(
            # Not f"{day:%Y%m%d}": strftime need not pad a year below 1000 to four digits.
            prefix=f"t{day.isoformat().replace('-', '')}-",
            numbers=with_copies(np.arange(n, dtype=np.int64)),
            digits=id_width(n, min_digits=_TRANSACTION_ID_DIGITS),
        ),
        _id_strings(
            prefix="u",
            numbers=with_copies(user),
            digits=population.user_digits,
            null=with_copies(masks["null_user_id"]),
            empty=with_copies(masks["empty_user_id"]),
        ),
        _id_strings(prefix="m", numbers=with_copies(merchant), digits=population.merchant_digits),
        _numeric_array(with_copies(category), pa.int32()),
        _numeric_array(with_copies(amount), pa.float64(), null=with_copies(masks["null_amount"])),
        _id_strings(prefix=CURRENCY, numbers=np.zeros(rows, dtype=np.int64), digits=0),
        _numeric_array(with_copies(day_start_us + offset_us), pa.timestamp("us", tz="UTC")),
    ]
    table = pa.Table.from_arrays(columns, schema=TRANSACTIONS_SCHEMA)
    return DayBatch(day=day, table=table, messy_rows={kind: messy[kind] for kind in MESSY_ROW_KINDS})


def categories_table() -> pa.Table:
    """The categories lookup: category_id 1..40, each in one of 8 groups."""
    columns = [
        _numeric_array(np.arange(1, len(CATEGORIES) + 1, dtype=np.int32), pa.int32()),
        _string_array([name for _, name, _ in CATEGORIES]),
        _string_array([group for group, _, _ in CATEGORIES]),
    ]
    return pa.Table.from_arrays(columns, schema=CATEGORIES_SCHEMA)


@dataclass
class GenerationSummary:
    """What one generate_lake call wrote."""

    lake: Path
    start: date
    end: date
    users: int
    seed: int
    rows_by_date: dict[date, int] = field(default_factory=dict)
    """Rows written per date, duplicate rows included."""
    messy_rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MESSY_ROW_KINDS, 0))
    """Messy rows by kind (MESSY_ROW_KINDS) over all dates."""
    seconds: float = 0.0
    """Wall-clock time of the whole call, writing included."""

    @property
    def total_rows(self) -> int:
        return sum(self.rows_by_date.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds > 0 else 0.0


def generate_lake(
    *,
    lake: Path | str,
    start: date,
    end: date,
    users: int,
    seed: int,
    transactions_per_user_day: float = 0.5,
    progress: Callable[[date, int], None] | None = None,
    workers: int = DEFAULT_WORKERS,
) -> GenerationSummary:
    """Write the categories lookup and one raw transactions partition per date in [start, end].

    Each date directory is replaced as a whole, so a rerun is idempotent. `progress(day, rows)` is
    called after each date is written, in date order. `workers` threads build and write dates in
    parallel (numpy and Parquet release the GIL); the files do not depend on it.
    """
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start}); pass start <= end")
    _check_users_and_seed(users=users, seed=seed)
    _check_rate(transactions_per_user_day)
    _check_rows_per_date(users=users, transactions_per_user_day=transactions_per_user_day)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    lake = local_path(
        str(lake),
        what="lake",
        remedy="the generator writes local files. Generate into a local directory (or a mount of the "
        "object store) and copy it there",
    )

    began = time.perf_counter()
    layout = LakeLayout(root=str(lake))
    summary = GenerationSummary(lake=lake, start=start, end=end, users=users, seed=seed)
    population = build_population(users=users, seed=seed)
    write_parquet_atomically(categories_table(), directory=Path(layout.raw_categories))

    def write_day(day: date) -> dict[str, int]:
        batch = generate_transactions(
            day=day, population=population, transactions_per_user_day=transactions_per_user_day
        )
        directory = Path(LakeLayout.partition(layout.raw_transactions, day))
        write_parquet_atomically(batch.table, directory=directory)
        log.debug("Wrote %s rows to %s", batch.table.num_rows, directory)
        return {"rows": batch.table.num_rows, **batch.messy_rows}

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featurelake-generate")
    try:
        days = date_range(start, end)
        for day, counts in zip(days, pool.map(write_day, days), strict=True):
            summary.rows_by_date[day] = counts.pop("rows")
            for kind, count in counts.items():
                summary.messy_rows[kind] += count
            if progress is not None:
                progress(day, summary.rows_by_date[day])
    finally:
        # On an error, dates not started yet are dropped rather than written.
        pool.shutdown(wait=True, cancel_futures=True)
    summary.seconds = time.perf_counter() - began
    log.info(
        "Generated %s rows over %s dates into %s in %.1f s (%.0f rows/s)",
        summary.total_rows,
        len(summary.rows_by_date),
        lake,
        summary.seconds,
        summary.rows_per_second,
    )
    return summary


def write_parquet_atomically(table: pa.Table, *, directory: Path) -> Path:
    """Replace the contents of `directory` with `table` as one snappy Parquet file, PART_FILE.

    The file is written under a hidden temporary name (which Spark and pyarrow skip) and renamed into
    place, so readers never see half a file; other files in the directory are then removed. A file
    with the same bytes already in place is kept as it is, modification time included, so that
    regenerating a lake with the same arguments does not look like re-landed data to the feature
    job's tiles (docs/features.md).
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / PART_FILE
    temporary = directory / f".{PART_FILE}.{os.getpid()}.tmp"
    dictionary = [name for name in _DICTIONARY_COLUMNS if name in table.column_names]
    pq.write_table(table, temporary, compression="snappy", use_dictionary=dictionary)
    if final.is_file() and filecmp.cmp(temporary, final, shallow=False):
        temporary.unlink()
    else:
        os.replace(temporary, final)
    for entry in directory.iterdir():
        if entry.name == PART_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return final


def _sorted_uniforms(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` sorted uniforms on [0, 1) in O(n): partial sums of n+1 exponentials over their total."""
    sums = np.cumsum(rng.standard_exponential(n + 1))
    return sums[:-1] / sums[-1]


def _draw(cdf: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Indexes drawn with the probabilities whose cumulative sums are `cdf`."""
    return np.minimum(np.searchsorted(cdf, uniforms, side="right"), len(cdf) - 1)


# Arrays are built from buffers: zero-copy, and unlike pa.array() it never imports pandas (a
# noticeable share of a short CLI run).
def _numeric_array(
    values: np.ndarray, arrow_type: pa.DataType, *, null: np.ndarray | None = None
) -> pa.Array:
    """A fixed-width Arrow array over `values` (whose dtype must match `arrow_type`); `null` rows are null."""
    values = np.ascontiguousarray(values)
    validity, null_count = _validity(null)
    return pa.Array.from_buffers(
        arrow_type, len(values), [validity, pa.py_buffer(values)], null_count=null_count
    )


def _string_array(values: list[str]) -> pa.Array:
    """A small Arrow string array from Python strings."""
    encoded = [value.encode("utf-8") for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(value) for value in encoded], out=offsets[1:])
    return pa.StringArray.from_buffers(len(encoded), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded)))


def _validity(null: np.ndarray | None) -> tuple[pa.Buffer | None, int]:
    """The Arrow validity bitmap and null count for a boolean `null` mask (None when nothing is null)."""
    if null is None or not null.any():
        return None, 0
    return pa.py_buffer(np.packbits(~null, bitorder="little")), int(null.sum())


def _id_strings(
    *,
    prefix: str,
    numbers: np.ndarray,
    digits: int,
    null: np.ndarray | None = None,
    empty: np.ndarray | None = None,
) -> pa.Array:
    """`prefix` + zero-padded `numbers` as an Arrow string array built straight from buffers.

    Rows in `null` are null and rows in `empty` are ''. Numbers must be >= 0 and fit in `digits`.
    """
    n = len(numbers)
    head = prefix.encode("ascii")
    width = len(head) + digits
    if n * width > _MAX_STRING_BYTES:
        raise ValueError(
            f"{n} ids of {width} bytes exceed one Arrow string array; lower users or transactions_per_user_day"
        )
    keep = np.ones(n, dtype=bool)
    for rows in (null, empty):
        if rows is not None:
            keep &= ~rows
    kept = numbers if keep.all() else numbers[keep]
    chars = np.empty((len(kept), width), dtype=np.uint8)
    chars[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    # Four digits per step from the right: one 32-bit store per row from the table '0000'..'9999'
    # (a 1-D gather and a 4-byte store are far faster than byte-wise 2-D indexing), then single digits.
    rest = kept.astype(np.int64, copy=True)
    right = width
    while right - len(head) >= 4:
        rest, quad = np.divmod(rest, 10_000)
        chars[:, right - 4 : right].view(np.uint32)[:, 0] = _DIGIT_QUADS[quad]
        right -= 4
    while right > len(head):
        rest, digit = np.divmod(rest, 10)
        chars[:, right - 1] = digit + ord("0")
        right -= 1
    if len(kept) == n:
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    else:
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.where(keep, width, 0), out=offsets[1:])
    data = chars.ravel()
    validity, null_count = _validity(null)
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(data), validity, null_count=null_count
    )


def _check_users_and_seed(*, users: int, seed: int) -> None:
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _check_rate(transactions_per_user_day: float) -> None:
    if not np.isfinite(transactions_per_user_day) or transactions_per_user_day < 0:
        raise ValueError(
            f"transactions_per_user_day must be a finite number >= 0, got {transactions_per_user_day}"
        )


def _check_rows_per_date(*, users: int, transactions_per_user_day: float) -> None:
    expected = users * transactions_per_user_day
    if expected > MAX_ROWS_PER_DATE:
        rows = f"{expected:,.0f}" if expected < 1e15 else f"{expected:.3g}"
        raise ValueError(
            f"users * transactions_per_user_day = {users} * {transactions_per_user_day} = {rows} rows per "
            f"date, more than one date file holds with its duplicate rows ({MAX_ROWS_PER_DATE:,}); "
            "lower users or transactions_per_user_day"
        )
