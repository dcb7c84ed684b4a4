"""Stage pipelines stopped part-way, on real thread and process pools: what still runs after a
failure or an early close, and what a broken process pool is blamed on."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from featurelake.stages import Stage, StageError, run_stages
from tests.unit.stage_calls import StageCalls


def slow_on_one(x: int) -> int:
    if x == 1:
        time.sleep(1.5)  # still running when the consumer stops the pipeline
    return x


def exit_on_three(x: int) -> int:
    if x == 2:
        time.sleep(30)  # still running when item 3 kills its worker; the broken pool ends it
    if x == 3:
        os._exit(1)
    return x


class TwoArgumentError(Exception):
    """An exception whose pickled form cannot be rebuilt (`__init__` wants two arguments)."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(what)
        self.detail = detail


def raise_unreadable_on_one(x: int) -> int:
    if x == 1:
        raise TwoArgumentError("refused", "because")
    return x


class Starts(StageCalls):
    """StageCalls whose items from 3 on hold the stage's only worker until the stop, so items 4..
    wait in its queue however slow the machine: none can start before the stop, and none may
    after it."""

    def __init__(self, stopping: threading.Event) -> None:
        super().__init__(stopping)
        self.three_running = threading.Event()

    def record(self, x: int) -> None:
        super().record(x)
        if x == 3:
            self.three_running.set()
        if x >= 3:
            self.stopping.wait(10)


@pytest.mark.parametrize("later_pool", ["thread", "process"])
def test_closing_early_drops_the_queued_items_of_every_stage(
    later_pool: str, pools_stopping: threading.Event
) -> None:
    starts = Starts(pools_stopping)

    def first(x: int) -> int:
        starts.record(x)
        return x

    stages = [Stage("first", first, workers=1), Stage("later", slow_on_one, pool=later_pool, workers=1)]
    results = run_stages(range(100), stages, max_in_flight=40)
    assert next(results) == 0
    assert starts.three_running.wait(30)  # item 3 is in "first", items 4-39 wait in its queue
    results.close()  # while "later" still runs item 1
    # "first" was not left to work through its queue while the close waited for "later"
    assert starts.after_stop == [], starts.after_stop
    assert starts.all == [0, 1, 2, 3]


def test_a_failure_drops_the_queued_items_of_the_stages_before_it(pools_stopping: threading.Event) -> None:
    starts = Starts(pools_stopping)
    one_is_running = threading.Event()

    def first(x: int) -> int:
        starts.record(x)
        return x

    def check(x: int) -> int:
        if x == 0:
            one_is_running.wait(10)
            starts.three_running.wait(10)  # items 4.. wait in the queue of "first"
            raise ValueError("zero")
        if x == 1:
            one_is_running.set()
            time.sleep(1.5)  # still running when the failure stops the pipeline
        return x

    stages = [Stage("first", first, workers=1), Stage("check", check, workers=2)]
    with pytest.raises(StageError, match="stage 'check' failed on item 0: ValueError"):
        list(run_stages(range(100), stages, max_in_flight=40))
    assert starts.after_stop == [], starts.after_stop
    assert starts.all == [0, 1, 2, 3]


def mark_then_hold_one(item: tuple[str, int]) -> int:
    """Leaves `<x>.started` in the directory; item 1 then holds the only worker until `release`."""
    directory, x = item
    Path(directory, f"{x}.started").touch()
    release = Path(directory, "release")
    deadline = time.monotonic() + 60
    while x == 1 and not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return x


