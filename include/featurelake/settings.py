"""featurelake's local settings file (`airflow.env`): `NAME ?= value` lines, the environment wins.

The Makefile reads the same file with `include`, so the syntax is the common subset of make and this
parser: `${FEATURELAKE_ROOT}` expands to the project directory, `#` starts a comment line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SETTINGS_FILE = PROJECT_ROOT / "airflow.env"

_LINE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\?=\s*(?P<value>.*)$")
_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}")


def read_settings(path: Path = SETTINGS_FILE, *, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Parse the settings file into {name: value}, with `${NAME}` references expanded."""
    known: dict[str, str] = {"FEATURELAKE_ROOT": str(root)}
    settings: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected `NAME ?= value`, got {raw!r}")
        value = _REFERENCE.sub(lambda m: known.get(m["name"], os.environ.get(m["name"], "")), match["value"])
        settings[match["name"]] = value
        known[match["name"]] = value
    return settings


def apply_settings(
    environ: MutableMapping[str, str] | None = None,
    *,
    overrides: Mapping[str, str] | None = None,
    path: Path = SETTINGS_FILE,
) -> dict[str, str]:
    """Set every setting not already in `environ` (default: os.environ); `overrides` always win."""
    target = os.environ if environ is None else environ
    applied: dict[str, str] = {}
    for name, value in read_settings(path).items():
        if overrides and name in overrides:
            value = overrides[name]
        elif name in target:
            continue
        target[name] = value
        applied[name] = value
    return applied
