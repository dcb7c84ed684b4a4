"""A rebalance pass whose copy or compare-and-delete loses its reply, on real Redis servers behind a
real TCP proxy that passes the command on and drops the connection before the answer (a network
blip, a socket timeout). redis-py's retries sent the script again, and the second run answered for
the first one's work: a key the first delete removed read as gone, so the pass took back its copy,
and the key was on no node, in a pass that reported itself complete. Now the pass stops, as a crash
would, and a rerun finishes the move."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading

import pytest
import redis

from featurelake.feature_records import FeatureRecord
from featurelake.online_store import (
    _DELETE_IF_UNCHANGED,
    _WRITE_IF_NOT_OLDER,
    MoveInterruptedError,
    OnlineStore,
    OnlineStoreConfig,
)
from tests.support import keys_on

pytestmark = pytest.mark.integration

VIEW = "user_features"
IDS = [f"u{i:04d}" for i in range(300)]


class ReplyDroppingProxy:
    """A TCP proxy on a free loopback port in front of `upstream` (host:port). Once `armed`, the
    first request that holds `trigger` goes to the server whole, and the connection is then closed
    at both ends once the server has answered it, its answer dropped: the command ran, its reply
    is lost."""

    def __init__(self, upstream: str, trigger: bytes) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.trigger = trigger
        self.armed = False
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            answered = threading.Event()
            dropping = threading.Event()
            threading.Thread(target=self._up, args=(client, server, dropping, answered), daemon=True).start()
            threading.Thread(
                target=self._down, args=(server, client, dropping, answered), daemon=True
            ).start()

    def _up(self, client: socket.socket, server: socket.socket, dropping, answered) -> None:
        try:
            while data := client.recv(1 << 20):
                with self._lock:
                    drop = self.armed and self.trigger in data
                    self.armed = self.armed and not drop
                if drop:
                    dropping.set()
                server.sendall(data)
                if drop:
                    answered.wait(10)  # the server ran the command and answered
                    break
        except OSError:
            pass
        _close(client, server)

    def _down(self, server: socket.socket, client: socket.socket, dropping, answered) -> None:
        try:
            while data := server.recv(1 << 20):
                if dropping.is_set():
                    # counted before the client sees its connection close, which ends its wait
                    self.dropped += 1
                    answered.set()  # the answer is dropped
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)


def _close(*ends: socket.socket) -> None:
    for end in ends:
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()


def _sha(script: str) -> bytes:
    return hashlib.sha1(script.encode()).hexdigest().encode()


@pytest.mark.parametrize(
    ("behind_the_proxy", "script"),
    [
        pytest.param("old", _DELETE_IF_UNCHANGED, id="compare-and-delete-on-the-old-node"),
        pytest.param("new", _WRITE_IF_NOT_OLDER, id="copy-to-the-new-node"),
    ],
)
def test_a_lost_reply_stops_the_pass_and_the_rerun_moves_every_key(
    redis_nodes: list[str], behind_the_proxy: str, script: str
) -> None:
    first, second = redis_nodes[:2]
    target = first if behind_the_proxy == "old" else second
    with redis.Redis(*target.rsplit(":", 1)) as direct:
        direct.script_load(script)  # so the proxy sees EVALSHA with the script's digest
    proxy = ReplyDroppingProxy(target, _sha(script))
    try:
        old = [proxy.address] if behind_the_proxy == "old" else [first]
        new = [*old, second] if behind_the_proxy == "old" else [first, proxy.address]
        with OnlineStore(OnlineStoreConfig(nodes=old)) as store:
            store.write(VIEW, [(entity, FeatureRecord("2026-10-28", {"v": entity})) for entity in IDS])
        migrating = OnlineStoreConfig(nodes=new, previous_nodes=old)
        with OnlineStore(migrating) as store:
            proxy.armed = True
            with pytest.raises(MoveInterruptedError, match=r"lost a reply .* run the rebalance again"):
                store.rebalance()
            assert proxy.dropped == 1
            # In between, every key is on its old node, its new one, or both: each can be read.
            assert {e: r.values["v"] for e, r in store.read(VIEW, IDS).items()} == {e: e for e in IDS}
            report = store.rebalance()
            assert report.complete and report.changed_during_move == 0, report
            got = store.read(VIEW, IDS)
            on_node = {node: keys_on(node) for node in (first, second)}
            placed = {node: {store.ring.node_for(key) for key in keys} for node, keys in on_node.items()}
    finally:
        proxy.close()
    assert {e: r.values["v"] for e, r in got.items()} == {e: e for e in IDS}
    # Each key once, on its ring node (the proxy's address stands for the server behind it).
    assert sum(len(keys) for keys in on_node.values()) == len(IDS)
    shown = {proxy.address: target}
    assert all({shown.get(owner, owner) for owner in owners} <= {node} for node, owners in placed.items())
    assert on_node[first] and on_node[second], "the pass moved some keys to the new node"
