"""What a task's own process needs before an operator starts a process pool in it."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import multiprocessing
import multiprocessing.process
import os
import sys
from collections.abc import Iterator

from featurelake_airflow.spawned_child import SPAWNING_PID

log = logging.getLogger(__name__)


@contextlib.contextmanager
def child_processes_allowed() -> Iterator[None]:
    """Let the task process start a process pool (multiprocessing, spawn) while the block runs.

    A task process under a real scheduler differs from one under `dag.test()` in two ways, and
    without this block each makes the pool fail:

    - **Its `__main__` is Airflow's launcher script** (`airflow scheduler`, `airflow celery worker`).
      A spawned child runs the parent's main script again before it takes work, so each child would
      import Airflow, whose settings then fail on the database URL that Airflow 3 blanks in task
      processes ("airflow-db-not-allowed:///"). The pool's functions live in importable modules, so
      for the block `__main__` hides its file, and children start without running it, as they do
      when Airflow runs as `python -m airflow`.
    - **Under CeleryExecutor's prefork pool it inherits a daemonic billiard process**, which billiard
      installed as multiprocessing's current process in the Celery pool worker that the task was
      forked from. multiprocessing then refuses to start a child ("daemonic processes are not
      allowed to have children", apache/airflow#14896), and cannot pickle billiard's type of
      authentication key for a spawned child. The daemon mark keeps a process that is killed with
      its parent from leaving orphans; the task process is not one (the supervisor waits for it, and
      the block shuts its pool down before it ends). So for the block the process is unmarked and
      its key (the same bytes) made multiprocessing's own type. multiprocessing has no public way
      to do this: here its `daemon` setter is billiard's, and its `authkey` setter makes billiard's
      type again.

    A spawned child also outlived a task process killed with SIGKILL (the OOM killer, a lost
    worker): a process pool's idle workers wait for work for good. So for the block `__main__`
    names `featurelake_airflow.spawned_child` as its module (`__spec__`): a spawned child runs that
    module as its `__mp_main__` instead of the main script, and it ends the child once its parent
    is gone.

    Everything is put back when the block ends. Where none of this applies, only `__spec__` changes.
    """
    main = sys.modules["__main__"]
    main_file = getattr(main, "__file__", None) if getattr(main, "__spec__", None) is None else None
    process = multiprocessing.current_process()
    config = process._config  # private: see the docstring
    authkey = config.get("authkey")
    foreign_key = authkey is not None and not isinstance(
        authkey, multiprocessing.process.AuthenticationString
    )
    saved = {key: config[key] for key in ("daemon", "authkey") if key in config}
    if config.get("daemon") or foreign_key:
        log.info(
            "The task process inherited %s %r from its Celery pool worker (daemonic: %s); making it "
            "multiprocessing's own while its process pool runs",
            type(process).__name__,
            process.name,
            bool(config.get("daemon")),
        )
        config["daemon"] = False
        if foreign_key:
            config["authkey"] = multiprocessing.process.AuthenticationString(bytes(authkey))
    if main_file is not None:
        log.info("Spawned processes will not run the task process's main script %s", main_file)
        del main.__file__
    main_spec = main.__dict__.get("__spec__")
    main.__spec__ = importlib.util.find_spec("featurelake_airflow.spawned_child")
    spawning_pid = os.environ.get(SPAWNING_PID)
    os.environ[SPAWNING_PID] = str(os.getpid())
    try:
        yield
    finally:
        if spawning_pid is None:
            os.environ.pop(SPAWNING_PID, None)
        else:
            os.environ[SPAWNING_PID] = spawning_pid
        main.__spec__ = main_spec
        if main_file is not None:
            main.__file__ = main_file
        config.pop("daemon", None)
        config.update(saved)
