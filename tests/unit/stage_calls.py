"""The calls of a stage under test, for the tests of a pipeline's stop."""

from __future__ import annotations

import threading
import time


class StageCalls:
    """A stage's calls, and those that began once the pipeline's pools began shutting down
    (`stopping`, set by the pools_stopping fixture): by then the stop has cancelled every queued
    call, so none should begin."""

    def __init__(self, stopping: threading.Event) -> None:
        self.lock = threading.Lock()
        self.stopping = stopping
        self.all: list[int] = []
        self.after_stop: list[int] = []

    def record(self, x: int) -> None:
        with self.lock:
            self.all.append(x)
            if self.stopping.is_set():
                self.after_stop.append(x)

    def wait_for(self, *items: int) -> None:
        deadline = time.monotonic() + 30
        while not set(items) <= set(self.all):
            assert time.monotonic() < deadline, f"items {items} never started: {self.all}"
            time.sleep(0.01)
