"""Stage pipelines on thread and process pools.

Each item goes through every stage in order. Each stage has its own pool: threads for I/O-bound or
GIL-releasing work (parsing, pyarrow), processes for CPU-bound Python. Stages overlap: while stage 2
works on one item, stage 1 already works on the next. Results come out in input order, and at most
`max_in_flight` items are inside the pipeline at once, so memory stays bounded on long inputs.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import count
from multiprocessing import get_context
from typing import Any, Literal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One step: `function(item) -> item` on a pool of `workers`. A process stage's function and
    items must be picklable (a module-level function); an item that is not, or a lambda, fails its
    item with StageError."""

    name: str
    function: Callable[[Any], Any]
    pool: Literal["thread", "process"] = "thread"
    workers: int = 2

    def __post_init__(self) -> None:
        if self.pool not in ("thread", "process"):
            raise ValueError(f"stage {self.name!r}: pool must be 'thread' or 'process', got {self.pool!r}")
        if not _is_count(self.workers):
            raise ValueError(
                f"stage {self.name!r}: workers must be a whole number >= 1, got {self.workers!r}"
            )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class StageError(RuntimeError):
    """A stage raised on one item; the message names the stage and the item (its position in the
    input, and what `run_stages`'s `name_item` calls it), and `__cause__` is the stage's own
    exception, with its traceback (a process stage's includes the worker's, as
    `concurrent.futures` chains it). When a process stage's pool broke (a worker died,
    or its answer could not be unpickled), every item in the pool is lost with it: the message says
    so, as the item it names need not be the one at fault."""


def _stage_error(message: str, cause: BaseException) -> StageError:
    """A StageError caused by `cause`, as `raise StageError(message) from cause` would make it."""
    error = StageError(message)
    error.__cause__ = cause
    return error


def _executor(stage: Stage, stopped: Any = None) -> Executor:
    """The pool of `stage`; a process pool's workers skip the calls they take once `stopped` (a
    spawn-context Event, set when the pipeline stops) is set."""
    if stage.pool == "thread":
        return ThreadPoolExecutor(max_workers=stage.workers, thread_name_prefix=f"stage-{stage.name}")
    # spawn: a forked child of a process with threads (Airflow's task runner, the JVM gateway) can
    # deadlock on a lock some thread held at the fork.
    return ProcessPoolExecutor(
        max_workers=stage.workers,
        mp_context=get_context("spawn"),
        initializer=_watch_the_stop,
        initargs=(stopped,),
    )


class _Stopped(Exception):
    """Raised in a process stage's worker for a call it took after the pipeline stopped."""


# In a process stage's worker: the pipeline's stop event (`_executor`), or None.
_stop_event: Any = None


def _watch_the_stop(stopped: Any) -> None:
    global _stop_event
    _stop_event = stopped


def _shown(error: BaseException) -> str:
    """`repr(error)`, or its type's name when that repr fails (an argument whose `__repr__`
    raises, such as a detached ORM row): the message is built in a future's done-callback, whose
    own errors concurrent.futures logs and drops, which left the item unfinished and the pipeline
    waiting for it forever."""
    try:
        return repr(error)
    except Exception as repr_error:
        return f"{type(error).__name__} (its repr failed: {type(repr_error).__name__})"


def _item_label(index: int, item: Any, name_item: Callable[[Any], str] | None) -> str:
    """The item as a StageError names it: "item 7", or "item 7 (merchant 'm-7')" with `name_item`.
    Built in a future's done-callback too, so it never raises: a `name_item` that fails leaves the
    position alone."""
    if name_item is None:
        return f"item {index}"
    try:
        return f"item {index} ({name_item(item)})"
    except Exception as error:
        return f"item {index} (its name failed: {type(error).__name__})"


def _failure(stage: Stage, item: str, error: BaseException) -> StageError:
    if not isinstance(error, BrokenProcessPool):
        return _stage_error(f"stage {stage.name!r} failed on {item}: {_shown(error)}", error)
    # Every item in a broken pool fails with it, so the item named may not be the one at fault.
    why = ""
    if error.__cause__ is not None:  # the pool could not read a worker's answer: say why
        lines = [line for line in str(error.__cause__).splitlines() if line.strip(" '")]
        why = f" ({lines[-1]})" if lines else ""
    return _stage_error(
        f"stage {stage.name!r} lost {item}: its process pool broke, failing every item in it. A "
        "worker process died (killed by a signal or the OOM killer, os._exit, a crash) or sent an "
        "answer the pool could not unpickle, on this item or another one "
        f"in the pool at the time: {_shown(error)}{why}",
        error,
    )


def _call_pickled(call: bytes) -> Any:
    """Run a process stage's `(function, item)`, pickled by the parent (`_Pipeline`), unless the
    pipeline stopped: a process pool hands up to `workers + 1` calls to its call queue ahead of
    the workers, where they can no longer be cancelled, so a stop waited for them to run too."""
    if _stop_event is not None and _stop_event.is_set():
        raise _Stopped("the pipeline stopped before this call began")
    function, item = pickle.loads(call)
    return function(item)


