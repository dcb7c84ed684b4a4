"""`compute_merchant_stats` on a Dask scheduler that speaks only TLS, as the README and the Dask hook
describe it: a real `dask scheduler` (protocol tls, client certificates required) and a real
`dask worker` on loopback, with certificates signed by a CA made for the test, and the operator's
`execute` in a process of its own whose environment holds Dask's TLS settings from its start, as an
Airflow worker's environment does (Dask reads `DASK_*` variables when it is imported; setting them
later in a running process changes nothing). Settings that do not fit the scheduler (a file that
cannot be loaded, a CA or a client certificate either side refuses) are named as such, not as a
scheduler that did not answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from featurelake.merchant_stats import collect_unclosed_clients
from featurelake.synthetic import generate_lake
from tests.integration.test_merchant_stats import assert_matches
from tests.integration.test_online_store_tls import _certificate, _write_pem
from tests.oracle.merchant_stats_duckdb import oracle
from tests.support import PROJECT_ROOT, VENV_BIN, dask_processes, free_port

pytestmark = pytest.mark.integration

DS = date(2026, 8, 20)
WINDOW = 5
TLS_ENV = "DASK_DISTRIBUTED__COMM__TLS__"

# One task attempt: the operator's `execute`, its XCom or its error written to argv[1] as JSON. On
# SIGTERM it calls `on_kill`, as Airflow's task runner does (`_on_term` in
# airflow.sdk.execution_time.task_runner; test_merchant_stats_kill.py stops a task so).
TASK = """
import json, signal, sys
from featurelake_airflow.operators.dask_merchant_stats import DaskMerchantStatsOperator

outcome_path, lake, ds, window_days = sys.argv[1:]
operator = DaskMerchantStatsOperator(
    task_id="compute_merchant_stats", lake=lake, ds=ds, window_days=int(window_days)
)
signal.signal(signal.SIGTERM, lambda signum, frame: operator.on_kill())
try:
    outcome = {"result": operator.execute(context={})}
except Exception as error:
    outcome = {"error": type(error).__name__, "message": str(error)}
with open(outcome_path, "w") as file:
    json.dump(outcome, file)
"""


def make_certificates(folder: Path) -> dict[str, str]:
    """A CA, and a certificate and key signed by it for each of the scheduler, the worker and the
    client (for localhost and 127.0.0.1): paths by `ca`, `<role>_cert` and `<role>_key`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("featurelake test Dask CA", ca_key, ca=True)
    files = {"ca": _write_pem(folder / "ca.pem", ca)}
    for role in ("scheduler", "worker", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(f"dask {role}", key, issuer=ca.subject, issuer_key=ca_key)
        files[f"{role}_cert"] = _write_pem(folder / f"{role}.pem", certificate)
        files[f"{role}_key"] = _write_pem(folder / f"{role}.key", key)
    return files


def clean_env(folder: Path) -> dict[str, str]:
    """This process's environment without any Dask TLS setting, and with no Dask YAML configuration
    (DASK_CONFIG is an empty directory): a setting the developer's machine has cannot help."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(TLS_ENV)}
    env.pop("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", None)
    config = folder / "dask-config"
    config.mkdir(exist_ok=True)
    return {**env, "DASK_CONFIG": str(config)}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, str]:
    return make_certificates(tmp_path_factory.mktemp("dask-tls-certificates"))


@pytest.fixture(scope="module")
def tls_scheduler(tmp_path_factory, certificates: dict[str, str]) -> Iterator[str]:
    """`dask scheduler` listening only on tls://127.0.0.1:<port> (it requires encryption and a
    client certificate signed by the CA) and one `dask worker` (2 threads) connected over TLS;
    yields the scheduler's address."""
    from distributed import Client
    from distributed.security import Security

    logs = tmp_path_factory.mktemp("dask-tls")
    # This process's own client takes an explicit Security: its dask.config stays as it was.
    security = Security(
        tls_ca_file=certificates["ca"],
        tls_client_cert=certificates["client_cert"],
        tls_client_key=certificates["client_key"],
        require_encryption=True,
    )

    def tls_options(role: str) -> list[str]:
        files = ("--tls-ca-file", "ca"), ("--tls-cert", f"{role}_cert"), ("--tls-key", f"{role}_key")
        return [part for flag, name in files for part in (flag, certificates[name])]

    with dask_processes(
        [str(VENV_BIN / "dask"), "worker"],
        logs,
        env=clean_env(logs),
        scheduler_env={**clean_env(logs), "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"},
        protocol="tls",
        scheduler_options=tls_options("scheduler"),
        worker_options=tls_options("worker"),
        security=security,
    ) as address:
        collect_unclosed_clients()
        with Client(address, security=security, timeout="30s", set_as_default=False) as client:
            assert client.scheduler.address == address
            workers = client.scheduler_info()["workers"]
            assert workers and all(worker.startswith("tls://127.0.0.1:") for worker in workers), workers
        yield address


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dask-tls-lake") / "lake"
    generate_lake(lake=root, start=DS - timedelta(days=WINDOW + 1), end=DS, users=200, seed=17)
    return root


