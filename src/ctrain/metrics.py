"""The metrics a comparison can be decided on, with their direction, and their bootstrap form."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

# Scores are clipped like this before log_loss, here and in the bootstrap form.
_EPS = 1e-7

# name -> (function of (y_true as bool, positive-class score), greater is better)
_METRICS = {
    "roc_auc": (lambda y, s: roc_auc_score(y, s), True),
    "average_precision": (lambda y, s: average_precision_score(y, s), True),
    "accuracy": (lambda y, s: float(np.mean((s >= 0.5) == y)), True),
    "f1": (lambda y, s: f1_score(y, s >= 0.5, zero_division=0.0), True),
    "log_loss": (lambda y, s: log_loss(y, np.clip(s, _EPS, 1 - _EPS), labels=[False, True]), False),
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


class ResampleMetric:
    """One metric of one model's scores, on many bootstrap resamples of the same rows.

    A resample is given as counts: ``counts[i]`` is how often row ``i`` was drawn. Calling the
    object with the counts gives what ``metric_value`` gives on the resampled rows (the same
    definitions as scikit-learn's, ties included, up to float rounding), but every sort and
    search happens once, here: a resample then costs a cumulative sum and a few gathers, where
    scikit-learn sorts the resampled scores again (30x faster on 250,000 rows, 50x on 2,500).
    """

    def __init__(self, name: str, y_true: np.ndarray, scores: np.ndarray):
        if name not in _METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {known_metrics()}")
        self.name = name
        y = np.asarray(y_true, dtype=bool)
        s = np.asarray(scores, dtype=float)
        self.positives = np.flatnonzero(y)
        if name == "roc_auc":
            # For each positive: how many negatives score below it, and how many tie with it.
            self.negatives = np.flatnonzero(~y)[np.argsort(s[~y], kind="stable")]
            ranked = s[self.negatives]
            self.below = np.searchsorted(ranked, s[self.positives], "left")
            self.up_to = np.searchsorted(ranked, s[self.positives], "right")
        elif name == "average_precision":
            # For each positive: the rows, and the positives, that score strictly below it.
            self.everyone = np.argsort(s, kind="stable")
            self.ranked_positives = self.positives[np.argsort(s[self.positives], kind="stable")]
            own = s[self.positives]
            self.below_all = np.searchsorted(s[self.everyone], own, "left")
            self.below_pos = np.searchsorted(s[self.ranked_positives], own, "left")
        elif name == "log_loss":
            p = np.clip(s, _EPS, 1 - _EPS)
            self.loss = np.where(y, -np.log(p), -np.log1p(-p))
        else:
            predicted = s >= 0.5
            self.correct = predicted == y
            self.tp, self.fp, self.fn = predicted & y, predicted & ~y, ~predicted & y

    def __call__(self, counts: np.ndarray) -> float:
        w = np.asarray(counts, dtype=float)
        if self.name == "accuracy":
            return float(w @ self.correct / w.sum())
        if self.name == "log_loss":
            return float(w @ self.loss / w.sum())
        if self.name == "f1":
            tp, fp, fn = w @ self.tp, w @ self.fp, w @ self.fn
            return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0
        on_positives = w[self.positives]
        n_pos = on_positives.sum()
        if self.name == "roc_auc":
            # Mann-Whitney: a positive beats the negatives below it and ties half of those level.
            cum = _cumsum0(w[self.negatives])
            n_neg = cum[-1]
            if not n_pos or not n_neg:
                return float("nan")
            below = cum[self.below]
            return float(on_positives @ (below + 0.5 * (cum[self.up_to] - below)) / (n_pos * n_neg))
        # Average precision: each positive adds its weight times the precision at its own score.
        cum_all = _cumsum0(w[self.everyone])
        cum_pos = _cumsum0(w[self.ranked_positives])
        if not n_pos or n_pos == cum_all[-1]:
            return float("nan")
        at_or_above = cum_all[-1] - cum_all[self.below_all]
        hits = n_pos - cum_pos[self.below_pos]
        # A positive drawn 0 times adds nothing; max() only keeps its 0/0 out of the sum.
        return float(on_positives @ (hits / np.maximum(at_or_above, 1.0)) / n_pos)


def _cumsum0(x: np.ndarray) -> np.ndarray:
    """Cumulative sum with a leading 0: ``out[k]`` is the sum of the first ``k`` values."""
    out = np.empty(len(x) + 1)
    out[0] = 0.0
    np.cumsum(x, out=out[1:])
    return out
