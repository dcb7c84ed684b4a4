"""spark_jobs/user_features.py through real spark-submit, checked column by column against the
independent DuckDB oracle (tests/oracle), on a lake of every edge case; and its helpers, shared by
the other feature tests. Full and incremental runs on generated data with the edge cases added,
and a rerun through spark-submit, are in test_user_features_modes.py."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from featurelake.synthetic import generate_lake
from tests.oracle.edge_case_lake import write_edge_case_lake
from tests.oracle.user_features_duckdb import (
    FEATURE_COLUMNS,
    compute_user_features,
    duplicate_rows,
    quarantine,
)
from tests.support import PROJECT_ROOT, spark_submit

pytestmark = pytest.mark.integration

JOB = PROJECT_ROOT / "spark_jobs" / "user_features.py"
DS = date(2026, 9, 10)
FLOAT_COLUMNS = ["total_spend", "avg_spend", "std_spend", "max_spend", "spend_7d", "last_amount"]


def run_job(
    lake: Path, ds: date, *args: str, conf: dict[str, str] | None = None, env: dict[str, str] | None = None
) -> dict:
    return submit_job(lake, ds, *args, conf=conf, env=env)[0]


def submit_job(
    lake: Path, ds: date, *args: str, conf: dict[str, str] | None = None, env: dict[str, str] | None = None
) -> tuple[dict, str]:
    """The job's report, and its output (the driver's Python logs go to stdout, Spark's to stderr)."""
    result = spark_submit(JOB, "--ds", ds.isoformat(), "--lake", str(lake), *args, conf=conf, env=env)
    assert result.returncode == 0, f"spark-submit failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    report = json.loads((lake / "_metrics" / "user_features" / f"date={ds.isoformat()}.json").read_text())
    return report, result.stdout + result.stderr


def read_features(lake: Path, ds: date) -> pd.DataFrame:
    frame = pd.read_parquet(lake / "features" / "user_features" / f"date={ds.isoformat()}")
    return frame.sort_values("user_id", ignore_index=True)


