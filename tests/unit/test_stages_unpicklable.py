"""A process stage given what pickle cannot send to its pool (a lambda, an item holding a lock): the
pipeline fails with StageError and returns, on a real spawn pool. Each run is a script in its own
process, killed with its workers if it hangs, so a hang fails this test instead of the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT

SCRIPT = """
import threading

from featurelake.stages import Stage, StageError, run_stages


def same(value):
    return value


def main():
    function, items = {case}
    try:
        list(run_stages(items, [Stage("enrich", function, pool="process", workers=2)]))
    except StageError as error:
        print(error)


if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize(
    ("case", "why"),
    [
        pytest.param("(lambda value: value), range(40)", "Can't pickle", id="lambda"),
        pytest.param(
            "same, [(n, threading.Lock()) for n in range(40)]", "cannot pickle '_thread.lock'", id="item"
        ),
    ],
)
def test_what_pickle_cannot_send_fails_the_pipeline_and_returns(tmp_path: Path, case: str, why: str) -> None:
    """The pool's feeder thread used to meet the pickling error, after the item had left the
    pool's books that its shutdown waits on: the StageError was raised, then the pipeline's stop
    waited for the pool forever (and so did the interpreter's exit)."""
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(SCRIPT).replace("{case}", case))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "include"), str(PROJECT_ROOT)])}
    for _ in range(3):  # the hang was a race; it lost nearly every time
        process = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the script and its pool's workers
            process.communicate()
            pytest.fail(f"the pipeline did not return within 60 s ({case})")
        assert process.returncode == 0, err
        assert out.startswith("stage 'enrich' failed on item 0: ") and why in out, out
