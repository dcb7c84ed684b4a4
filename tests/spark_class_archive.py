"""A JVM class-data-sharing archive of Spark's classes for the test session, so every Spark driver
the tests start (spark-submit, the Airflow tasks' spark-submit, in-process PySpark sessions) maps its
classes from one file instead of loading and verifying them from the jars again.

Measured on this project's 2-core machines (2026-12-08): a spark-submit of the feature job on a tiny
lake took 16.2-16.3 s with 25-26 CPU s without the archive and 13.3 s with 21.7-21.9 CPU s with it,
an incremental run 13.5-14.2 s against 10.8-11.4 s; a trivial job 7.1-7.7 s against 4.7-5.3 s.

The archive is a dynamic one (JDK 13+, `-XX:ArchiveClassesAtExit`), dumped once per Java and Spark
version by a real feature-job run on a tiny lake, under the virtual environment, and passed to the
drivers in SPARK_SUBMIT_OPTS, which spark-submit gives the driver's JVM (not its launcher's, and
not a standalone cluster's master, workers or executors). The JVM checks the archive against itself
and the class path: with another JDK, or another SPARK_CONF_DIR on the class path (two tests set
one), it silently loads the classes from the jars as before. So the archive changes how fast a
driver starts, never what it does; tests/integration/test_spark_class_archive.py checks that it is
used."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from datetime import date
from pathlib import Path

from tests.support import VENV_BIN

__all__ = ["ARCHIVE_OPTION", "spark_class_archive", "use_spark_class_archive"]

ARCHIVE_OPTION = "-XX:SharedArchiveFile="
ARCHIVE_DIRECTORY = VENV_BIN.parent / "spark-class-archive"
DUMP_DATE = date(2026, 8, 10)
DUMP_TIMEOUT = 600.0  # seconds; the dump run took 30 s on a fast machine


def _archive_key() -> str:
    """What the archive depends on: the JDK build and the Spark jars (their names carry versions)."""
    import pyspark

    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=True)
    jars = sorted(path.name for path in (Path(pyspark.__file__).parent / "jars").glob("*.jar"))
    return hashlib.sha256("\n".join([java.stderr, *jars]).encode()).hexdigest()[:16]


def _dump(archive: Path, project_root: Path) -> None:
    """Run the feature job once on a tiny lake with the archive dumped at its JVM's exit."""
    from featurelake.synthetic import generate_lake

    with tempfile.TemporaryDirectory(prefix="featurelake-spark-class-archive-") as scratch:
        lake = Path(scratch) / "lake"
        generate_lake(lake=lake, start=date(2026, 7, 1), end=DUMP_DATE, users=200, seed=1)
        partial = archive.with_name(f".{archive.name}.{os.getpid()}.partial")
        env = {**os.environ, "SPARK_SUBMIT_OPTS": f"-XX:ArchiveClassesAtExit={partial}"}
        env.pop("SPARK_CONF_DIR", None)
        run = subprocess.run(
            [
                str(VENV_BIN / "spark-submit"),
                "--master",
                "local[2]",
                "--conf",
                "spark.log.level=WARN",
                str(project_root / "spark_jobs" / "user_features.py"),
                "--ds",
                DUMP_DATE.isoformat(),
                "--lake",
                str(lake),
                "--mode",
                "full",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=DUMP_TIMEOUT,
        )
        if run.returncode != 0 or not partial.is_file():
            partial.unlink(missing_ok=True)
            tail = "\n".join((run.stdout + run.stderr).splitlines()[-15:])
            raise RuntimeError(f"the dump run exited with {run.returncode}:\n{tail}")
        os.replace(partial, archive)


def spark_class_archive(project_root: Path) -> Path:
    """The archive for this JDK and Spark, dumped first if it is not there yet. Several pytest-xdist
    workers may ask at once: one dumps while the others wait on a lock."""
    ARCHIVE_DIRECTORY.mkdir(exist_ok=True)
    archive = ARCHIVE_DIRECTORY / f"spark-{_archive_key()}.jsa"
    with open(ARCHIVE_DIRECTORY / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not archive.is_file():
                for stale in ARCHIVE_DIRECTORY.glob("spark-*.jsa"):
                    stale.unlink()  # another JDK's or Spark's: 150-200 MB each
                _dump(archive, project_root)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return archive


def use_spark_class_archive(project_root: Path) -> str | None:
    """Add the archive to SPARK_SUBMIT_OPTS in this process's environment, which the Spark drivers the
    tests start inherit. Returns why it could not, for the session's summary, or None."""
    if ARCHIVE_OPTION in os.environ.get("SPARK_SUBMIT_OPTS", ""):
        return None
    if shutil.which("java") is None:
        return "no `java` on PATH"
    try:
        archive = spark_class_archive(project_root)
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        return f"no Spark class archive, so every Spark driver loads its classes from the jars: {error}"
    os.environ["SPARK_SUBMIT_OPTS"] = " ".join(
        filter(None, [os.environ.get("SPARK_SUBMIT_OPTS", ""), f"{ARCHIVE_OPTION}{archive}"])
    )
    return None
