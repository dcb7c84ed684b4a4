"""SparkSubmitOperator for featurelake's jobs: connection Spark properties, the library shipped to
the cluster, and the job's JSON report returned as the task's XCom."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from featurelake.parent_death import stopped_with_this_process
from featurelake.spark_session import (
    REQUIRED_SPARK_CONF,
    launch_spark_conf,
    merge_spark_conf,
    required_spark_conf_conflicts,
)
from featurelake_airflow.hooks.spark_connection import (
    SparkConnectionConfHook,
    credential_properties,
    mask_credentials,
)
from featurelake_airflow.lake_paths import lake_path
from featurelake_airflow.spark_properties_file import (
    properties_file_with,
    properties_keys,
    spark_properties_file,
    trimmed_from_a_properties_file,
)


def zip_package(package_dir: Path, target: Path) -> Path:
    """Zip a Python package so spark-submit --py-files can put it on the driver's and executors' path."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sorted(package_dir.rglob("*.py")):
            archive.write(source, source.relative_to(package_dir.parent).as_posix())
    return target


def submit_conf(
    *,
    master: str,
    connection_conf: dict[str, str],
    operator_conf: dict[str, Any] | None,
    preset: Collection[str] = (),
) -> dict[str, str]:
    """The --conf properties of a submit, later layers winning: the properties the driver's JVM
    needs at launch for this master (`launch_spark_conf`) that the properties file spark-submit
    loads does not set (`preset`: a --conf would replace the file's value), the connection's `conf`
    extra, the operator's `conf`."""
    launch = {key: value for key, value in launch_spark_conf(master=master).items() if key not in preset}
    return merge_spark_conf(launch, connection_conf, operator_conf)


YARN_RM_WEBAPP_ADDRESS_EXTRA = "yarn_resourcemanager_webapp_address"


def yarn_cluster_tracking(*, master: str, deploy_mode: str | None, extra: Mapping[str, Any]) -> str | None:
    """How a submit in YARN cluster mode is followed, from the connection alone; None for any other
    master or deploy mode.

    `rm_api`: the connection names the ResourceManager's web address, so the operator polls its
    REST API, and a retry reconnects to the running application (the provider's durable mode).
    `process`: it does not, so the operator waits on spark-submit, and a retry submits the job
    again; the job replaces its own partitions, so that gives the same result. The provider
    refuses its default durable mode in YARN cluster mode without the REST API."""
    if not master.startswith("yarn") or (deploy_mode or extra.get("deploy-mode")) != "cluster":
        return None
    return "rm_api" if extra.get(YARN_RM_WEBAPP_ADDRESS_EXTRA) else "process"


