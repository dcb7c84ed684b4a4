"""The compute layer's bad input, refused naming it and what to pass instead, whatever the type of
the partition's entity column: entity ids that are not text (the online store's keys hold them as
text), one string passed as the ids, an `as_of` that is not a date, an empty features path, and a
file passed as the features path."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurelake.feature_records import FeatureRecord
from featurelake.offline_features import read_offline_features

pytestmark = pytest.mark.integration

DAY = date(2030, 1, 1)


@pytest.fixture(params=[pytest.param(["u1", "7"], id="text-column"), pytest.param([1, 7], id="int-column")])
def features(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    partition = tmp_path / f"date={DAY.isoformat()}"
    partition.mkdir()
    table = pa.table({"user_id": request.param, "v": [1.0, 2.0]})
    pq.write_table(table, partition / "part-00000.parquet")
    return str(tmp_path)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        # Before: {} from an int column (the row of 7 is keyed '7'), an ArrowTypeError naming no id
        # from a text one.
        pytest.param([7], r"got 7 \(int\): pass str\(id\)", id="int"),
        # Before: {} from an int column; from a text one, found but keyed '7', not b'7'.
        pytest.param([b"7"], r"got b'7' \(bytes\): pass id.decode\(\)", id="bytes"),
        # Before: left out silently.
        pytest.param(["7", None], r"got None \(NoneType\)", id="none"),
        # Before: read as the ids 'u' and '1'.
        pytest.param("u1", r"got the string 'u1'; pass a list such as \['u1'\]", id="one-string"),
    ],
)
def test_ids_that_are_not_text_are_refused_naming_them(features: str, ids: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        read_offline_features(features, ids, as_of=DAY)  # type: ignore[arg-type]


def test_text_ids_are_read_from_either_column(features: str) -> None:
    assert read_offline_features(features, ["7", "8"], as_of=DAY) == {
        "7": FeatureRecord(DAY.isoformat(), {"v": 2.0})
    }


def test_ids_are_checked_on_an_empty_lake_too(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"got 7 \(int\)"):
        read_offline_features(str(tmp_path / "none"), [7], as_of=DAY)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        # Before: "can't compare datetime.datetime to datetime.date", naming neither.
        pytest.param(
            datetime(2030, 1, 1, 12, tzinfo=UTC),
            r"as_of must be a datetime\.date, got the datetime",
            id="datetime",
        ),
        # Before: "'<=' not supported between instances of 'datetime.date' and 'str'".
        pytest.param("2030-01-01", r"as_of must be a datetime\.date, got str '2030-01-01'", id="string"),
    ],
)
def test_an_as_of_that_is_not_a_date_is_refused_naming_it(features: str, as_of: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        read_offline_features(features, ["7"], as_of=as_of)  # type: ignore[arg-type]


def test_an_as_of_that_is_not_a_date_is_refused_on_an_empty_lake_too(tmp_path: Path) -> None:
    """Before: {}, as no partition was compared with it."""
    with pytest.raises(TypeError, match=r"as_of must be a datetime\.date"):
        read_offline_features(str(tmp_path / "none"), ["7"], as_of="2030-01-01")  # type: ignore[arg-type]


def test_an_empty_features_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: {} for every id, as from a lake with no partition (pyarrow lists nothing for ''),
    even run from a directory that holds date partitions: an unset setting served no features."""
    partition = tmp_path / f"date={DAY.isoformat()}"
    partition.mkdir()
    pq.write_table(pa.table({"user_id": ["u1"], "v": [1.0]}), partition / "part-00000.parquet")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"the features path is empty"):
        read_offline_features("", ["u1"], as_of=DAY)


def test_a_features_path_that_is_a_file_is_refused_naming_it(features: str) -> None:
    """Before: pyarrow's bare "Cannot list directory ... Not a directory", for a partition's file
    passed as the dataset."""
    a_file = next(Path(features).glob("date=*/*.parquet"))
    with pytest.raises(NotADirectoryError, match=rf"{a_file} is a file, not a directory of date partitions"):
        read_offline_features(str(a_file), ["u1"], as_of=DAY)
