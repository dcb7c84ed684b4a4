"""Stage pipelines on thread and process pools: order, overlap, bounds and errors."""

from __future__ import annotations

import os
import threading
import time
import traceback

import pytest

from featurelake.stages import Stage, StageError, run_stages
from tests.unit.stage_calls import StageCalls


def add_one(x: int) -> int:
    return x + 1


def double_with_pid(x: int) -> tuple[int, int]:
    return x * 2, os.getpid()


def look_up_missing(x: int) -> int:
    return {"a": 1}[f"missing-{x}"]


def test_items_go_through_every_stage_in_input_order_on_their_pools() -> None:
    def slow_on_odd(x: int) -> int:
        time.sleep(0.02 if x % 2 else 0)  # later items overtake earlier ones inside the pool
        return x

    stages = [
        Stage("jitter", slow_on_odd, pool="thread", workers=4),
        Stage("add", add_one, pool="thread", workers=2),
        Stage("double", double_with_pid, pool="process", workers=2),
    ]
    out = list(run_stages(range(30), stages))
    assert [value for value, _ in out] == [(x + 1) * 2 for x in range(30)]
    assert os.getpid() not in {pid for _, pid in out}, "the process stage ran in worker processes"


def test_stages_overlap_and_in_flight_items_are_bounded() -> None:
    lock = threading.Lock()
    inside = {"now": 0, "most": 0}

    def enter(x: int) -> int:
        with lock:
            inside["now"] += 1
            inside["most"] = max(inside["most"], inside["now"])
        time.sleep(0.01)
        return x

    def leave(x: int) -> int:
        time.sleep(0.01)
        with lock:
            inside["now"] -= 1
        return x

    out = list(
        run_stages(
            range(40), [Stage("in", enter, workers=4), Stage("out", leave, workers=4)], max_in_flight=6
        )
    )
    assert out == list(range(40))
    # several items were inside at once (the pools work in parallel), never more than the bound
    assert 2 <= inside["most"] <= 6, inside


def test_a_failing_item_names_its_stage_and_position() -> None:
    def refuse_seven(x: int) -> int:
        if x == 7:
            raise ValueError("seven")
        return x

    seen = []
    with pytest.raises(StageError, match=r"stage 'check' failed on item 7: ValueError\('seven'\)"):
        for value in run_stages(range(10), [Stage("check", refuse_seven)], max_in_flight=2):
            seen.append(value)
    assert seen == list(range(7)), "the items before the failure came out"


def refuse_odd_totals(pair: tuple[str, int]) -> tuple[str, int]:
    if pair[1] % 2:
        raise ValueError(f"odd total {pair[1]}")
    return pair


def total_of(pair: tuple[str, int]) -> tuple[str, int]:
    return pair[0], pair[1] + 1


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_name_item_names_the_failed_item_as_given_whatever_stage_it_reached(pool: str) -> None:
    """The second stage refuses ("a", 1), which the first made of ("a", 0); the error names the
    item as given to run_stages, by its position and its key."""
    items = [("a", 0), ("b", 2), ("c", 4)]
    stages = [Stage("total", total_of, workers=1), Stage("check", refuse_odd_totals, pool=pool, workers=1)]
    seen = []
    with pytest.raises(StageError) as caught:
        for value in run_stages(items, stages, name_item=lambda pair: f"key {pair[0]!r}"):
            seen.append(value)
    assert str(caught.value) == "stage 'check' failed on item 0 (key 'a'): ValueError('odd total 1')"
    assert seen == [] and isinstance(caught.value.__cause__, ValueError)


def test_a_name_item_that_raises_leaves_the_position_and_the_pipeline_ends() -> None:
    def refuse(x: int) -> int:
        raise ValueError("no")

    with pytest.raises(StageError) as caught:
        list(run_stages([{"id": 1}], [Stage("load", refuse, workers=1)], name_item=lambda item: item["key"]))
    assert str(caught.value) == "stage 'load' failed on item 0 (its name failed: KeyError): ValueError('no')"


def test_name_item_must_be_a_function() -> None:
    with pytest.raises(ValueError, match="name_item must be a function of an item, got 'id'"):
        run_stages([1], [Stage("s", add_one)], name_item="id")  # type: ignore[arg-type]


class _Detached:
    """What a detached ORM row does when shown."""

    def __repr__(self) -> str:
        raise AttributeError("'Row' object has no attribute 'id'")


def _refuse_with_a_detached_row(x: int) -> int:
    raise ValueError("bad row", _Detached())