class SparkFeatureJobOperator(SparkSubmitOperator):
    """Run a featurelake spark job and return the report it writes to `report_path`.

    Spark properties merge as: the job's tuned base (in the job) and, on a local master, the driver
    JVM's launch options (`launch_spark_conf`) < the properties file spark-submit loads
    (`properties_file`, or spark-defaults.conf) < the connection's `conf` extra < this operator's
    `conf`. The `featurelake` library is zipped and passed with --py-files, so the
    job also runs where the cluster has no copy of it (executors on any cluster, and the driver in
    cluster deploy mode on YARN or Kubernetes; Spark runs no Python driver in cluster mode on a
    standalone master). Properties of the connection's or this task's `conf` that the job will not
    apply (`REQUIRED_SPARK_CONF`) are named in the task's log. Those that hold credentials
    (`credential_properties`) reach spark-submit in a properties file only this user can read, not
    on its command line (`_credentials_file`).
    """

    template_fields: Sequence[str] = (*SparkSubmitOperator.template_fields, "report_path")
    ui_color = "#fde8d7"

    def __init__(self, *, report_path: str, ship_library: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_path = report_path
        self.ship_library = ship_library

    def execute(self, context: Any) -> dict[str, Any]:
        connection = SparkConnectionConfHook(conn_id=self._conn_id)
        master = connection.master()
        loaded = spark_properties_file(
            properties_file=self.properties_file, environ={**os.environ, **(self.env_vars or {})}
        )
        connection_conf = connection.get_conn()
        self._warn_of_ignored_conf(connection_conf=connection_conf, operator_conf=self.conf or {})
        conf = submit_conf(
            master=master,
            connection_conf=connection_conf,
            operator_conf=self.conf,
            preset=properties_keys(loaded.read_text(encoding="utf-8")) if loaded else (),
        )
        mask_credentials(conf)  # the task's own `conf` too
        credentials = {key: conf[key] for key in credential_properties(conf)}
        tracking = yarn_cluster_tracking(
            master=master, deploy_mode=self._deploy_mode, extra=connection.extra()
        )
        if tracking == "rm_api":
            self._yarn_track_via_rm_api = True
        elif tracking == "process":
            self.log.info(
                "YARN cluster mode without %s in the connection: waiting on spark-submit; a retry "
                "submits the job again",
                YARN_RM_WEBAPP_ADDRESS_EXTRA,
            )
            self.durable = False
        # An earlier attempt's report must never pass for this one's: it is removed before a submit
        # (here, or in submit_job when a durable retry resubmits). A durable retry that reconnects
        # to the job it submitted before, running or finished, keeps it: that job writes it.
        if not self._may_resume(context):
            self._remove_report()
        report_file = lake_path(self.report_path)
        # The attributes the provider submits with are set for this submit only, and restored after
        # it, so that a second execute of the same object starts from the task's own arguments,
        # not from this submit's merged conf, credentials file and library zip.
        task_conf, task_properties_file, task_py_files = self.conf, self.properties_file, self.py_files
        with tempfile.TemporaryDirectory(prefix="featurelake-submit-") as workdir:
            try:
                self.conf = {key: value for key, value in conf.items() if key not in credentials}
                if credentials:
                    self.properties_file = str(
                        self._credentials_file(
                            credentials, loaded=loaded, target=Path(workdir) / "spark.properties"
                        )
                    )
                if self.ship_library:
                    import featurelake

                    library_zip = zip_package(
                        Path(featurelake.__file__).parent, Path(workdir) / "featurelake.zip"
                    )
                    self.py_files = ",".join(p for p in (self.py_files, str(library_zip)) if p)
                super().execute(context)
            finally:
                self.conf, self.properties_file, self.py_files = (
                    task_conf,
                    task_properties_file,
                    task_py_files,
                )
        self._forget_finished_job(context)
        if not report_file.exists():
            raise FileNotFoundError(
                f"spark-submit finished but the job wrote no report at {self.report_path}; see the job's "
                "log above for what it did, and clear the task to rerun it"
            )
        report = json.loads(report_file.read_text())
        self.log.info("Job report from %s: %s", self.report_path, report)
        if report.get("quarantined_rows"):
            self.log.warning(
                "%s rows quarantined %s; see the quarantine dataset in the lake",
                report["quarantined_rows"],
                report.get("quarantined_by_reason"),
            )
        return report

    def _get_hook(self) -> SparkSubmitHook:
        """The provider's hook, whose spark-submit gets SIGTERM when the task process dies, even by
        SIGKILL (the OOM killer, a lost worker's supervisor), which runs no `on_kill`. Left running,
        its job (the driver, in client mode or on a local master) went on beside the task's retry,
        in the same staging directory: the retry removed the staged output under it, and the
        orphan's swap then replaced the retry's published features with nothing."""
        hook = super()._get_hook()
        submit = hook.submit

        def submit_stopped_with_this_process(application: str = "", **kwargs: Any) -> str | None:
            # preexec_fn runs between fork and exec: it only calls prctl and getppid
            kwargs.setdefault("preexec_fn", stopped_with_this_process())
            return submit(application, **kwargs)

        hook.submit = submit_stopped_with_this_process
        return hook

    def _credentials_file(self, credentials: Mapping[str, str], *, loaded: Path | None, target: Path) -> Path:
        """The properties file spark-submit loads in place of `loaded`: `loaded`'s properties, then
        the credentials of the connection's and this task's `conf` (`credential_properties`). On
        its command line, as --conf, every user of the machine could read them (`ps`, /proc)."""
        for key, value in credentials.items():
            if trimmed_from_a_properties_file(value):
                self.log.warning(
                    "The value of Spark property %s starts or ends with whitespace, which spark-submit "
                    "drops from a properties file; remove it from the value if it is not part of the "
                    "credential",
                    key,
                )
        written = properties_file_with(loaded=loaded, properties=credentials, target=target)
        self.log.info(
            "spark-submit gets %s in %s, a copy of %s with them added, not on its command line",
            ", ".join(sorted(credentials)),
            written,
            loaded or "no properties file (there is none to load)",
        )
        return written

    def _warn_of_ignored_conf(
        self, *, connection_conf: Mapping[str, str], operator_conf: Mapping[str, Any]
    ) -> None:
        """Name, in the task's log, each property of the connection's or this task's conf that the job
        will not apply (`REQUIRED_SPARK_CONF`): the job's own warning stays in the driver's log, which
        in cluster deploy mode is on the cluster."""
        sources = (
            (f"the Spark connection {self._conn_id!r} (its `conf` extra)", connection_conf),
            (f"task {self.task_id!r} (its `conf`)", operator_conf),
        )
        for source, asked in sources:
            for key, value in required_spark_conf_conflicts(asked).items():
                self.log.warning(
                    "%s sets %s=%s; the job ignores it and runs with %s=%s, which its results depend "
                    "on. Remove %s from %s to silence this warning.",
                    source,
                    key,
                    value,
                    key,
                    REQUIRED_SPARK_CONF[key],
                    key,
                    source,
                )

    def submit_job(self, context: Any) -> str | None:
        """A fresh submit of a durable (resumable) task: the earlier report goes first."""
        self._remove_report()
        return super().submit_job(context)

    def _may_resume(self, context: Any) -> bool:
        """Whether a durable task holds the id of a job an earlier attempt submitted, which the
        provider reconnects to instead of submitting again (unless that job failed)."""
        store = self._job_state_store(context)
        return bool(store is not None and store.get(self.external_id_key))

    def _job_state_store(self, context: Any) -> Any:
        """The task state store where a durable task keeps its job's id; None when not durable."""
        return context.get("task_state_store") if self.durable else None

    def _forget_finished_job(self, context: Any) -> None:
        """Clear this task instance's task state store (the finished job's id, and its cached status
        on Kubernetes), as Airflow's `[state_store] clear_on_success` would. The store outlives the
        task instance's tries within its DAG run: a cleared task, or a backfill with
        --reprocess-behavior completed, would otherwise find the job finished, submit nothing and
        return that job's report again. A try that ends before its job does keeps the id, so its
        retry reconnects."""
        store = self._job_state_store(context)
        if store is not None:
            store.clear()

    def _remove_report(self) -> None:
        lake_path(self.report_path).unlink(missing_ok=True)
