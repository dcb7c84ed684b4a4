"""A task's templated arguments, checked before the task does anything: a value no retry can change
(a `ds` that is no date, an empty lake Variable, a window of 0 days) fails the task at once
(AirflowFailException), naming the argument and the form it takes, instead of failing every retry
with an error that names neither."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from airflow.sdk.exceptions import AirflowFailException


def run_date(value: object, *, task_id: str) -> date:
    """`ds`, the run's date, as a date."""
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise AirflowFailException(
            f"task {task_id}: ds must be the run's date as YYYY-MM-DD (such as '2030-01-01', which the "
            f"template {{{{ ds }}}} gives); got {value!r}"
        ) from None


def lake_root(value: object, *, task_id: str) -> str:
    """The lake's root, which may not be empty: an empty Variable made paths at the filesystem's
    root (`/raw/transactions/...`)."""
    text = str(value or "").strip()
    if text.rstrip("/") in ("", "file:"):  # "file://" ends as "file:"
        raise AirflowFailException(
            f"task {task_id}: the lake root is empty; set the Airflow Variable featurelake_lake "
            "(AIRFLOW_VAR_FEATURELAKE_LAKE) to the lake's path or URI, such as /data/lake or s3a://bucket/lake"
        )
    return text


def whole_number(value: object, *, name: str, task_id: str, minimum: int = 1) -> int:
    """A whole number of at least `minimum`, given as a number or its digits (a templated value)."""
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if number is None and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
    if number is None or number < minimum:
        raise AirflowFailException(
            f"task {task_id}: {name} must be a whole number >= {minimum}; got {value!r}"
        )
    return number


def one_of(value: object, choices: Sequence[str], *, name: str, task_id: str) -> str:
    """`value`, one of `choices`."""
    if value not in choices:
        raise AirflowFailException(
            f"task {task_id}: {name} must be one of {', '.join(choices)}; got {value!r}"
        )
    return str(value)
