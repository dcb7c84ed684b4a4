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
