"""How much a window's drift matters to the model: the share of its importance on drifted columns.

Importance is permutation importance on the champion's held-out rows, scored with the promotion
metric: how much the metric falls when one feature's values are shuffled. A drift on features the
model barely uses is a fact worth logging; a drift on the ones it leans on is a reason to act.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from ctrain.metrics import greater_is_better, metric_value
from ctrain.model_io import features, positive_scores
from ctrain.settings import DatasetConfig


def feature_importance(
    model, holdout: pd.DataFrame, spec: DatasetConfig, metric: str, seed: int = 0
) -> dict[str, float]:
    """Each feature's share of the model's permutation importance (shares add up to 1; features
    whose shuffling does not hurt count 0). All equal when none hurts."""
    sign = 1.0 if greater_is_better(metric) else -1.0
    positive = (
        holdout[spec.target].astype(type(spec.positive_class)) == spec.positive_class
    ).to_numpy()

    def score(est, X, y):
        return sign * metric_value(metric, y, positive_scores(est, X, spec.positive_class))

    result = permutation_importance(
        model,
        features(holdout, spec),
        positive,
        scoring=score,
        n_repeats=5,
        random_state=seed,
    )
    raw = np.clip(np.nan_to_num(result.importances_mean), 0, None)
    names = spec.feature_names
    if raw.sum() <= 0:
        return {f: 1 / len(names) for f in names}
    return {f: float(v / raw.sum()) for f, v in zip(names, raw, strict=True)}


def drift_severity(importance: dict[str, float], drifted: list[str] | tuple[str, ...]) -> float:
    """The share of the model's importance carried by the ``drifted`` columns."""
    return float(sum(importance.get(c, 0.0) for c in set(drifted)))
