"""How sure a window's performance drop is: the interval behind "decisive" on real statistics."""

import numpy as np
import pandas as pd
import pytest

from ctrain.monitoring.check import ChampionReference, _performance


def _scores(rng, n: int, separation: float):
    """Labels and scores whose roc_auc grows with ``separation`` (0: chance)."""
    y = rng.random(n) < 0.3
    s = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + separation * (2 * y - 1))))
    return y, s


def _reference(rng, n=1000, separation=1.0) -> ChampionReference:
    from ctrain.metrics import metric_value

    y, s = _scores(rng, n, separation)
    return ChampionReference(
        version="1",
        metric="roc_auc",
        holdout_metric=metric_value("roc_auc", y, s),
        reference=pd.DataFrame(),
        holdout_scores=pd.DataFrame({"score": s}),
        holdout_positive=y,
        profile={"numeric": {}, "categorical": {}},
    )


def _window(rng, n, separation):
    y, s = _scores(rng, n, separation)
    return pd.DataFrame({"row_id": [f"r{i}" for i in range(n)], "score": s, "label": y.astype(int)})


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def test_a_large_drop_on_many_rows_is_decisive(settings, rng):
    ref = _reference(rng)
    perf = _performance(settings, _window(rng, 2000, 0.1), ref)
    assert ref.holdout_metric > 0.9 and perf.value < 0.6
    assert perf.degraded and perf.decisive
    assert perf.drop_low > settings.monitoring.performance_drop
    assert perf.drop_low < perf.drop < perf.drop_high


def test_a_drop_just_past_the_tolerance_on_few_rows_is_marginal(settings, rng):
    ref = _reference(rng)
    # A window a bit worse than the champion's held-out figure, on the minimum of rows.
    perf = _performance(settings, _window(rng, 220, 0.73), ref)
    assert perf.degraded and not perf.decisive, perf
    assert perf.drop_low <= settings.monitoring.performance_drop < perf.drop


def test_the_interval_narrows_as_labeled_rows_grow(settings, rng):
    ref = _reference(rng, n=5000)
    few = _performance(settings, _window(rng, 250, 0.5), ref)
    many = _performance(settings, _window(rng, 5000, 0.5), ref)
    assert (many.drop_high - many.drop_low) < 0.5 * (few.drop_high - few.drop_low)


def test_a_window_as_good_as_the_champion_is_neither(settings, rng):
    ref = _reference(rng)
    perf = _performance(settings, _window(rng, 2000, 1.0), ref)
    assert not perf.degraded and not perf.decisive
    assert perf.drop_low < 0 < perf.drop_high
