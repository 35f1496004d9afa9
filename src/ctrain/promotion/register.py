"""Register the trained model as a version of the registered model and point ``challenger`` at it."""

from __future__ import annotations

from typing import Any

from ctrain.context import RunContext
from ctrain.promotion import CHALLENGER
from ctrain.settings import Settings
from ctrain.tracking import code_version


def register(
    settings: Settings,
    trained: dict[str, Any],
    dataset: dict[str, Any],
    validation: dict[str, Any],
    evaluation: dict[str, Any],
    ctx: RunContext,
    client,
) -> dict[str, Any]:
    """Create (or, on retry, find) the version for this training run, tag it, alias it challenger."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = settings.model_name
    try:
        client.create_registered_model(
            name, description="Managed by ctrain: aliases champion and challenger."
        )
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    found = client.search_model_versions(
        f"name = '{name}' and run_id = '{trained['mlflow_run_id']}'"
    )
    metric = evaluation["metric"]
    tags = {
        "validation_status": validation["validation_status"],
        "data_window": dataset["window"],
        "data_content_hash": dataset["content_hash"],
        "code_version": code_version(),
        "airflow_dag_id": ctx.dag_id,
        "airflow_run_id": ctx.run_id,
        "trigger_reason": ctx.trigger_reason,
        "trigger_evidence": ctx.evidence_uri or "-",
        "mlflow_run_id": trained["mlflow_run_id"],
        "estimator": trained["estimator"],
        f"holdout_{metric}": f"{evaluation[f'holdout_{metric}']:.6f}",
    }
    if found:
        version = str(found[0].version)
    else:
        version = str(mlflow.register_model(trained["model_uri"], name, tags=tags).version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return {"model_name": name, "version": version, "model_uri": f"models:/{name}/{version}"}
