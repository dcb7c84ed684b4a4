"""Fetch the profiles of one day's merchants from an HTTP API into the lake."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from featurelake_airflow.hooks.http_api import HttpApiHook
from featurelake_airflow.task_arguments import lake_root, run_date
from featurelake_airflow.task_process import child_processes_allowed


class FetchMerchantProfilesOperator(BaseOperator):
    """Fetch the profile of every merchant in `<lake>/raw/transactions/date=<ds>/` at the
    connection's rate limit, validate (threads) and enrich (processes) them, and replace
    `<lake>/raw/merchant_profiles/date=<ds>/` and `<lake>/quarantine/merchant_profiles/date=<ds>/`.
    A retry refetches and writes the same files. When more than the connection's
    `max_failed_fraction` of the merchants failed because of the API (an outage), or the API
    answered a 4xx such as 404 or 400 for every merchant (a wrong path or a missing header), it
    raises and writes nothing, so the partitions keep their last good data. A try with retries left also raises when any merchant failed because
    of the API, so that the retry fetches it again; the last try writes what it has. Returns the
    counts, quarantined ones by reason."""

    template_fields: Sequence[str] = ("lake", "ds")
    ui_color = "#f3e8fd"

    def __init__(
        self, *, lake: str, ds: str, http_conn_id: str = HttpApiHook.default_conn_name, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.lake = lake
        self.ds = ds
        self.http_conn_id = http_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        import asyncio
        from collections import Counter

        from featurelake.arrow_partitions import replace_partition
        from featurelake.fetch import fetch_all
        from featurelake.lake import LakeLayout, local_path
        from featurelake.merchant_profiles import build_profiles, check_api_available, merchants_of_day

        day = run_date(self.ds, task_id=self.task_id)
        try:
            root = local_path(
                lake_root(self.lake, task_id=self.task_id),
                what="the lake",
                remedy="this task reads and writes its partitions with local-file writers. Mount the lake "
                "on the Airflow workers and set the Variable featurelake_lake to the mount's path",
            )
        except ValueError as error:  # the Variable's value: no retry changes it
            raise AirflowFailException(f"{error}; then clear this task") from None
        layout = LakeLayout(str(root))
        merchants = merchants_of_day(layout.raw_transactions, day)
        hook = HttpApiHook(http_conn_id=self.http_conn_id)
        config, max_failed_fraction = hook.get_conn(), hook.max_failed_fraction()
        self.log.info(
            "Fetching %d merchants of %s from %s at %s/s",
            len(merchants),
            self.ds,
            config.base_url,
            config.rate_per_second,
        )
        fetched = asyncio.run(fetch_all(config, merchants))
        api = f"{config.base_url} (connection {self.http_conn_id!r})"
        check_api_available(fetched, max_failed_fraction=max_failed_fraction, api=api, day=day)
        ti = context.get("ti")
        if fetched.api_failed and ti is not None and ti.try_number <= ti.max_tries:
            # Within max_failed_fraction, but a try with retries left writes nothing: the retry
            # fetches those merchants again. Before, their last good profiles went at the first
            # try, and no retry ran, as the task succeeded.
            raise RuntimeError(
                f"{len(fetched.api_failed)} of {len(merchants)} merchants failed because of the merchant "
                f"API {api} (for example {fetched.failed[min(fetched.api_failed)]}); the partitions "
                f"of {self.ds} were left as they were, and try {ti.try_number} of "
                f"{ti.max_tries + 1} gives the retry the chance to fetch them. The last try writes "
                "what it has, when within the connection's max_failed_fraction"
            )
        with child_processes_allowed():  # the enrich stage's process pool, also on a Celery worker
            profiles, quarantine = build_profiles(fetched, as_of=day)
        replace_partition(profiles, layout.raw_merchant_profiles, day)
        replace_partition(quarantine, layout.quarantine_merchant_profiles, day)
        by_reason = dict(sorted(Counter(r.split(":")[0] for r in quarantine["reason"].to_pylist()).items()))
        if by_reason:
            self.log.warning("%d merchants quarantined: %s", quarantine.num_rows, by_reason)
        return {
            "merchants": len(merchants),
            "profiles": profiles.num_rows,
            "quarantined": quarantine.num_rows,
            "quarantined_by_reason": by_reason,
            "api_failed": len(fetched.api_failed),
            "requests": fetched.requests,
            "retries": fetched.retries,
        }
