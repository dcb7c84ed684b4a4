from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from airflow.models import Connection
from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

from featurelake_airflow.hooks.spark_connection import (
    SparkConnectionConfHook,
    credential_properties,
    spark_conf_from_extra,
)
from featurelake_airflow.operators.spark_feature_job import (
    submit_conf,
    yarn_cluster_tracking,
    zip_package,
)


@pytest.mark.parametrize(
    ("extra", "want"),
    [
        pytest.param({}, {}, id="no-conf"),
        pytest.param({"conf": None}, {}, id="null-conf"),
        pytest.param(
            {
                "conf": {
                    "spark.executor.memory": "8g",
                    "spark.executor.cores": 4,
                    "spark.eventLog.enabled": True,
                }
            },
            {"spark.executor.memory": "8g", "spark.executor.cores": "4", "spark.eventLog.enabled": "true"},
            id="scalars-as-strings",
        ),
    ],
)
def test_conf_extra(extra: dict, want: dict) -> None:
    assert spark_conf_from_extra(extra, conn_id="spark_default") == want


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"conf": ["spark.x=1"]}, id="list"),
        pytest.param({"conf": {"spark.x": {"nested": 1}}}, id="nested"),
        # spark-submit would get spark.sql.shuffle.partitions=None
        pytest.param({"conf": {"spark.sql.shuffle.partitions": None}}, id="null"),
    ],
)
def test_bad_conf_extra_names_the_connection(extra: dict) -> None:
    with pytest.raises(ValueError, match="connection 'spark_cluster'"):
        spark_conf_from_extra(extra, conn_id="spark_cluster")


def test_hook_reads_the_connection(monkeypatch) -> None:
    connection = Connection(
        conn_id="spark_cluster",
        conn_type="spark",
        host="spark://master:7077",
        extra=json.dumps({"deploy-mode": "client", "conf": {"spark.executor.memory": "4g"}}),
    )
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CLUSTER", connection.as_json())
    assert SparkConnectionConfHook(conn_id="spark_cluster").get_conn() == {"spark.executor.memory": "4g"}


def test_a_storage_key_in_the_conf_extra_is_masked_in_the_submit_command_logged(monkeypatch) -> None:
    """The provider logs spark-submit's command line, --conf values included, masking only properties
    named `secret` or `password`, and Airflow masks the extra's values by name (`secret`, `token`,
    `access_key`...): an Azure storage account key reached the task's log as it is."""
    from airflow.sdk._shared.secrets_masker import redact

    azure = "spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net"
    conf = {azure: "azure-account-key-0123456789", "spark.io.encryption.keySizeBits": "256123"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_KEYS", json.dumps({"conn_type": "spark", "host": "yarn", "extra": {"conf": conf}})
    )
    assert SparkConnectionConfHook(conn_id="spark_keys").get_conn() == conf
    hook = SparkSubmitHook(conn_id="spark_keys", conf=conf)
    logged = redact(hook._mask_cmd(hook._build_spark_submit_command("/jobs/job.py")))
    assert f"--conf {azure}=***" in logged
    assert "azure-account-key" not in logged
    assert "keySizeBits=256123" in logged, "a property whose name merely holds `key` is shown"


def test_library_zip_holds_the_package(tmp_path: Path) -> None:
    package = tmp_path / "src" / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "mod.py").write_text("X = 1\n")
    (package / "notes.txt").write_text("not code")
    archive = zip_package(package, tmp_path / "pkg.zip")
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["pkg/__init__.py", "pkg/sub/mod.py"]


@pytest.mark.parametrize(
    ("connection", "master"),
    [
        pytest.param(Connection(conn_type="spark", host="local[*]"), "local[*]", id="local"),
        pytest.param(Connection(conn_type="spark", host="yarn"), "yarn", id="yarn"),
        pytest.param(
            Connection(conn_type="spark", host="spark://master:7077"), "spark://master:7077", id="url"
        ),
        pytest.param(
            Connection(conn_type="spark", host="master", port=7077), "spark://master:7077", id="port"
        ),
        pytest.param(
            Connection(conn_type="spark", host="spark://master", port=7077),
            "spark://master:7077",
            id="url+port",
        ),
        pytest.param(
            Connection(conn_type="spark", host="k8s://https://kube:6443"), "k8s://https://kube:6443", id="k8s"
        ),
    ],
)
def test_hook_gives_the_master_spark_submit_uses(connection: Connection, master: str, monkeypatch) -> None:
    connection.conn_id = "spark_x"
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_X", connection.as_json())
    assert SparkConnectionConfHook(conn_id="spark_x").master() == master
    if not master.startswith("k8s://"):  # the provider's hook checks for cncf-kubernetes on k8s
        assert SparkSubmitHook(conn_id="spark_x")._connection["master"] == master


