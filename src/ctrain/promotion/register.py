"""Register the trained model as a version of the registered model, with its tags.

The version is aliased ``challenger`` only once it has passed its gates (``promote``).
"""

from __future__ import annotations

from ctrain.records import (
    DatasetWindow,
    Evaluation,
    RegisteredVersion,
    RunContext,
    TrainedRun,
    ValidatedSet,
)
from ctrain.registry import (
    REGISTERED_VERSION,
    ensure_registered_model,
    registered_version_of,
    version_uri,
)
from ctrain.settings import Settings
from ctrain.tracking import code_version
from ctrain.training.assemble import training_config_hash


def register(
    settings: Settings,
    trained: TrainedRun,
    dataset: DatasetWindow,
    validation: ValidatedSet,
    evaluation: Evaluation,
    ctx: RunContext,
    client,
) -> RegisteredVersion:
    """Create (or, on retry, find) the version for this training run and tag it; the run is
    tagged with the version (``REGISTERED_VERSION``), which makes it ctrain's.

    The registered model is created only when it does not exist: in the production shape an
    administrator creates it (``ctrain mlflow-init``) and the workers may add versions to it but
    not create or delete models.
    """
    name = settings.model_name
    ensure_registered_model(client, name)
    run = client.get_run(trained.mlflow_run_id)
    tags = {
        "validation_status": validation.validation_status,
        "data_window": dataset.span,
        "data_content_hash": dataset.content_hash,
        # The configuration the run trained with (restricted tuning reads it as the run starts).
        "training_config_hash": run.data.tags.get("training_config_hash")
        or training_config_hash(settings),
        "code_version": code_version(),
        "airflow_dag_id": ctx.dag_id,
        "airflow_run_id": ctx.run_id,
        "trigger_reason": ctx.trigger_reason,
        "trigger_evidence": ctx.evidence_uri or "-",
        "mlflow_run_id": trained.mlflow_run_id,
        "estimator": trained.estimator,
        f"holdout_{evaluation.metric}": f"{evaluation.holdout_value:.6f}",
    }
    if sha := run.data.tags.get("model_sha256"):  # its files, as training checked them
        tags["model_sha256"] = sha
    # On a retry the version made before is found through the run (its tag, else the first version
    # made from it), so a retry never makes a second one.
    version = registered_version_of(client, name, run)
    if version is None:
        model_id = trained.model_uri.removeprefix("models:/")  # the logged model it points at
        version = str(
            client.create_model_version(
                name,
                source=trained.model_uri,
                run_id=trained.mlflow_run_id,
                tags=tags,
                model_id=model_id if model_id.startswith("m-") else None,
            ).version
        )
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_tag(trained.mlflow_run_id, REGISTERED_VERSION, version)
    return RegisteredVersion(model_name=name, version=version, model_uri=version_uri(name, version))
