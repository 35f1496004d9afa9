"""Train: search each candidate's small grid with time-ordered CV, keep the best, log one MLflow run."""

from __future__ import annotations

import logging

import pandas as pd
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit

from ctrain.model_io import features, target
from ctrain.records import DatasetWindow, RunContext, TrainedRun
from ctrain.registry import FORMAT, TRUSTED_TYPES, check_model
from ctrain.settings import Settings
from ctrain.tracking import code_version, ensure_experiment
from ctrain.training.assemble import training_config_hash
from ctrain.training.pipeline import build_pipeline
from ctrain.training.restricted import CANDIDATE_TAG, winning_spec

log = logging.getLogger(__name__)


def _existing_run(client, experiment_id: str, ctx: RunContext, content_hash: str):
    """A finished training run of this Airflow run on this data: a retry reuses it."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.airflow_run_id = '{ctx.run_id}' and tags.data_content_hash = '{content_hash}' "
            "and tags.ctrain_stage = 'trained' and attributes.status = 'FINISHED'"
        ),
        max_results=1,
    )
    return runs[0] if runs else None


def _trusted_types(model, estimator: str) -> list[str]:
    """The types ``model`` needs beyond skops' defaults; all must be ones ctrain loads."""
    import skops.io

    needed = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    unknown = sorted(set(needed) - set(TRUSTED_TYPES))
    if unknown:
        raise ValueError(
            f"{estimator} fitted holds types ctrain's loader does not trust: {', '.join(unknown)}"
        )
    return needed


def train(settings: Settings, dataset: DatasetWindow, ctx: RunContext, client) -> TrainedRun:
    """Fit every candidate, log the best as an MLflow model, and return the run's ids."""
    import mlflow
    import sklearn
    import skops

    spec, cfg = settings.dataset, settings.training
    experiment_id = ensure_experiment(client, settings.experiment, settings)
    prior = _existing_run(client, experiment_id, ctx, dataset.content_hash)
    if prior is not None:
        log.info("reusing finished training run %s of %s", prior.info.run_id, ctx.run_id)
        return TrainedRun(
            mlflow_run_id=prior.info.run_id,
            experiment_id=experiment_id,
            model_uri=prior.data.tags["model_uri"],
            estimator=prior.data.params["best_candidate"],
            cv_score=prior.data.metrics["cv_best"],
        )

    df = pd.read_parquet(dataset.train_uri)
    X, y = features(df, spec), target(df, spec)
    results = []
    for cand in cfg.candidates:
        search = GridSearchCV(
            build_pipeline(spec, cand, cfg.seed),
            param_grid={f"model__{k}": v for k, v in cand.grid.items()},
            scoring=cfg.metric,
            cv=TimeSeriesSplit(n_splits=cfg.cv_folds),
            n_jobs=1,
            refit=True,
            error_score="raise",
        )
        search.fit(X, y)
        results.append((search.best_score_, cand, search))
        log.info(
            "candidate %s: cv %s=%.4f %s",
            cand.name,
            cfg.metric,
            search.best_score_,
            search.best_params_,
        )
    best_score, best_cand, best_search = max(results, key=lambda r: r[0])
    model = best_search.best_estimator_

    tags = {
        "airflow_dag_id": ctx.dag_id,
        "airflow_run_id": ctx.run_id,
        "trigger_reason": ctx.trigger_reason,
        "data_content_hash": dataset.content_hash,
        "data_window": dataset.span,
        "code_version": code_version(),
        "validation_status": "passed",
    }
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(run_name=f"train-{dataset.content_hash[:8]}", tags=tags) as run:
        mlflow.log_params(
            {
                "best_candidate": best_cand.name,
                "estimator": best_cand.estimator,
                "seed": cfg.seed,
                "cv_folds": cfg.cv_folds,
                "rows_train": dataset.rows_train,
                "rows_holdout": dataset.rows_holdout,
                "rows_superseded": dataset.rows_superseded,
                "rows_unlabeled": dataset.rows_unlabeled,
                "dataset_id": dataset.dataset_id,
                **{
                    f"best__{k.removeprefix('model__')}": v
                    for k, v in best_search.best_params_.items()
                },
            }
        )
        mlflow.log_metrics(
            {f"cv_{cfg.metric}__{c.name}": float(s) for s, c, _ in results}
            | {"cv_best": float(best_score)}
        )
        sample = X.head(200)
        signature = mlflow.models.infer_signature(sample, model.predict(sample))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            # No input example: MLflow would check it by loading the model with its own loader,
            # which ctrain switches off. The signature describes the input; the check below
            # loads the model the way scoring and promotion will.
            serialization_format=FORMAT,
            skops_trusted_types=_trusted_types(model, best_cand.estimator),
            # Explicit requirements: inference would take 8-10 s and guess.
            pip_requirements=[
                f"scikit-learn=={sklearn.__version__}",
                f"pandas=={pd.__version__}",
                f"skops=={skops.__version__}",
            ],
        )
        # What promotion and scoring will load, loads; its hash is checked at every move.
        mlflow.set_tag("model_sha256", check_model(info.model_uri))
        # What won, whole (fixed params and the grid's choice): what promote-config carries.
        mlflow.set_tag(
            CANDIDATE_TAG, winning_spec(best_cand, best_search.best_params_).model_dump_json()
        )
        mlflow.set_tag("training_config_hash", training_config_hash(settings))
        mlflow.set_tag("model_uri", info.model_uri)
        mlflow.set_tag("ctrain_stage", "trained")
    return TrainedRun(
        mlflow_run_id=run.info.run_id,
        experiment_id=experiment_id,
        model_uri=info.model_uri,
        estimator=best_cand.name,
        cv_score=float(best_score),
    )
