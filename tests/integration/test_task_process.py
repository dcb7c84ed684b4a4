"""`child_processes_allowed` in the two kinds of task process that a real scheduler makes, rebuilt
with real processes: a process forked by a plain launcher script (LocalExecutor: Airflow's
supervisor forks the task from `airflow scheduler`), and one forked from a real billiard pool worker
(CeleryExecutor's prefork pool). In both, the launcher script refuses to run again as a spawned
child's `__mp_main__`, as Airflow's launcher does in effect (it imports Airflow, whose settings fail
on the database URL blanked in task processes). tests/integration/test_executors.py runs the same
operator under the real executors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

LAUNCHER = textwrap.dedent(
    """
    import contextlib
    import json
    import math
    import multiprocessing
    import os
    import sys

    if __name__ == "__mp_main__":
        raise SystemExit("a spawned child ran the launcher script again")


    def forked_task(use_block):
        # Like Airflow's supervisor: the task runs in a process forked from this one.
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        from featurelake_airflow.task_process import child_processes_allowed

        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                block = child_processes_allowed() if use_block else contextlib.nullcontext()
                with block, ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
                    result = list(pool.map(math.factorial, range(6)))
            except BaseException as error:
                result = f"{type(error).__name__}: {error}"
            after = {
                "daemon": bool(multiprocessing.current_process()._config.get("daemon")),
                "main_file": getattr(sys.modules["__main__"], "__file__", None),
            }
            os.write(write, json.dumps({"result": result, "after": after}).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as answer:
            return json.loads(answer.read())


    if __name__ == "__main__":
        if sys.argv[1] == "celery":
            from billiard.pool import Pool

            with Pool(1) as pool:
                outcomes = pool.map(forked_task, [False, True])
        else:
            outcomes = [forked_task(False), forked_task(True)]
        print(json.dumps(outcomes))
    """
)


@pytest.mark.parametrize("launcher_kind", ["local", "celery"])
def test_a_task_process_can_start_a_spawn_pool_only_inside_the_block(
    tmp_path: Path, launcher_kind: str
) -> None:
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    ran = subprocess.run(
        [sys.executable, str(launcher), launcher_kind], capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    without, inside = json.loads(ran.stdout.splitlines()[-1])

    if launcher_kind == "celery":
        assert without["result"] == "AssertionError: daemonic processes are not allowed to have children"
    else:  # each spawned child ran the launcher again and died
        assert without["result"].startswith("BrokenProcessPool"), without
        assert "a spawned child ran the launcher script again" in ran.stderr
    assert inside["result"] == [1, 1, 2, 6, 24, 120]
    # and everything was put back after the block
    assert inside["after"] == {"daemon": launcher_kind == "celery", "main_file": str(launcher)}
