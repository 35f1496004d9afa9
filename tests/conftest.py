"""Shared fixtures: every test gets its own CTRAIN_HOME, MLflow store and (for DAG tests) Airflow DB.

Airflow reads its configuration when first imported, so AIRFLOW_HOME points at a per-session temp
folder before anything imports it.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ctrain-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
)
os.environ.pop("CTRAIN_PROJECT", None)

from ctrain.settings import default_project_file, load_settings  # noqa: E402


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh CTRAIN_HOME, also set in the environment for code that loads settings itself."""
    h = tmp_path / "ctrain"
    monkeypatch.setenv("CTRAIN_HOME", str(h))
    return h


@pytest.fixture
def make_settings(home, tmp_path, monkeypatch):
    """Settings from the demo project deep-merged with overrides; also written as CTRAIN_PROJECT."""

    def make(**overrides):
        data = _merge(yaml.safe_load(default_project_file().read_text()), overrides)
        path = tmp_path / "project.yaml"
        path.write_text(yaml.safe_dump(data))
        monkeypatch.setenv("CTRAIN_PROJECT", str(path))
        return load_settings(path)

    return make


@pytest.fixture
def settings(make_settings):
    return make_settings()


@pytest.fixture
def client(settings):
    from ctrain.tracking import configure

    return configure(settings)


@pytest.fixture
def source(settings):
    from ctrain.data.demo_source import DemoSource

    return DemoSource(**settings.demo.model_dump())


@pytest.fixture
def ingested(settings, source):
    """Land and ingest ``n`` good demo batches starting at ``start``."""
    from ctrain import steps

    def ingest(n: int = 3, start: int = 0):
        for i in range(start, start + n):
            source.write_batch(i, settings.landing_dir)
        return [steps.ingest_one(p, settings) for p in steps.list_landed(settings)]

    return ingest


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's metadata database (SQLite) for this session, migrated once."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run(
        [str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )
    return _AIRFLOW_HOME
