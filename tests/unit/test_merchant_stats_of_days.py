"""The per-bucket aggregation of the Dask merchant job, one date at a time (pure pandas)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from featurelake.merchant_stats import (
    ARROW_STRING,
    STATS_SCHEMA,
    distinct_pairs,
    merchant_stats_of_days,
    read_parquet_frame,
    valid_rows,
)
from featurelake.raw_contract_arrow import TEXT_IS_UTF8

DS = date(2026, 10, 28)


def day(*rows: tuple[str, str, str, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["transaction_id", "user_id", "merchant_id", "amount"])


def test_counts_sums_users_and_days_across_dates() -> None:
    days = [
        # an exact copy of t1 counts once; u1 buys twice at m1
        day(
            ("t1", "u1", "m1", 10.0),
            ("t1", "u1", "m1", 10.0),
            ("t2", "u1", "m1", -4.0),
            ("t3", "u2", "m2", 1.5),
        ),
        day(),  # a date with no row for this bucket
        # u1 again at m1 on another date: still one user; t4 is a second version of t1's id, and counts
        day(("t4", "u1", "m1", 6.0), ("t1", "u1", "m1", 7.0)),
    ]
    got = merchant_stats_of_days(iter(days), ds=DS).set_index("merchant_id")
    assert list(got.reset_index().columns) == STATS_SCHEMA.names
    assert got.loc["m1"].to_dict() == {
        "stats_date": DS,
        "transaction_count": 4,
        "unique_users": 1,
        "total_amount": 19.0,
        "avg_amount": 4.75,
        "refund_share": 0.25,
        "active_days": 2,
    }
    assert (
        got.loc["m2", "transaction_count"],
        got.loc["m2", "unique_users"],
        got.loc["m2", "active_days"],
    ) == (1, 1, 1)


def test_no_rows_gives_an_empty_typed_frame() -> None:
    got = merchant_stats_of_days(iter([day(), day()]), ds=DS)
    assert got.empty and list(got.columns) == STATS_SCHEMA.names


@pytest.mark.parametrize("dates", [3, 40])
def test_a_heavy_merchant_keeps_exact_distinct_users(dates: int) -> None:
    """Many dates of one merchant with repeat buyers: distinct users stay exact whatever the order."""
    days = [
        day(*((f"t{d}-{u}", f"u{(u * 7 + d) % 50_000}", "hot", 1.0) for u in range(30_000)))
        for d in range(dates)
    ]
    got = merchant_stats_of_days(iter(days), ds=DS).set_index("merchant_id").loc["hot"]
    want_users = len({f"u{(u * 7 + d) % 50_000}" for d in range(dates) for u in range(30_000)})
    assert (got["transaction_count"], got["unique_users"], got["active_days"]) == (
        30_000 * dates,
        want_users,
        dates,
    )


@pytest.mark.parametrize("slice_pairs", [1, 7, 100, 10_000])
def test_distinct_pairs_are_exact_whatever_the_slices(slice_pairs: int) -> None:
    """Deduplicated a slice of merchants at a time (the memory of one drop_duplicates grows with the
    distinct user ids it hashes): the same pairs as one drop_duplicates, a merchant with more pairs
    than a slice included, and a user id that is another merchant's too."""
    pairs = pd.DataFrame(
        {
            "merchant_id": pd.Series(
                ["hot"] * 60 + [f"m{i % 9}" for i in range(90)] + ["m1", "hot"], dtype=ARROW_STRING
            ),
            "user_id": pd.Series(
                [f"u{i % 25}" for i in range(60)] + [f"u{i % 13}" for i in range(90)] + ["u1", "u3"],
                dtype=ARROW_STRING,
            ),
        }
    )
    got = distinct_pairs(pairs, slice_pairs=slice_pairs)
    want = pairs.drop_duplicates()
    assert len(got) == len(want) == 25 + 90  # (i % 9, i % 13) repeats after 117
    assert list(got.columns) == ["merchant_id", "user_id"] and got["user_id"].dtype == ARROW_STRING
    key = ["merchant_id", "user_id"]
    pd.testing.assert_frame_equal(
        got.sort_values(key).reset_index(drop=True), want.sort_values(key).reset_index(drop=True)
    )


def test_distinct_users_are_exact_across_compactions_of_many_slices(monkeypatch) -> None:
    """Pairs compacted (and counted) in slices of 1,000 over 12 dates give the exact distinct users."""
    import featurelake.merchant_stats as merchant_stats

    monkeypatch.setattr(
        merchant_stats, "distinct_pairs", lambda pairs: distinct_pairs(pairs, slice_pairs=1_000)
    )
    days = [
        day(*((f"t{d}-{i}", f"u{(i * 31 + d * 7) % 40_000}", f"m{i % 37}", 1.0) for i in range(50_000)))
        for d in range(12)
    ]
    got = merchant_stats_of_days(iter(days), ds=DS).set_index("merchant_id")["unique_users"]
    frames = pd.concat(days, ignore_index=True)
    want = frames.drop_duplicates(["merchant_id", "user_id"])["merchant_id"].value_counts()
    assert got.sort_index().to_dict() == want.sort_index().to_dict()


