"""lake_path: the tasks read a lake location as the library's writers do."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurelake_airflow.lake_paths import lake_path


@pytest.mark.parametrize(
    "location",
    [pytest.param("/data/lake/raw", id="path"), pytest.param("file:///data/lake/raw", id="file-uri")],
)
def test_a_local_location_is_its_path(location: str) -> None:
    assert lake_path(location) == Path("/data/lake/raw")


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("file:/data/lake/raw", id="hadoop-form"),
        pytest.param("file://host/data/lake/raw", id="with-a-host"),
    ],
)
def test_a_file_uri_of_another_form_is_refused_not_taken_for_a_relative_path(location: str) -> None:
    # As a relative path, file:/data/lake would be looked for under the task's working directory
    with pytest.raises(
        ValueError, match=rf"the lake location {location} is not a file:// URI of an absolute"
    ):
        lake_path(location)


def test_an_object_store_location_is_an_object_storage_path() -> None:
    from airflow.sdk import ObjectStoragePath

    path = lake_path("s3://bucket/lake/raw")
    assert isinstance(path, ObjectStoragePath)
    assert path.key == "lake/raw"


@pytest.mark.parametrize(
    ("location", "provider"),
    [
        # s3fs and the amazon provider are not installed here, as on a worker that lacks them
        pytest.param(
            "s3a://bucket/lake/raw/transactions/date=2026-10-28", "apache-airflow-providers-amazon", id="s3a"
        ),
        pytest.param("gs://bucket/lake/raw", "apache-airflow-providers-google", id="gs"),
        pytest.param("foo://bucket/lake/raw", "the Airflow provider that registers foo://", id="unknown"),
    ],
)
def test_a_scheme_this_worker_cannot_open_fails_at_once_naming_the_provider(
    location: str, provider: str
) -> None:
    # Before, fsspec's "Install s3fs to access S3" failed the first task on every retry, for minutes.
    from airflow.sdk.exceptions import AirflowFailException

    from featurelake_airflow.lake_paths import checked_lake_path

    scheme = location.split("://")[0]
    with pytest.raises(
        AirflowFailException, match=rf"the lake {location} is on {scheme}://, .*Install {provider}"
    ):
        checked_lake_path(location)


def test_a_local_location_is_checked_as_its_path(tmp_path: Path) -> None:
    from featurelake_airflow.lake_paths import checked_lake_path

    assert checked_lake_path(str(tmp_path / "raw")) == tmp_path / "raw"


def test_the_raw_partition_check_fails_at_once_on_a_lake_it_cannot_open() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from featurelake_airflow.operators.raw_partition import RawPartitionCheckOperator

    task = RawPartitionCheckOperator(task_id="check_raw_partition", lake="s3a://bucket/lake", ds="2026-10-28")
    with pytest.raises(
        AirflowFailException, match=r"is on s3a://.*apache-airflow-providers-amazon \(with s3fs\)"
    ):
        task.execute({})
