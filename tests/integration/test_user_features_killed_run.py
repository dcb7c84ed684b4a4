"""The user feature job killed (SIGKILL of spark-submit and its driver) while it replaces a published
partition, then rerun: readers never see a partly replaced partition, and the rerun gives the output
of a run that was never killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.test_user_features_run import DAYS, WINDOW_DAYS, _features, _lake, _run
from tests.support import PROJECT_ROOT, VENV_BIN

pytestmark = pytest.mark.integration

JOB = PROJECT_ROOT / "spark_jobs" / "user_features.py"
# Enough files that removing the published partition takes a while: a big earlier output.
PUBLISHED_FILES = 3000


def _submit(lake: Path, ds) -> subprocess.Popen:
    command = [str(VENV_BIN / "spark-submit"), "--master", "local[2]", "--conf", "spark.log.level=WARN"]
    command += [str(JOB), "--ds", ds.isoformat(), "--lake", str(lake), "--window-days", str(WINDOW_DAYS)]
    # Its own process group, so one signal kills spark-submit, the driver's JVM and Python together.
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _parquet_files(directory: Path) -> set[str]:
    try:
        return {name for name in os.listdir(directory) if name.endswith(".parquet")}
    except FileNotFoundError:
        return set()


def test_a_run_killed_while_it_replaces_the_features_leaves_no_partial_partition(
    spark, tmp_path: Path
) -> None:
    ds = DAYS[4]
    lake = _lake(tmp_path / "killed", DAYS[:5])
    clean = Path(shutil.copytree(lake, tmp_path / "clean" / "lake"))
    clean_report = _run(spark, clean, ds)
    # An earlier output of ds in many files (one user each), which the job replaces.
    published = lake / "features" / "user_features" / f"date={ds.isoformat()}"
    published.mkdir(parents=True)
    for n in range(PUBLISHED_FILES):
        pq.write_table(pa.table({"user_id": [f"p{n:05d}"]}), published / f"part-{n:05d}.parquet")
    old = _parquet_files(published)

    job = _submit(lake, ds)
    try:
        deadline = time.monotonic() + 600
        while _parquet_files(published) == old:
            assert job.poll() is None, "the job ended before it replaced the features"
            assert time.monotonic() < deadline, "the job did not replace the features in time"
            time.sleep(0.002)
        os.killpg(job.pid, signal.SIGKILL)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()

    # A reader finds the earlier output whole, the new one whole, or (between two renames) none.
    kept = len(_parquet_files(published) & old)
    assert kept in (0, len(old)), f"a reader sees {kept} of the {len(old)} files of the earlier output"
    report = _run(spark, lake, ds)
    pd.testing.assert_frame_equal(_features(lake, ds), _features(clean, ds))
    # The retry builds what the killed run would have (its tiles were swapped in already): it
    # reports the same tiles and quarantined rows as a run never killed.
    assert {**asdict(report), "output_path": None} == {**asdict(clean_report), "output_path": None}
    assert not (lake / "_staging" / "user_features" / f"date={ds.isoformat()}").exists()
