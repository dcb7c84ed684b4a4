"""The Dask merchant statistics job on real `dask scheduler` and `dask worker` processes on loopback
whose worker cannot run it: one that cannot import featurelake, and one that does not see the lake
(the lake's directory is an empty mount in the worker's own mount namespace, as on a host where the
lake's volume was not mounted). The job fails at once, naming the worker and the remedy."""

from __future__ import annotations

import os
import subprocess
import sysconfig
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest

from featurelake.merchant_stats import compute_merchant_stats, dask_client
from featurelake.synthetic import generate_lake
from tests.support import VENV_BIN, dask_processes

pytestmark = pytest.mark.integration

DS = date(2026, 8, 20)
WINDOW = 3


def job_outcome(address: str, lake: Path, tmp_path: Path, *, seconds: float = 60) -> dict[str, object]:
    """The job's `report` or `error` on the cluster at `address`, which must come within `seconds`
    (a job that waits for a worker that died would otherwise hang the test: the thread is a daemon)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            with dask_client(address) as client:
                outcome["report"] = compute_merchant_stats(
                    client,
                    raw_transactions=str(lake / "raw" / "transactions"),
                    output=str(tmp_path / "merchant_stats" / f"date={DS}"),
                    staging=str(lake / "_staging" / "merchant_stats" / f"date={DS}"),
                    ds=DS,
                    window_days=WINDOW,
                )
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the job neither failed nor finished within {seconds:g} s"
    return outcome


def job_error(address: str, lake: Path, tmp_path: Path) -> BaseException:
    """The exception the job raises on the cluster at `address`."""
    outcome = job_outcome(address, lake, tmp_path)
    assert "error" in outcome, f"the job succeeded: {outcome.get('report')}"
    return outcome["error"]  # type: ignore[return-value]


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    generate_lake(lake=root, start=DS - timedelta(days=WINDOW - 1), end=DS, users=100, seed=5)
    return root


def test_a_worker_that_cannot_import_featurelake_fails_the_job_at_once(lake: Path, tmp_path: Path) -> None:
    """`python -S` skips the venv's .pth files, among them featurelake's editable install: the
    worker imports Dask from site-packages, not featurelake. Unpickling a task of the job killed it,
    and the job waited for workers until its Airflow timeout."""
    logs = tmp_path / "logs"
    logs.mkdir()
    command = [str(VENV_BIN / "python"), "-S", "-m", "distributed.cli.dask_worker"]
    with dask_processes(command, logs, env={"PYTHONPATH": sysconfig.get_paths()["purelib"]}) as address:
        error = job_error(address, lake, tmp_path)
    assert isinstance(error, RuntimeError), repr(error)
    message = str(error)
    assert "No module named 'featurelake'" in message
    assert address in message and "tcp://127.0.0.1:" in message.split(address, 1)[1]  # and the worker
    assert "PYTHONPATH" in message
    assert not (tmp_path / "merchant_stats").exists()
    assert not (lake / "_staging" / "merchant_stats" / f"date={DS}").exists()


def unshare_mount() -> list[str]:
    """The command prefix that runs a worker in a mount namespace of its own where it may mount a
    tmpfs: as root, `unshare --mount`; otherwise in a user namespace too, as its root. Fails the
    test, saying what to do, where neither is allowed."""
    prefix = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--mount"]
    try:
        result = subprocess.run(
            [*prefix, "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.fail("these tests need `unshare` (util-linux): install it")
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(prefix)}` cannot mount a tmpfs here ({result.stderr.strip()}): run the tests "
            "as root, or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
            "or kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 23.10 and later)"
        )
    return prefix


def test_a_worker_that_does_not_see_the_lake_fails_the_job_naming_it(lake: Path, tmp_path: Path) -> None:
    """The worker runs in a mount namespace of its own where an empty tmpfs hides the lake. It failed
    the job with a FileNotFoundError of a raw file that the Airflow task sees, and no remedy."""
    logs = tmp_path / "logs"
    logs.mkdir()
    command = [
        *unshare_mount(),
        "sh",
        "-c",
        f'mount -t tmpfs tmpfs "{lake}" && exec "$0" "$@"',
        str(VENV_BIN / "dask"),
        "worker",
    ]
    with dask_processes(command, logs, env={}) as address:
        error = job_error(address, lake, tmp_path)
    assert isinstance(error, RuntimeError), repr(error)
    message = str(error)
    assert f"no directory {lake / 'raw' / 'transactions'}" in message
    assert "reach the lake at the same path" in message
    assert not (lake / "_staging" / "merchant_stats" / f"date={DS}").exists()


def test_workers_that_do_not_share_the_staging_directory_fail_the_job(lake: Path, tmp_path: Path) -> None:
    """Two workers see the raw lake, but each has a private `_staging/` (an empty tmpfs in its own
    mount namespace), as when the lake's scratch space is a disk of each host. Each bucket task read
    only the rows its own worker had staged, and the job wrote wrong statistics without an error."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (lake / "_staging").mkdir()
    command = [
        *unshare_mount(),
        "sh",
        "-c",
        f'mount -t tmpfs tmpfs "{lake / "_staging"}" && exec "$0" "$@"',
        str(VENV_BIN / "dask"),
        "worker",
    ]
    with dask_processes(command, logs, env={}, workers=2) as address:
        outcome = job_outcome(address, lake, tmp_path)
    assert "error" in outcome, f"the job succeeded: {outcome.get('report')}"
    error = outcome["error"]
    assert isinstance(error, RuntimeError), repr(error)
    assert str(error).count("_worker_check, which this run wrote") == 2, str(error)
    assert not (tmp_path / "merchant_stats").exists()
