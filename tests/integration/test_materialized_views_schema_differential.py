"""Differential test of the delta-rs materialized view under the schema drift of a pandas writer:
random sequences as in test_materialized_views_differential, where a date's partition may also
hold a column null on every row (Arrow's null type, Delta's void) or its feature_date as a
timestamp, and refreshes are retried under their run's key; the view must equal a full refresh of
the same partitions, row by row. It found a MERGE with schema evolution giving an older date's
value to newer rows (test_materialized_views.py pins the shortest sequence)."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake.materialized_views import refresh_full, refresh_view
from tests.feature_view_partitions import rows_of
from tests.integration.test_materialized_views_differential import DAYS, refresh_randomly
from tests.integration.test_materialized_views_differential import write_day as write_day_of_spark

pytestmark = pytest.mark.integration


def write_day(features: Path, day: date, rnd: random.Random, *, at_least_one: bool = False) -> None:
    """The feature job's output for `day`, maybe with no category group at all, maybe dated with
    timestamps."""
    write_day_of_spark(features, day, rnd, at_least_one=at_least_one)
    untyped, timestamps = rnd.random() < 0.4, rnd.random() < 0.3
    for path in (features / f"date={day.isoformat()}").glob("*.parquet"):
        table = pq.read_table(path)
        if untyped:
            index = table.schema.get_field_index("top_category_group")
            table = table.set_column(index, "top_category_group", pa.nulls(table.num_rows))
        if timestamps:
            index = table.schema.get_field_index("feature_date")
            table = table.set_column(index, "feature_date", table["feature_date"].cast(pa.timestamp("ns")))
        pq.write_table(table, path)


@pytest.mark.parametrize("seed", [51, 58, *range(8)])
def test_any_sequence_with_schema_drift_equals_a_full_refresh(tmp_path: Path, seed: int) -> None:
    features, view = tmp_path / "features" / "user_features", tmp_path / "views" / "v"
    steps = refresh_randomly(
        random.Random(seed),
        features,
        write_day=write_day,
        incremental=lambda day: refresh_view(str(view), str(features), ds=day, run_key=f"run {day}"),
        full=lambda day: refresh_view(str(view), str(features), ds=day, mode="full", run_key=f"run {day}"),
        most_steps=12,
    )
    reference = tmp_path / "views" / "reference"
    refresh_full(str(reference), str(features), as_of=DAYS[-1])
    assert rows_of(view) == rows_of(reference), steps
