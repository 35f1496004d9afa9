import numpy as np
import pandas as pd
from scipy.stats import ks_2samp
from sklearn.linear_model import LogisticRegression

from ctrain.data.demo_source import DemoSource


def test_batches_are_deterministic_by_seed_and_index():
    a, b = DemoSource(seed=1).batch(3), DemoSource(seed=1).batch(3)
    pd.testing.assert_frame_equal(a, b)
    assert not DemoSource(seed=2).batch(3).equals(a)
    assert not DemoSource(seed=1).batch(4).equals(a)


def test_batch_is_realistic_tabular_data():
    df = DemoSource(batch_rows=4000).batch(0)
    assert df["row_id"].is_unique
    assert df["event_time"].is_monotonic_increasing
    assert set(df["region"]) == {"north", "south", "east", "west"}
    assert 0.12 < df["label"].mean() < 0.3  # imbalanced, near the configured 20%
    assert 0.02 < df["payment_delay_days"].isna().mean() < 0.08


def test_covariate_shift_moves_features_but_not_before_its_batch():
    src = DemoSource(batch_rows=3000, covariate_shift_from=5)
    before, stable, after = src.batch(3), src.batch(4), src.batch(5)
    assert ks_2samp(before["tenure_months"], stable["tenure_months"]).pvalue > 0.001
    assert ks_2samp(before["tenure_months"], after["tenure_months"]).pvalue < 1e-6


def test_concept_drift_changes_the_label_rule_not_the_features():
    src = DemoSource(batch_rows=4000, concept_drift_from=5)
    old, new = src.batch(4), src.batch(5)
    assert ks_2samp(old["tenure_months"], new["tenure_months"]).pvalue > 0.001
    cols = ["tenure_months", "support_calls", "usage_hours"]
    model = LogisticRegression(max_iter=500).fit(old[cols], old["label"])
    acc_old = (model.predict(src.batch(3)[cols]) == src.batch(3)["label"]).mean()
    acc_new = (model.predict(new[cols]) == new["label"]).mean()
    assert acc_new < acc_old - 0.05
    assert np.isclose(old["label"].mean(), new["label"].mean(), atol=0.05)
