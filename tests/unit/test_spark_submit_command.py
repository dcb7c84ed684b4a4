"""What SparkFeatureJobOperator hands Airflow's SparkSubmitHook for each form of Spark connection the
README shows (the spark-submit command, read with the hook's `_build_spark_submit_command`, nothing
run), the warning it gives in the task's log for a property the job will ignore, and the shuffle
partitions a job sizes for a YARN or Kubernetes cluster."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from airflow.providers.apache.spark.hooks import spark_submit
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from featurelake.spark_session import base_spark_conf, cluster_core_count, executor_java_options
from featurelake_airflow.operators.spark_feature_job import SparkFeatureJobOperator


def _submitted(monkeypatch, tmp_path: Path, connection: dict, **operator_kwargs) -> dict:
    """Run the operator with spark-submit replaced: the command and tracking it hands the provider."""
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CMD_TEST", json.dumps(connection))
    # The provider needs cncf-kubernetes for a k8s:// master, only to follow the driver's pod.
    monkeypatch.setattr(spark_submit, "kube_client", object(), raising=False)
    report = tmp_path / "report.json"
    seen: dict = {}

    def execute(self: SparkFeatureJobOperator, context: object) -> None:
        hook = self._get_hook()
        seen["command"] = hook._build_spark_submit_command(self.application)
        seen["durable"] = self.durable
        seen["rm_api"] = self._yarn_track_via_rm_api
        properties = _pairs(seen["command"], "--properties-file")
        seen["properties"] = Path(properties[0]).read_text().splitlines() if properties else None
        report.write_text("{}")

    monkeypatch.setattr(SparkSubmitOperator, "execute", execute)
    # the task's log, where caplog sees it
    task_log = logging.getLogger("tests.spark_feature_job")
    monkeypatch.setattr(SparkFeatureJobOperator, "log", property(lambda self: task_log))
    operator = SparkFeatureJobOperator(
        task_id="compute",
        conn_id="spark_cmd_test",
        application="/jobs/user_features.py",
        application_args=["--ds", "2026-10-28"],
        report_path=str(report),
        **operator_kwargs,
    )
    operator.execute(context={})
    seen["command"] = [
        "<library zip>" if arg.endswith("/featurelake.zip") else arg for arg in seen["command"]
    ]
    return seen


def _pairs(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == flag]


def test_standalone_connection_conf_then_task_conf(monkeypatch, tmp_path: Path) -> None:
    connection = {
        "conn_type": "spark",
        "host": "spark://spark-master:7077",
        "extra": {"conf": {"spark.executor.memory": "8g", "spark.executor.cores": "4"}},
    }
    seen = _submitted(monkeypatch, tmp_path, connection, conf={"spark.executor.memory": "2g"})
    command = seen["command"]
    assert command[:3] == ["spark-submit", "--master", "spark://spark-master:7077"]
    # the task's conf wins; no launch option for a cluster's driver
    assert _pairs(command, "--conf") == ["spark.executor.memory=2g", "spark.executor.cores=4"]
    assert _pairs(command, "--py-files") == ["<library zip>"]
    assert "--deploy-mode" not in command
    assert command[-3:] == ["/jobs/user_features.py", "--ds", "2026-10-28"]


def test_credentials_go_in_a_properties_file_and_the_rest_stays_on_the_command_line(
    monkeypatch, tmp_path: Path
) -> None:
    secret = "spark.hadoop.fs.s3a.secret.key"
    connection = {
        "conn_type": "spark",
        "host": "spark://spark-master:7077",
        "extra": {"conf": {"spark.executor.memory": "8g", secret: "from-the-connection"}},
    }
    seen = _submitted(monkeypatch, tmp_path, connection, conf={"spark.ssl.keyStorePassword": "from-the-task"})
    command = seen["command"]
    assert _pairs(command, "--conf") == ["spark.executor.memory=8g"]
    assert not [arg for arg in command if "from-the-" in arg]
    assert [line for line in seen["properties"] if not line.startswith("#")] == [
        f"{secret}=from-the-connection",
        "spark.ssl.keyStorePassword=from-the-task",
    ]


def test_ha_standalone_masters_reach_spark_submit_as_given(monkeypatch, tmp_path: Path) -> None:
    seen = _submitted(monkeypatch, tmp_path, {"conn_type": "spark", "host": "spark://h1:7077,h2:7077"})
    assert _pairs(seen["command"], "--master") == ["spark://h1:7077,h2:7077"]
    assert _pairs(seen["command"], "--conf") == []


def test_yarn_cluster_mode_with_the_resourcemanager_is_followed_through_its_api(
    monkeypatch, tmp_path: Path
) -> None:
    connection = {
        "conn_type": "spark",
        "host": "yarn",
        "extra": {
            "queue": "features",
            "deploy-mode": "cluster",
            "yarn_resourcemanager_webapp_address": "http://resourcemanager:8088",
        },
    }
    seen = _submitted(monkeypatch, tmp_path, connection)
    command = seen["command"]
    assert _pairs(command, "--master") == ["yarn"]
    assert _pairs(command, "--queue") == ["features"]
    assert _pairs(command, "--deploy-mode") == ["cluster"]
    # spark-submit returns once YARN has the application; the operator polls the RM's REST API
    assert _pairs(command, "--conf") == ["spark.yarn.submit.waitAppCompletion=false"]
    assert seen["rm_api"] is True


def test_yarn_cluster_mode_without_the_resourcemanager_waits_on_spark_submit(
    monkeypatch, tmp_path: Path
) -> None:
    connection = {"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "cluster"}}
    seen = _submitted(monkeypatch, tmp_path, connection)
    assert _pairs(seen["command"], "--deploy-mode") == ["cluster"]
    # spark-submit waits for the application (Spark's default); a retry submits it again
    assert _pairs(seen["command"], "--conf") == []
    assert (seen["durable"], seen["rm_api"]) == (False, False)


def test_kubernetes_cluster_mode_gets_namespace_and_upload_path(monkeypatch, tmp_path: Path) -> None:
    connection = {
        "conn_type": "spark",
        "host": "k8s://https://kube-api:6443",
        "extra": {
            "deploy-mode": "cluster",
            "namespace": "spark",
            "conf": {
                "spark.kubernetes.container.image": "your/spark-featurelake:4.2",
                "spark.kubernetes.file.upload.path": "s3a://bucket/spark-uploads",
            },
        },
    }
    command = _submitted(monkeypatch, tmp_path, connection)["command"]
    assert _pairs(command, "--master") == ["k8s://https://kube-api:6443"]
    assert _pairs(command, "--deploy-mode") == ["cluster"]
    assert _pairs(command, "--conf") == [
        "spark.kubernetes.container.image=your/spark-featurelake:4.2",
        "spark.kubernetes.file.upload.path=s3a://bucket/spark-uploads",
        "spark.kubernetes.namespace=spark",
    ]
    assert _pairs(command, "--py-files") == ["<library zip>"]


def test_a_local_master_launches_its_driver_with_the_parallel_collector(monkeypatch, tmp_path: Path) -> None:
    command = _submitted(monkeypatch, tmp_path, {"conn_type": "spark", "host": "local[4]"})["command"]
    assert _pairs(command, "--master") == ["local[4]"]
    assert _pairs(command, "--conf") == ["spark.driver.extraJavaOptions=-XX:+UseParallelGC"]


def test_a_property_the_job_ignores_is_named_in_the_task_log_with_its_connection(
    monkeypatch, tmp_path: Path, caplog
) -> None:
    """In cluster deploy mode the job's own warning is in the driver's log on the cluster: the task's
    log names the connection (or the task) and the property."""
    connection = {
        "conn_type": "spark",
        "host": "yarn",
        "extra": {"conf": {"spark.sql.session.timeZone": "America/New_York"}},
    }
    with caplog.at_level(logging.WARNING, logger="tests.spark_feature_job"):
        _submitted(monkeypatch, tmp_path, connection, conf={"spark.sql.ansi.enabled": "false"})
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(
        "Spark connection 'spark_cmd_test'" in message
        and "spark.sql.session.timeZone=America/New_York" in message
        and "spark.sql.session.timeZone=UTC" in message
        for message in warnings
    ), warnings
    assert any(
        "task 'compute'" in message and "spark.sql.ansi.enabled=false" in message for message in warnings
    ), warnings


def test_properties_the_job_keeps_give_no_warning(monkeypatch, tmp_path: Path, caplog) -> None:
    connection = {
        "conn_type": "spark",
        "host": "local[2]",
        "extra": {"conf": {"spark.sql.session.timeZone": "UTC", "spark.sql.shuffle.partitions": "7"}},
    }
    with caplog.at_level(logging.WARNING, logger="tests.spark_feature_job"):
        _submitted(monkeypatch, tmp_path, connection)
    assert not [r for r in caplog.records if "the job ignores it" in r.getMessage()]


@pytest.mark.parametrize(
    ("master", "submitted", "partitions"),
    [
        # Spark's default on YARN and Kubernetes is one core per executor: 200 executors hold 200 cores
        pytest.param("yarn", {"spark.dynamicAllocation.maxExecutors": "200"}, 600, id="yarn-default-cores"),
        pytest.param(
            "k8s://https://kube-api:6443",
            {"spark.dynamicAllocation.enabled": "false", "spark.executor.instances": "100"},
            300,
            id="k8s-default-cores",
        ),
        pytest.param(
            "yarn",
            {"spark.executor.cores": "4", "spark.dynamicAllocation.maxExecutors": "100"},
            1200,
            id="yarn-cores-set",
        ),
        # a standalone executor without spark.executor.cores takes its whole worker: size left open
        pytest.param("spark://m:7077", {"spark.dynamicAllocation.maxExecutors": "200"}, 200, id="standalone"),
    ],
)
def test_cluster_shuffle_partitions_count_the_default_executor_cores(
    master: str, submitted: dict, partitions: int
) -> None:
    conf = base_spark_conf(master=master, submitted=submitted)
    assert int(conf["spark.sql.shuffle.partitions"]) == partitions


def test_cluster_core_count_without_a_master_keeps_the_size_open() -> None:
    assert cluster_core_count({"spark.dynamicAllocation.maxExecutors": "200"}) is None


@pytest.mark.parametrize(
    ("asked", "options"),
    [
        pytest.param(None, "-Duser.timezone=UTC", id="none"),
        pytest.param("-XX:+UseG1GC", "-XX:+UseG1GC -Duser.timezone=UTC", id="own-options"),
        pytest.param("-Dx=1 -Duser.timezone=UTC", "-Dx=1 -Duser.timezone=UTC", id="already-utc"),
        # the JVM keeps the last setting of a property: UTC
        pytest.param(
            "-Duser.timezone=America/New_York",
            "-Duser.timezone=America/New_York -Duser.timezone=UTC",
            id="other-zone",
        ),
    ],
)
def test_executor_jvms_run_in_utc_whatever_options_a_layer_sets(asked, options, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="featurelake.spark_session"):
        assert executor_java_options(asked) == options
    # only another zone is named in a warning
    assert ("Ignoring -Duser.timezone=America/New_York" in caplog.text) == ("New_York" in (asked or ""))
