"""The model's shape: one scikit-learn Pipeline (preprocessing plus estimator) and its scores."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ctrain.settings import CandidateSpec, DatasetConfig


def build_pipeline(spec: DatasetConfig, candidate: CandidateSpec, seed: int) -> Pipeline:
    """Preprocessing for the declared features followed by the candidate's estimator."""
    module, _, name = candidate.estimator.rpartition(".")
    try:
        estimator_cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"candidate {candidate.name!r}: cannot import estimator {candidate.estimator!r}"
        ) from exc
    params = dict(candidate.params)
    if "random_state" in estimator_cls().get_params():
        params.setdefault("random_state", seed)
    pre = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                spec.numeric,
            ),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(
                        missing_values=None, strategy="constant", fill_value="__missing__"
                    ),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                spec.categorical,
            ),
        ],
        remainder="drop",
    )
    return Pipeline([("pre", pre), ("model", estimator_cls(**params))])


def features(df: pd.DataFrame, spec: DatasetConfig) -> pd.DataFrame:
    """The model's input columns, in declared order and types."""
    X = df[spec.feature_names].copy()
    for c in spec.numeric:
        X[c] = X[c].astype(float)
    for c in spec.categorical:
        X[c] = X[c].astype(object).where(X[c].notna(), None)
    return X


def target(df: pd.DataFrame, spec: DatasetConfig) -> np.ndarray:
    y = df[spec.target]
    if all(isinstance(c, int) for c in spec.classes):
        return y.astype(int).to_numpy()
    return y.astype(str).to_numpy()


def positive_scores(model: Any, X: pd.DataFrame, positive_class: Any) -> np.ndarray:
    """Probability of the positive class for each row."""
    proba = model.predict_proba(X)
    classes = list(model.classes_)
    return proba[:, classes.index(positive_class)]
