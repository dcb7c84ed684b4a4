from __future__ import annotations

import pytest

from featurelake.spark_session import (
    REQUIRED_SPARK_CONF,
    base_spark_conf,
    is_local_master,
    launch_spark_conf,
    local_core_count,
    merge_spark_conf,
    required_spark_conf_conflicts,
)


@pytest.mark.parametrize(
    ("master", "local"),
    [
        pytest.param("local", True, id="local"),
        pytest.param("local[*]", True, id="all-cores"),
        pytest.param("local[2,3]", True, id="with-failures"),
        pytest.param("spark://127.0.0.1:7077", False, id="standalone"),
        pytest.param("yarn", False, id="yarn"),
        pytest.param("k8s://https://kube:6443", False, id="kubernetes"),
        pytest.param("localhost", False, id="not-a-local-master"),
    ],
)
def test_is_local_master(master: str, local: bool) -> None:
    assert is_local_master(master) is local


def test_local_core_count(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert local_core_count("local") == 1
    assert local_core_count("local[*]") == 8
    assert local_core_count("local[3]") == 3
    assert local_core_count("local[2,4]") == 2


def test_local_base_is_tuned_and_has_no_dynamic_allocation() -> None:
    conf = base_spark_conf(master="local[2]")
    assert conf["spark.sql.adaptive.enabled"] == "true"
    assert conf["spark.sql.adaptive.skewJoin.enabled"] == "true"
    assert conf["spark.sql.adaptive.coalescePartitions.enabled"] == "true"
    assert conf["spark.serializer"] == "org.apache.spark.serializer.KryoSerializer"
    assert conf["spark.sql.parquet.compression.codec"] == "snappy"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.sql.ansi.enabled"] == "true"
    assert conf["spark.sql.sources.partitionOverwriteMode"] == "dynamic"
    assert conf["spark.sql.shuffle.partitions"] == "32"
    assert conf["spark.sql.adaptive.advisoryPartitionSizeInBytes"] == "16m"
    assert int(conf["spark.sql.sources.parallelPartitionDiscovery.threshold"]) >= 1000
    assert "spark.dynamicAllocation.enabled" not in conf


def test_cluster_base_enables_dynamic_allocation() -> None:
    conf = base_spark_conf(master="yarn")
    assert conf["spark.dynamicAllocation.enabled"] == "true"
    assert conf["spark.dynamicAllocation.shuffleTracking.enabled"] == "true"
    assert int(conf["spark.sql.shuffle.partitions"]) >= 100
    # executors list many partitions in parallel: Spark's own threshold stays
    assert "spark.sql.sources.parallelPartitionDiscovery.threshold" not in conf


@pytest.mark.parametrize(
    ("submitted", "dynamic"),
    [
        ({}, True),
        ({"spark.executor.cores": "2"}, True),
        # a fixed count: under dynamic allocation it was only the first, with no ceiling
        ({"spark.executor.instances": "4"}, False),
        ({"spark.executor.instances": "4", "spark.dynamicAllocation.maxExecutors": "8"}, True),
        ({"spark.executor.instances": "4", "spark.dynamicAllocation.enabled": "true"}, True),
        ({"spark.dynamicAllocation.enabled": "false"}, False),
    ],
)
def test_a_fixed_executor_count_turns_no_dynamic_allocation_on(submitted: dict, dynamic: bool) -> None:
    base = base_spark_conf(master="yarn", submitted=submitted)
    merged = {**base, **submitted}
    assert merged.get("spark.dynamicAllocation.enabled", "false") == str(dynamic).lower()
    assert ("spark.dynamicAllocation.shuffleTracking.enabled" in base) == dynamic


def test_cluster_shuffle_partitions_follow_the_cores_the_job_can_hold() -> None:
    def partitions(**submitted: str) -> int:
        conf = {key.replace("_", "."): value for key, value in submitted.items()}
        return int(base_spark_conf(master="spark://m:7077", submitted=conf)["spark.sql.shuffle.partitions"])

    # standalone's total cap
    assert partitions(spark_cores_max="400") == 1200
    # dynamic allocation (the base enables it): its ceiling of executors
    assert partitions(spark_executor_cores="8", spark_dynamicAllocation_maxExecutors="50") == 1200
    # static executors
    assert (
        partitions(
            spark_executor_cores="4", spark_executor_instances="100", spark_dynamicAllocation_enabled="false"
        )
        == 1200
    )
    # a small cluster, or a size the properties leave open: Spark's default, which AQE coalesces
    assert partitions(spark_cores_max="16") == 200
    assert partitions(spark_executor_cores="8") == 200
    # a fixed executor count: static executors, 800 cores
    assert partitions(spark_executor_cores="8", spark_executor_instances="100") == 2400
    assert partitions() == 200


def test_merge_later_layers_win_and_values_become_strings() -> None:
    base = {"a": "1", "b": "1"}
    connection = {"b": 2, "c": True}
    job = {"c": "job"}
    assert merge_spark_conf(base, connection, None, job) == {"a": "1", "b": "2", "c": "job"}


def test_launch_conf_gives_a_local_driver_the_parallel_collector_only() -> None:
    assert launch_spark_conf(master="local[2]") == {"spark.driver.extraJavaOptions": "-XX:+UseParallelGC"}
    assert launch_spark_conf(master="yarn") == {}
    assert launch_spark_conf(master="spark://127.0.0.1:7077") == {}


def test_required_conf_pins_utc_ansi_micros_failing_inputs_and_case() -> None:
    assert REQUIRED_SPARK_CONF == {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.ansi.enabled": "true",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.files.ignoreCorruptFiles": "false",
        "spark.sql.files.ignoreMissingFiles": "false",
        "spark.sql.caseSensitive": "false",
    }


def test_conflicts_with_the_required_conf_are_named() -> None:
    asked = {
        "spark.sql.session.timeZone": "America/New_York",
        "spark.sql.ansi.enabled": "True",  # the same value, another spelling
        "spark.executor.memory": "4g",
    }
    assert required_spark_conf_conflicts(asked) == {"spark.sql.session.timeZone": "America/New_York"}
    assert required_spark_conf_conflicts({}) == {}


def test_local_all_cores_follow_the_cores_the_driver_jvm_has(monkeypatch) -> None:
    # os.cpu_count() counts the host's cores, not the affinity or the container limit Spark runs in.
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert local_core_count("local[*]", available=2) == 2
    assert local_core_count("local[*,3]", available=2) == 2
    assert local_core_count("local[4]", available=2) == 4
    conf = base_spark_conf(master="local[*]", available_cores=2)
    assert conf["spark.sql.shuffle.partitions"] == "32"
    assert conf["spark.default.parallelism"] == "2"


@pytest.mark.parametrize(
    ("master", "cores"),
    [
        pytest.param("local[* ,3]", 2, id="all-cores-blank-before-comma"),
        pytest.param("local[*, 3]", 2, id="all-cores-blank-after-comma"),
        pytest.param("local[4 , 3]", 4, id="n-cores-blanks"),
    ],
)
def test_local_masters_with_blanks_around_the_comma_are_sized(master: str, cores: int) -> None:
    # Spark accepts blanks around the comma of local[N,F] (spark-submit --master 'local[* ,2]' runs)
    assert is_local_master(master)
    assert local_core_count(master, available=2) == cores
    assert base_spark_conf(master=master, available_cores=2)["spark.sql.shuffle.partitions"] == str(
        16 * cores
    )