class _Pipeline:
    """The stages' pools, and every stage call not finished yet, so that a stop can cancel the queued
    calls of all stages at once before it waits for the running ones."""

    def __init__(self, stages: Sequence[Stage], name_item: Callable[[Any], str] | None = None) -> None:
        self.stages = stages
        self.name_item = name_item
        self.executors: list[Executor] = []  # one per stage, in order
        self.lock = threading.Lock()
        self.stopping = False
        self.calls: set[Future] = set()
        # Set first thing in stop(): the process pools' workers then skip the calls already handed
        # to them. Created only for a pipeline with a process stage.
        self.stopped: Any = (
            get_context("spawn").Event() if any(stage.pool == "process" for stage in stages) else None
        )

    def through_stages(self, item: Any, index: int) -> Future:
        final: Future = Future()

        def label() -> str:  # only on a failure: the item as given, whatever stage it reached
            return _item_label(index, item, self.name_item)

        def run(number: int, value: Any) -> None:
            if number == len(self.stages):
                final.set_result(value)
                return
            stage = self.stages[number]

            def done(future: Future) -> None:
                with self.lock:
                    self.calls.discard(future)
                try:
                    try:
                        outcome = future.result()
                    except _Stopped:
                        final.set_exception(
                            StageError(f"stage {stage.name!r} did not take {label()}: stopped")
                        )
                        return
                    except BaseException as error:
                        final.set_exception(_failure(stage, label(), error))
                        return
                    run(number + 1, outcome)
                except BaseException as error:
                    # concurrent.futures logs and drops a callback's error: the item must still end
                    if not final.done():
                        final.set_exception(
                            _stage_error(f"stage {stage.name!r} failed on {label()}: {_shown(error)}", error)
                        )

            with self.lock:
                stopping = self.stopping
            if stopping:  # the pipeline stops: the item goes no further
                final.set_exception(StageError(f"stage {stage.name!r} did not take {label()}: stopped"))
                return
            call_arguments: tuple[Any, ...] = (stage.function, value)
            if stage.pool == "process":
                # Pickled here, not by the pool's feeder thread: an item or a function (a lambda) it
                # could not pickle left the pool's books, and its shutdown waited for it forever.
                try:
                    call_arguments = (_call_pickled, pickle.dumps(call_arguments, pickle.HIGHEST_PROTOCOL))
                except Exception as error:
                    final.set_exception(_failure(stage, label(), error))
                    return
            try:
                call = self.executors[number].submit(*call_arguments)
            except BaseException as error:  # a pool shut down or broken
                final.set_exception(
                    _stage_error(f"stage {stage.name!r} could not take {label()}: {_shown(error)}", error)
                )
                return
            with self.lock:
                self.calls.add(call)
                stopping = self.stopping
            if stopping:  # submitted as the stop began, after it cancelled the queued calls
                call.cancel()
            call.add_done_callback(done)

        run(0, item)
        return final

    def stop(self) -> None:
        """Cancel the queued calls of every stage, then wait for the running ones. Stopping the
        pools one by one would let an earlier stage work through its queue while a later one is
        waited for."""
        if self.stopped is not None:
            self.stopped.set()
        with self.lock:
            self.stopping = True
            queued = list(self.calls)
        for call in queued:
            call.cancel()  # only calls not started yet; the running ones finish
        with ExitStack() as stack:  # every pool, even when waiting for one is interrupted
            for executor in self.executors:
                stack.callback(executor.shutdown, wait=True, cancel_futures=True)


def run_stages(
    items: Iterable[Any],
    stages: Sequence[Stage],
    *,
    max_in_flight: int = 64,
    name_item: Callable[[Any], str] | None = None,
) -> Iterator[Any]:
    """Every item through `stages`, results in input order. The first failure raises StageError
    (after the items before it were yielded), naming the item by its position and, with
    `name_item`, by `name_item(item)` of the item as given (its key, say: "merchant 'm-7'"), so
    that a failed task says which item to look at. When iterating `items` itself raises, the items
    it gave before come out first, then its exception, as it is. The arguments are checked when it is
    called, before any result is asked for."""
    if not stages:
        raise ValueError("a stage pipeline needs at least one stage")
    if not _is_count(max_in_flight):
        raise ValueError(f"max_in_flight must be a whole number >= 1, got {max_in_flight!r}")
    if name_item is not None and not callable(name_item):
        raise ValueError(f"name_item must be a function of an item, got {name_item!r}")
    return _results(items, stages, max_in_flight, name_item)


def _results(
    items: Iterable[Any],
    stages: Sequence[Stage],
    max_in_flight: int,
    name_item: Callable[[Any], str] | None,
) -> Iterator[Any]:
    pipeline = _Pipeline(stages, name_item)
    try:
        for stage in stages:
            pipeline.executors.append(_executor(stage, pipeline.stopped))
        pending: deque[Future] = deque()
        source = iter(items)
        input_error: Exception | None = None
        for index in count():
            try:
                item = next(source)
            except StopIteration:
                break
            except Exception as error:  # raised once the items before it, already inside, came out
                input_error = error
                break
            pending.append(pipeline.through_stages(item, index))
            if len(pending) >= max_in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        if input_error is not None:
            raise input_error
    finally:
        # On a failure, an early close or Ctrl-C, drop the queued items of every stage instead of
        # running them all first: only the ones already running are waited for.
        pipeline.stop()
