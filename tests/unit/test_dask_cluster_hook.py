"""The Dask connection: a scheduler's address, or a local cluster's options from the extras."""

from __future__ import annotations

import json

import pytest


def hook_for(monkeypatch, connection: dict):
    from featurelake_airflow.hooks.dask_cluster import DaskClusterHook

    monkeypatch.setenv("AIRFLOW_CONN_DASK_TEST", json.dumps({"conn_type": "generic", **connection}))
    return DaskClusterHook(dask_conn_id="dask_test")


def test_a_scheduler_is_an_address(monkeypatch) -> None:
    assert hook_for(monkeypatch, {"host": "dask-scheduler", "port": 8786}).scheduler_address() == (
        "tcp://dask-scheduler:8786"
    )
    assert hook_for(monkeypatch, {"host": "tls://dask:8786"}).scheduler_address() == "tls://dask:8786"


@pytest.mark.parametrize(
    ("connection", "address"),
    [
        pytest.param({"host": "dask-scheduler"}, "tcp://dask-scheduler:8786", id="name"),
        pytest.param({"host": "tls://dask-scheduler"}, "tls://dask-scheduler:8786", id="tls"),
        pytest.param({"host": "127.0.0.1", "extra": {"timeout": "3s"}}, "tcp://127.0.0.1:8786", id="address"),
        pytest.param({"host": "inproc://10.0.0.1/123/1"}, "inproc://10.0.0.1/123/1", id="inproc-has-none"),
    ],
)
def test_a_scheduler_without_a_port_is_on_dasks_default_port(monkeypatch, connection, address) -> None:
    """Without a port, Dask refused the address ("missing port number in address"), naming no
    connection; the README's `"host": "tls://dask-scheduler"` gave no port."""
    assert hook_for(monkeypatch, connection).scheduler_address() == address


@pytest.mark.parametrize(
    ("uri", "address"),
    [
        ("tls://dask-scheduler:8786", "tls://dask-scheduler:8786"),
        ("tcp://dask-scheduler:8786?timeout=5s", "tcp://dask-scheduler:8786"),
        ("generic://dask-scheduler:8786", "tcp://dask-scheduler:8786"),
    ],
)
def test_a_uri_connection_keeps_the_schedulers_protocol(monkeypatch, uri: str, address: str) -> None:
    """Airflow stores a URI's scheme as the conn_type, and only the bare name as the host: a tls://
    scheduler was reached over tcp://, and the client said no scheduler answered."""
    from featurelake_airflow.hooks.dask_cluster import DaskClusterHook

    monkeypatch.setenv("AIRFLOW_CONN_DASK_URI", uri)
    assert DaskClusterHook(dask_conn_id="dask_uri").scheduler_address() == address


def test_a_local_cluster_is_one_worker_of_two_threads_in_the_task_by_default(monkeypatch) -> None:
    hook = hook_for(monkeypatch, {"host": "local"})
    assert hook.scheduler_address() is None
    assert hook.local_cluster_options() == {"n_workers": 1, "threads_per_worker": 2, "processes": False}


def test_the_extras_set_worker_processes_and_their_memory(monkeypatch) -> None:
    extra = {"processes": True, "workers": 3, "threads": 1, "memory_limit": "2GiB"}
    assert hook_for(monkeypatch, {"host": "local", "extra": extra}).local_cluster_options() == {
        "n_workers": 3,
        "threads_per_worker": 1,
        "processes": True,
        "memory_limit": "2GiB",
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"nworkers": 2},
            "unknown extra nworkers; a local Dask cluster takes memory_limit, processes, threads, workers",
        ),
        ({"processes": "yes"}, "extra processes must be true or false, got 'yes'"),
    ],
)
def test_a_wrong_extra_is_named(monkeypatch, extra: dict, message: str) -> None:
    hook = hook_for(monkeypatch, {"host": "local", "extra": extra})
    with pytest.raises(ValueError, match=f"connection 'dask_test': {message}"):
        hook.local_cluster_options()


