"""How long each DAG file takes to parse, and which modules it pulls in.

    .venv/bin/python bench/dag_parse.py [--repeat 5]

Each file is parsed in a fresh interpreter that has already imported `airflow.sdk` and the Spark
provider, as a DAG processor has, so the figure is the file's own cost. Target: under 0.5 s each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 0.5

_PROBE = """
import importlib.util, json, sys, time
import airflow.sdk, airflow.providers.apache.spark.operators.spark_submit
before = set(sys.modules)
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = time.perf_counter() - start
print(json.dumps({
    "seconds": elapsed,
    "new_modules": sorted({m.split(".")[0] for m in set(sys.modules) - before}),
    "all_modules": sorted({m.split(".")[0] for m in sys.modules}),
}))
"""


def probe_dag_file(dag_file: Path) -> dict:
    """Parse `dag_file` once in a fresh interpreter: {"seconds": float, "new_modules": [top-level names the file added], "all_modules": [every top-level name loaded]}."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(dag_file)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    table = Table(
        title=f"DAG parse time, median of {args.repeat} fresh interpreters (target < {TARGET_SECONDS} s)"
    )
    for column in ("file", "median s", "max s", "verdict"):
        table.add_column(column)
    worst = 0.0
    for dag_file in sorted((PROJECT_ROOT / "dags").glob("*.py")):
        times = [probe_dag_file(dag_file)["seconds"] for _ in range(args.repeat)]
        median = statistics.median(times)
        worst = max(worst, median)
        verdict = "PASS" if median < TARGET_SECONDS else "MISS"
        table.add_row(dag_file.name, f"{median:.3f}", f"{max(times):.3f}", verdict)
    Console().print(table)
    return 0 if worst < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
