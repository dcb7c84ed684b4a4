"""The README's backfill commands, run as written with the real `airflow` CLI against this session's
private metadata database (as `--dry-run`, so no run is queued): a reader copies them verbatim."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def _backfills_section() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("\n## Backfills\n", 1)[1]
    return section.split("\n## ", 1)[0]


def _block_commands(section: str) -> list[list[str]]:
    """The `airflow` commands of the section's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["airflow"]:
                commands.append(words)
    return commands


def _inline_backfills(section: str) -> list[list[str]]:
    """The complete `airflow backfill create ...` commands quoted inline (not elided with ...)."""
    quoted = re.findall(r"`(airflow backfill create [^`]*)`", section)
    return [shlex.split(" ".join(q.split())) for q in quoted if "..." not in q]


def _airflow(words: list[str]) -> subprocess.CompletedProcess[str]:
    assert words[0] == "airflow"
    return subprocess.run(
        [AIRFLOW, *words[1:]], capture_output=True, text=True, timeout=180, env=os.environ.copy()
    )


def _dates(words: list[str]) -> list[str]:
    first = date.fromisoformat(words[words.index("--from-date") + 1])
    last = date.fromisoformat(words[words.index("--to-date") + 1])
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


@pytest.fixture(scope="module")
def serialized_dags(airflow_db) -> None:
    """The DAGs in the metadata database, as the dag-processor puts them there."""
    result = subprocess.run(
        [AIRFLOW, "dags", "reserialize"], capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_readme_shows_its_backfill_commands() -> None:
    section = _backfills_section()
    assert [words[:3] for words in _block_commands(section)] == [
        ["airflow", "dags", "unpause"],
        ["airflow", "backfill", "create"],
        ["airflow", "backfill", "create"],
    ]
    assert len(_inline_backfills(section)) == 1, "the rerun of one date with other params"


def test_the_readme_backfill_commands_run_as_written(serialized_dags) -> None:
    section = _backfills_section()
    backfills = [w for w in _block_commands(section) if w[1] == "backfill"] + _inline_backfills(section)
    for words in _block_commands(section):
        if words[1] != "backfill":
            result = _airflow(words)
            assert result.returncode == 0, f"{shlex.join(words)}:\n{result.stderr[-3000:]}"
    for words in backfills:
        dry_run = words if "--dry-run" in words else [*words, "--dry-run"]
        result = _airflow(dry_run)
        assert result.returncode == 0, f"{shlex.join(dry_run)}:\n{result.stderr[-3000:]}"
        planned = re.findall(r"^\| (\d{4}-\d{2}-\d{2}) 00:00:00\+00:00 ", result.stdout, flags=re.MULTILINE)
        assert planned == _dates(words), result.stdout  # --to-date is inclusive, one run per day
