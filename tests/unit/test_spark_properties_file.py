"""The properties file SparkFeatureJobOperator writes for spark-submit: keys and values escaped as
java.util.Properties reads them (read back here with the project's own key reader, and by a real
spark-submit in tests/integration/test_spark_submit_credentials.py), the loaded file's properties
kept ahead of the added ones, and a file only its owner can read; and the file spark-submit
loads, and the keys one sets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from featurelake_airflow.spark_properties_file import (
    properties_file_with,
    properties_keys,
    property_line,
    spark_properties_file,
    trimmed_from_a_properties_file,
)


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        pytest.param("spark.a", "plain", "spark.a=plain", id="plain"),
        pytest.param("spark.a", "x=y:z", "spark.a=x\\=y\\:z", id="separators"),
        pytest.param("spark.a", "#not a comment", "spark.a=\\#not a comment", id="comment-mark"),
        pytest.param("spark.a", "back\\slash", "spark.a=back\\\\slash", id="backslash"),
        pytest.param("spark.a", "two\nlines\ttab", "spark.a=two\\nlines\\ttab", id="line-break"),
        pytest.param("spark.a", " leading", "spark.a=\\ leading", id="leading-space"),
        pytest.param("spark a=b", "v", "spark\\ a\\=b=v", id="key-space-and-separator"),
        pytest.param("spark.a", "wörd", "spark.a=wörd", id="utf-8"),
    ],
)
def test_property_line_escapes_what_java_would_read_otherwise(key: str, value: str, line: str) -> None:
    assert property_line(key, value) == line
    assert properties_keys(line) == {key}


def test_the_written_file_keeps_the_loaded_file_first_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    loaded = tmp_path / "spark-defaults.conf"
    loaded.write_text("spark.executor.memory 2g\nspark.hadoop.fs.s3a.secret.key from-the-file")
    written = properties_file_with(
        loaded=loaded,
        properties={"spark.hadoop.fs.s3a.secret.key": "from-the-connection"},
        target=tmp_path / "spark.properties",
    )
    lines = written.read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["spark.executor.memory 2g", "spark.hadoop.fs.s3a.secret.key from-the-file"]
    # Java keeps a key's last line: the added one
    assert lines[-1] == "spark.hadoop.fs.s3a.secret.key=from-the-connection"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_without_a_loaded_file_only_the_properties_are_written(tmp_path: Path) -> None:
    written = properties_file_with(loaded=None, properties={"spark.a": "1"}, target=tmp_path / "p")
    assert [line for line in written.read_text().splitlines() if not line.startswith("#")] == ["spark.a=1"]


def test_a_loaded_file_whose_last_line_goes_on_is_refused_naming_it(tmp_path: Path) -> None:
    loaded = tmp_path / "job.properties"
    loaded.write_text("spark.driver.extraJavaOptions -Dx=1 \\\n")
    with pytest.raises(ValueError, match=r"job\.properties ends with a backslash.*remove that trailing"):
        properties_file_with(loaded=loaded, properties={"spark.a": "1"}, target=tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_properties_keys_read_java_properties_syntax() -> None:
    text = "\n".join(
        [
            "# spark.comment.hash 1",
            "! spark.comment.bang 1",
            "spark.driver.extraJavaOptions   -Dx=1 \\",
            "    -Dcontinued.key=2",
            "spark.executor.memory=4g",
            "  spark.master: local[2]",
            "spark.app.name",
            "",
        ]
    )
    assert properties_keys(text) == {
        "spark.driver.extraJavaOptions",
        "spark.executor.memory",
        "spark.master",
        "spark.app.name",
    }


def test_the_properties_file_is_the_one_spark_submit_loads(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "spark-defaults.conf").write_text("spark.executor.memory 2g\n")
    assert spark_properties_file(
        properties_file="/p.conf", environ={"SPARK_CONF_DIR": str(conf_dir)}
    ) == Path("/p.conf")
    assert spark_properties_file(properties_file=None, environ={"SPARK_CONF_DIR": str(conf_dir)}) == (
        conf_dir / "spark-defaults.conf"
    )
    assert spark_properties_file(properties_file=None, environ={"SPARK_HOME": str(tmp_path)}) == (
        conf_dir / "spark-defaults.conf"
    )
    assert spark_properties_file(properties_file=None, environ={"SPARK_CONF_DIR": str(tmp_path)}) is None
    assert spark_properties_file(properties_file=None, environ={}) is None


@pytest.mark.parametrize(
    ("value", "trimmed"),
    [
        pytest.param("secret", False, id="plain"),
        pytest.param("two words", False, id="inner-space"),
        pytest.param(" secret", True, id="leading-space"),
        pytest.param("secret\t", True, id="trailing-tab"),
        pytest.param("secret\n", False, id="line-break-kept"),  # trimExceptCRLF
    ],
)
def test_what_spark_trims_from_a_properties_file_value(value: str, trimmed: bool) -> None:
    assert trimmed_from_a_properties_file(value) is trimmed
