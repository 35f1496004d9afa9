"""Shared fixtures: every test gets its own CTRAIN_HOME, MLflow store and (for DAG tests) Airflow DB.

Airflow reads its configuration when first imported, so AIRFLOW_HOME points at a per-session temp
folder before anything imports it. Each home starts with a copy of an MLflow store migrated once
per session (creating and migrating a SQLite store costs seconds, a copy milliseconds; the copy is
what a fresh store would be).
"""

from __future__ import annotations

import copy
import os
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


# The longest run of tests first (the modules that share the embedded Airflow), the two that
# start whole production-shaped stacks of their own last: pytest-xdist hands out work in this
# order (``--no-loadscope-reorder``), so those never start beside the embedded Airflow.
_FIRST, _LAST = (
    ("tests/integration/embedded/",),
    (
        "tests/integration/test_production_topology.py",
        "tests/integration/test_up.py",
    ),
)


def pytest_collection_modifyitems(config, items):
    """Order the tests as ``_FIRST`` and ``_LAST`` say (stably: otherwise as collected)."""

    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return 0 if path.startswith(_FIRST) else 2 if path in _LAST else 1

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist hands out whole modules (their module-scoped fixtures are set up once), and
    the modules under ``_FIRST`` together: they share one Airflow (a package fixture).

    ``--dist loadgroup`` would say this with marks, but pytest-xdist 3.8.0 marks a group by
    rewriting a test's node id, which pytest 9 no longer reads: its groups are ignored.
    """
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return _FIRST[0] if path.startswith(_FIRST) else path

    return ByModule(config, log)


@pytest.fixture(scope="session", autouse=True)
def _templates(tmp_path_factory):
    """Templates (``tests_support.from_template``) live in the session's temp folder, one for all
    of pytest-xdist's workers: each is built once per run, by whichever worker needs it first."""
    from tests_support import use_template_dir

    base = tmp_path_factory.getbasetemp()
    use_template_dir((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "templates")


@pytest.fixture(scope="session")
def mlflow_template() -> Path:
    """An empty MLflow store, migrated once per session."""
    from tests_support import empty_mlflow_store

    return empty_mlflow_store()


@pytest.fixture
def home(tmp_path, monkeypatch, mlflow_template) -> Path:
    """A fresh CTRAIN_HOME with an empty MLflow store, also set in the environment for code that
    loads settings itself."""
    from tests_support import copy_store

    h = tmp_path / "ctrain"
    copy_store(mlflow_template, h / "mlflow" / "mlflow.db")
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
def delayed(make_settings):
    """Settings whose labels arrive late, in files of their own (``dataset.labels: delayed``);
    ``delayed(**monitoring)`` deep-merges monitoring settings over no HTML reports."""
    return lambda **monitoring: make_settings(
        dataset={"labels": "delayed"}, monitoring={"html_reports": False, **monitoring}
    )


@pytest.fixture
def client(settings):
    from ctrain.tracking import configure

    return configure(settings)


@pytest.fixture
def source(settings):
    from ctrain.data.demo_source import DemoSource

    return DemoSource(**settings.demo.model_dump())


@pytest.fixture
def ingested(settings):
    """Land and ingest ``n`` good demo batches starting at ``start``."""
    from tests_support import ingest_batches

    return lambda n=3, start=0: ingest_batches(settings, n, start)


@pytest.fixture
def two_versions(make_settings, client):
    """v1 champion, v2 a validated challenger that lost (so it may be promoted by hand)."""
    from tests_support import WEAK, from_template, ingest_batches

    from ctrain import steps
    from ctrain.records import RunContext
    from ctrain.registry import current_champion

    settings = make_settings(promotion={"floors": {"roc_auc": 0.5}})
    weak = make_settings(training={"candidates": WEAK}, promotion={"floors": {"roc_auc": 0.5}})

    def build(home):
        good, stump = (s.model_copy(update={"home": home}) for s in (settings, weak))
        ingest_batches(good, 3)
        steps.run_training(RunContext(run_id="a"), settings=good)
        steps.run_training(RunContext(run_id="b"), settings=stump)

    from_template(settings, ("two_versions", weak.training.model_dump(mode="json")), build)
    assert current_champion(client, settings.model_name) == "1"
    return settings


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's metadata database (SQLite) for this session: a copy of one migrated once."""
    from tests_support import copy_store, migrated_airflow_db

    copy_store(migrated_airflow_db(), _AIRFLOW_HOME / "airflow.db")
    return _AIRFLOW_HOME