def test_a_uri_connection_sets_the_extras_as_strings(monkeypatch) -> None:
    """`airflow connections add --conn-uri` and AIRFLOW_CONN_* URIs carry every extra as a string."""
    from featurelake_airflow.hooks.dask_cluster import DaskClusterHook

    monkeypatch.setenv("AIRFLOW_CONN_DASK_URI", "generic://local?processes=true&workers=3&threads=1")
    assert DaskClusterHook(dask_conn_id="dask_uri").local_cluster_options() == {
        "n_workers": 3,
        "threads_per_worker": 1,
        "processes": True,
    }
    monkeypatch.setenv("AIRFLOW_CONN_DASK_URI", "generic://local?processes=False")
    assert DaskClusterHook(dask_conn_id="dask_uri").local_cluster_options()["processes"] is False


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"workers": 0}, id="no-worker-never-runs-a-task"),
        pytest.param({"threads": 0}, id="no-thread"),
        pytest.param({"workers": "two"}, id="not-a-number"),
        pytest.param({"workers": 1.5}, id="not-whole"),
        pytest.param({"threads": True}, id="a-flag"),
    ],
)
def test_a_local_cluster_needs_at_least_one_worker_and_thread(monkeypatch, extra: dict) -> None:
    (name, value) = next(iter(extra.items()))
    hook = hook_for(monkeypatch, {"host": "local", "extra": extra})
    with pytest.raises(ValueError) as raised:
        hook.local_cluster_options()
    assert str(raised.value) == (
        f"connection 'dask_test': extra {name} must be a whole number >= 1, got {value!r}"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param('{"workers": 2,}', "its extra is not valid JSON", id="bad-json"),
        pytest.param("[2]", "its extra must be a JSON object of options", id="not-an-object"),
    ],
)
def test_an_extra_that_is_no_json_object_is_refused_naming_the_connection(
    monkeypatch, extra: str, message: str
) -> None:
    # Airflow's extra_dejson reads it as no extra: the cluster would silently take the defaults
    hook = hook_for(monkeypatch, {"host": "local", "extra": extra})
    with pytest.raises(ValueError, match=f"connection 'dask_test': {message}"):
        hook.local_cluster_options()


@pytest.mark.parametrize(
    ("uri", "address"),
    [
        ("tcp://[::1]:8786", "tcp://[::1]:8786"),
        ("tls://[fd00::5]:8786", "tls://[fd00::5]:8786"),
        ("tcp://[::1]", "tcp://[::1]:8786"),
    ],
)
def test_an_ipv6_scheduler_keeps_its_brackets(monkeypatch, uri: str, address: str) -> None:
    """Airflow keeps `[::1]` of a URI as the host `::1`: its colons read as a port already given,
    and the task failed saying to give the port once."""
    from featurelake_airflow.hooks.dask_cluster import DaskClusterHook

    monkeypatch.setenv("AIRFLOW_CONN_DASK_URI", uri)
    assert DaskClusterHook(dask_conn_id="dask_uri").scheduler_address() == address
    assert hook_for(monkeypatch, {"host": "::1", "port": 8786}).scheduler_address() == "tcp://[::1]:8786"


@pytest.mark.parametrize(
    ("fields", "address"),
    [
        pytest.param({"host": "tcp://::1", "port": 8786}, "tcp://[::1]:8786", id="scheme-and-port-field"),
        pytest.param({"host": "tls://fd00::5"}, "tls://[fd00::5]:8786", id="scheme-no-port"),
        pytest.param({"host": "tcp://[::1]:9000"}, "tcp://[::1]:9000", id="bracketed-with-port"),
    ],
)
def test_a_bare_ipv6_host_after_a_scheme_gets_its_brackets(monkeypatch, fields: dict, address: str) -> None:
    """`tcp://::1` with a port field was refused as a port given twice; `tls://fd00::5` came back
    without a port, and Dask refused it naming no connection ("ipv6 needs brackets")."""
    assert hook_for(monkeypatch, fields).scheduler_address() == address


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        pytest.param(
            {"host": "http://dask-scheduler", "port": 8786},
            "http:// is no protocol of Dask's (inproc, tcp, tls, ucx, ws, wss)",
            id="http",
        ),
        pytest.param(
            {"host": "dask-scheduler:87x6"}, "'87x6' is no port number (1 to 65535)", id="port-typo"
        ),
        pytest.param(
            {"host": "tcp://dask-scheduler:8786/"}, "'8786/' is no port number", id="trailing-slash"
        ),
        pytest.param({"host": "dask-scheduler", "port": 70000}, "'70000' is no port number", id="port-range"),
        pytest.param(
            {"host": "tcp//dask-scheduler"}, "'tcp//dask-scheduler' is no host name", id="scheme-typo"
        ),
        pytest.param({"host": "dask scheduler"}, "'dask scheduler' is no host name", id="space"),
    ],
)
def test_an_address_dask_cannot_parse_is_refused_naming_the_connection(
    monkeypatch, fields: dict, problem: str
) -> None:
    """Dask refused these only once the client started (http:// after seconds), with "unknown
    address scheme" or "invalid literal for int() with base 10: '87x6'", naming no connection."""
    with pytest.raises(ValueError) as refused:
        hook_for(monkeypatch, fields).scheduler_address()
    message = str(refused.value)
    assert message.startswith("connection 'dask_test': the scheduler address ")
    assert f"from host {fields['host']!r}" in message and problem in message
    assert "tls://dask-scheduler" in message, "the message shows a spelling that works"
