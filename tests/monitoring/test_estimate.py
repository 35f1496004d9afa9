"""Performance estimated before labels (CBPE): the estimate, its interval, and what it cannot see."""

import numpy as np
import pytest

from ctrain.metrics import metric_value
from ctrain.monitoring.estimate import estimate_drop, expected_metric, fit_calibrator, simulated


def _rows(rng, n, centre=0.0, spread=1.0):
    """Labels drawn from a known chance, and a score that ranks like it but is miscalibrated."""
    x = rng.normal(centre, spread, n)
    y = rng.random(n) < 1 / (1 + np.exp(-(2 * x - 1)))
    score = 1 / (1 + np.exp(-(1.2 * x - 0.3)))
    return y, score


@pytest.fixture
def holdout():
    rng = np.random.default_rng(11)
    y, s = _rows(rng, 1200)
    return y, s, fit_calibrator(s, y)


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy"])
def test_the_expected_confusion_matrix_agrees_with_labels_drawn_from_the_chances(metric):
    rng = np.random.default_rng(5)
    p = rng.beta(1, 3, 2000)
    s = np.clip(p + rng.normal(0, 0.05, 2000), 0, 1)
    draws = simulated(metric, p, s, 2000, seed=1)
    assert expected_metric(metric, p, s) == pytest.approx(np.nanmean(draws), abs=0.003)


def test_with_certain_labels_it_is_the_realised_figure_ties_included():
    rng = np.random.default_rng(2)
    y = rng.random(500) < 0.3
    s = np.round(np.where(y, 0.6, 0.4) + rng.normal(0, 0.2, 500), 1)  # many tied scores
    p = y.astype(float)  # chances of 0 or 1: the expected labels are the labels
    assert expected_metric("roc_auc", p, s) == pytest.approx(metric_value("roc_auc", y, s))
    assert expected_metric("accuracy", p, s) == pytest.approx(metric_value("accuracy", y, s))


def test_on_data_like_the_champions_the_estimate_finds_the_realised_figure(holdout):
    y_h, s_h, cal = holdout
    rng = np.random.default_rng(21)
    inside, errors = 0, []
    for seed in range(30):
        y, s = _rows(rng, 1500)
        e = estimate_drop("roc_auc", cal, s, y_h, s_h, 500, 0.99, seed=seed)
        real = metric_value("roc_auc", y, s)
        errors.append(e.value - real)
        inside += e.low <= real <= e.high
        assert e.drop_low < 0.05 < 0.05 + e.drop_high  # nothing past the tolerance
    assert abs(np.mean(errors)) < 0.005
    assert inside >= 27  # a 99% interval holds the realised figure nearly every time


def test_a_shift_into_the_uncertain_middle_is_estimated_as_the_drop_it_is(holdout):
    y_h, s_h, cal = holdout
    rng = np.random.default_rng(8)
    # Rows crowd around the decision boundary: the same rule, a much harder window.
    y, s = _rows(rng, 2000, centre=0.5, spread=0.25)
    e = estimate_drop("roc_auc", cal, s, y_h, s_h, 1000, 0.99)
    real_drop = metric_value("roc_auc", y_h, s_h) - metric_value("roc_auc", y, s)
    assert e.drop_low > 0.05  # harmful before any label
    assert e.drop_low <= real_drop <= e.drop_high


def test_a_harmless_shift_is_called_harmless(holdout):
    y_h, s_h, cal = holdout
    rng = np.random.default_rng(9)
    y, s = _rows(rng, 2000, centre=-0.3)  # moved, still well spread: ranking as easy as before
    e = estimate_drop("roc_auc", cal, s, y_h, s_h, 1000, 0.99)
    assert e.drop_high <= 0.05


def test_a_change_of_concept_is_invisible_to_the_estimate_and_left_to_the_labels(holdout):
    y_h, s_h, cal = holdout
    rng = np.random.default_rng(10)
    y, s = _rows(rng, 2000)
    y = ~y  # the rule flips; the features, and so the scores, do not move
    e = estimate_drop("roc_auc", cal, s, y_h, s_h, 1000, 0.99)
    assert e.drop_high <= 0.05 and metric_value("roc_auc", y, s) < 0.3