def run_task(tmp_path: Path, lake: Path, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """The operator's `execute` in a new process started with `env`, as an Airflow worker starts a
    task: its XCom (`result`) or its error (`error`, `message`), and what the process wrote to
    stderr."""
    outcome = tmp_path / "outcome.json"
    process = subprocess.run(
        [sys.executable, "-c", TASK, str(outcome), str(lake), DS.isoformat(), str(WINDOW)],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert outcome.exists(), f"the task process died ({process.returncode}): {process.stderr[-3000:]}"
    return json.loads(outcome.read_text()), process.stderr


def dask_connection(address: str) -> dict[str, str]:
    """AIRFLOW_CONN_DASK_DEFAULT of the scheduler at `address`, host and port apart as the UI saves them."""
    host, port = address.rsplit(":", 1)
    connection = {"conn_type": "generic", "host": host, "port": int(port)}
    return {"AIRFLOW_CONN_DASK_DEFAULT": json.dumps(connection)}


def client_tls_env(certificates: dict[str, str]) -> dict[str, str]:
    """The client's TLS settings as the README names them."""
    return {
        f"{TLS_ENV}CA_FILE": certificates["ca"],
        f"{TLS_ENV}CLIENT__CERT": certificates["client_cert"],
        f"{TLS_ENV}CLIENT__KEY": certificates["client_key"],
    }


def test_the_task_computes_the_oracle_stats_on_a_tls_scheduler(
    tls_scheduler: str, certificates: dict[str, str], lake: Path, tmp_path: Path
) -> None:
    env = {**clean_env(tmp_path), **dask_connection(tls_scheduler), **client_tls_env(certificates)}
    outcome, _ = run_task(tmp_path, lake, env)
    assert "result" in outcome, outcome
    report = outcome["result"]
    output = lake / "features" / "merchant_stats" / f"date={DS}"
    assert report["output_path"] == str(output)
    want = oracle(lake, DS, WINDOW)
    assert report["merchants"] == len(want)
    assert report["rows_read"] > report["rows_counted"] > 0
    assert_matches(output, want, DS)


def test_the_task_without_tls_settings_fails_naming_them(
    tls_scheduler: str, lake: Path, tmp_path: Path
) -> None:
    """The same connection and scheduler from a task process whose environment has no Dask TLS
    settings: they are what made the run above work. (test_merchant_stats_memory.py checks the
    hook's message in-process, with nothing listening.) No Client was made: one that failed in
    `__init__` closed itself at exit, waiting out twice the connect timeout (60 s) before the
    process ended."""
    env = {**clean_env(tmp_path), **dask_connection(tls_scheduler)}
    outcome, stderr = run_task(tmp_path, lake, env)
    assert "Client.__del__" not in stderr, stderr[-3000:]
    assert outcome.get("error") == "ValueError", outcome
    message = outcome["message"]
    assert message.startswith(
        f"connection 'dask_default': the scheduler {tls_scheduler} uses TLS, and this process has no "
        "TLS settings for Dask"
    ), message
    for name in ("CA_FILE", "__CLIENT__CERT", "__CLIENT__KEY"):
        assert name in message, message


def hook_for(monkeypatch: pytest.MonkeyPatch, address: str, *, timeout: str = "5s"):
    from featurelake_airflow.hooks.dask_cluster import DaskClusterHook

    host, port = address.rsplit(":", 1)
    connection = {"conn_type": "generic", "host": host, "port": int(port), "extra": {"timeout": timeout}}
    monkeypatch.setenv("AIRFLOW_CONN_DASK_TLS", json.dumps(connection))
    return DaskClusterHook(dask_conn_id="dask_tls")


def tls_config(ca: str, cert: str, key: str | None) -> dict[str, str | None]:
    return {
        "distributed.comm.tls.ca-file": ca,
        "distributed.comm.tls.client.cert": cert,
        "distributed.comm.tls.client.key": key,
    }


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(lambda ours, _: tls_config(ours["ca"], ours["client_cert"], None), id="no-key"),
        pytest.param(
            lambda ours, _: tls_config(ours["ca"] + ".missing", ours["client_cert"], ours["client_key"]),
            id="missing-ca-file",
        ),
        pytest.param(
            lambda ours, other: tls_config(other["ca"], ours["client_cert"], ours["client_key"]),
            id="a-ca-that-did-not-sign-the-scheduler",
        ),
        pytest.param(
            lambda ours, other: tls_config(ours["ca"], other["client_cert"], other["client_key"]),
            id="a-client-certificate-the-scheduler-refuses",
        ),
    ],
)
def test_tls_settings_that_do_not_fit_the_scheduler_are_named(
    monkeypatch: pytest.MonkeyPatch,
    tls_scheduler: str,
    certificates: dict[str, str],
    tmp_path: Path,
    settings,
) -> None:
    """The hook, in this process, with Dask's TLS settings set in dask.config (what the environment
    variables become) but wrong. The scheduler answered, and refused the handshake or was never
    reached because a file could not be loaded; the task said "no Dask scheduler answered ...
    Start the scheduler, or fix the connection's host and port"."""
    import dask

    other = make_certificates(tmp_path)
    hook = hook_for(monkeypatch, tls_scheduler)
    with dask.config.set(settings(certificates, other)), pytest.raises(ValueError) as raised:
        hook.get_conn().close()
    message = str(raised.value)
    assert message.startswith(
        f"connection 'dask_tls': the TLS connection to the scheduler {tls_scheduler} failed"
    ), message
    assert "Start the scheduler" not in message
    for name in ("distributed.comm.tls.ca-file", "CA_FILE", "__CLIENT__CERT", "__CLIENT__KEY"):
        assert name in message, message


def test_a_tls_scheduler_that_is_not_there_is_still_reported_as_unreachable(
    monkeypatch: pytest.MonkeyPatch, certificates: dict[str, str]
) -> None:
    """With settings that work, nothing listening on the port is no TLS problem."""
    import dask

    address = f"tls://127.0.0.1:{free_port()}"
    hook = hook_for(monkeypatch, address, timeout="1s")
    config = tls_config(certificates["ca"], certificates["client_cert"], certificates["client_key"])
    with dask.config.set(config), pytest.raises(OSError) as raised:
        hook.get_conn().close()
    assert str(raised.value).startswith(
        f"connection 'dask_tls': no Dask scheduler answered at {address} within 1s"
    )