def test_staged_days_are_read_with_arrow_strings_under_pandas_2_and_3(tmp_path) -> None:
    """pandas 2 would read the strings as Python objects (3.2x the memory on the bench's window)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "part-0-0.parquet"
    pq.write_table(pa.table({"merchant_id": ["m1", None, "m2"], "amount": [1.0, 2.0, None]}), path)
    frame = read_parquet_frame(str(path))
    assert frame["merchant_id"].dtype == ARROW_STRING
    assert frame["merchant_id"].dtype == pd.StringDtype("pyarrow", na_value=float("nan"))
    assert frame["merchant_id"].isna().tolist() == [False, True, False]
    assert frame["merchant_id"].dropna().tolist() == ["m1", "m2"]
    assert frame["amount"].dtype == "float64"
    # the columns argument reads only those
    assert list(read_parquet_frame(str(path), columns=["amount"]).columns) == ["amount"]


def test_valid_rows_follow_the_data_contract() -> None:
    """Rules 1-7 and 4a of docs/data-contract.md, and a merchant_id, on rows of two partitions."""
    ts = pd.to_datetime(
        [
            "2026-10-28 00:00:00",  # the first microsecond of the partition's UTC date
            "2026-10-28 23:59:59.999999",  # and the last
            None,  # rule 5: null ts
            "2026-10-29 00:00:00",  # rule 6: the next UTC date
            "2026-10-27 23:59:59.999999",  # rule 6: the previous one, itself in a window
            "2026-10-27 12:00:00",  # valid in the partition of 2026-10-27
            "2026-10-28 12:00:00",  # rule 6 in the partition of 2026-10-27
            "2026-10-28 12:00:00",  # rule 4: NaN amount
            "2026-10-28 12:00:00",  # rule 1: empty transaction_id
            "2026-10-28 12:00:00",  # no merchant_id
            "2026-10-28 12:00:00",  # rule 4a: an infinite amount
            "2026-10-28 12:00:00",  # rule 4a: an amount above 9e12
            "2026-10-28 12:00:00",  # valid: -9e12, the bound
            "2026-10-28 12:00:00",  # rule 7: a text value that was not UTF-8 (read as null)
        ],
        format="ISO8601",
    ).tz_localize("UTC")
    rows = pd.DataFrame(
        {
            "transaction_id": pd.Series(
                ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "", "t9", "t10", "t11", "t12", "t13"],
                dtype=ARROW_STRING,
            ),
            "user_id": pd.Series(["u1"] * 14, dtype=ARROW_STRING),
            "merchant_id": pd.Series(["m1"] * 9 + [None] + ["m1"] * 4, dtype=ARROW_STRING),
            "amount": [1.0] * 7 + [float("nan")] + [1.0] * 2 + [float("inf"), 9.000001e12, -9e12, 1.0],
            "transaction_ts": pd.Series(ts).astype("datetime64[us, UTC]"),
            "date": pd.Series(["2026-10-28"] * 5 + ["2026-10-27"] * 2 + ["2026-10-28"] * 7, dtype="string"),
            TEXT_IS_UTF8: [True] * 13 + [False],
        }
    )
    assert valid_rows(rows)["transaction_id"].tolist() == ["t0", "t1", "t5", "t12"]
    assert valid_rows(rows.iloc[:0]).empty


def test_a_partition_stages_into_more_buckets_than_pyarrow_writes_by_default(tmp_path) -> None:
    """pyarrow writes one table into at most 1024 directories unless told otherwise; a window of more
    than 4096 Dask partitions gets more buckets than that (default_bucket_count)."""
    from featurelake.merchant_stats import default_bucket_count, merchant_bucket, stage_partition

    assert default_bucket_count(4100) == 1025
    n = 3000
    rows = pd.DataFrame(
        {
            "transaction_id": pd.Series([f"t{i}" for i in range(n)], dtype=ARROW_STRING),
            "user_id": pd.Series([f"u{i % 50}" for i in range(n)], dtype=ARROW_STRING),
            "merchant_id": pd.Series([f"m{i:05d}" for i in range(n)], dtype=ARROW_STRING),
            "category_id": pd.Series([1] * n, dtype="int32"),
            "amount": [1.0] * n,
            "currency": pd.Series(["USD"] * n, dtype=ARROW_STRING),
            "transaction_ts": pd.Series([pd.Timestamp("2026-10-28 12:00", tz="UTC")] * n).astype(
                "datetime64[us, UTC]"
            ),
            "date": pd.Series(["2026-10-28"] * n, dtype="string"),
            TEXT_IS_UTF8: [True] * n,
        }
    )
    counts = stage_partition(rows, staging=str(tmp_path), buckets=1100, partition_info={"number": 7})
    assert counts.to_dict("records") == [{"rows_read": n, "rows_valid": n}]
    staged = sorted(tmp_path.glob("bucket=*/date=2026-10-28/part-7-*.parquet"))
    want_buckets = merchant_bucket(rows["merchant_id"], 1100).nunique()
    assert want_buckets > 1024 and len(staged) == want_buckets
    assert sum(len(read_parquet_frame(str(path))) for path in staged) == n


def test_a_window_of_many_rows_gets_a_bucket_per_bucket_window_bytes() -> None:
    """A bucket task holds each distinct (merchant, user) pair of its dates, up to one per row: 8
    dates of 1.5M rows (about 660 MiB uncompressed) had 2 buckets of 6M pairs each, which workers
    of 1 GiB could not hold. Now a bucket gets at most BUCKET_WINDOW_BYTES of the window."""
    from featurelake.merchant_stats import BUCKET_WINDOW_BYTES, default_bucket_count

    window = 661 * 2**20
    assert default_bucket_count(8, largest_day_bytes=window // 8, window_bytes=window) == 6
    assert default_bucket_count(8, largest_day_bytes=1, window_bytes=BUCKET_WINDOW_BYTES) == 2
    assert default_bucket_count(1, window_bytes=BUCKET_WINDOW_BYTES + 1) == 2
    # the dates still count where they give more: the 10M-row benchmark window (120 dates)
    assert default_bucket_count(120, largest_day_bytes=5 * 2**20, window_bytes=550 * 2**20) == 30
