"""The champion's performance on a window, estimated before its labels arrive (CBPE).

Confidence-based performance estimation, the method NannyML publishes as CBPE:

1. **Calibrate.** Isotonic regression of the champion's held-out labels on its scores maps a
   score to the chance that the row is positive.
2. **Estimate.** Each row of the window counts as ``p`` of a positive and ``1 - p`` of a negative:
   the metric of that expected confusion matrix is the estimate. Accuracy is the mean of ``p``
   over rows predicted positive and ``1 - p`` over the others; ROC AUC is the area under the
   curve of expected true- and false-positive rates, threshold by threshold down the scores.
3. **Interval.** Labels drawn from the calibrated chances (rows independent) give the spread of
   the figure the real labels could show on these rows; the champion's held-out figure is
   resampled on its own rows. The drop's interval takes both, like the realised drop's.

It holds while the chance of a label given the features is what it was (a covariate shift); a
change of concept is invisible to it, which is what the labels, once they arrive, are for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.isotonic import IsotonicRegression

from ctrain.metrics import ResampleMetric, greater_is_better, metric_value

# Metrics with an expected-confusion-matrix form; others are estimated by simulation alone.
_EXPECTED = ("roc_auc", "accuracy")


def fit_calibrator(scores: np.ndarray, positive: np.ndarray) -> IsotonicRegression:
    """Score -> chance of the positive class, learned on held-out rows with known labels."""
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    return iso.fit(np.asarray(scores, dtype=float), np.asarray(positive, dtype=float))


def expected_metric(metric: str, p: np.ndarray, scores: np.ndarray) -> float:
    """CBPE's point estimate of ``metric`` on rows with ``scores`` and calibrated chances ``p``."""
    p, s = np.asarray(p, dtype=float), np.asarray(scores, dtype=float)
    if metric == "accuracy":
        return float(np.mean(np.where(s >= 0.5, p, 1 - p)))
    if metric == "roc_auc":
        order = np.argsort(-s, kind="stable")
        s, p = s[order], p[order]
        # One point of the curve per distinct score: tied rows cross the threshold together.
        last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
        tp, fp = np.cumsum(p)[last], np.cumsum(1 - p)[last]
        if tp[-1] <= 0 or fp[-1] <= 0:
            return float("nan")
        tpr, fpr = np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]
        return float(np.trapezoid(tpr, fpr))
    return float(np.mean(simulated(metric, p, s, 200, seed=0)))


def simulated(metric: str, p: np.ndarray, scores: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``metric`` on ``n`` draws of labels from the chances ``p``, the scores held fixed."""
    rng = np.random.default_rng(seed)
    draws = rng.random((n, len(p))) < np.asarray(p)[None, :]
    if metric == "roc_auc":
        # Mann-Whitney on ranks computed once: the scores do not change between draws.
        ranks = rankdata(scores)
        n_pos = draws.sum(axis=1)
        n_neg = len(p) - n_pos
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (draws @ ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
    if metric == "accuracy":
        return (draws == (np.asarray(scores) >= 0.5)[None, :]).mean(axis=1)
    return np.array([metric_value(metric, d, scores) for d in draws])


@dataclass(frozen=True)
class EstimatedDrop:
    """The estimated figure on a window and its drop from the champion's held-out figure."""

    value: float
    low: float  # interval of the figure the labels could show, at ``confidence``
    high: float
    drop: float  # positive = worse than the champion's held-out figure
    drop_low: float
    drop_high: float


def estimate_drop(
    metric: str,
    calibrator: IsotonicRegression,
    scores: np.ndarray,
    holdout_positive: np.ndarray,
    holdout_scores: np.ndarray,
    n: int,
    confidence: float,
    seed: int = 0,
) -> EstimatedDrop:
    """Estimate ``metric`` on a window's ``scores`` and how far below the champion's held-out
    figure it lies, with intervals at ``confidence`` (``n`` draws each side)."""
    scores = np.asarray(scores, dtype=float)
    p = calibrator.predict(scores)
    value = expected_metric(metric, p, scores) if metric in _EXPECTED else float("nan")
    window = simulated(metric, p, scores, n, seed)
    if metric not in _EXPECTED:
        value = float(np.nanmean(window))
    held = ResampleMetric(metric, holdout_positive, holdout_scores)
    rng = np.random.default_rng(seed + 1)
    m = len(holdout_scores)
    base = np.array([held(rng.multinomial(m, np.full(m, 1.0 / m))) for _ in range(n)])
    champion = metric_value(metric, holdout_positive, holdout_scores)
    sign = 1.0 if greater_is_better(metric) else -1.0
    drops = sign * (base - window)
    a = (1 - confidence) / 2
    lo, hi = np.nanquantile(window, [a, 1 - a])
    drop_lo, drop_hi = np.nanquantile(drops, [a, 1 - a])
    return EstimatedDrop(
        value=value,
        low=float(lo),
        high=float(hi),
        drop=float(sign * (champion - value)),
        drop_low=float(drop_lo),
        drop_high=float(drop_hi),
    )
