"""`OnlineStore.write` and the feature dates of the records it is given, on real Redis servers (a
ring and a Redis Cluster): the write script compares dates as YYYY-MM-DD text, so a record is
written with its date in that form, or refused naming its entity."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig

pytestmark = pytest.mark.integration

VIEW = "user_features"


def _configs(redis_nodes: list[str], redis_cluster: list[str]) -> list[OnlineStoreConfig]:
    return [
        OnlineStoreConfig(nodes=redis_nodes[:2]),
        OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True),
    ]


def test_a_record_dated_by_a_date_object_is_written_as_iso_text(
    redis_nodes: list[str], redis_cluster: list[str]
) -> None:
    for config in _configs(redis_nodes, redis_cluster):
        with OnlineStore(config) as store:
            try:
                report = store.write(
                    VIEW,
                    [
                        ("a", FeatureRecord(date(2026, 10, 28), {"n": 1})),
                        ("b", FeatureRecord("2026-10-28", {"n": 1})),
                        ("b", FeatureRecord(date(2026, 10, 29), {"n": 2})),  # the later date wins
                    ],
                )
                assert report.written == 2
                assert store.read(VIEW, ["a", "b"]) == {
                    "a": FeatureRecord("2026-10-28", {"n": 1}),
                    "b": FeatureRecord("2026-10-29", {"n": 2}),
                }
            finally:
                store.delete(VIEW, ["a", "b"])


@pytest.mark.parametrize("feature_date", ["2026-10-28T10:00:00", "2026-10-28 ", datetime(2026, 10, 28, 10)])
def test_a_record_whose_date_is_not_a_day_is_refused_naming_its_entity(
    redis_nodes: list[str], redis_cluster: list[str], feature_date: object
) -> None:
    # Stored as given, "2026-10-28T10:00:00" sorts after "2026-10-28": the rerun of that date
    # would then be kept out as older than the record it corrects.
    for config in _configs(redis_nodes, redis_cluster):
        with OnlineStore(config) as store:
            try:
                with pytest.raises(
                    ValueError, match="view 'user_features', entity 'u-1': feature_date must be"
                ):
                    store.write(VIEW, [("u-1", FeatureRecord(feature_date, {"v": "bad"}))])
                assert store.read(VIEW, ["u-1"]) == {}
                rerun = store.write(VIEW, [("u-1", FeatureRecord("2026-10-28", {"v": "rerun"}))])
                assert (rerun.written, rerun.kept_newer) == (1, 0)
            finally:
                store.delete(VIEW, ["u-1"])
