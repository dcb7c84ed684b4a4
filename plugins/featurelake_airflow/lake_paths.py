"""Open lake paths from Airflow tasks: local paths as pathlib, URIs (s3://, gs://, ...) through
Airflow's ObjectStoragePath, which takes credentials from Airflow connections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from featurelake.lake import local_path

# The provider that registers each common scheme's filesystem with Airflow, and what it installs.
_PROVIDERS = {
    **dict.fromkeys(("s3", "s3a", "s3n"), "apache-airflow-providers-amazon (with s3fs)"),
    **dict.fromkeys(("gs", "gcs"), "apache-airflow-providers-google (with gcsfs)"),
    **dict.fromkeys(
        ("abfs", "abfss", "az", "adl", "wasb"), "apache-airflow-providers-microsoft-azure (with adlfs)"
    ),
}


def lake_path(location: str) -> Any:
    """A path object for `location`: pathlib.Path for a local path or a file:/// URI (checked as the
    library's writers check it), ObjectStoragePath for another URI."""
    if "://" in location and not location.startswith("file://"):
        from airflow.sdk import ObjectStoragePath

        try:
            return ObjectStoragePath(location)
        except ValueError as error:  # a scheme no filesystem package knows: "Unsupported filesystem"
            raise _no_filesystem(location, error) from None
    return local_path(
        location,
        what="the lake location",
        remedy="set the Variable featurelake_lake to a local path or a URI",
    )


def checked_lake_path(location: str) -> Any:
    """`lake_path(location)`, whose filesystem this worker has: a URI whose scheme it lacks fails
    the task at once (AirflowFailException), naming the scheme and the provider to install. Without
    this, fsspec's error ("Install s3fs to access S3") named a package only, and every retry of the
    task failed the same way, for minutes."""
    path = lake_path(location)
    if isinstance(path, Path):
        return path
    try:
        path.exists()
    except (ImportError, ValueError) as error:  # ImportError: fsspec's; ValueError: Airflow's registry
        raise _no_filesystem(location, error) from None
    return path


def _no_filesystem(location: str, error: Exception) -> AirflowFailException:
    scheme = location.split("://", 1)[0]
    provider = _PROVIDERS.get(scheme.lower(), f"the Airflow provider that registers {scheme}://")
    return AirflowFailException(
        f"the lake {location} is on {scheme}://, which this Airflow worker cannot open ({error}). "
        f"Install {provider} on every Airflow worker, with an Airflow connection for its credentials, "
        "or set the Variable featurelake_lake to a local path; then clear this task"
    )