def test_a_stop_skips_the_calls_a_process_pool_already_handed_to_its_workers(
    tmp_path: Path, pools_stopping: threading.Event
) -> None:
    """A process pool moves up to `workers + 1` calls into its call queue ahead of the workers,
    where cancel() no longer reaches them: a stop (an early close, a failure, Ctrl-C) waited for
    them to run, one after another, after the running ones."""
    stages = [Stage("hold", mark_then_hold_one, pool="process", workers=1)]
    results = run_stages([(str(tmp_path), x) for x in range(8)], stages, max_in_flight=8)
    assert next(results) == 0
    deadline = time.monotonic() + 60
    while not (tmp_path / "1.started").exists():  # item 2 waits in the pool's call queue
        assert time.monotonic() < deadline, "item 1 never started"
        time.sleep(0.01)

    def release_once_stopping() -> None:
        if pools_stopping.wait(60):
            (tmp_path / "release").touch()

    releaser = threading.Thread(target=release_once_stopping)
    releaser.start()
    results.close()
    releaser.join()
    assert sorted(path.name for path in tmp_path.glob("*.started")) == ["0.started", "1.started"]


def test_a_worker_that_dies_breaks_the_pool_and_the_error_says_so() -> None:
    seen: list[int] = []
    with pytest.raises(StageError) as caught:
        for value in run_stages(range(8), [Stage("die", exit_on_three, pool="process", workers=2)]):
            seen.append(value)
    assert seen == [0, 1]
    message = str(caught.value)
    # Item 2 is the first one lost, but item 3 killed the worker: the error must not blame item 2.
    assert message.startswith("stage 'die' lost item 2: its process pool broke"), message
    assert "failed on item 2" not in message
    assert "A worker process died" in message, message


def test_a_broken_pool_names_the_lost_item_by_name_item_too() -> None:
    with pytest.raises(StageError) as caught:
        list(
            run_stages(
                range(8),
                [Stage("die", exit_on_three, pool="process", workers=2)],
                name_item=lambda x: f"n{x}",
            )
        )
    assert str(caught.value).startswith("stage 'die' lost item 2 (n2): its process pool broke"), caught.value


def test_a_result_that_cannot_be_unpickled_is_named_in_the_error() -> None:
    stage = Stage("unreadable", raise_unreadable_on_one, pool="process", workers=1)
    with pytest.raises(StageError) as caught:
        list(run_stages(range(4), [stage]))
    message = str(caught.value)
    assert message.startswith("stage 'unreadable' lost item 1: its process pool broke"), message
    # what broke the pool: the parent could not rebuild the worker's exception
    assert "TypeError: TwoArgumentError.__init__() missing 1 required positional argument" in message


def step(item: tuple[int, int, int]) -> tuple[int, int, int]:
    """(index, the stage that refuses it or -1, stages passed) -> the same, one stage further."""
    index, refused_by, passed = item
    if passed == refused_by:
        raise ValueError(f"refused {index}")
    return index, refused_by, passed + 1


def test_random_pipelines_agree_with_a_model() -> None:
    rng = random.Random(20261205)
    for _ in range(10):
        stages = [
            Stage(f"s{k}", step, pool=rng.choice(["thread", "process"]), workers=rng.randint(1, 3))
            for k in range(rng.randint(1, 3))
        ]
        count, bound = rng.randint(0, 40), rng.randint(1, 6)
        refused = {i: rng.randrange(len(stages)) for i in range(count) if rng.random() < 0.05}
        pulled: list[int] = []

        def source(n: int = count, taken: list[int] = pulled, refused: dict[int, int] = refused):
            for i in range(n):
                taken.append(i)
                yield i, refused.get(i, -1), 0

        out: list[int] = []
        error = None
        try:
            for index, _, passed in run_stages(source(), stages, max_in_flight=bound):
                assert passed == len(stages)
                out.append(index)
                # the items taken from the input and not handed out yet: never more than the bound
                assert len(pulled) - len(out) <= bound - 1, (len(pulled), len(out), bound)
        except StageError as caught:
            error = str(caught)
        first = min(refused, default=count)
        assert out == list(range(first)), "every item before the first refused one, in order"
        if refused:
            assert error == f"stage 's{refused[first]}' failed on item {first}: ValueError('refused {first}')"
        else:
            assert error is None
