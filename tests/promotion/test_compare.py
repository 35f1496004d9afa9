"""The comparison's statistics and rules, on scores with known properties."""

import numpy as np
import pandas as pd
import pytest

from ctrain.metrics import ResampleMetric, known_metrics, metric_value
from ctrain.promotion.compare import decide, slice_metrics
from ctrain.settings import PromotionConfig
from ctrain.stats import paired_bootstrap


@pytest.fixture
def rows():
    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.25
    signal = y + rng.normal(0, 1.0, 3000)
    return y, signal, rng


def test_identical_models_give_an_interval_around_zero(rows):
    y, s, _ = rows
    r = paired_bootstrap(y, s, s.copy(), "roc_auc", 300, 0.95, seed=1)
    assert r.diff == 0 and r.ci_low == 0 and r.ci_high == 0


def test_a_clearly_better_model_has_an_interval_above_zero(rows):
    y, s, rng = rows
    worse = s + rng.normal(0, 1.5, len(s))
    r = paired_bootstrap(y, s, worse, "roc_auc", 300, 0.95, seed=1)
    assert r.diff > 0.05 and r.ci_low > 0 and r.ci_low <= r.diff <= r.ci_high


def test_pairing_detects_a_gain_that_unpaired_intervals_would_miss(rows):
    from sklearn.metrics import roc_auc_score

    y, s, rng = rows
    slightly_worse = s + rng.normal(0, 0.45, len(s))
    r = paired_bootstrap(y, s, slightly_worse, "roc_auc", 500, 0.95, seed=2)
    assert r.ci_low > 0  # the paired difference is resolved...

    def own_interval(scores):
        boots = []
        for _ in range(300):
            idx = rng.integers(0, len(y), len(y))
            boots.append(roc_auc_score(y[idx], scores[idx]))
        return np.quantile(boots, [0.025, 0.975])

    new_lo, _ = own_interval(s)
    _, old_hi = own_interval(slightly_worse)
    assert new_lo < old_hi  # ...while each model's own interval overlaps the other's


@pytest.mark.parametrize("metric", known_metrics())
def test_a_resample_scores_as_scikit_learn_scores_the_resampled_rows(rows, metric):
    y, s, rng = rows
    # Probabilities rounded to two places: many ties, as a tree model's scores have.
    p = np.round(1 / (1 + np.exp(-(s - 1.2))), 2)
    on_counts = ResampleMetric(metric, y, p)
    for _ in range(25):
        idx = rng.integers(0, len(y), len(y))
        counts = np.bincount(idx, minlength=len(y))
        assert on_counts(counts) == pytest.approx(metric_value(metric, y[idx], p[idx]), abs=1e-12)


def test_the_bootstrap_interval_is_the_one_a_loop_over_resampled_rows_gives(rows):
    y, s, rng = rows
    other = np.round(s + rng.normal(0, 0.5, len(s)), 1)
    r = paired_bootstrap(y, s, other, "roc_auc", 200, 0.9, seed=5)
    draws, diffs = np.random.default_rng(5), []
    for _ in range(200):
        idx = draws.integers(0, len(y), len(y))
        diffs.append(
            metric_value("roc_auc", y[idx], s[idx]) - metric_value("roc_auc", y[idx], other[idx])
        )
    lo, hi = np.quantile(diffs, [0.05, 0.95])
    assert r.n_resamples == 200
    assert (r.ci_low, r.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))


def test_lower_is_better_metrics_are_oriented(rows):
    y, s, rng = rows
    p_good = 1 / (1 + np.exp(-(s - 1.2)))
    p_bad = 1 / (1 + np.exp(-(s + rng.normal(0, 2, len(s)) - 1.2)))
    r = paired_bootstrap(y, p_good, p_bad, "log_loss", 200, 0.95, seed=3)
    assert r.challenger < r.champion and r.diff > 0 and r.ci_low > 0


def _paired(diff, lo, hi):
    from ctrain.stats import Difference

    return Difference(0.8 + diff, 0.8, diff, lo, hi, 1000, 1000)


