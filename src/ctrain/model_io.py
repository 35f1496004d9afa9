"""What goes into a model and what comes out: its input columns, its target, its scores.

Training, evaluation, the comparison, batch scoring and the monitor all turn rows into model
input and model output into positive-class scores the same way; this is that one way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ctrain.settings import DatasetConfig


def features(df: pd.DataFrame, spec: DatasetConfig) -> pd.DataFrame:
    """The model's input columns, in declared order and types."""
    X = df[spec.feature_names].copy()
    for c in spec.numeric:
        X[c] = X[c].astype(float)
    for c in spec.categorical:
        X[c] = X[c].astype(object).where(X[c].notna(), None)
    return X


def target(df: pd.DataFrame, spec: DatasetConfig) -> np.ndarray:
    """The target column as the declared class type (int classes stay ints)."""
    y = df[spec.target]
    if all(isinstance(c, int) for c in spec.classes):
        return y.astype(int).to_numpy()
    return y.astype(str).to_numpy()


def positive_scores(model: Any, X: pd.DataFrame, positive_class: Any) -> np.ndarray:
    """Probability of the positive class for each row."""
    proba = model.predict_proba(X)
    classes = list(model.classes_)
    return proba[:, classes.index(positive_class)]
