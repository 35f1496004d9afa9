"""The metrics a comparison can be decided on, with their direction."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

# name -> (function of (y_true as bool, positive-class score), greater is better)
_METRICS = {
    "roc_auc": (lambda y, s: roc_auc_score(y, s), True),
    "average_precision": (lambda y, s: average_precision_score(y, s), True),
    "accuracy": (lambda y, s: float(np.mean((s >= 0.5) == y)), True),
    "f1": (lambda y, s: f1_score(y, s >= 0.5, zero_division=0.0), True),
    "log_loss": (lambda y, s: log_loss(y, np.clip(s, 1e-7, 1 - 1e-7), labels=[False, True]), False),
}


def metric_value(name: str, y_true: np.ndarray, scores: np.ndarray) -> float:
    """``name`` of positive-class ``scores`` against boolean ``y_true``; NaN when undefined."""
    fn, _ = _METRICS[name]
    if name in ("roc_auc", "average_precision") and len(np.unique(y_true)) < 2:
        return float("nan")
    return float(fn(np.asarray(y_true, dtype=bool), np.asarray(scores, dtype=float)))


def greater_is_better(name: str) -> bool:
    return _METRICS[name][1]


def known_metrics() -> list[str]:
    return list(_METRICS)
