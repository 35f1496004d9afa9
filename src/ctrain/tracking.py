"""MLflow wiring: point MLflow at the configured stores, one client per store, experiments, and
the addresses of what ctrain records in MLflow's UI."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from urllib.parse import quote

from ctrain.settings import Settings


def configure(settings: Settings):
    """Point MLflow's fluent API at the settings' store and return the process's client for it."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # ctrain never needs MLflow to deserialize a model (ctrain.registry loads its own format), so
    # nothing in this process may: unpickling runs whatever the artifact holds.
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    import mlflow

    from ctrain.credentials import route

    route(settings)
    uri = settings.resolved_tracking_uri
    if uri.startswith("sqlite:"):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return _client(uri)


def client_of(settings: Settings):
    """The process's client for the store of ``settings`` (another environment's, say),
    leaving the process's own store as it is; each environment's server is asked as that
    environment's user (``ctrain.credentials``)."""
    from ctrain.credentials import route

    route(settings)
    return _client(settings.resolved_tracking_uri)


@lru_cache(maxsize=8)
def _client(uri: str):
    """One client per store and process: every step of a run in one process shares it."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# MLflow 3's UI opens an experiment without this tag on its GenAI overview ("No data available");
# ctrain's experiments hold classic ML runs, so they say so when they are created.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(client, name: str, settings: Settings) -> str:
    """The id of experiment ``name``, created (with local artifacts on the embedded store) if new."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # An embedded store (a SQLite file) keeps its artifacts in the home; a server its own.
    embedded = settings.resolved_tracking_uri.startswith("sqlite:")
    location = settings.artifact_root if embedded else None
    try:
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    except Exception:
        # Another task created it between our read and our create.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


class MlflowLinks:
    """Addresses in MLflow's UI (``settings.mlflow_ui_url``) of runs, experiments and versions.

    Each opens MLflow's classic ML view (``workflowType=machine_learning``), whatever the UI last
    showed.
    """

    def __init__(self, ui_url: str):
        self.base = ui_url.rstrip("/")

    def experiments(self) -> str:
        return f"{self.base}/#/experiments?workflowType=machine_learning"

    def experiment(self, experiment_id: str) -> str:
        return f"{self.base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"

    def run(self, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
        tail = f"/artifacts/{quote(artifact)}" if artifact else ""
        return (
            f"{self.base}/#/experiments/{experiment_id}/runs/{run_id}{tail}"
            "?workflowType=machine_learning"
        )

    def model(self, name: str) -> str:
        return f"{self.base}/#/models/{quote(name, safe='')}"

    def model_version(self, name: str, version: str) -> str:
        return f"{self.base}/#/models/{quote(name, safe='')}/versions/{version}"


@lru_cache(maxsize=1)
def code_version() -> str:
    """ctrain's version plus the git commit of the checkout, when there is one."""
    from importlib.metadata import version

    from ctrain.settings import project_root

    base = version("ctrain")
    try:
        sha = subprocess.run(
            ["git", "-C", str(project_root()), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{base}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return base
