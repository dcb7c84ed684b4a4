"""Where things live in the lake. Every path is derived from one root, so no code names a bucket."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

# The data contract's rule 4a (docs/data-contract.md): the largest amount, in absolute value, a row
# may hold. Its micro-units (9e18) fit in a 64-bit integer (at most about 9.22e18), and so does its
# square in decimal(38,0). Larger amounts, and infinite ones, are invalid (`invalid_amount`).
MAX_ABS_AMOUNT = 9e12


def iso_day(value: str) -> date | None:
    """The date `value` names as exactly YYYY-MM-DD, or None for any other text.

    Stricter than `date.fromisoformat`, which also takes `20260301`, `2026-W09-7` and `2026-060`:
    a `date=` directory, or a run date, so named is not the partition of its date (a replace, a
    lookup or a pruned read of that date names `YYYY-MM-DD`)."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    return day if day.isoformat() == value else None


def run_date_argument(value: str) -> date:
    """The argparse type of a job's `--ds`: exactly YYYY-MM-DD, the form the lake's `date=`
    partitions and the report paths use (`iso_day`)."""
    day = iso_day(value)
    if day is None:
        raise argparse.ArgumentTypeError(f"must be a date as YYYY-MM-DD (e.g. 2026-09-10), got {value!r}")
    return day


def window_start(ds: date, window_days: int) -> date:
    """The first date of the window [ds - (W-1), ds], checked: W >= 1, and the window starts in
    year 1 or later (a longer one failed with a bare OverflowError, on every retry)."""
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    longest = (ds - date.min).days + 1
    if window_days > longest:
        raise ValueError(
            f"window_days {window_days} reaches before year 1 from {ds}; give a window of at most {longest} days"
        )
    return ds - timedelta(days=window_days - 1)


def local_path(location: str, *, what: str, remedy: str) -> Path:
    """The local path of `location`, given as a path or a `file://` URI, for writers of local files.
    Another scheme (s3://, gs://...) is refused: `what` names the location and `remedy` says what
    to do instead. An empty location is refused too: it names no directory, and as a relative path
    it would mean the current one. So is a `file:` URI not of the form `file:///absolute/path`
    (`file:/x`, `file://host/x`): taken as a relative path, it would land under the current one."""
    path = location.removeprefix("file://")
    if not path:
        raise ValueError(f"{what} {location!r} names no directory: pass a local path or a file:// URI")
    if "://" in path:
        raise ValueError(f"{what} {location} is not a local path: {remedy}")
    if location.startswith("file:") and not path.startswith("/"):
        raise ValueError(
            f"{what} {location} is not a file:// URI of an absolute path: pass a local path, or "
            "file:// followed by an absolute path, such as file:///data/lake"
        )
    return Path(path)


def is_data_file(name: str) -> bool:
    """Whether a file name in a partition is data a reader must see: a `.parquet` file whose name
    does not start with `.` or `_` (writers' temporary files and markers, as Spark and pyarrow skip)."""
    return name.endswith(".parquet") and not name.startswith((".", "_"))


@dataclass(frozen=True)
class LakeLayout:
    """Paths of featurelake's datasets under `root` (a local path or any URI Spark understands)."""

    root: str

    def __post_init__(self) -> None:
        if not self.root:
            raise ValueError("lake root is empty; set AIRFLOW_VAR_FEATURELAKE_LAKE or pass --lake")
        object.__setattr__(self, "root", self.root.rstrip("/"))

    def _join(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    @property
    def raw_transactions(self) -> str:
        return self._join("raw", "transactions")

    @property
    def raw_categories(self) -> str:
        return self._join("raw", "categories")

    @property
    def quarantine_transactions(self) -> str:
        return self._join("quarantine", "transactions")

    @property
    def raw_merchant_profiles(self) -> str:
        return self._join("raw", "merchant_profiles")

    @property
    def quarantine_merchant_profiles(self) -> str:
        return self._join("quarantine", "merchant_profiles")

    @property
    def user_daily_tiles(self) -> str:
        return self._join("tiles", "user_daily")

    def features(self, name: str) -> str:
        """A date-partitioned feature dataset."""
        return self._join("features", name)

    @property
    def merchant_stats(self) -> str:
        return self.features("merchant_stats")

    @property
    def user_features(self) -> str:
        return self.features("user_features")

    def view(self, name: str) -> str:
        """A materialized view's Delta table (featurelake.materialized_views)."""
        return self._join("views", name)

    @staticmethod
    def partition(path: str, day: date, *, column: str = "date") -> str:
        """The Hive-style directory of one date under a dataset path."""
        return f"{path.rstrip('/')}/{column}={day.isoformat()}"

    def staging_root(self, job: str) -> str:
        """The directory of a job's runs' scratch directories (`staging`) and plans (`run_plan`)."""
        return self._join("_staging", job)

    def staging(self, job: str, day: date) -> str:
        """A job run's scratch directory, which every worker of a cluster reaches; the job removes it."""
        return f"{self.staging_root(job)}/date={day.isoformat()}"

    def run_plan(self, job: str, day: date) -> str:
        """The JSON file in which a job run keeps its plan until it succeeds, so that a retry of a
        failed or killed run does what that run would have done (outside `staging`, which a failed
        run removes)."""
        return self._join("_staging", job, "_plans", f"{day.isoformat()}.json")

    def run_metrics(self, job: str, day: date) -> str:
        """The JSON file in which a job run reports its counts (read back by the Airflow operator)."""
        return self._join("_metrics", job, f"date={day.isoformat()}.json")
