"""Open lake paths from Airflow tasks: local paths as pathlib, URIs (s3://, gs://, ...) through
Airflow's ObjectStoragePath, which takes credentials from Airflow connections."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def lake_path(location: str) -> Any:
    """A path object for `location`: pathlib.Path for a local path, ObjectStoragePath for a URI."""
    if "://" in location and not location.startswith("file://"):
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(location)
    return Path(location.removeprefix("file://"))
