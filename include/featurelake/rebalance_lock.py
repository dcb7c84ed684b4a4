"""One rebalance pass at a time: a lock held on every node a pass scans.

Two passes at once lose keys. Pass B copies a key to its new node; pass A finds that copy, keeps it,
and deletes the key from the old node; B's compare-and-delete then finds the key gone, takes it for
a key deleted during the move, and deletes its copy: the key is on no node, and both passes report
themselves complete. A pass cannot tell "moved by another pass" from "deleted meanwhile", so passes
must not overlap: a second DAG run is kept out by `max_active_runs=1`, but a direct
`OnlineStore.rebalance()` call or a task attempt still running when its retry starts is not.

The lock is redis-py's `Lock` (SET NX PX with a token, renewed and released by compare scripts), one
per node, under `<prefix>;rebalance`: its one colon keeps it out of every SCAN of the prefix's keys.
A thread renews it every third of its lifetime, and the pass checks it before each move, so a holder
that dies (killed, its machine gone) frees the nodes `REBALANCE_LOCK_SECONDS` after its last renewal.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime

import redis
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

log = logging.getLogger(__name__)

# Seconds the lock outlives its holder's last renewal. Below the rebalance DAG's 30 s retry delay,
# so that the retry of a killed task finds the nodes free.
REBALANCE_LOCK_SECONDS = 15.0


class RebalanceRunningError(RuntimeError):
    """Another rebalance pass holds the lock on a node: this pass moved nothing."""


class RebalanceLockLostError(RuntimeError):
    """The pass no longer holds its lock on a node (it was not renewed in time, and may now be
    another pass's): the pass stops before its next move, as a crash would."""


def rebalance_lock_key(key_prefix: str) -> str:
    """`<prefix>;rebalance`: one colon, where every feature key has two, so no SCAN of `<prefix>:*`
    meets it."""
    return f"{key_prefix};rebalance"


class RebalanceLock:
    """The lock of one pass on each of `clients` (node name: client). Use `held()`."""

    def __init__(
        self,
        clients: Mapping[str, redis.Redis],
        *,
        key_prefix: str,
        seconds: float = REBALANCE_LOCK_SECONDS,
    ) -> None:
        if not seconds > 0:
            raise ValueError(f"the rebalance lock's seconds must be > 0, got {seconds!r}")
        self.name = rebalance_lock_key(key_prefix)
        self.seconds = seconds
        # Who holds it, for the message of a pass that finds it held.
        self.token = (
            f"{socket.gethostname()} pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} "
            f"{uuid.uuid4().hex}"
        )
        # thread_local=False: the renewing thread needs the token the pass acquired with.
        self._locks = {
            node: Lock(client, self.name, timeout=seconds, blocking=False, thread_local=False)
            for node, client in sorted(clients.items())
        }
        self._lost: str | None = None
        self._stop = threading.Event()

    @contextmanager
    def held(self) -> Iterator[RebalanceLock]:
        """Hold the lock on every node while the block runs; refuse (`RebalanceRunningError`) when
        another pass holds it on any, leaving none held."""
        self._acquire()
        renewing = threading.Thread(target=self._renew_until_stopped, name="rebalance-lock", daemon=True)
        renewing.start()
        try:
            yield self
        finally:
            self._stop.set()
            renewing.join()
            self._release()

    def check(self) -> None:
        """Renew the lock on every node, and stop the pass (`RebalanceLockLostError`) when any no
        longer holds this pass's token."""
        if self._lost is None:
            for node, lock in self._locks.items():
                try:
                    lock.reacquire()
                except LockNotOwnedError:
                    self._lost = node
                    break
        if self._lost is not None:
            raise RebalanceLockLostError(
                f"this rebalance pass lost its lock {self.name!r} on {self._lost}: it was not renewed "
                f"within {self.seconds:g} s (a node that did not answer, or a stalled process), and "
                "another pass may hold it now. The pass stopped before its next move, as a crash "
                "would: each key is on one node, or on both with the same bytes. Run the rebalance "
                "again once no other pass runs"
            )

    def _acquire(self) -> None:
        taken: list[Lock] = []
        try:
            for node, lock in self._locks.items():
                # A SET whose reply was lost and was sent again by the client's retries finds the
                # lock set, by this very token: that is acquired, not held by another pass.
                if lock.acquire(token=self.token) or self._holder(lock) == self.token:
                    lock.local.token = self.token.encode()
                    taken.append(lock)
                    continue
                holder = self._holder(lock)
                raise RebalanceRunningError(
                    f"another rebalance pass holds the lock {self.name!r} on {node} "
                    f"({holder or 'released just now'}): two passes at once lose keys. Wait until "
                    "it ends and run this one again (a retry of the task does). If that pass was "
                    f"killed, its lock expires {self.seconds:g} s after its last renewal"
                )
        except BaseException:
            for lock in taken:
                self._release_one(lock)
            raise
        log.info("rebalance lock %r held on %d nodes (%s)", self.name, len(taken), self.token)

    @staticmethod
    def _holder(lock: Lock) -> str | None:
        value = lock.redis.get(lock.name)
        return None if value is None else value.decode(errors="backslashreplace")

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            for node, lock in self._locks.items():
                try:
                    lock.reacquire()
                except LockNotOwnedError:
                    self._lost = self._lost or node
                except (redis.ConnectionError, redis.TimeoutError) as error:
                    # The pass's own next command to the node fails too, or the lock outlives this
                    # and the next renewal succeeds; a lock lost meanwhile stops the pass at `check`.
                    log.warning("could not renew the rebalance lock on %s: %s", node, error)

    def _release(self) -> None:
        for lock in self._locks.values():
            self._release_one(lock)

    def _release_one(self, lock: Lock) -> None:
        try:
            lock.release()
        except LockNotOwnedError:
            log.warning("the rebalance lock %r had expired on a node before its pass released it", self.name)
        except (LockError, redis.ConnectionError, redis.TimeoutError) as error:
            log.warning(
                "could not release the rebalance lock %r (%s): it expires within %g s",
                self.name,
                error,
                self.seconds,
            )
