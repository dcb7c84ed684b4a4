"""Child processes that end with the process that started them, even when it dies by SIGKILL (the
OOM killer, a lost worker's supervisor), which runs no `finally`: Linux's PR_SET_PDEATHSIG."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

# prctl(2) option: the signal the calling process gets when its parent thread ends.
_PR_SET_PDEATHSIG = 1


def stopped_with_this_process(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen` that has the child get `sig` when the Python process
    that started it dies. The signal fires when the starting *thread* ends, so it is set only from
    the main thread; a child started elsewhere, or not on Linux, gets None (no such signal). It
    survives the child's `exec` (not of a setuid program)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # it died before prctl: nothing would signal this process
            os._exit(1)

    return set_parent_death_signal
