"""featurelake's local settings file (`airflow.env`): `NAME ?= value` lines, the environment wins.

The Makefile reads the same file with `include`, so the syntax is the common subset of make and this
parser: `${FEATURELAKE_ROOT}` expands to the project directory, `#` starts a comment line. A value
holding `#` (make ends the value there) or a `$` outside `${NAME}` (make expands it) is refused,
naming its line: make would read another value than this parser. Such a value (a password, say)
goes in the environment, which wins over the file.
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


def read_settings(
    path: Path = SETTINGS_FILE,
    *,
    root: Path = PROJECT_ROOT,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Parse the settings file into {name: value}, with `${NAME}` references expanded as make expands
    them: to `overrides[NAME]`, else the project root for FEATURELAKE_ROOT, else the environment's
    NAME (which a `?=` line does not replace), else the file's value so far, else ''. The values are
    the file's; the environment's win when the settings are applied (`apply_settings`)."""
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    known: dict[str, str] = {}

    def expanded(name: str) -> str:
        if name in overrides:
            return overrides[name]
        if name == "FEATURELAKE_ROOT":
            return str(root)
        return environ[name] if name in environ else known.get(name, "")

    settings: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected `NAME ?= value`, got {raw!r}")
        unshared = (
            "#" if "#" in match["value"] else "$" if "$" in _REFERENCE.sub("", match["value"]) else None
        )
        if unshared is not None:
            what = "ends the value" if unshared == "#" else "expands it (only ${NAME} is read alike)"
            raise ValueError(
                f"{path}:{number}: the value of {match['name']} holds `{unshared}`, where make {what}, "
                f"so make and featurelake would read different values. Set {match['name']} in the "
                "environment instead (it wins over this file), or remove the character"
            )
        value = _REFERENCE.sub(lambda m: expanded(m["name"]), match["value"])
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
    for name, value in read_settings(path, environ=target, overrides=overrides).items():
        if overrides and name in overrides:
            value = overrides[name]
        elif name in target:
            continue
        target[name] = value
        applied[name] = value
    return applied
