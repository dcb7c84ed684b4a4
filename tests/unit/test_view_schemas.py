"""How a full refresh of a materialized view unifies the partitions' schemas, and what an incremental
one accepts (featurelake.materialized_views; no Delta table needed)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from featurelake.materialized_views import _check_entities, _conform, _fit_to_view, _unify_schemas

OLD = pa.schema([("user_id", pa.string()), ("spend", pa.float64()), ("note", pa.null())])


def test_new_columns_come_after_the_old_ones_and_a_null_column_takes_the_other_type() -> None:
    new = pa.schema([("extra", pa.int64()), ("user_id", pa.large_string()), ("note", pa.string())])
    schema = _unify_schemas(OLD, new, "date=2026-10-28")
    assert [(f.name, f.type) for f in schema] == [
        ("user_id", pa.string()),  # a Delta table stores both as string
        ("spend", pa.float64()),
        ("note", pa.string()),
        ("extra", pa.int64()),
    ]
    table = _conform(pa.table({"user_id": ["a"], "spend": [1.0], "note": pa.nulls(1)}), schema)
    assert table.to_pylist() == [{"user_id": "a", "spend": 1.0, "note": None, "extra": None}]


def test_a_changed_type_names_the_partition_and_the_column() -> None:
    with pytest.raises(
        ValueError, match=r"^date=2026-10-28: column 'spend' is int64, but double in the older"
    ):
        _unify_schemas(OLD, pa.schema([("spend", pa.int64())]), "date=2026-10-28")


def test_an_incremental_refresh_takes_only_the_views_columns() -> None:
    view = pa.schema([("user_id", pa.string()), ("spend", pa.float64())])
    rows = pa.table({"spend": [1.0], "user_id": pa.array(["a"], pa.large_string())})
    assert _fit_to_view(rows, view, "p", "v").schema == view
    with pytest.raises(
        ValueError, match=r"^p does not have the columns of the view v \(view columns it lacks: spend\)"
    ):
        _fit_to_view(rows.drop_columns(["spend"]), view, "p", "v")
    older = _fit_to_view(rows.drop_columns(["spend"]), view, "p", "v", allow_missing=True)
    assert older.to_pylist() == [{"user_id": "a", "spend": None}]


def test_a_null_entity_is_not_called_a_repeated_one() -> None:
    with pytest.raises(ValueError, match=r"^p has 2 row\(s\) with a null 'user_id'"):
        _check_entities(pa.table({"user_id": ["a", None, None]}), "user_id", "p")


def test_a_view_column_with_no_type_takes_the_partitions() -> None:
    view = pa.schema([("user_id", pa.string()), ("group", pa.null())])
    rows = pa.table({"user_id": ["a"], "group": pa.array(["food"], pa.large_string())})
    assert _fit_to_view(rows, view, "p", "v").schema == pa.schema(
        [("user_id", pa.string()), ("group", pa.string())]
    )
    assert _fit_to_view(rows.drop_columns(["group"]), view, "p", "v", allow_missing=True).schema == view


def test_a_column_renamed_only_in_case_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"^date=2026-10-28: column 'Spend' differs only in case from 'spend'"
    ):
        _unify_schemas(OLD, pa.schema([("user_id", pa.string()), ("Spend", pa.float64())]), "date=2026-10-28")


def test_a_changed_type_asks_for_the_older_partitions_before_a_full_refresh() -> None:
    """A full refresh refuses a column typed otherwise in an older partition, so an incremental
    refresh that meets a changed type must not ask for the full refresh alone."""
    view = pa.schema([("user_id", pa.string()), ("spend", pa.float64())])
    rows = pa.table({"user_id": ["a"], "spend": ["1.0"]})
    with pytest.raises(
        ValueError,
        match=r"^p does not have the columns of the view v \(columns of another type: spend \(string, "
        r"the view's is double\)\).*Rerun the feature job for the older dates so that every partition "
        r"has the new type .*then refresh the view in full \(view_refresh=full\)$",
    ):
        _fit_to_view(rows, view, "p", "v")
    with pytest.raises(ValueError, match=r"view columns it lacks: spend\)\:.*\. Refresh the view in full"):
        _fit_to_view(rows.drop_columns(["spend"]), view, "p", "v")
