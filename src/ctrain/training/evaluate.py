"""Evaluate the trained model on the held-out slice: MLflow's classifier evaluation plus our metric."""

from __future__ import annotations

import pandas as pd

from ctrain.metrics import metric_value
from ctrain.model_io import features, positive_scores, target
from ctrain.records import DatasetWindow, Evaluation, TrainedRun
from ctrain.registry import as_pyfunc, load_model
from ctrain.settings import Settings

# The figures of mlflow.models.evaluate that travel with the evaluation.
HEADLINE = ("accuracy_score", "f1_score", "precision_score", "recall_score", "roc_auc", "log_loss")


def evaluate(settings: Settings, trained: TrainedRun, dataset: DatasetWindow) -> Evaluation:
    """Log ``mlflow.models.evaluate`` metrics and plots into the training run; return the key figures."""
    import mlflow

    spec, metric = settings.dataset, settings.promotion.metric
    holdout = pd.read_parquet(dataset.holdout_uri)
    X, y = features(holdout, spec), target(holdout, spec)
    model = load_model(trained.model_uri)
    scores = positive_scores(model, X, spec.positive_class)
    own = metric_value(metric, y == spec.positive_class, scores)

    data = X.assign(**{spec.target: y})
    with mlflow.start_run(run_id=trained.mlflow_run_id):
        result = mlflow.models.evaluate(
            model=as_pyfunc(model, trained.model_uri),
            data=data,
            targets=spec.target,
            model_type="classifier",
            evaluators="default",
            evaluator_config={"pos_label": spec.positive_class, "log_model_explainability": False},
        )
        mlflow.log_metric(f"holdout_{metric}", own)
    return Evaluation(
        mlflow_run_id=trained.mlflow_run_id,
        experiment_id=trained.experiment_id,
        metric=metric,
        holdout_value=own,
        holdout_rows=len(holdout),
        figures={k: float(v) for k, v in result.metrics.items() if k in HEADLINE},
    )
