"""Airflow's plugin loader imports every `.py` file of the plugins folder under its bare file name, in
the scheduler, the API server, the DAG processor and (for macros) every task process. The folder
holds featurelake_airflow, a package imported by its own name and holding no AirflowPlugin: loaded
so, each of its modules ran a second time as a top-level module (`demo`, `online_store`,
`spawned_child`, whose fork hook was then registered twice), for no plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support import PROJECT_ROOT

_PROBE = """
import json, sys
from airflow import plugins_manager
from airflow.sdk import plugins_manager as task_plugins_manager

plugins_manager.ensure_plugins_loaded()  # scheduler, API server, DAG processor
task_plugins_manager.integrate_macros_plugins()  # every task process
print(json.dumps({
    "errors": plugins_manager.get_import_errors(),
    "bare": sorted(
        name for name, module in list(sys.modules.items())
        if not name.startswith("featurelake_airflow")
        and (getattr(module, "__file__", None) or "").startswith(sys.argv[1])
    ),
}))
"""


def test_airflow_loads_no_featurelake_module_as_a_plugin() -> None:
    plugins = PROJECT_ROOT / "plugins"
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(plugins)], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"errors": {}, "bare": []}
