"""Run Airflow and MLflow on the embedded stores: environment, commands, and their logs.

Builds the environment that points Airflow at ``CTRAIN_HOME/airflow`` (SQLite), the repo's
``dags/`` and ``plugins/``, and runs Airflow's own CLI in subprocesses, so the DAGs run through
real Airflow. Nothing here imports Airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ctrain.settings import Settings, project_root


def airflow_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment for Airflow commands on the embedded default."""
    env = dict(os.environ if base is None else base)
    home = settings.airflow_home
    env.update(
        {
            "CTRAIN_HOME": str(settings.root),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.resolved_dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(project_root() / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
            "AIRFLOW__API__HOST": env.get("AIRFLOW__API__HOST", "127.0.0.1"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": "ctrain\\..*",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "GX_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PYTHONWARNINGS": env.get("PYTHONWARNINGS", "ignore"),
        }
    )
    if os.environ.get("CTRAIN_PROJECT"):
        env["CTRAIN_PROJECT"] = str(Path(os.environ["CTRAIN_PROJECT"]).resolve())
    return env


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def run_airflow(
    settings: Settings, args: list[str], log_file: Path, extra_env: dict[str, str] | None = None
) -> int:
    """Run ``airflow *args`` with the embedded environment, appending its output to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = airflow_env(settings) | (extra_env or {})
    with open(log_file, "a") as log:
        log.write(f"\n$ airflow {' '.join(args)}\n")
        log.flush()
        return subprocess.run(
            [airflow_bin(), *args], env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode


def migrate(settings: Settings, log_file: Path) -> None:
    """Create or upgrade Airflow's metadata database."""
    if run_airflow(settings, ["db", "migrate"], log_file) != 0:
        raise RuntimeError(f"airflow db migrate failed; see {log_file}")
