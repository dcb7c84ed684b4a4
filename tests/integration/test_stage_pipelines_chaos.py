"""Stage pipelines with a process stage inside `child_processes_allowed()`, in real processes: a
process forked inside the block, and a task process killed with SIGKILL mid-pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")])}

FORKED = textwrap.dedent(
    """
    import json
    import math
    import os

    from featurelake.stages import Stage, run_stages
    from featurelake_airflow.task_process import child_processes_allowed

    if __name__ == "__main__":
        read, write = os.pipe()
        with child_processes_allowed():
            pid = os.fork()  # a process forked while the block runs starts a pool of its own
            if pid == 0:
                os.close(read)
                try:
                    stages = [Stage("factorial", math.factorial, pool="process", workers=2)]
                    result = list(run_stages(range(6), stages))
                except BaseException as error:
                    result = f"{type(error).__name__}: {error}"
                os.write(write, json.dumps(result).encode())
                os._exit(0)
            os.close(write)
            os.waitpid(pid, 0)
        with os.fdopen(read) as answer:
            print(answer.read())
    """
)

NAP = textwrap.dedent(
    """
    import time


    def nap(seconds):
        time.sleep(seconds)
        return seconds
    """
)

KILLED = textwrap.dedent(
    """
    import os
    import sys

    from featurelake.stages import Stage, run_stages
    from featurelake_airflow.task_process import child_processes_allowed
    from nap import nap

    if __name__ == "__main__":
        stages = [Stage("wait", nap, pool="process", workers=2), Stage("hold", nap, workers=1)]
        with child_processes_allowed():
            results = run_stages([0, 60, 60, 60], stages, max_in_flight=4)
            next(results)  # the pool's workers run item 1 and 2 now: kill me
            with open(sys.argv[1] + ".part", "w") as ready:
                ready.write(str(os.getpid()))
            os.rename(sys.argv[1] + ".part", sys.argv[1])
            for _ in results:
                pass
    """
)


def test_a_process_forked_inside_the_block_can_start_a_process_stage(tmp_path: Path) -> None:
    script = tmp_path / "forked.py"
    script.write_text(FORKED)
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, timeout=120)
    assert ran.returncode == 0, ran.stderr
    # its workers watch it, not the process that entered the block
    assert json.loads(ran.stdout.splitlines()[-1]) == [1, 1, 2, 6, 24, 120], ran.stderr


def _children(pid: int) -> list[int]:
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(child) for child in listed.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_task_process_leaves_no_stage_worker_behind(tmp_path: Path) -> None:
    (tmp_path / "nap.py").write_text(NAP)
    script, ready = tmp_path / "killed.py", tmp_path / "ready"
    script.write_text(KILLED)
    env = {**ENV, "PYTHONPATH": os.pathsep.join([ENV["PYTHONPATH"], str(tmp_path)])}
    task = subprocess.Popen([sys.executable, str(script), str(ready)], env=env)
    children: list[int] = []
    try:
        for _ in range(600):  # the pipeline's first result, at most a minute on a busy machine
            if ready.exists() or task.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), f"the pipeline did not start (exit code {task.poll()})"
        children = _children(task.pid)  # the resource tracker and the stage's two workers
        assert len(children) == 3, children
        task.kill()
        task.wait()
        for _ in range(100):  # each worker looks for its parent twice a second
            if not any(_alive(child) for child in children):
                break
            time.sleep(0.1)
        assert not [child for child in children if _alive(child)], "stage workers outlived the task"
    finally:
        task.kill()
        task.wait()
        for child in children:
            if _alive(child):
                os.kill(child, signal.SIGKILL)
