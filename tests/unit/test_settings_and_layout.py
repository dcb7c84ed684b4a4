from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pytest

from featurelake.lake import LakeLayout, is_data_file, iso_day, local_path, window_start
from featurelake.settings import PROJECT_ROOT, SETTINGS_FILE, apply_settings, read_settings


def test_settings_expand_the_project_root(tmp_path: Path) -> None:
    file = tmp_path / "airflow.env"
    file.write_text('# comment\n\nA ?= ${FEATURELAKE_ROOT}/x\nB ?= ${A}/y\nJSON ?= {"k": "v[*]"}\n')
    assert read_settings(file, root=Path("/p")) == {"A": "/p/x", "B": "/p/x/y", "JSON": '{"k": "v[*]"}'}


def test_environment_wins_and_overrides_win_over_both(tmp_path: Path) -> None:
    file = tmp_path / "airflow.env"
    file.write_text("A ?= file\nB ?= file\nC ?= file\n")
    environ = {"A": "env", "B": "env"}
    applied = apply_settings(environ, overrides={"B": "override"}, path=file)
    assert environ == {"A": "env", "B": "override", "C": "file"}
    assert applied == {"B": "override", "C": "file"}


def test_bad_line_names_the_file_and_line(tmp_path: Path) -> None:
    file = tmp_path / "airflow.env"
    file.write_text("A ?= 1\nB = 2\n")
    with pytest.raises(ValueError, match=r"airflow.env:2: expected `NAME \?= value`"):
        read_settings(file)


@pytest.mark.parametrize(
    ("value", "character"),
    [
        pytest.param('{"password": "s3cr$tpw"}', "$", id="dollar"),
        pytest.param('{"password": "a#b"}', "#", id="hash"),
        pytest.param("${A}$(B)", "$", id="make-function"),
    ],
)
def test_a_value_make_reads_otherwise_is_refused_naming_its_line(
    tmp_path: Path, value: str, character: str
) -> None:
    """make read `s3cr$tpw` as `s3crpw` and cut `a#b` at the `#`, where this parser kept both: the
    tests and the Makefile's commands used different passwords, or the hooks met half a JSON."""
    file = tmp_path / "airflow.env"
    file.write_text(f"A ?= 1\nSECRET ?= {value}\n")
    with pytest.raises(
        ValueError,
        match=rf"airflow.env:2: the value of SECRET holds `\{character}`.* so make and featurelake would read different values\. Set SECRET in the environment",
    ):
        read_settings(file)


