"""The NumPy scoring path gives the pipeline's own scores, for every estimator ctrain trains."""

import warnings

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from ctrain.data.demo_source import DemoSource
from ctrain.model_io import features, positive_scores, target
from ctrain.serving.fast import FastScorer
from ctrain.serving.rows import as_frame, rows_from_frame
from ctrain.settings import ALLOWED_ESTIMATORS, CandidateSpec
from ctrain.training.pipeline import build_pipeline

SMALL = {
    "sklearn.ensemble.HistGradientBoostingClassifier": {"max_iter": 5},
    "sklearn.ensemble.RandomForestClassifier": {"n_estimators": 5},
    "sklearn.ensemble.ExtraTreesClassifier": {"n_estimators": 5},
    "sklearn.ensemble.GradientBoostingClassifier": {"n_estimators": 5},
}


@pytest.mark.parametrize("estimator", sorted(ALLOWED_ESTIMATORS))
def test_the_fast_path_matches_the_pipeline(make_settings, estimator):
    base = make_settings().dataset.model_dump(mode="json")
    for f in base["features"]:
        f["nullable"] = f["name"] in ("payment_delay_days", "plan")
    spec = make_settings(dataset=base).dataset
    train = DemoSource(batch_rows=600).batch(0)
    cand = CandidateSpec(name="c", estimator=estimator, params=SMALL.get(estimator, {}))
    model = build_pipeline(spec, cand, 0).fit(features(train, spec), target(train, spec))
    rows_frame = DemoSource(batch_rows=300).batch(7)
    # Missing values and a category never seen in training, as callers may send them.
    rows_frame.loc[:20, "payment_delay_days"] = np.nan
    rows_frame.loc[10:30, "region"] = "atlantis"
    rows_frame.loc[30:40, "plan"] = None
    rows = rows_from_frame(rows_frame, spec)
    assert len(rows) == len(rows_frame)
    fast = FastScorer.of(model, spec)
    assert fast is not None
    # A logistic regression is scored without its predict_proba (and its input checks).
    assert (fast.linear is not None) == estimator.endswith("LogisticRegression")
    slow = positive_scores(model, features(as_frame(rows, spec, "2026-01-01"), spec), 1)
    np.testing.assert_allclose(fast(rows), slow, rtol=0, atol=1e-12)
    # A finite number the scaling takes past float64's range: where the pipeline refuses it,
    # so does the fast path; where the pipeline scores it, the scores agree.
    refused = 0
    for col in spec.numeric:
        for value in (1.7e308, -1.7e308):
            (row,) = rows_from_frame(rows_frame.head(1).assign(**{col: value}), spec)
            frame = features(as_frame([row], spec, "2026-01-01"), spec)
            with warnings.catch_warnings():  # the estimators' own overflow warnings
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    expected = positive_scores(model, frame, 1)
                except ValueError:
                    refused += 1
                    with pytest.raises(ValueError, match="infinity or a value too large"):
                        fast([row])
                    continue
                np.testing.assert_allclose(fast([row]), expected, rtol=0, atol=1e-12)
    if fast.linear is not None:  # the path without predict_proba's checks meets such values
        assert refused > 0


def test_a_pipeline_of_another_shape_has_no_fast_path(settings):
    spec = settings.dataset
    train = DemoSource(batch_rows=300).batch(0)
    cand = CandidateSpec(name="c", estimator="sklearn.linear_model.LogisticRegression")
    model = build_pipeline(spec, cand, 0)
    model.steps.insert(0, ("extra", FunctionTransformer()))
    model.fit(features(train, spec), target(train, spec))
    assert FastScorer.of(model, spec) is None
    assert FastScorer.of(make_pipeline(FunctionTransformer()), spec) is None


def test_a_window_that_cannot_land_keeps_its_rows(settings, tmp_path):
    from ctrain.serving.log import InferenceLog

    rows = rows_from_frame(DemoSource(batch_rows=50).batch(3), settings.dataset)
    log = InferenceLog(settings, "t")
    log.add(rows[:30], np.full(30, 0.2), "1", "champion", "r1", 1.0)
    # The landing folder cannot be written (a file stands where the folder should be).
    settings.landing_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.landing_dir.write_text("not a folder")
    with pytest.raises(OSError):
        log.flush()
    assert list(settings.predictions_dir.glob("*.parquet")) == []  # no answers without rows
    log.add(rows[30:], np.full(20, 0.7), "1", "champion", "r2", 1.0)
    assert log.open_rows() == 50
    settings.landing_dir.unlink()
    (window,) = log.flush()
    import pandas as pd

    landed = pd.read_parquet(settings.landing_dir / f"{window}.parquet")
    preds = pd.read_parquet(settings.predictions_dir / f"{window}.parquet")
    assert landed["row_id"].tolist() == [r.row_id for r in rows]
    assert preds["request_id"].tolist() == ["r1"] * 30 + ["r2"] * 20
    assert preds["score"].tolist() == [0.2] * 30 + [0.7] * 20
