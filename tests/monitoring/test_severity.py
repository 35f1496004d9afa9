"""How much a drift matters: the champion's permutation importance on the drifted columns."""

import numpy as np
import pandas as pd

from ctrain.monitoring.severity import drift_severity, feature_importance
from ctrain.training.pipeline import build_pipeline


def test_drift_on_the_feature_the_model_leans_on_is_severe_and_on_the_others_is_not(settings):
    spec = settings.dataset
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame({f.name: rng.normal(0, 1, n) for f in spec.features if f.type == "numeric"})
    for c in spec.categorical:
        df[c] = rng.choice(["a", "b"], n)
    # Only tenure_months decides the label.
    df[spec.target] = (df["tenure_months"] + rng.normal(0, 0.3, n) > 0).astype(int)
    model = build_pipeline(spec, settings.training.candidates[0], seed=0)
    model.fit(df[spec.feature_names], df[spec.target])
    importance = feature_importance(model, df.iloc[:1000], spec, "roc_auc")
    assert abs(sum(importance.values()) - 1) < 1e-9
    assert importance["tenure_months"] > 0.9
    assert drift_severity(importance, ["tenure_months"]) > 0.9
    others = [c for c in spec.feature_names if c != "tenure_months"]
    assert drift_severity(importance, others) < 0.1
