"""Fixtures shared by the unit tests."""

from __future__ import annotations

import threading

import pytest

from featurelake import stages


@pytest.fixture
def pools_stopping(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set when a stage pipeline begins shutting down its pools (the real ones, spied on). A stop
    has cancelled every queued call by then, so a stage call that started after it is one the stop
    let through; a call that waits for it holds its worker until the stop, whatever the machine's
    speed."""
    began = threading.Event()
    real = stages._executor

    def spied(stage: stages.Stage, *args):
        executor = real(stage, *args)
        shutdown = executor.shutdown

        def shutdown_and_tell(*args, **kwargs) -> None:
            began.set()
            shutdown(*args, **kwargs)

        executor.shutdown = shutdown_and_tell  # type: ignore[method-assign]
        return executor

    monkeypatch.setattr(stages, "_executor", spied)
    return began
