"""MLflow wiring: point MLflow at the configured stores, one client per store, experiments."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache

from ctrain.settings import Settings


def configure(settings: Settings):
    """Point MLflow's fluent API at the settings' store and return the process's client for it."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # ctrain never needs MLflow to deserialize a model (ctrain.registry loads its own format), so
    # nothing in this process may: unpickling runs whatever the artifact holds.
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    import mlflow

    uri = settings.resolved_tracking_uri
    if uri.startswith("sqlite:"):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return _client(uri)


@lru_cache(maxsize=8)
def _client(uri: str):
    """One client per store and process: every step of a run in one process shares it."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client, name: str, settings: Settings) -> str:
    """The id of experiment ``name``, created (with local artifacts on the embedded store) if new."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = settings.artifact_root if settings.tracking_uri is None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:
        # Another task created it between our read and our create.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


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
