"""Private `redis-server` processes on free ports (loopback by default, IPv6 or TLS-only on
request), with no persistence: the demo's online store, and a Redis Cluster of such servers for the
tests and the benchmark. (The tests' standalone shards come from pytest-redis; this exists because
the demo runs outside pytest and pytest-redis has no cluster mode.)"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from featurelake.parent_death import stopped_with_this_process

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` (IPv4 or IPv6, loopback by default) right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# A cluster node also listens on its port + 10000 (the cluster bus).
CLUSTER_BUS_OFFSET = 10_000


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET <= 65_535 and _is_free(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("found no free port pair (port, port + 10000) on loopback in 200 tries")


_START_ATTEMPTS = 5


class _PortTaken(Exception):
    """redis-server exited because another process bound its port first."""


@dataclass(frozen=True)
class RedisTls:
    """The PEM files of a redis-server that speaks only TLS (clients need no certificate)."""

    cert_file: str
    key_file: str
    ca_file: str


class LocalRedisServer:
    """`redis-server` on `host`:<free port> (loopback by default; `::1` for IPv6) in a temporary
    directory; a context manager. With `tls`, the port speaks only TLS."""

    def __init__(
        self,
        *,
        executable: str = "redis-server",
        cluster: bool = False,
        cluster_node_timeout_ms: int = 15_000,
        host: str = "127.0.0.1",
        tls: RedisTls | None = None,
    ) -> None:
        found = shutil.which(executable)
        if found is None:
            raise FileNotFoundError(
                f"{executable!r} is not on PATH. Install Redis (Debian: `apt-get install redis-server`, "
                "macOS: `brew install redis`), or point the featurelake_online connection at a server."
            )
        self.executable = found
        self.cluster = cluster
        # How long a cluster node may be unreachable before the others fail it over (Redis' default)
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.host = host
        self.tls = tls
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, *, timeout: float = 15.0) -> LocalRedisServer:
        self._workdir = Path(tempfile.mkdtemp(prefix="featurelake-redis-"))
        try:
            # A free port can be taken by another process before redis-server binds it: then it
            # exits saying so, and it is started again on another port.
            for attempt in range(1, _START_ATTEMPTS + 1):
                self.port = free_cluster_port() if self.cluster else free_port(self.host)
                try:
                    self._launch(timeout)
                    break
                except _PortTaken:
                    log.info("port %d was taken before redis-server bound it (try %d)", self.port, attempt)
                    if attempt == _START_ATTEMPTS:
                        raise RuntimeError(
                            f"redis-server found each of {_START_ATTEMPTS} free ports taken by the time "
                            "it bound them; another process is claiming loopback ports quickly"
                        ) from None
        except BaseException:
            self.stop()
            raise
        log.info("redis-server listening on %s (data in %s)", self.address, self._workdir)
        return self

    @property
    def log_file(self) -> Path | None:
        """Its redis-server log (of the current process, since start or restart), while it has a
        directory."""
        return None if self._workdir is None else self._workdir / "redis.log"

    @property
    def running(self) -> bool:
        """Whether its process runs (it was started, and neither stopped nor killed since)."""
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """Stop the process at once (SIGKILL), keeping its directory and port for `restart`: a node
        that crashed. With no persistence it comes back empty; a cluster node keeps nodes.conf."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._forget_process()

    def restart(self, *, timeout: float = 15.0) -> LocalRedisServer:
        """Start the process again on the same port and directory after `kill`; a cluster node
        rejoins its cluster from its nodes.conf (as a replica, if its replica was promoted)."""
        if self._workdir is None:
            raise RuntimeError("restart() needs a server that was started and then killed, not stopped")
        self.kill()
        try:
            self._launch(timeout, keep_cluster_config=True)
        except _PortTaken:
            raise RuntimeError(
                f"redis-server could not restart on port {self.port}: another process took the port "
                "after kill(); stop() this server and start a new one"
            ) from None
        return self

    def _launch(self, timeout: float, *, keep_cluster_config: bool = False) -> None:
        assert self._workdir is not None
        log_file = self._workdir / "redis.log"
        log_file.unlink(missing_ok=True)
        command = [self.executable, "--port", str(self.port), "--bind", self.host, "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self._workdir), "--logfile", "redis.log"]
        secure: dict[str, object] = {}
        if self.tls is not None:
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            command += ["--tls-cert-file", self.tls.cert_file, "--tls-key-file", self.tls.key_file]
            command += ["--tls-ca-cert-file", self.tls.ca_file]
            secure = {"ssl": True, "ssl_ca_certs": self.tls.ca_file}
        if self.cluster:
            if not keep_cluster_config:
                (self._workdir / "nodes.conf").unlink(missing_ok=True)
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            command += ["--cluster-node-timeout", str(self.cluster_node_timeout_ms)]
        self._process = process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # preexec_fn runs between fork and exec: this one only calls prctl and getppid
            preexec_fn=stopped_with_this_process(),
        )
        # One try per poll: the loop retries, and checks the process between tries
        client = redis.Redis(
            host=self.host,
            port=self.port,
            socket_connect_timeout=1,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
            **secure,
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                if time.monotonic() > deadline:
                    shown = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
                    raise TimeoutError(
                        f"redis-server on port {self.port} did not answer in {timeout} s; its log "
                        f"({log_file}) ends: {shown}"
                    )
                if process.poll() is not None:
                    # redis-server logs to its log file; stderr holds only what it says before that
                    error = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
                    if process.stderr is not None:
                        error += process.stderr.read().decode(errors="replace")
                    self._forget_process()
                    if "Address already in use" in error:
                        raise _PortTaken
                    raise RuntimeError(f"redis-server on port {self.port} exited at start: {error}")
                try:
                    # Ours, not another server that took the port first (ours then exits, above)
                    if client.info("server")["process_id"] == process.pid:
                        return
                    time.sleep(0.05)
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._forget_process()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _forget_process(self) -> None:
        """Drop the exited process, closing the pipe of what it said before its log file took over
        (left open, it is an unclosed file once the process object is collected)."""
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def __enter__(self) -> LocalRedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LocalRedisCluster:
    """A Redis Cluster of `primaries` cluster-enabled `LocalRedisServer`s, each with `replicas`
    replicas, joined by `redis-cli --cluster create` (which spreads the 16,384 slots evenly over
    the primaries); a context manager. `addresses` are the host:port of all its nodes."""

    def __init__(self, primaries: int = 3, *, replicas: int = 0, node_timeout_ms: int = 15_000) -> None:
        if primaries < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 primaries, got {primaries}")
        if replicas < 0:
            raise ValueError(f"replicas per primary must be >= 0, got {replicas}")
        if shutil.which("redis-cli") is None:
            raise FileNotFoundError(
                "'redis-cli' is not on PATH; it creates the cluster. Install Redis's tools (Debian: "
                "`apt-get install redis-tools`, macOS: `brew install redis`)."
            )
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.servers: list[LocalRedisServer] = []
        self.addresses: list[str] = []
        self._servers = contextlib.ExitStack()

    def start(self, *, timeout: float = 30.0) -> LocalRedisCluster:
        try:
            servers = self.servers = [
                self._servers.enter_context(
                    LocalRedisServer(cluster=True, cluster_node_timeout_ms=self.node_timeout_ms)
                )
                for _ in range(self.primaries * (1 + self.replicas))
            ]
            self.addresses = [server.address for server in servers]
            command = ["redis-cli", "--cluster", "create", *self.addresses]
            created = subprocess.run(
                [*command, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if created.returncode != 0:
                raise RuntimeError(f"`{' '.join(command)}` failed: {created.stdout[-2000:]}{created.stderr}")
            # Every node must see the cluster ok and every replica as one (the cluster bus gossips
            # `--cluster create`'s replica assignments after the slots).
            deadline = time.monotonic() + timeout
            for server in servers:
                with redis.Redis(host="127.0.0.1", port=server.port) as client:
                    while not self._settled(client):
                        if time.monotonic() > deadline:
                            raise TimeoutError(
                                f"{server.address} of the cluster on {self.addresses} did not see it "
                                f"settled (state ok, {self.primaries * self.replicas} replicas) in {timeout} s"
                            )
                        time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        log.info(
            "Redis Cluster of %d primaries with %d replicas each on %s",
            self.primaries,
            self.replicas,
            ", ".join(self.addresses),
        )
        return self

    def _settled(self, client: redis.Redis) -> bool:
        if client.cluster("info").get("cluster_state") != "ok":
            return False
        nodes = client.execute_command("CLUSTER", "NODES").decode().splitlines()
        replicas = sum("slave" in line.split()[2].split(",") for line in nodes)
        return replicas == self.primaries * self.replicas

    def server(self, address: str) -> LocalRedisServer:
        """The server of one node (to stop it, for a failover)."""
        return next(server for server in self.servers if server.address == address)

    def stop(self) -> None:
        self._servers.close()
        self.servers = []
        self.addresses = []

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