def test_project_settings_file_parses_and_sets_the_essentials() -> None:
    settings = read_settings(SETTINGS_FILE, root=Path("/repo"), environ={})
    assert settings["AIRFLOW_HOME"] == "/repo/.airflow"
    assert settings["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert settings["AIRFLOW_VAR_FEATURELAKE_LAKE"] == "/repo/data"
    assert settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "sqlite:////repo/.airflow/airflow.db?timeout=60"
    assert '"local[*]"' in settings["AIRFLOW_CONN_SPARK_DEFAULT"]


def test_lake_layout_paths_are_pinned() -> None:
    lake = LakeLayout("s3a://bucket/lake/")
    assert lake.raw_transactions == "s3a://bucket/lake/raw/transactions"
    assert lake.raw_categories == "s3a://bucket/lake/raw/categories"
    assert lake.user_daily_tiles == "s3a://bucket/lake/tiles/user_daily"
    assert lake.quarantine_transactions == "s3a://bucket/lake/quarantine/transactions"
    assert lake.user_features == "s3a://bucket/lake/features/user_features"
    assert LakeLayout.partition(lake.user_features, date(2026, 1, 2)) == (
        "s3a://bucket/lake/features/user_features/date=2026-01-02"
    )
    assert lake.run_metrics("user_features", date(2026, 1, 2)) == (
        "s3a://bucket/lake/_metrics/user_features/date=2026-01-02.json"
    )


def test_empty_lake_root_is_rejected() -> None:
    with pytest.raises(ValueError, match="AIRFLOW_VAR_FEATURELAKE_LAKE"):
        LakeLayout("")


@pytest.mark.parametrize("location", ["", "file://"])
def test_an_empty_local_location_is_refused_not_taken_for_the_current_directory(location: str) -> None:
    with pytest.raises(ValueError, match=f"^the lake {location!r} names no directory"):
        local_path(location, what="the lake", remedy="unused")


@pytest.mark.parametrize(
    ("location", "path"),
    [
        pytest.param("/data/lake", Path("/data/lake"), id="absolute"),
        pytest.param("data", Path("data"), id="relative"),
        pytest.param("file:///data/lake", Path("/data/lake"), id="file-uri"),
    ],
)
def test_a_local_location_is_its_path(location: str, path: Path) -> None:
    assert local_path(location, what="the lake", remedy="unused") == path


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("file://localhost/data/lake", id="with-a-host"),
        pytest.param("file:/data/lake", id="one-slash"),
        pytest.param("file:data/lake", id="opaque"),
    ],
)
def test_a_file_uri_of_another_form_is_refused_not_taken_for_a_relative_path(location: str) -> None:
    """`file://localhost/data/lake` was the relative path `localhost/data/lake`, and `file:/data/lake`
    the relative `file:/data/lake`: the generator wrote the lake under the current directory."""
    with pytest.raises(ValueError, match=f"^the lake {location} is not a file:// URI of an absolute path"):
        local_path(location, what="the lake", remedy="unused")


@pytest.mark.parametrize(
    ("text", "day"),
    [
        pytest.param("2026-03-01", date(2026, 3, 1), id="yyyy-mm-dd"),
        pytest.param("20260301", None, id="basic-form"),
        pytest.param("2026-W09-7", None, id="week-date"),
        pytest.param("2026-060", None, id="ordinal-date"),
        pytest.param("2026-02-30", None, id="no-such-day"),
    ],
)
def test_a_partition_date_is_exactly_yyyy_mm_dd(text: str, day: date | None) -> None:
    assert iso_day(text) == day


def test_a_window_of_w_days_ends_on_its_date_and_reaches_back_to_year_1_at_most() -> None:
    assert window_start(date(2026, 10, 28), 1) == date(2026, 10, 28)
    assert window_start(date(2026, 10, 28), 90) == date(2026, 7, 31)
    longest = (date(2026, 10, 28) - date.min).days + 1
    assert window_start(date(2026, 10, 28), longest) == date.min
    with pytest.raises(ValueError, match=f"window_days {longest + 1} reaches before year 1"):
        window_start(date(2026, 10, 28), longest + 1)
    with pytest.raises(ValueError, match="window_days must be >= 1, got 0"):
        window_start(date(2026, 10, 28), 0)


@pytest.mark.parametrize(
    ("name", "is_data"),
    [
        ("part-0.parquet", True),
        (".part-0.parquet", False),  # a writer's temporary file
        ("_part-0.parquet", False),  # Spark's and pyarrow's markers and temporary files
        ("_SUCCESS", False),
        ("part-0.parquet.crc", False),
    ],
)
def test_a_data_file_is_a_parquet_file_not_hidden(name: str, is_data: bool) -> None:
    assert is_data_file(name) is is_data


def test_make_exports_gives_a_shell_the_project_settings(tmp_path: Path) -> None:
    """`eval "$(make -s exports)"` sets airflow.env in a shell that has none of it, for the hand-run
    CLI commands of the README, and keeps what the shell already set."""
    project = SETTINGS_FILE.parent
    script = 'eval "$(make -s -C "$1" exports)" && printf "%s\\n" "$AIRFLOW_HOME" "$AIRFLOW_CONN_SPARK_DEFAULT" "$TZ"'
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TZ": "Europe/Paris"}
    result = subprocess.run(
        ["bash", "-c", script, "bash", str(project)], env=env, capture_output=True, text=True, check=True
    )
    home, connection, zone = result.stdout.splitlines()
    assert home == str(project / ".airflow")
    assert json.loads(connection)["host"] == "local[*]"
    assert zone == "Europe/Paris"


