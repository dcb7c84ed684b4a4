"""Open lake paths from Airflow tasks: local paths as pathlib, URIs (s3://, gs://, ...) through
Airflow's ObjectStoragePath, which takes credentials from Airflow connections."""

from __future__ import annotations

from typing import Any

from featurelake.lake import local_path


def lake_path(location: str) -> Any:
    """A path object for `location`: pathlib.Path for a local path or a file:/// URI (checked as the
    library's writers check it), ObjectStoragePath for another URI."""
    if "://" in location and not location.startswith("file://"):
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(location)
    return local_path(
        location,
        what="the lake location",
        remedy="set the Variable featurelake_lake to a local path or a URI",
    )
