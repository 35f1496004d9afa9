"""Drift statistics: verdicts on known shifts, agreement with Evidently and scipy, bad input."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ctrain.monitoring.drift import detect_drift, evidently_report
from ctrain.settings import DriftMethod
from ctrain.stats import ks_two_sample

W = DriftMethod(method="wasserstein", threshold=0.1)
JS = DriftMethod(method="jensenshannon", threshold=0.1)
KS = DriftMethod(method="ks", threshold=0.05)
CHI = DriftMethod(method="chisquare", threshold=0.05)
PSI = DriftMethod(method="psi", threshold=0.1)

# Both sides compute the same float expressions from the same counts; only summation order and
# how a CDF difference is rounded differ (scipy subtracts two rounded quotients, ctrain divides
# one exact count), so statistics agree to a few ulps. 1e-9 leaves room and still catches any
# real difference of definition (a log base, a std's ddof, a bin edge).
REL = 1e-9
ABS = 1e-12
CATS = np.array(["a", "b", "c", "d", "e"], dtype=object)
BASE_P = np.array([0.35, 0.25, 0.2, 0.15, 0.05])


def _categories(rng, n, p=BASE_P):
    return CATS[rng.choice(len(CATS), size=n, p=p)]


def _frame(rng, n, shifts=None):
    """A mixed frame; ``shifts`` moves named columns (numbers: mean, categorical: new p)."""
    s = {"x1": 0.0, "x2": 0.0, "x3": 0.0, "x4": 0.0, "scale": 1.0, "count": 3.0, "city": BASE_P}
    s.update(shifts or {})
    return pd.DataFrame(
        {
            "x1": rng.normal(s["x1"], 1, n),
            "x2": rng.normal(s["x2"], 1, n),
            "x3": rng.normal(s["x3"], 1, n),
            "x4": rng.lognormal(s["x4"], 0.5, n),
            "spread": rng.normal(0, s["scale"], n),
            "count": rng.poisson(s["count"], n).astype(np.int64),
            "city": _categories(rng, n, s["city"]),
            "plan": _categories(rng, n),
        }
    )


NUMERIC = ["x1", "x2", "x3", "x4", "spread", "count"]
CATEGORICAL = ["city", "plan"]


@pytest.mark.parametrize(("num", "cat"), [(W, JS), (PSI, PSI), (JS, JS)])
def test_samples_of_one_distribution_do_not_drift(num, cat):
    # Distances only: a p-value test flags 5% of undrifted columns by design.
    rng = np.random.default_rng(0)
    result = detect_drift(_frame(rng, 5000), _frame(rng, 4000), NUMERIC, CATEGORICAL, num, cat, 0.3)
    assert result.drifted_columns() == []
    assert result.share_drifted == 0 and not result.dataset_drift
    assert (result.rows_reference, result.rows_current) == (5000, 4000)
    assert [c.column for c in result.columns] == NUMERIC + CATEGORICAL


@pytest.mark.parametrize(("num", "cat"), [(W, JS), (KS, CHI), (PSI, PSI)])
def test_a_covariate_shift_flags_exactly_the_shifted_columns(num, cat):
    rng = np.random.default_rng(1)
    current = _frame(rng, 5000, {"x2": 0.5, "scale": 1.6, "city": BASE_P[::-1]})
    result = detect_drift(_frame(rng, 5000), current, NUMERIC, CATEGORICAL, num, cat, 0.3)
    assert result.drifted_columns() == ["x2", "spread", "city"]
    assert result.share_drifted == pytest.approx(3 / 8) and result.dataset_drift
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["drifted_columns"] == ["x2", "spread", "city"]


@pytest.fixture(scope="module")
def mixed():
    """Reference and current with shifts from none to large, some borderline, and NaN."""
    rng = np.random.default_rng(7)
    reference = _frame(rng, 20_000)
    current = _frame(
        rng,
        12_000,
        {
            "x1": 0.015,  # KS p-value just under 0.05
            "x2": 0.09,  # normed Wasserstein just under 0.1
            "x3": 0.12,  # and just over
            "x4": 0.3,
            "count": 3.3,
            "city": np.array([0.33, 0.25, 0.21, 0.15, 0.06]),
            "scale": 1.15,
        },
    )
    for frame in (reference, current):
        frame.loc[frame.sample(frac=0.05, random_state=3).index, "x1"] = np.nan
        frame.loc[frame.sample(frac=0.02, random_state=4).index, "plan"] = None
    current.loc[current.index[:5], "x4"] = np.inf
    return reference, current


@pytest.mark.parametrize(("num", "cat"), [(W, JS), (KS, CHI), (PSI, PSI), (JS, CHI)])
def test_fast_path_and_evidently_flag_the_same_columns(mixed, num, cat):
    reference, current = mixed
    args = (reference, current, NUMERIC, CATEGORICAL, num, cat, 0.3)
    fast = detect_drift(*args)
    slow, _ = evidently_report(*args)
    assert fast.drifted_columns() == slow.drifted_columns()
    assert 0 < len(fast.drifted_columns()) < len(fast.columns)
    assert (fast.share_drifted, fast.dataset_drift) == (slow.share_drifted, slow.dataset_drift)
    for f, s in zip(fast.columns, slow.columns, strict=True):
        assert (f.column, f.kind, f.method, f.threshold) == (
            s.column,
            s.kind,
            s.method,
            s.threshold,
        )
        assert f.statistic == pytest.approx(s.statistic, rel=REL, abs=ABS), f.column
        # The comparison is only as good as its margin: no statistic sits on its threshold.
        assert not math.isclose(f.statistic, f.threshold, rel_tol=1e-6), f.column
        assert (f.missing_reference, f.missing_current) == (s.missing_reference, s.missing_current)
    by_name = {c.column: c for c in fast.columns}
    assert by_name["x1"].missing_reference == 1000 and by_name["x4"].missing_current == 5


@pytest.mark.parametrize(
    ("n", "m", "ties"),
    [(300, 200, False), (8000, 9000, True), (40_000, 25_000, False), (40_000, 30_000, True)],
)
def test_ks_matches_scipy(n, m, ties):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0, 1, n), rng.normal(0.03, 1, m)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    expected = stats.ks_2samp(a, b)
    statistic, pvalue = ks_two_sample(a, b)
    assert statistic == pytest.approx(expected.statistic, rel=REL, abs=ABS)
    assert pvalue == pytest.approx(expected.pvalue, rel=REL, abs=ABS)


def test_nan_values_are_dropped_and_counted():
    rng = np.random.default_rng(2)
    reference, current = _frame(rng, 3000), _frame(rng, 3000, {"x1": 0.3})
    current.loc[:99, "x1"] = np.nan
    current.loc[:49, "city"] = None
    result = detect_drift(reference, current, ["x1"], ["city"], KS, JS, 0.5)
    x1, city = result.columns
    assert (x1.missing_reference, x1.missing_current, city.missing_current) == (0, 100, 50)
    assert x1.statistic == pytest.approx(stats.ks_2samp(reference.x1, current.x1.dropna()).pvalue)


def _bad_inputs():
    rng = np.random.default_rng(3)
    reference, current = _frame(rng, 500), _frame(rng, 500)
    return {
        "missing column": (
            reference,
            current.drop(columns="x2"),
            W,
            r"\['x2'\] missing from the current",
        ),
        "empty current": (reference, current.iloc[:0], W, "current frame has no rows"),
        "all-NaN numeric": (reference, current.assign(x3=np.nan), W, "'x3' has no finite value"),
        "all-None categorical": (reference, current.assign(plan=None), W, "'plan' has no value"),
        "method of the wrong kind": (reference, current, CHI, "'chisquare' does not apply"),
    }


BAD_INPUTS = _bad_inputs()


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused_with_the_column_named(case):
    reference, current, num, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        detect_drift(reference, current, NUMERIC, CATEGORICAL, num, JS, 0.3)


def test_evidently_report_refuses_the_same_input():
    reference, current, num, message = BAD_INPUTS["missing column"]
    with pytest.raises(ValueError, match=message):
        evidently_report(reference, current, NUMERIC, CATEGORICAL, num, JS, 0.3)


def test_evidently_report_samples_and_saves_html(mixed, tmp_path):
    reference, current = mixed
    result, snapshot = evidently_report(
        reference, current, NUMERIC, CATEGORICAL, W, JS, 0.3, sample_rows=2000, seed=1
    )
    assert (result.rows_reference, result.rows_current) == (2000, 2000)
    assert len(result.columns) == len(NUMERIC) + len(CATEGORICAL)
    path = tmp_path / "drift.html"
    snapshot.save_html(str(path))
    assert path.stat().st_size > 10_000
    assert json.loads(snapshot.json())["metrics"]