def _exports(env: dict[str, str], *names: str, make_args: Sequence[str] = ()) -> tuple[list[str], str]:
    """The values of `names` in a shell that ran `eval "$(make -s exports <make_args>)"`, and make's
    stderr."""
    project = SETTINGS_FILE.parent
    shown = " ".join(f'"${name}"' for name in names)
    script = f'eval "$(make -s -C "$1" exports "${{@:3}}" 2>"$2")" && printf "%s\\n" {shown}'
    errors = Path(env["HOME"]) / "make-errors"
    result = subprocess.run(
        ["bash", "-c", script, "bash", str(project), str(errors), *make_args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines(), errors.read_text()


def test_make_exports_keeps_a_value_with_a_dollar_and_a_quote_as_it_is(tmp_path: Path) -> None:
    """make expanded each value: a password `s3cr$t` came back as `s3cr`, over the shell's own
    setting, and a quote failed the command."""
    online = '{"conn_type": "redis", "host": "r0", "password": "s3cr$t it\'s"}'
    (value,), _ = _exports(
        {"HOME": str(tmp_path), "AIRFLOW_CONN_FEATURELAKE_ONLINE": online}, "AIRFLOW_CONN_FEATURELAKE_ONLINE"
    )
    assert value == online


def test_an_empty_lake_variable_leaves_the_lake_to_the_database_variable(tmp_path: Path) -> None:
    """Airflow reads a Variable set empty in the environment as "", before its database: with
    `AIRFLOW_VAR_FEATURELAKE_LAKE= make airflow` every task saw an empty lake root, and the Variable
    made in the UI was never read. Neither make's recipes nor `make -s exports` set it then."""
    env = {"HOME": str(tmp_path), "AIRFLOW_VAR_FEATURELAKE_LAKE": ""}
    script = 'eval "$(make -s -C "$1" exports)" && echo "${AIRFLOW_VAR_FEATURELAKE_LAKE+set in the shell}"'
    shell = subprocess.run(
        ["bash", "-c", script, "bash", str(SETTINGS_FILE.parent)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.strip() == ""
    recipe = subprocess.run(
        ["make", "-s", "-C", str(SETTINGS_FILE.parent), "--eval", "probe: ; @env", "probe"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    names = {line.split("=", 1)[0] for line in recipe.stdout.splitlines()}
    assert "AIRFLOW_VAR_FEATURELAKE_LAKE" not in names
    assert "AIRFLOW_CONN_SPARK_DEFAULT" in names  # the other settings are exported as before


def test_an_airflow_home_of_the_environment_is_not_the_projects(tmp_path: Path) -> None:
    """Airflow's quick start exports AIRFLOW_HOME=~/airflow: the project's SQLite database (in
    .airflow/) was then never created, and its logs and password went to that other home."""
    (home,), errors = _exports(
        {"HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow")}, "AIRFLOW_HOME"
    )
    assert home == str(SETTINGS_FILE.parent / ".airflow")
    assert f"ignoring AIRFLOW_HOME={tmp_path / 'airflow'} from the environment" in errors


def test_an_airflow_home_given_to_make_holds_the_sqlite_database(tmp_path: Path) -> None:
    """`make demo AIRFLOW_HOME=<dir>` (README) created <dir> and migrated a database in ./.airflow/,
    which a fresh clone does not have: "unable to open database file"."""
    home = tmp_path / "home"
    (database,), _ = _exports(
        {"HOME": str(tmp_path)}, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", make_args=[f"AIRFLOW_HOME={home}"]
    )
    assert database == f"sqlite:///{home}/airflow.db?timeout=60"


def test_make_refuses_a_checkout_path_with_a_space(tmp_path: Path) -> None:
    """make splits paths at spaces: every target broke, and `make clean` removed the directory
    named by the path's first word."""
    checkout = tmp_path / "My Projects" / "featurelake"
    checkout.mkdir(parents=True)
    for name in ("Makefile", "airflow.env"):
        shutil.copy(SETTINGS_FILE.parent / name, checkout / name)
    (tmp_path / "My").mkdir()
    result = subprocess.run(["make", "-C", str(checkout), "clean"], capture_output=True, text=True)
    assert result.returncode != 0
    assert (
        "has a space in its path" in result.stderr and "clone it into a path without spaces" in result.stderr
    )
    assert (tmp_path / "My").is_dir()


def test_make_env_installs_uv_again_after_an_interrupted_bootstrap(tmp_path: Path) -> None:
    """pip writes .uv-bootstrap/bin/uv in place: a `make env` stopped during `pip install uv` left a
    partial, non-executable uv, which make took as built, and every later `make env` failed with
    "Permission denied" until .uv-bootstrap was removed by hand."""
    checkout = tmp_path / "featurelake"
    checkout.mkdir()
    for name in ("Makefile", "airflow.env", "requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        shutil.copy(SETTINGS_FILE.parent / name, checkout / name)
    partial = checkout / ".uv-bootstrap" / "bin" / "uv"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\x7fELF" + bytes(1024))
    # A PATH without uv, so that the Makefile bootstraps it, with what make reads the Makefile with.
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "sed", "cksum", "cut"):
        (tools / tool).symlink_to(shutil.which(tool))
    make = shutil.which("make")
    result = subprocess.run(
        [make, "-n", "-C", str(checkout), "env"],
        env={"PATH": str(tools), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    bootstrap = checkout / ".uv-bootstrap"
    assert f"python3 -m venv --clear {bootstrap}\n{bootstrap}/bin/pip install --quiet uv\n" in result.stdout


def test_make_env_creates_again_a_venv_stopped_before_its_pyvenv_cfg(tmp_path: Path) -> None:
    """uv venv links bin/python to the base Python before it writes pyvenv.cfg. A `make env` stopped
    between the two left bin/python, which `test -x` took as a venv: the next `make env` ran
    `uv pip sync --python .venv/bin/python` on the base Python (uninstalling what the locks do not
    list there) and stamped the empty .venv as installed. Here bin/python is a program that is no
    Python, so that the test cannot touch a real interpreter."""
    uv = shutil.which("uv") or str(SETTINGS_FILE.parent / ".uv-bootstrap" / "bin" / "uv")
    checkout = tmp_path / "featurelake"
    checkout.mkdir()
    for name in ("Makefile", "airflow.env", "pyproject.toml"):
        shutil.copy(SETTINGS_FILE.parent / name, checkout / name)
    for name in ("requirements.txt", "requirements-dev.txt"):
        (checkout / name).write_text("")
    half = checkout / ".venv" / "bin" / "python"
    half.parent.mkdir(parents=True)
    half.write_text("#!/bin/sh\nexit 1\n")
    half.chmod(0o755)
    path = os.pathsep.join([str(Path(uv).parent), str(Path(sys.executable).parent), os.environ["PATH"]])
    # Offline: the editable install of the project may fail here; the venv is what this test checks.
    subprocess.run(
        ["make", "-C", str(checkout), "env"],
        env={"PATH": path, "HOME": str(tmp_path), "UV_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert (checkout / ".venv" / "pyvenv.cfg").is_file()
    prefix = subprocess.run(
        [str(half), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, check=True
    )
    assert prefix.stdout.strip() == str(checkout / ".venv")


@pytest.mark.parametrize(
    ("dates", "given"),
    [
        (["FROM=2026-10-1", "TO=2026-10-07"], "FROM=2026-10-1 TO=2026-10-07"),
        (["FROM=2026-10-08", "TO=2026-10-07"], "FROM=2026-10-08 TO=2026-10-07"),
        (["FROM=2026-10-01"], "FROM=2026-10-01 TO="),
    ],
)
def test_make_backfill_prints_its_usage_before_building_anything(
    tmp_path: Path, dates: list[str], given: str
) -> None:
    """A mistyped FROM or TO printed the usage only after the venv was built and the database
    migrated (minutes on a fresh clone)."""
    checkout = tmp_path / "featurelake"
    checkout.mkdir()
    for name in ("Makefile", "airflow.env"):
        shutil.copy(SETTINGS_FILE.parent / name, checkout / name)
    result = subprocess.run(["make", "-C", str(checkout), "backfill", *dates], capture_output=True, text=True)
    assert result.returncode == 2
    assert (
        f"usage: make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD, with FROM on or before TO (given: {given})"
        in (result.stderr)
    )
    assert sorted(path.name for path in checkout.iterdir()) == ["Makefile", "airflow.env"]


def test_a_reference_expands_as_make_expands_it(tmp_path: Path) -> None:
    """`B ?= ${A}/x` took the file's A even when the environment set A, where make takes the
    environment's: the tests and the Makefile would then disagree on B."""
    settings = tmp_path / "airflow.env"
    settings.write_text("A ?= /file\nB ?= ${A}/x\nC ?= ${FEATURELAKE_ROOT}/c\n")
    makefile = tmp_path / "Makefile"
    makefile.write_text("include airflow.env\nshow:\n\t@echo $(B)\n")
    make = subprocess.run(
        ["make", "-s", "-C", str(tmp_path), "show"],
        env={"PATH": os.environ["PATH"], "A": "/env"},
        capture_output=True,
        text=True,
        check=True,
    )
    environ = {"A": "/env"}
    applied = apply_settings(environ, path=settings)
    assert make.stdout.strip() == environ["B"] == "/env/x"
    assert "A" not in applied and applied["C"] == f"{PROJECT_ROOT}/c"
    assert read_settings(settings, environ={})["B"] == "/file/x"
    assert read_settings(settings, environ={"A": "/env"}, overrides={"A": "/override"})["B"] == "/override/x"


def _make_value(tmp_path: Path, settings: str, name: str, env: dict[str, str] | None = None) -> str:
    """What make reads for `name` from `settings` (as the Makefile includes airflow.env)."""
    (tmp_path / "airflow.env").write_text(settings)
    (tmp_path / "Makefile").write_text(f"include airflow.env\nshow:\n\t@echo '$({name})'\n")
    return subprocess.run(
        ["make", "-s", "-C", str(tmp_path), "show"],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.mark.parametrize(
    ("settings", "name", "want"),
    [
        pytest.param("A ?= ${B}/x\nB ?= y\n", "A", "y/x", id="reference-to-a-later-line"),
        pytest.param("A ?= 1\nA ?= 2\n", "A", "1", id="first-line-wins"),
        pytest.param("A ?= ${B}\nB ?= ${C}-b\nC ?= c\n", "A", "c-b", id="chained"),
    ],
)
def test_the_file_is_read_as_make_reads_it(tmp_path: Path, settings: str, name: str, want: str) -> None:
    """A `?=` variable is expanded when used, and set by its first line: the parser expanded a
    reference with the values of the lines above it, and let a later line replace a value."""
    assert _make_value(tmp_path, settings, name) == want
    assert read_settings(tmp_path / "airflow.env", environ={})[name] == want


def test_a_dollar_that_a_reference_brings_in_from_the_environment_is_refused(tmp_path: Path) -> None:
    """make expands a referenced environment value again: `s3cr$t` became `s3cr` for make, and
    stayed `s3cr$t` for the tests."""
    settings = "CONN ?= postgresql://u:${PW}@h/db\n"
    assert _make_value(tmp_path, settings, "CONN", {"PW": "s3cr$t"}) == "postgresql://u:s3cr@h/db"
    with pytest.raises(
        ValueError, match=r"PW is referenced as \$\{PW\}, and its value in the environment holds"
    ):
        read_settings(tmp_path / "airflow.env", environ={"PW": "s3cr$t"})
    assert (
        read_settings(tmp_path / "airflow.env", environ={"PW": "s3cret"})["CONN"]
        == "postgresql://u:s3cret@h/db"
    )


def test_a_variable_that_references_itself_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "airflow.env"
    file.write_text("A ?= ${B}\nB ?= ${A}/x\n")
    with pytest.raises(ValueError, match=r"airflow.env:1: A references itself \(A -> B -> A\)"):
        read_settings(file, environ={})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            "# a note \\\nA ?= x\n", r"airflow.env:1: the line ends with `\\`", id="comment-continued"
        ),
        pytest.param(
            "A ?= foo \\\nB ?= x\n", r"airflow.env:1: the line ends with `\\`", id="value-continued"
        ),
        pytest.param(
            "FEATURELAKE_ROOT ?= /other\n",
            r"airflow.env:1: FEATURELAKE_ROOT is the project directory",
            id="root",
        ),
    ],
)
def test_lines_make_reads_otherwise_are_refused(tmp_path: Path, settings: str, message: str) -> None:
    """make swallowed the line after a `\\` (a comment's too) and kept the Makefile's
    FEATURELAKE_ROOT, where the parser read them as they stand."""
    file = tmp_path / "airflow.env"
    file.write_text(settings)
    with pytest.raises(ValueError, match=message):
        read_settings(file, environ={})


def test_a_value_keeps_its_trailing_blanks_as_in_make(tmp_path: Path) -> None:
    (tmp_path / "airflow.env").write_text("A ?= x  \n")
    (tmp_path / "Makefile").write_text("include airflow.env\nshow:\n\t@echo '[$(A)]'\n")
    make = subprocess.run(
        ["make", "-s", "-C", str(tmp_path), "show"], capture_output=True, text=True, check=True
    )
    assert make.stdout.strip() == "[x  ]"
    assert read_settings(tmp_path / "airflow.env", environ={})["A"] == "x  "


def test_a_name_the_environment_sets_is_not_expanded_from_the_file(tmp_path: Path) -> None:
    """CONN set in the environment: make never expands the file's CONN, so a `$` in PW is harmless
    there; the parser expanded it anyway and refused."""
    file = tmp_path / "airflow.env"
    file.write_text("CONN ?= u:${PW}@h\nOTHER ?= ${CONN}/x\n")
    environ = {"CONN": "given", "PW": "s3cr$t"}
    assert read_settings(file, environ=environ) == {"CONN": "given", "OTHER": "given/x"}


def test_an_override_the_file_does_not_name_is_applied(tmp_path: Path) -> None:
    """conftest's AIRFLOW__CORE__UNIT_TEST_MODE override was dropped: the file does not name it."""
    file = tmp_path / "airflow.env"
    file.write_text("A ?= 1\n")
    environ = {"UNLISTED": "env"}
    applied = apply_settings(environ, overrides={"UNLISTED": "override"}, path=file)
    assert environ == {"A": "1", "UNLISTED": "override"} and applied == {"A": "1", "UNLISTED": "override"}


def test_the_api_port_alone_moves_the_tasks_execution_api_url() -> None:
    # With only the port moved, Airflow's default URL stayed on 8080 and every task of `make
    # airflow` failed with "Connection refused".
    moved = read_settings(environ={"AIRFLOW__API__PORT": "9090"})
    assert moved["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://localhost:9090/execution/"
    assert (
        read_settings(environ={})["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
        == "http://localhost:8080/execution/"
    )