def assert_matches_oracle(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Every column of every row: floats within 1e-9 relative, and a zero of the same sign (both
    are 0.0: a feature is never -0.0, and assert_allclose takes -0.0 for 0.0), everything else
    exactly."""
    assert list(got.columns) == FEATURE_COLUMNS
    want = want.sort_values("user_id", ignore_index=True)
    assert got["user_id"].tolist() == want["user_id"].tolist()
    for column in FEATURE_COLUMNS:
        g, w = got[column], want[column]
        if column in FLOAT_COLUMNS:
            g, w = g.to_numpy(float), w.to_numpy(float)
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=column)
            # only where both are zero: DuckDB's float sums may give ±5e-17 where Spark's exact ones give 0
            zero = (g == 0) & (w == 0)
            assert (np.signbit(g[zero]) == np.signbit(w[zero])).all(), f"{column}: a zero's sign differs"
        elif column == "feature_date":
            assert [pd.Timestamp(v).date() for v in g] == [pd.Timestamp(v).date() for v in w]
        elif column == "last_transaction_ts":
            assert pd.to_datetime(g, utc=True).tolist() == pd.to_datetime(w, utc=True).tolist()
        else:
            assert g.astype(object).tolist() == w.astype(object).tolist(), column


def window(ds: date, days: int = 90) -> list[date]:
    return [ds - timedelta(days=i) for i in range(days)]


def _as_text(frame: pd.DataFrame) -> list[list[str]]:
    return [["<null>" if pd.isna(v) else str(v) for v in row] for row in frame.astype(object).to_numpy()]


@pytest.fixture(scope="module")
def edge_case_lake(tmp_path_factory) -> tuple[Path, dict]:
    lake = tmp_path_factory.mktemp("edge") / "lake"
    return lake, write_edge_case_lake(lake, ds=DS)


def assert_matches_the_edge_cases(lake: Path, report: dict, expected: dict) -> None:
    """The job's output for DS on the edge-case lake equals the oracle's and the hand-computed values."""
    got = read_features(lake, DS)

    assert_matches_oracle(got, compute_user_features(lake=lake, ds=DS))
    by_user = got.set_index("user_id")
    for user, values in expected["features"].items():
        row = by_user.loc[user]
        for column, value in values.items():
            if column == "user_id":
                continue
            if column in FLOAT_COLUMNS and value is not None:
                assert row[column] == pytest.approx(value, rel=1e-9), (user, column)
            elif value is None:
                assert pd.isna(row[column]), (user, column)
            elif column == "last_transaction_ts":
                assert pd.Timestamp(row[column]) == pd.Timestamp(value), (user, column)
            elif column == "feature_date":
                assert pd.Timestamp(row[column]).date() == value
            else:
                assert row[column] == value, (user, column)
    assert not set(expected["absent_users"]) & set(got["user_id"])
    built = [date.fromisoformat(d) for d in report["tiles_built"]]
    assert report["quarantined_by_reason"] == quarantine_counts(lake, built)
    assert report["quarantined_rows"] == sum(report["quarantined_by_reason"].values())
    assert report["duplicate_rows_dropped"] == duplicate_rows(lake=lake, dates=built)
    assert_quarantine_matches_oracle(lake, built)
    # Every raw row of the built dates is used, a copy of a clean row, or quarantined: a conflicting
    # version's copies were in no count.
    raw_rows = sum(
        pq.read_metadata(path).num_rows
        for day in built
        for path in (lake / "raw" / "transactions" / f"date={day.isoformat()}").glob("*.parquet")
    )
    accounted = ("clean_transactions_in_built_tiles", "duplicate_rows_dropped", "quarantined_rows")
    assert sum(report[name] for name in accounted) == raw_rows


def raw_dates(lake: Path, dates: list[date]) -> list[date]:
    """Those of `dates` that have a raw transactions partition."""
    root = lake / "raw" / "transactions"
    return [d for d in dates if (root / f"date={d.isoformat()}").is_dir()]


def quarantine_counts(lake: Path, dates: list[date]) -> dict[str, int]:
    """The oracle's quarantined rows of `dates`, by reason."""
    return quarantine(lake=lake, dates=dates)["reason"].value_counts().sort_index().to_dict()


def assert_quarantine_matches_oracle(lake: Path, dates: list[date]) -> None:
    """The stored quarantine holds exactly the oracle's invalid rows of `dates`, with their reasons,
    and no partition of any other date."""
    root = lake / "quarantine" / "transactions"
    stored = pd.read_parquet(root) if root.is_dir() and any(root.glob("date=*/*.parquet")) else None
    want = quarantine(lake=lake, dates=dates)
    key = ["date", "reason", "transaction_id", "user_id"]
    if stored is None:
        assert want.empty
        return
    stored["date"] = pd.to_datetime(stored["date"].astype(str)).dt.date
    want["date"] = pd.to_datetime(want["date"]).dt.date
    assert set(stored["date"]) <= set(dates)
    assert sorted(map(tuple, _as_text(stored[key]))) == sorted(map(tuple, _as_text(want[key])))


@pytest.fixture(scope="module")
def edge_case_run(edge_case_lake) -> dict:
    """The report of a full run for DS on the edge-case lake."""
    lake, _expected = edge_case_lake
    return run_job(lake, DS, "--mode", "full")


def test_edge_cases_match_the_oracle_and_hand_computed_values(edge_case_lake, edge_case_run) -> None:
    lake, expected = edge_case_lake
    assert_matches_the_edge_cases(lake, edge_case_run, expected)
    # A full run reads the whole window, but writes the tile and quarantine of DS only, which holds
    # no invalid row here: the window's invalid rows and copies are on other dates.
    assert edge_case_run["raw_dates_read"] == len(raw_dates(lake, window(DS))) > 1
    assert edge_case_run["tiles_built"] == [DS.isoformat()]
    assert edge_case_run["quarantined_rows"] == edge_case_run["duplicate_rows_dropped"] == 0
    assert not list((lake / "quarantine").rglob("*.parquet"))


# UTC+14: a transaction at 23:59:59 UTC falls on the next local day, and one at 00:00 UTC at 14:00.
FAR_EAST_ZONE = "Pacific/Kiritimati"


def test_rebuild_quarantines_the_window_whatever_the_machine_time_zone(tmp_path: Path) -> None:
    """The edge-case lake holds transactions at 00:00 and 23:59:59.999999 UTC on the window's and the
    7-day window's boundaries, so a date taken in any zone but UTC moves a row across a boundary,
    into the quarantine as a date mismatch, or out of it. Run with the process and the JVM in UTC+14,
    and a spark-defaults.conf that asks for a New York session zone and ANSI mode off (both ignored,
    with a warning), in rebuild mode, which builds the tile and quarantine of every raw date of the
    window: every invalid row of the window is quarantined with its reason, as the hand-computed
    counts say."""
    lake = tmp_path / "lake"
    expected = write_edge_case_lake(lake, ds=DS)
    conf_dir = tmp_path / "spark-conf"
    conf_dir.mkdir()
    (conf_dir / "spark-defaults.conf").write_text(
        "spark.sql.session.timeZone America/New_York\nspark.sql.ansi.enabled false\n"
    )
    report, log = submit_job(
        lake,
        DS,
        "--mode",
        "rebuild",
        conf={"spark.driver.extraJavaOptions": f"-Duser.timezone={FAR_EAST_ZONE}"},
        env={"TZ": FAR_EAST_ZONE, "SPARK_CONF_DIR": str(conf_dir)},
    )
    assert "Ignoring spark.sql.session.timeZone=America/New_York" in log
    assert "Ignoring spark.sql.ansi.enabled=false" in log
    assert len(report["tiles_built"]) == report["raw_dates_read"]
    assert_matches_the_edge_cases(lake, report, expected)
    assert report["quarantined_by_reason"] == expected["quarantine_counts"]
    assert report["duplicate_rows_dropped"] == 2


def test_missing_raw_partition_fails_with_the_path(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    generate_lake(lake=lake, start=DS - timedelta(days=3), end=DS - timedelta(days=1), users=20, seed=1)
    result = spark_submit(JOB, "--ds", DS.isoformat(), "--lake", str(lake))
    assert result.returncode != 0
    assert f"raw/transactions/date={DS.isoformat()} is missing" in result.stderr + result.stdout
