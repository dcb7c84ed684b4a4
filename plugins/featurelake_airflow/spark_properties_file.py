"""The Java properties files of a spark-submit: the one it loads, the keys that one sets, and the file
SparkFeatureJobOperator hands it in that one's place when a submit carries credentials."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path


def spark_properties_file(*, properties_file: str | None, environ: Mapping[str, str]) -> Path | None:
    """The properties file spark-submit loads: `--properties-file`, else spark-defaults.conf in
    $SPARK_CONF_DIR, else in $SPARK_HOME/conf; None when there is none."""
    if properties_file:
        return Path(properties_file)
    conf_dir = environ.get("SPARK_CONF_DIR") or (
        str(Path(environ["SPARK_HOME"]) / "conf") if environ.get("SPARK_HOME") else None
    )
    defaults = Path(conf_dir) / "spark-defaults.conf" if conf_dir else None
    return defaults if defaults is not None and defaults.is_file() else None


def properties_keys(text: str) -> set[str]:
    """The keys a Java properties file sets (`key value`, `key=value` or `key: value`; `#` and `!`
    comments; a value continued on the next line after a trailing backslash). Written here, not
    taken from a properties library: only the keys are needed, and the syntax is this small."""
    return _read_keys(text)[0]


def _read_keys(text: str) -> tuple[set[str], bool]:
    """The keys a properties file sets, and whether its last line goes on (a trailing backslash)."""
    keys: set[str] = set()
    continued = False
    for line in (raw.lstrip() for raw in text.splitlines()):
        if continued:
            continued = _continues(line)
            continue
        if not line or line[0] in "#!":
            continue
        key = re.match(r"(?:\\.|[^\s=:\\])*", line)
        keys.add(re.sub(r"\\(.)", r"\1", key.group(0) if key else ""))
        continued = _continues(line)
    return keys, continued


def _continues(line: str) -> bool:
    """Whether a properties line goes on on the next one: an odd number of trailing backslashes."""
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


# What Spark trims from each value of a properties file: whitespace and control characters, but for
# line breaks (`trimExceptCRLF`). A --conf value is taken as it is.
_SPARK_TRIMMED = "".join(chr(code) for code in range(33) if chr(code) not in "\r\n")


def trimmed_from_a_properties_file(value: str) -> bool:
    """Whether Spark reads `value` back shorter from a properties file: it starts or ends with
    whitespace or a control character other than a line break."""
    return value != value.strip(_SPARK_TRIMMED)


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}


def _escaped(text: str, *, key: bool) -> str:
    """`text` as java.util.Properties reads it back: backslash escapes for the line breaks, tabs and
    backslashes, for the separators and comment marks, and for a space anywhere in a key and at the
    start of a value. Other characters stay as they are: Spark reads a properties file as UTF-8."""
    return "".join(
        _ESCAPES.get(char)
        or ("\\" + char if char in "=:#!" or (char == " " and (key or index == 0)) else char)
        for index, char in enumerate(text)
    )


def property_line(key: str, value: str) -> str:
    """One `key=value` line of a properties file, escaped so that Java reads back `key` and `value`."""
    return f"{_escaped(key, key=True)}={_escaped(value, key=False)}"


def properties_file_with(*, loaded: Path | None, properties: Mapping[str, str], target: Path) -> Path:
    """Write `target`, readable by its owner only: what the properties file spark-submit would load
    (`loaded`) says, then `properties`. Java keeps the last line of a key, so `properties` win over
    `loaded`, as --conf does over a properties file, and everything else `loaded` sets stays."""
    text = loaded.read_text(encoding="utf-8") if loaded is not None else ""
    if _read_keys(text)[1]:
        raise ValueError(
            f"the Spark properties file {loaded} ends with a backslash, which would continue its last "
            "value onto the properties featurelake adds after it; remove that trailing backslash"
        )
    added = [
        "# featurelake: properties of the Spark connection and the task that hold credentials,",
        "# kept off spark-submit's command line",
        *(property_line(key, value) for key, value in properties.items()),
    ]
    body = (text if not text or text.endswith("\n") else text + "\n") + "\n".join(added) + "\n"
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(body)
    return target
