"""Differential test of the delta-rs materialized view: random sequences of feature-job runs
(partitions written, rewritten, emptied, split into several files) and refreshes (incremental in any
order with reruns, full of any date), then every date merged once more; the view must equal a full
refresh of the same partitions, row by row."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurelake.materialized_views import refresh_full, refresh_incremental
from tests.feature_view_partitions import D1, rows_of, write_partition

pytestmark = pytest.mark.integration

DAYS = [D1 + timedelta(days=i) for i in range(4)]


def write_day(features: Path, day: date, rnd: random.Random, *, at_least_one: bool = False) -> None:
    """The feature job's output for `day`: some of the users, maybe none (no partition, or an empty
    one), maybe in two files."""
    partition = features / f"date={day.isoformat()}"
    if partition.exists():
        shutil.rmtree(partition)
    users = {user: float(rnd.randint(-5, 50)) for user in "abcdef" if rnd.random() < 0.5}
    if at_least_one and not users:
        users = {"a": 1.0}
    if not users:
        if rnd.random() < 0.5:  # an empty directory; the feature job leaves the date absent
            partition.mkdir(parents=True)
        return
    write_partition(features, day, users)
    if len(users) > 1 and rnd.random() < 0.3:  # as a writer with two tasks leaves it
        path = partition / "part-00000.snappy.parquet"
        table = pq.read_table(path)
        pq.write_table(table.slice(0, 1), path)
        pq.write_table(table.slice(1), partition / "part-00001.snappy.parquet")


def refresh_randomly(
    rnd: random.Random,
    features: Path,
    *,
    write_day: Callable[..., None],
    incremental: Callable[[date], object],
    full: Callable[[date], object],
    most_steps: int,
) -> list[str]:
    """A random sequence of rewrites and refreshes of DAYS, then an incremental refresh of every date
    not merged yet: the steps taken."""
    for day in DAYS:
        write_day(features, day, rnd, at_least_one=day == D1)
    merged: set[date] = set()
    steps: list[str] = []
    for _ in range(rnd.randint(2, most_steps)):
        day, action = rnd.choice(DAYS), rnd.random()
        if action < 0.25 and day != D1:
            write_day(features, day, rnd)
            steps.append(f"rewrite {day}")
            if day in merged:  # the DAG reruns the refresh after its feature job
                incremental(day)
                steps.append(f"incremental {day}")
        elif action < 0.4:
            full(day)
            merged |= {d for d in DAYS if d <= max([day, *merged])}
            steps.append(f"full {day}")
        else:
            incremental(day)
            merged |= {d for d in DAYS if d <= day} if not merged else {day}
            steps.append(f"incremental {day}")
    for day in rnd.sample(DAYS, len(DAYS)):
        if day not in merged:
            incremental(day)
            steps.append(f"incremental {day}")
    return steps


@pytest.mark.parametrize("seed", range(10))
def test_any_sequence_of_refreshes_equals_a_full_refresh(tmp_path: Path, seed: int) -> None:
    features, view = tmp_path / "features" / "user_features", tmp_path / "views" / "v"
    steps = refresh_randomly(
        random.Random(seed),
        features,
        write_day=write_day,
        incremental=lambda day: refresh_incremental(str(view), str(features), ds=day),
        full=lambda day: refresh_full(str(view), str(features), as_of=day),
        most_steps=8,
    )
    reference = tmp_path / "views" / "reference"
    refresh_full(str(reference), str(features), as_of=DAYS[-1])
    assert rows_of(view) == rows_of(reference), steps
