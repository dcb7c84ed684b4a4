"""`featurelake generate`'s dates, through the installed console script: a date that is not on the
calendar is refused naming the option and why, not as a mismatch of a format it follows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FEATURELAKE = Path(sys.executable).with_name("featurelake")


def _generate(*args: str, lake: Path) -> subprocess.CompletedProcess[str]:
    command = [str(FEATURELAKE), "generate", "--users", "10", "--seed", "1", "--lake", str(lake), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""}
    )


@pytest.mark.parametrize(
    ("args", "option", "reason"),
    [
        pytest.param(
            ["--start", "2026-02-30", "--end", "2026-03-01"],
            "--start",
            "2026-02-30 is not a date: day is out of range for month",
            id="no-such-day",
        ),
        pytest.param(
            ["--start", "2026-01-01", "--end", "2026-13-01"],
            "--end",
            "2026-13-01 is not a date: month must be in 1..12",
            id="no-such-month",
        ),
    ],
)
def test_a_date_not_on_the_calendar_is_named_with_its_reason(
    tmp_path: Path, args: list[str], option: str, reason: str
) -> None:
    result = _generate(*args, lake=tmp_path / "lake")

    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.replace("│", " ").split())
    assert f"Invalid value for '{option}': {reason}; use YYYY-MM-DD" in message
    assert "does not match the formats" not in message
    assert not (tmp_path / "lake").exists(), "nothing is written"


def test_a_date_in_another_format_is_refused_naming_the_format(tmp_path: Path) -> None:
    result = _generate("--start", "01/31/2026", "--end", "2026-02-01", lake=tmp_path / "lake")

    assert result.returncode == 2
    message = " ".join(result.stderr.replace("│", " ").split())
    assert "Invalid value for '--start': 01/31/2026 is not a date in the form YYYY-MM-DD" in message


def test_help_shows_the_date_form(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(FEATURELAKE), "generate", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": ""},
    )

    assert result.returncode == 0, result.stderr
    assert "YYYY-MM-DD" in result.stdout and "%Y-%m-%d" not in result.stdout


def test_valid_dates_still_generate(tmp_path: Path) -> None:
    result = _generate("--start", "2024-02-28", "--end", "2024-02-29", lake=tmp_path / "lake")

    assert result.returncode == 0, result.stderr
    days = sorted(p.name for p in (tmp_path / "lake" / "raw" / "transactions").iterdir())
    assert days == ["date=2024-02-28", "date=2024-02-29"]