CFG = PromotionConfig(
    floors={"roc_auc": 0.7}, min_improvement=0.01, slice_columns=["region"], slice_tolerance=0.02
)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"validation_status": "failed"}, ("reject", "validation")),
        ({"floors": {"roc_auc": 0.69}}, ("reject", "floor")),
        ({"paired": None}, ("promote", "first_champion")),
        ({"paired": _paired(0.005, -0.002, 0.012)}, ("reject", "not_significant")),
        ({"paired": _paired(0.005, 0.001, 0.009)}, ("reject", "min_improvement")),
        ({"paired": _paired(0.03, 0.01, 0.05)}, ("promote", "significant_improvement")),
        (
            {
                "paired": _paired(0.03, 0.01, 0.05),
                "slices": [{"column": "region", "value": "west", "rows": 300, "diff": -0.05}],
            },
            ("reject", "slice_guardrail"),
        ),
        ({"paired": _paired(-0.03, -0.05, -0.01), "force": True}, ("promote", "forced")),
        ({"paired": None, "floors": {"roc_auc": 0.5}, "force": True}, ("reject", "floor")),
        # Against a champion the monitor condemned, on the rows where it failed: not worse by
        # more than non_inferiority_margin (0.02) is enough; a slice guardrail still holds.
        (
            {"paired": _paired(0.02, -0.009, 0.05), "non_inferior": "on b9"},
            ("promote", "non_inferior"),
        ),
        ({"paired": _paired(0.0, -0.03, 0.03), "non_inferior": "on b9"}, ("reject", "inferior")),
        (
            {
                "paired": _paired(0.02, -0.009, 0.05),
                "non_inferior": "on b9",
                "slices": [{"column": "region", "value": "west", "rows": 300, "diff": -0.05}],
            },
            ("reject", "slice_guardrail"),
        ),
        ({"paired": _paired(0.02, -0.009, 0.05)}, ("reject", "not_significant")),
        # Under the floor, where the condemned champion is further under it: not kept by it.
        (
            {
                "paired": _paired(0.1, 0.03, 0.16),
                "non_inferior": "on b9",
                "floors": {"roc_auc": 0.62},
                "champion_floors": {"roc_auc": 0.52},
            },
            ("promote", "significant_improvement"),
        ),
        (
            {
                "paired": _paired(0.1, 0.03, 0.16),
                "non_inferior": "on b9",
                "floors": {"roc_auc": 0.62},
                "champion_floors": {"roc_auc": 0.64},
            },
            ("reject", "floor"),
        ),
        (
            {"paired": _paired(0.03, 0.01, 0.05), "non_inferior": "on b9"},
            ("promote", "significant_improvement"),
        ),
    ],
)
def test_rules_decide_in_order(kwargs, expected):
    args = {
        "validation_status": "passed",
        "floors": {"roc_auc": 0.85},
        "paired": _paired(0.0, -0.01, 0.01),
        "slices": [],
        "force": False,
    }
    action, rule, reason = decide(CFG, **(args | kwargs))
    assert (action, rule) == expected
    assert reason


def test_slice_metrics_skip_small_or_one_class_slices():
    cfg = PromotionConfig(slice_columns=["region"], slice_min_rows=50)
    frame = pd.DataFrame({"region": ["a"] * 100 + ["b"] * 20 + ["c"] * 60})
    y = np.array([True, False] * 50 + [True, False] * 10 + [False] * 60)
    s = np.linspace(0, 1, 180)
    out = slice_metrics(frame, y, s, s[::-1].copy(), cfg)
    assert [r["value"] for r in out] == ["a"]
    assert out[0]["rows"] == 100 and "diff" in out[0]


def test_a_floor_the_condemned_champion_misses_by_more_is_named_in_the_reason():
    action, rule, reason = decide(
        CFG,
        "passed",
        {"roc_auc": 0.62},
        _paired(0.02, -0.009, 0.05),
        [],
        False,
        "on the 375 held-out rows of b9, where v1 failed decisively",
        {"roc_auc": 0.52},
    )
    assert (action, rule) == ("promote", "non_inferior")
    assert reason.endswith(
        "roc_auc=0.6200 misses the absolute floor 0.7, but the condemned champion is further "
        "from it on the same rows (0.5200)"
    )
    assert "where v1 failed decisively" in reason
