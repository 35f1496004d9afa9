"""The model's shape: one scikit-learn Pipeline, preprocessing plus the candidate's estimator."""

from __future__ import annotations

import importlib

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
