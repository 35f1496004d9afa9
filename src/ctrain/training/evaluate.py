"""Evaluate the trained model on the held-out slice: MLflow's classifier evaluation plus our metric."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ctrain.promotion.metrics import metric_value
from ctrain.settings import Settings
from ctrain.training.model import features, positive_scores, target


def evaluate(
    settings: Settings, trained: dict[str, Any], dataset: dict[str, Any]
) -> dict[str, Any]:
    """Log ``mlflow.models.evaluate`` metrics and plots into the training run; return the key figures."""
    import mlflow

    spec, metric = settings.dataset, settings.promotion.metric
    holdout = pd.read_parquet(dataset["holdout_uri"])
    X, y = features(holdout, spec), target(holdout, spec)
    model = mlflow.sklearn.load_model(trained["model_uri"])
    scores = positive_scores(model, X, spec.positive_class)
    own = metric_value(metric, y == spec.positive_class, scores)

    data = X.assign(**{spec.target: y})
    with mlflow.start_run(run_id=trained["mlflow_run_id"]):
        result = mlflow.models.evaluate(
            model=trained["model_uri"],
            data=data,
            targets=spec.target,
            model_type="classifier",
            evaluators="default",
            evaluator_config={"pos_label": spec.positive_class, "log_model_explainability": False},
        )
        mlflow.log_metric(f"holdout_{metric}", own)
    keep = ("accuracy_score", "f1_score", "precision_score", "recall_score", "roc_auc", "log_loss")
    figures = {k: float(v) for k, v in result.metrics.items() if k in keep}
    return {"metric": metric, f"holdout_{metric}": own, "holdout_rows": len(holdout), **figures}
