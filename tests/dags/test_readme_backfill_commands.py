"""The README's backfill commands, run as written with the real `airflow` CLI against this session's
private metadata database (as `--dry-run`, so no run is queued): a reader copies them verbatim."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
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


def _run_conf(dag_id: str, day: str) -> tuple[str, dict]:
    """The state and conf of the DAG's run of `day`, from the metadata database."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(
                DagRun.dag_id == dag_id,
                DagRun.logical_date == datetime.combine(date.fromisoformat(day), time(), UTC),
            )
        ).one()
        return run.state, dict(run.conf or {})


def _finish_backfill_runs(dag_id: str) -> None:
    """What a scheduler would do once the runs end: they succeed, and their backfill completes
    (Airflow refuses a new backfill of a DAG while one is open)."""
    from airflow.models import DagRun
    from airflow.models.backfill import Backfill
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagRun).where(DagRun.dag_id == dag_id).values(state=DagRunState.SUCCESS))
        session.execute(
            update(Backfill)
            .where(Backfill.dag_id == dag_id, Backfill.completed_at.is_(None))
            .values(completed_at=datetime.now(UTC))
        )


def test_a_rerun_keeps_its_params_until_dag_run_conf_resets_them(serialized_dags) -> None:
    """README: without --dag-run-conf a rerun run keeps the params it had; '{}' returns it to the
    defaults. Real `backfill create` runs (no scheduler starts them), on a date no other test uses."""
    dag_id, day = "user_features_daily", "2026-01-05"
    create = ["airflow", "backfill", "create", "--dag-id", dag_id, "--from-date", day, "--to-date", day]
    rerun = [*create, "--reprocess-behavior", "completed"]
    section = _backfills_section()
    assert "--dag-run-conf '{}'" in section and "keeps the params it had" in section

    for words, expected_conf in (
        ([*create, "--dag-run-conf", '{"mode": "rebuild"}'], {"mode": "rebuild"}),
        (rerun, {"mode": "rebuild"}),  # no --dag-run-conf: the run keeps its params
        ([*rerun, "--dag-run-conf", "{}"], {}),  # back to the DAG's defaults
    ):
        result = _airflow(words)
        assert result.returncode == 0, f"{shlex.join(words)}:\n{result.stderr[-3000:]}"
        state, conf = _run_conf(dag_id, day)
        assert (state, conf) == ("queued", expected_conf), shlex.join(words)
        _finish_backfill_runs(dag_id)
