"""Stage pipelines on thread and process pools.

Each item goes through every stage in order. Each stage has its own pool: threads for I/O-bound or
GIL-releasing work (parsing, pyarrow), processes for CPU-bound Python. Stages overlap: while stage 2
works on one item, stage 1 already works on the next. Results come out in input order, and at most
`max_in_flight` items are inside the pipeline at once, so memory stays bounded on long inputs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Literal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One step: `function(item) -> item` on a pool of `workers`. A process stage's function and
    items must be picklable (a module-level function)."""

    name: str
    function: Callable[[Any], Any]
    pool: Literal["thread", "process"] = "thread"
    workers: int = 2

    def __post_init__(self) -> None:
        if self.pool not in ("thread", "process"):
            raise ValueError(f"stage {self.name!r}: pool must be 'thread' or 'process', got {self.pool!r}")
        if self.workers < 1:
            raise ValueError(f"stage {self.name!r}: workers must be >= 1, got {self.workers}")


class StageError(RuntimeError):
    """A stage raised on one item; the message names the stage and the item's position, and
    `__cause__` is the stage's own exception, with its traceback (a process stage's includes the
    worker's, as `concurrent.futures` chains it)."""


def _stage_error(message: str, cause: BaseException) -> StageError:
    """A StageError caused by `cause`, as `raise StageError(message) from cause` would make it."""
    error = StageError(message)
    error.__cause__ = cause
    return error


def _executor(stage: Stage) -> Executor:
    if stage.pool == "thread":
        return ThreadPoolExecutor(max_workers=stage.workers, thread_name_prefix=f"stage-{stage.name}")
    # spawn: a forked child of a process with threads (Airflow's task runner, the JVM gateway) can
    # deadlock on a lock some thread held at the fork.
    return ProcessPoolExecutor(max_workers=stage.workers, mp_context=get_context("spawn"))


def _through_stages(item: Any, index: int, stages: Sequence[Stage], executors: Sequence[Executor]) -> Future:
    final: Future = Future()

    def run(number: int, value: Any) -> None:
        if number == len(stages):
            final.set_result(value)
            return
        stage = stages[number]

        def done(future: Future) -> None:
            try:
                outcome = future.result()
            except BaseException as error:
                final.set_exception(
                    _stage_error(f"stage {stage.name!r} failed on item {index}: {error!r}", error)
                )
                return
            run(number + 1, outcome)

        try:
            executors[number].submit(stage.function, value).add_done_callback(done)
        except BaseException as error:  # a pool shut down or broken
            final.set_exception(
                _stage_error(f"stage {stage.name!r} could not take item {index}: {error!r}", error)
            )

    run(0, item)
    return final


def run_stages(items: Iterable[Any], stages: Sequence[Stage], *, max_in_flight: int = 64) -> Iterator[Any]:
    """Every item through `stages`, results in input order. The first failure raises StageError
    (after the items before it were yielded)."""
    if not stages:
        raise ValueError("a stage pipeline needs at least one stage")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    with ExitStack() as stack:
        executors = []
        for stage in stages:
            executor = _executor(stage)
            # On a failure, an early close or Ctrl-C, drop the queued items instead of running them
            # all first: only the ones already running are waited for.
            stack.callback(executor.shutdown, wait=True, cancel_futures=True)
            executors.append(executor)
        pending: deque[Future] = deque()
        for index, item in enumerate(items):
            pending.append(_through_stages(item, index, stages, executors))
            if len(pending) >= max_in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