@pytest.mark.parametrize(
    ("master", "deploy_mode", "extra", "tracking"),
    [
        pytest.param("yarn", None, {"deploy-mode": "cluster"}, "process", id="yarn-cluster"),
        pytest.param("yarn", "cluster", {}, "process", id="operator-deploy-mode"),
        pytest.param(
            "yarn",
            None,
            {"deploy-mode": "cluster", "yarn_resourcemanager_webapp_address": "http://rm:8088"},
            "rm_api",
            id="yarn-cluster-rm",
        ),
        pytest.param("yarn", None, {}, None, id="yarn-client"),
        pytest.param("yarn", "client", {"deploy-mode": "cluster"}, None, id="operator-wins"),
        pytest.param("spark://m:7077", None, {"deploy-mode": "cluster"}, None, id="standalone"),
        pytest.param("local[*]", None, {}, None, id="local"),
    ],
)
def test_yarn_cluster_mode_is_followed_as_the_connection_allows(master, deploy_mode, extra, tracking) -> None:
    assert yarn_cluster_tracking(master=master, deploy_mode=deploy_mode, extra=extra) == tracking


def test_submit_conf_launches_a_local_driver_with_the_parallel_collector() -> None:
    assert submit_conf(master="local[*]", connection_conf={}, operator_conf=None) == {
        "spark.driver.extraJavaOptions": "-XX:+UseParallelGC"
    }
    # the connection, then the operator, win over the launch defaults
    connection = {"spark.driver.extraJavaOptions": "-XX:+UseG1GC", "spark.executor.memory": "2g"}
    assert submit_conf(master="local[2]", connection_conf=connection, operator_conf=None) == connection
    assert submit_conf(
        master="local[2]", connection_conf=connection, operator_conf={"spark.executor.memory": "4g"}
    ) == {"spark.driver.extraJavaOptions": "-XX:+UseG1GC", "spark.executor.memory": "4g"}
    # a cluster keeps its own collector
    assert submit_conf(master="spark://master:7077", connection_conf={}, operator_conf=None) == {}


def test_a_null_property_in_the_connection_is_refused_with_its_name(monkeypatch) -> None:
    connection = Connection(
        conn_id="spark_null",
        conn_type="spark",
        host="local[2]",
        extra=json.dumps({"conf": {"spark.sql.shuffle.partitions": None, "spark.executor.memory": "2g"}}),
    )
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_NULL", connection.as_json())
    with pytest.raises(ValueError, match=r"connection 'spark_null'.*fix \['spark.sql.shuffle.partitions'\]"):
        SparkConnectionConfHook(conn_id="spark_null").get_conn()


def test_launch_options_never_replace_what_the_properties_file_sets() -> None:
    # spark-submit lets --conf win over its properties file: the launch default must not be passed
    preset = {"spark.driver.extraJavaOptions"}
    assert submit_conf(master="local[2]", connection_conf={}, operator_conf=None, preset=preset) == {}
    # the connection and the operator still win, as --conf
    connection = {"spark.driver.extraJavaOptions": "-XX:+UseG1GC"}
    assert (
        submit_conf(master="local[2]", connection_conf=connection, operator_conf=None, preset=preset)
        == connection
    )


def test_an_extra_that_is_not_json_is_refused_naming_the_connection(monkeypatch) -> None:
    # Airflow's extra_dejson reads it as no extra: the job would silently run without its conf
    extra = '{"conf": {"spark.executor.memory": "4g"},}'
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_TYPO", json.dumps({"conn_type": "spark", "host": "local[2]", "extra": extra})
    )
    hook = SparkConnectionConfHook(conn_id="spark_typo")
    with pytest.raises(ValueError, match="connection 'spark_typo': its extra is not valid JSON"):
        hook.get_conn()


@pytest.mark.parametrize(
    ("name", "credential"),
    [
        pytest.param("spark.hadoop.fs.s3a.secret.key", True, id="s3a-secret-key"),
        pytest.param("spark.hadoop.fs.s3a.access.key", True, id="s3a-access-key"),
        pytest.param("spark.hadoop.fs.s3a.session.token", True, id="s3a-session-token"),
        pytest.param("spark.hadoop.fs.s3a.bucket.lake.secret.key", True, id="s3a-per-bucket"),
        pytest.param("spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net", True, id="azure-key"),
        pytest.param("spark.hadoop.fs.azure.sas.box.acct.blob.core.windows.net", True, id="azure-sas"),
        pytest.param("spark.hadoop.fs.azure.account.oauth2.client.secret", True, id="oauth-secret"),
        pytest.param("spark.hadoop.fs.gs.auth.service.account.private.key", True, id="gcs-private-key"),
        pytest.param("spark.ssl.keyStorePassword", True, id="keystore-password"),
        pytest.param("spark.authenticate.secret", True, id="spark-auth-secret"),
        pytest.param("spark.redis.auth", True, id="redis-auth"),
        pytest.param("spark.io.encryption.keySizeBits", False, id="key-size"),
        pytest.param("spark.hadoop.fs.s3a.aws.credentials.provider", False, id="credentials-provider"),
        pytest.param("spark.authenticate", False, id="spark-authenticate"),
        pytest.param("spark.executor.memory", False, id="memory"),
    ],
)
def test_credential_properties_are_those_whose_value_is_a_secret(name: str, credential: bool) -> None:
    assert credential_properties({name: "value"}) == ([name] if credential else [])
