"""The `__mp_main__` of the processes a task spawns inside `child_processes_allowed()` (a process
pool's workers, a local Dask cluster's): it ends such a process once the task process that spawned
it has died. A task killed with SIGKILL (the OOM killer, a lost worker's supervisor) otherwise left
its idle pool workers waiting for work for good, one orphan per worker, on every kill."""

from __future__ import annotations

import os
import threading
import time

# How often a child looks whether its parent is still there, in seconds.
PARENT_CHECK_SECONDS = 0.5
# The pid of the process that spawns, set by `child_processes_allowed` (and here, for this child's
# own children): a child whose parent died while it started has another parent at once.
SPAWNING_PID = "FEATURELAKE_SPAWNING_PID"


def _forked() -> None:
    # A process forked while the variable is set (inside the block, or in a spawned child) spawns
    # children of its own, which must watch it, not the process it was forked from: they would
    # otherwise find another parent than the one named, and end at once.
    if SPAWNING_PID in os.environ:
        os.environ[SPAWNING_PID] = str(os.getpid())


os.register_at_fork(after_in_child=_forked)


def exit_when_orphaned(parent: int) -> None:
    """End this process at once when its parent is no longer `parent` (the parent died, and the
    process was handed to init or a subreaper)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


if __name__ == "__mp_main__":
    spawner = os.environ.get(SPAWNING_PID, "")
    os.environ[SPAWNING_PID] = str(os.getpid())
    threading.Thread(
        target=exit_when_orphaned,
        args=(int(spawner) if spawner.isdigit() else os.getppid(),),
        name="exit-when-orphaned",
        daemon=True,
    ).start()
