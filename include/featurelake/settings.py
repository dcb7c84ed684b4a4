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
    """Parse the settings file into {name: value}, as make reads it: a `?=` variable is set by its
    first line only, and its `${NAME}` references are expanded when it is used, so a line may name
    a variable defined below it. A reference expands to `overrides[NAME]`, else the project root for
    FEATURELAKE_ROOT, else the environment's NAME (which a `?=` line does not replace), else the
    file's NAME, else ''. A name the overrides or the environment set takes that value, as in make
    (which never expands the file's value then); the others take the file's, trailing blanks kept.
    Text that make would read otherwise is refused, naming its line (a `#`, a `$` outside
    `${NAME}`, a reference to itself, a line ending in `\\`, a FEATURELAKE_ROOT line) or the
    environment variable (a `$` in a value a reference brings in, which make expands again)."""
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    defined: dict[str, tuple[int, str]] = {}  # name: (line number, value as written)
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        if raw.endswith("\\"):  # make joins the next line to it, a comment's too
            raise ValueError(
                f"{path}:{number}: the line ends with `\\`, which make joins to the next line: "
                "write the value on one line"
            )
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        # the value as make keeps it: from its first non-blank character, trailing blanks included
        match = _LINE.match(raw.lstrip())
        if match is None:
            raise ValueError(f"{path}:{number}: expected `NAME ?= value`, got {raw!r}")
        name, value = match["name"], match["value"]
        if name == "FEATURELAKE_ROOT":
            raise ValueError(
                f"{path}:{number}: FEATURELAKE_ROOT is the project directory, which the Makefile sets "
                "before it reads this file (a line here would not change it): remove the line"
            )
        unshared = "#" if "#" in value else "$" if "$" in _REFERENCE.sub("", value) else None
        if unshared is not None:
            where = (
                "`#`, where make starts a comment (and it reads `\\#` as `#`)"
                if unshared == "#"
                else "`$` outside a ${NAME} reference, which make expands"
            )
            raise ValueError(
                f"{path}:{number}: the value of {name} holds {where}, so make and featurelake would "
                f"read different values. Set {name} in the environment instead (it wins over this "
                "file), or remove the character"
            )
        defined.setdefault(name, (number, value))  # `?=`: a later line of a set name does nothing

    def expanded(text: str, using: tuple[str, ...]) -> str:
        return _REFERENCE.sub(lambda m: value_of(m["name"], using), text)

    def value_of(name: str, using: tuple[str, ...]) -> str:
        if name in overrides:
            return overrides[name]
        if name == "FEATURELAKE_ROOT":
            return str(root)
        if name in environ:
            if "$" in environ[name]:
                raise ValueError(
                    f"{path}: {name} is referenced as ${{{name}}}, and its value in the environment "
                    f"holds `$`, which make expands again, so make and featurelake would read "
                    f"different values. Set the variables that reference {name} in the environment "
                    "too, or keep `$` out of its value"
                )
            return environ[name]
        if name not in defined:
            return ""
        if name in using:
            number, _ = defined[name]
            raise ValueError(
                f"{path}:{number}: {name} references itself ({' -> '.join((*using, name))}), which "
                "make refuses: remove the loop"
            )
        return expanded(defined[name][1], (*using, name))

    # A name the overrides or the environment set keeps that value: make never expands the file's.
    return {
        name: overrides[name]
        if name in overrides
        else environ[name]
        if name in environ
        else expanded(value, (name,))
        for name, (_, value) in defined.items()
    }


def apply_settings(
    environ: MutableMapping[str, str] | None = None,
    *,
    overrides: Mapping[str, str] | None = None,
    path: Path = SETTINGS_FILE,
) -> dict[str, str]:
    """Set every setting not already in `environ` (default: os.environ); `overrides` always win,
    those the file does not name too."""
    target = os.environ if environ is None else environ
    overrides = overrides or {}
    applied: dict[str, str] = {}
    settings = read_settings(path, environ=target, overrides=overrides)
    for name, value in {**settings, **overrides}.items():
        if name in target and name not in overrides:
            continue
        target[name] = value
        applied[name] = value
    return applied
