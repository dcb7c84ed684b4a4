"""Credentials among a submit's Spark properties (S3A's keys, an Azure account key, a keystore's
password), through SparkFeatureJobOperator and a real spark-submit on a local master: they reach the
driver with the precedence of --conf, and no process's command line holds them while the job runs.
Before, they were --conf arguments: `ps` showed them to every user of the Airflow worker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from featurelake_airflow.operators.spark_feature_job import SparkFeatureJobOperator
from tests.support import VENV_BIN

pytestmark = pytest.mark.integration

# Reports the properties the driver holds, every command line on the machine that holds a secret,
# and the mode of the properties file its spark-submit (the JVM that started this Python) loaded.
APPLICATION = """
import json, os, sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
keys, secrets = json.loads(open(sys.argv[2]).read())  # not as arguments: those are on command lines
seen = {}
for pid in (name for name in os.listdir("/proc") if name.isdigit()):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            arguments = cmdline.read().decode(errors="replace").split("\\0")
    except OSError:
        continue
    for secret in secrets:
        if any(secret in argument for argument in arguments):
            seen.setdefault(secret, []).append(" ".join(arguments)[:300])
with open(f"/proc/{os.getppid()}/cmdline", "rb") as cmdline:
    submit = cmdline.read().decode().split("\\0")
loaded = submit[submit.index("--properties-file") + 1] if "--properties-file" in submit else None
report = {
    "conf": {key: spark.conf.get(key, None) for key in keys},
    "command_lines_with_a_secret": seen,
    "properties_file_mode": oct(os.stat(loaded).st_mode & 0o777) if loaded else None,
}
open(sys.argv[1], "w").write(json.dumps(report))
spark.stop()
"""

S3A_SECRET = "spark.hadoop.fs.s3a.secret.key"
S3A_ACCESS = "spark.hadoop.fs.s3a.access.key"
AZURE = "spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net"
KEYSTORE = "spark.ssl.keyStorePassword"


def _run(
    tmp_path: Path,
    monkeypatch,
    *,
    connection_conf: dict,
    task_conf: dict,
    keys: list[str],
    secrets: list[str],
    properties_file: str | None = None,
) -> dict:
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")  # spark-submit
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_CREDENTIALS_TEST",
        json.dumps({"conn_type": "spark", "host": "local[1]", "extra": {"conf": connection_conf}}),
    )
    application = tmp_path / "probe.py"
    application.write_text(APPLICATION)
    report = tmp_path / "report.json"
    wanted = tmp_path / "wanted.json"
    wanted.write_text(json.dumps([keys, secrets]))
    operator = SparkFeatureJobOperator(
        task_id="probe",
        conn_id="spark_credentials_test",
        application=str(application),
        application_args=[str(report), str(wanted)],
        conf=task_conf,
        properties_file=properties_file,
        report_path=str(report),
        ship_library=False,
    )
    result = operator.execute(context={})
    assert operator.properties_file == properties_file, "the operator keeps its own properties file"
    return result


def test_credentials_reach_the_driver_and_no_command_line(tmp_path: Path, monkeypatch) -> None:
    # values a properties file must escape: separators, a comment mark, a backslash, a leading space
    # is trimmed by Spark (a warning says so), so none here starts or ends with one
    secrets = {
        S3A_SECRET: "s3a-secret=with:separators #and! marks \\ and a backslash",
        S3A_ACCESS: "AKIAFEATURELAKE0PROBE",
        AZURE: "azure-account-key/for+the=probe==",
        KEYSTORE: "päss wörd-for-the-probe",
    }
    result = _run(
        tmp_path,
        monkeypatch,
        connection_conf={**secrets, "spark.executor.memory": "900m"},
        task_conf={KEYSTORE: "the-task-keystore-password"},
        keys=[*secrets, "spark.executor.memory"],
        secrets=[*secrets.values(), "the-task-keystore-password"],
    )
    assert result["conf"] == {
        **secrets,
        KEYSTORE: "the-task-keystore-password",  # the task's conf wins over the connection's
        "spark.executor.memory": "900m",
    }
    assert result["command_lines_with_a_secret"] == {}
    assert result["properties_file_mode"] == "0o600"


def test_credentials_win_over_the_properties_file_whose_other_properties_stay(
    tmp_path: Path, monkeypatch
) -> None:
    """The operator's properties file (as spark-defaults.conf would) sets a credential the connection
    sets too, and properties of its own: the connection's credential wins, as a --conf did, and the
    file's other properties (a credential among them) still reach the driver."""
    properties = tmp_path / "job.properties"
    properties.write_text(
        "\n".join(
            [
                f"{S3A_SECRET}  the-file-secret-key",
                f"{S3A_ACCESS}=the-file-access-key",
                "spark.featurelake.probe  from-the-file, \\",
                "    continued",
                "spark.executor.memory 700m",
            ]
        )  # no newline at the end
    )
    result = _run(
        tmp_path,
        monkeypatch,
        connection_conf={S3A_SECRET: "the-connection-secret-key"},
        task_conf={},
        keys=[S3A_SECRET, S3A_ACCESS, "spark.featurelake.probe", "spark.executor.memory"],
        secrets=["the-connection-secret-key", "the-file-access-key"],
        properties_file=str(properties),
    )
    assert result["conf"] == {
        S3A_SECRET: "the-connection-secret-key",
        S3A_ACCESS: "the-file-access-key",
        "spark.featurelake.probe": "from-the-file, continued",
        "spark.executor.memory": "700m",
    }
    assert result["command_lines_with_a_secret"] == {}
    assert result["properties_file_mode"] == "0o600"
