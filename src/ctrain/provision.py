"""Set up MLflow for the production shape: what the workers use, owned by an administrator.

``ctrain mlflow-init`` runs once, as MLflow's admin (``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``), against the server's basic-auth app. It creates ctrain's three
experiments and the registered model, so the admin owns them, then the worker user (password from
``MLFLOW_WORKER_PASSWORD``) with EDIT on exactly those: the workers can log runs, add model
versions, move and tag aliases, but cannot delete the model or an experiment, and see nothing
else. Given a viewer (password from ``MLFLOW_VIEWER_PASSWORD``), it is made with READ on the same:
Airflow's API server reads ctrain's records for the ctrain view with it and can change nothing.
Given a serving user (password from ``MLFLOW_SERVING_PASSWORD``), it gets READ on the registered
model and the training experiment only (where the model files are): ``ctrain serve`` can find
and load versions and nothing else. Given a puller (password from ``MLFLOW_PULLER_PASSWORD``):
the next environment's worker, which pulls versions from this one (``ctrain env promote``), gets
READ on the model and the training experiment and EDIT on the decisions experiment only (it
records there that a version was proposed to it): it can read and check any version and move
nothing here. Safe to run again: an existing user gets the password again and the same grants.
"""

from __future__ import annotations

from ctrain.registry import ensure_registered_model
from ctrain.settings import Settings
from ctrain.tracking import ensure_experiment

EDIT, READ = "EDIT", "READ"


def _user(auth, name: str, password: str) -> str:
    """Create ``name`` or set its password again; one line of what happened."""
    from mlflow.exceptions import MlflowException

    try:
        auth.create_user(name, password)
        return f"user {name} created"
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.update_user_password(name, password)
        return f"user {name} exists: password set again"


def provision(
    settings: Settings,
    client,
    auth,
    worker: str,
    password: str,
    viewer: tuple[str, str] | None = None,
    serving: tuple[str, str] | None = None,
    puller: tuple[str, str] | None = None,
) -> list[str]:
    """Create the experiments, the model, the worker and (each given as ``(name, password)``)
    the viewer, the serving user and the puller, with their grants; one line per step.

    ``client`` is an MLflow client and ``auth`` the basic-auth app's client, both as the admin.
    """
    done = []
    names = (settings.experiment, settings.decisions_experiment, settings.monitoring_experiment)
    ids = {name: ensure_experiment(client, name, settings) for name in names}
    done += [f"experiment {name} (id {eid})" for name, eid in ids.items()]
    ensure_registered_model(client, settings.model_name)
    done.append(f"registered model {settings.model_name}")
    grants = [("experiment", eid) for eid in ids.values()]
    grants.append(("registered_model", settings.model_name))
    model_only = [
        ("experiment", ids[settings.experiment]),
        ("registered_model", settings.model_name),
    ]
    users = [(worker, password, [(EDIT, g) for g in grants])]
    if viewer:
        users.append((*viewer, [(READ, g) for g in grants]))
    if serving:
        users.append((*serving, [(READ, g) for g in model_only]))
    if puller:
        records = (EDIT, ("experiment", ids[settings.decisions_experiment]))
        users.append((*puller, [*((READ, g) for g in model_only), records]))
    for name, secret, theirs in users:
        done.append(_user(auth, name, secret))
        for level, (kind, resource) in theirs:
            auth.grant_user_permission(name, kind, resource, level)
            done.append(f"{name}: {level} on {kind} {resource}")
    return done