def test_a_stage_error_whose_repr_fails_still_ends_the_pipeline() -> None:
    """The failure's message was built in the future's done-callback, whose errors concurrent.futures
    logs and drops: the item never finished, and the pipeline waited for it forever."""
    outcome: dict[str, BaseException] = {}

    def consume() -> None:
        try:
            list(run_stages([1, 2], [Stage("load", _refuse_with_a_detached_row, workers=1)]))
        except BaseException as error:
            outcome["error"] = error

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    consumer.join(timeout=30)
    assert not consumer.is_alive(), "run_stages hung on an exception it could not show"
    error = outcome["error"]
    assert isinstance(error, StageError) and isinstance(error.__cause__, ValueError)
    assert "stage 'load' failed on item 0: ValueError (its repr failed: AttributeError)" in str(error)


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_stage_error_keeps_the_stage_exception_and_its_traceback(pool: str) -> None:
    with pytest.raises(StageError, match=r"stage 'look' failed on item 0: KeyError\('missing-5'\)") as caught:
        list(run_stages([5], [Stage("look", look_up_missing, pool=pool, workers=1)]))
    cause = caught.value.__cause__
    assert isinstance(cause, KeyError) and cause.args == ("missing-5",)
    text = "".join(traceback.format_exception(caught.value))
    # where the stage function failed: in this process's frames, or a worker's remote traceback
    assert "in look_up_missing" in text and 'return {"a": 1}[f"missing-{x}"]' in text, text
    assert "The above exception was the direct cause of the following exception" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"pool": "fiber"}, "pool must be", id="pool"),
        pytest.param({"workers": 0}, "workers must be", id="workers"),
        pytest.param({"workers": 2.5}, "workers must be a whole number >= 1, got 2.5", id="workers-fraction"),
        pytest.param({"workers": True}, "workers must be a whole number", id="workers-flag"),
    ],
)
def test_bad_stages_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Stage("s", add_one, **kwargs)


@pytest.mark.parametrize(
    ("stages", "max_in_flight", "message"),
    [
        pytest.param([], 4, "at least one stage", id="no-stage"),
        pytest.param([Stage("s", add_one)], 0, "max_in_flight must be a whole number >= 1, got 0", id="zero"),
        pytest.param(
            [Stage("s", add_one)], 2.5, "max_in_flight must be a whole number >= 1, got 2.5", id="fraction"
        ),
    ],
)
def test_a_bad_pipeline_is_refused_when_it_is_called_not_when_first_read(
    stages: list, max_in_flight: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run_stages([1], stages, max_in_flight=max_in_flight)  # never iterated


@pytest.mark.parametrize("max_in_flight", [1, 3, 64])
def test_an_input_that_raises_gives_the_items_before_it_then_its_error(max_in_flight: int) -> None:
    def feed():
        yield from range(5)
        raise OSError("the feed broke after 5 items")

    seen = []
    with pytest.raises(OSError, match="the feed broke after 5 items"):
        for value in run_stages(feed(), [Stage("add", add_one, workers=2)], max_in_flight=max_in_flight):
            seen.append(value)
    assert seen == [1, 2, 3, 4, 5], "the items the input gave before its error came out"


def test_an_item_failing_before_the_input_breaks_raises_first() -> None:
    def feed():
        yield from range(3)
        raise OSError("the feed broke")

    with pytest.raises(StageError, match="failed on item 1"):
        list(run_stages(feed(), [Stage("check", lambda x: 1 / (x - 1))], max_in_flight=8))


def test_a_failure_drops_the_queued_items_instead_of_running_them_first(
    pools_stopping: threading.Event,
) -> None:
    started = StageCalls(pools_stopping)
    one_is_running = threading.Event()

    def refuse_zero(x: int) -> int:
        started.record(x)
        if x == 0:
            one_is_running.wait(10)
            raise ValueError("zero")
        one_is_running.set()
        # Holds its worker until the stop, so the other items wait in the queue however slow the
        # machine: at most one more can start on the worker item 0 freed.
        pools_stopping.wait(10)
        return x

    with pytest.raises(StageError, match="failed on item 0"):
        list(run_stages(range(100), [Stage("check", refuse_zero, workers=2)], max_in_flight=40))
    # the items already running finish; the other ~37 in flight are dropped, not run
    assert started.after_stop == [], started.after_stop
    assert {0, 1} <= set(started.all) <= {0, 1, 2}, started.all


@pytest.mark.parametrize("interrupt", [False, True], ids=["closed-early", "ctrl-c"])
def test_stopping_the_consumer_drops_the_queued_items(
    interrupt: bool, pools_stopping: threading.Event
) -> None:
    started = StageCalls(pools_stopping)

    def slow(x: int) -> int:
        started.record(x)
        if x > 0:
            pools_stopping.wait(10)  # holds its worker until the stop: the others stay queued
        return x

    results = run_stages(range(100), [Stage("slow", slow, workers=2)], max_in_flight=40)
    assert next(results) == 0
    started.wait_for(1, 2)  # both workers busy, items 3-39 queued
    if interrupt:  # Ctrl-C while the consumer works on a result; it comes out unchanged
        with pytest.raises(KeyboardInterrupt):
            results.throw(KeyboardInterrupt)
    else:
        results.close()
    assert started.after_stop == [], started.after_stop
    assert sorted(started.all) == [0, 1, 2], started.all
    assert not [t for t in threading.enumerate() if t.name.startswith("stage-slow")], "workers stopped"
