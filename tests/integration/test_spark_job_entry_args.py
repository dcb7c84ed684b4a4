"""The spark-submit entry points refuse bad input through real spark-submit: a non-zero exit, and a
message that names the input and says what to give instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT, spark_submit

pytestmark = pytest.mark.integration

JOB = PROJECT_ROOT / "spark_jobs" / "user_features.py"
REFRESH_JOB = PROJECT_ROOT / "spark_jobs" / "refresh_feature_view.py"


@pytest.mark.parametrize("job", [JOB, REFRESH_JOB], ids=lambda job: job.stem)
@pytest.mark.parametrize(
    "ds",
    [
        pytest.param("2026-13-01", id="no-such-month"),
        # date.fromisoformat takes these too, but the lake's partitions and the report path are YYYY-MM-DD
        pytest.param("20260910", id="basic-format"),
        pytest.param("2026-W37-4", id="week-date"),
    ],
)
def test_a_run_date_other_than_yyyy_mm_dd_is_refused(job: Path, ds: str, tmp_path: Path) -> None:
    # the refresh job refuses it before it asks for delta-spark, so it needs no jars here
    result = spark_submit(job, "--ds", ds, "--lake", str(tmp_path), master="local[1]")
    assert result.returncode == 2
    # spark-submit passes the driver's stderr on to its stdout
    message = f"argument --ds: must be a date as YYYY-MM-DD (e.g. 2026-09-10), got '{ds}'"
    assert message in result.stdout + result.stderr


def test_a_lake_that_does_not_exist_is_named(tmp_path: Path) -> None:
    lake = tmp_path / "no-such-lake"
    result = spark_submit(JOB, "--ds", "2026-09-10", "--lake", str(lake), master="local[1]")
    assert result.returncode != 0
    assert f"--lake '{lake}' does not exist: pass the lake root" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("days", "said"),
    [
        pytest.param("0", "--window-days: window_days must be >= 1, got 0", id="zero"),
        # a bare OverflowError ("date value out of range") after the Spark session started
        pytest.param(
            "999999999",
            "--window-days: window_days 999999999 reaches before year 1 from 2026-09-10; give a window "
            "of at most 739869 days",
            id="before-year-one",
        ),
    ],
)
def test_a_window_the_calendar_cannot_hold_is_refused(days: str, said: str, tmp_path: Path) -> None:
    result = spark_submit(
        JOB, "--ds", "2026-09-10", "--lake", str(tmp_path), "--window-days", days, master="local[1]"
    )
    assert result.returncode == 2
    assert said in result.stdout + result.stderr
