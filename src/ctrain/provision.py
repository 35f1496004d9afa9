"""Set up MLflow for the production shape: what the workers use, owned by an administrator.

``ctrain mlflow-init`` runs once, as MLflow's admin (``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``), against the server's basic-auth app. It creates ctrain's three
experiments and the registered model, so the admin owns them, then the worker user (password from
``MLFLOW_WORKER_PASSWORD``) with EDIT on exactly those: the workers can log runs, add model
versions, move and tag aliases, but cannot delete the model or an experiment, and see nothing
else. Safe to run again: an existing worker gets the password again and the same grants.
"""

from __future__ import annotations

from ctrain.registry import ensure_registered_model
from ctrain.settings import Settings
from ctrain.tracking import ensure_experiment

EDIT = "EDIT"


def provision(settings: Settings, client, auth, worker: str, password: str) -> list[str]:
    """Create the experiments, the model and the worker with its grants; one line per step.

    ``client`` is an MLflow client and ``auth`` the basic-auth app's client, both as the admin.
    """
    from mlflow.exceptions import MlflowException

    done = []
    names = (settings.experiment, settings.decisions_experiment, settings.monitoring_experiment)
    ids = {name: ensure_experiment(client, name, settings) for name in names}
    done += [f"experiment {name} (id {eid})" for name, eid in ids.items()]
    ensure_registered_model(client, settings.model_name)
    done.append(f"registered model {settings.model_name}")
    try:
        auth.create_user(worker, password)
        done.append(f"user {worker} created")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.update_user_password(worker, password)
        done.append(f"user {worker} exists: password set again")
    grants = [("experiment", eid) for eid in ids.values()]
    grants.append(("registered_model", settings.model_name))
    for kind, resource in grants:
        auth.grant_user_permission(worker, kind, resource, EDIT)
        done.append(f"{worker}: {EDIT} on {kind} {resource}")
    return done
