"""Scoring a few rows fast: ctrain's own preprocessing as NumPy, then the fitted estimator.

Through the fitted ``Pipeline``, one row costs milliseconds: a DataFrame is built, and the
ColumnTransformer checks, selects and concatenates its columns. ctrain builds that preprocessing
itself (``training/pipeline.py``: median imputation and scaling of the numeric columns, a
constant for missing categories and one-hot encoding), so the same arithmetic with the fitted
statistics, written on NumPy arrays, gives the same matrix in microseconds; the estimator's own
``predict_proba`` then scores it. A binary logistic regression is scored as its ``predict_proba``
computes it, the logistic of the decision function, without the input checks that cost most of
a one-row call. ``FastScorer.of`` returns None for a pipeline of any other shape,
and the slot uses it only after it matched the pipeline's scores on the warm-up rows
(``reload.py``): a model it does not reproduce exactly is scored the slow way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ctrain.settings import DatasetConfig


class FastScorer:
    """The positive-class score of rows (objects with one attribute per feature)."""

    def __init__(self, model: Pipeline, spec: DatasetConfig):
        pre, self.estimator = model.named_steps["pre"], model.named_steps["model"]
        parts = {name: (steps, cols) for name, steps, cols in pre.transformers_}
        num_steps, self.numeric = parts["num"]
        cat_steps, self.categorical = parts["cat"]
        imputer, scaler = num_steps.named_steps.values()
        self.median = imputer.statistics_.astype(float)
        self.mean = scaler.mean_ if scaler.with_mean else np.zeros(len(self.numeric))
        self.scale = scaler.scale_ if scaler.with_std else np.ones(len(self.numeric))
        fill, encoder = cat_steps.named_steps.values()
        self.fill = fill.fill_value
        self.positions: list[dict[Any, int]] = []
        offset = len(self.numeric)
        for cats in encoder.categories_:
            self.positions.append({c: offset + i for i, c in enumerate(cats.tolist())})
            offset += len(cats)
        self.width = offset
        self.positive = list(self.estimator.classes_).index(spec.positive_class)
        # Binary logistic regression: predict_proba is expit(X @ coef + intercept) for class 1.
        est = self.estimator
        self.linear = (
            (est.coef_[0].astype(float), float(est.intercept_[0]))
            if type(est) is LogisticRegression and len(est.classes_) == 2
            else None
        )

    @classmethod
    def of(cls, model: Any, spec: DatasetConfig) -> FastScorer | None:
        """A fast scorer for ``model`` if it has the shape ctrain trains, else None."""
        if not (isinstance(model, Pipeline) and list(model.named_steps) == ["pre", "model"]):
            return None
        pre = model.named_steps["pre"]
        if not isinstance(pre, ColumnTransformer) or pre.remainder != "drop":
            return None
        shapes = {name: (steps, list(cols)) for name, steps, cols in pre.transformers_}
        expected = {
            "num": ([SimpleImputer, StandardScaler], spec.numeric),
            "cat": ([SimpleImputer, OneHotEncoder], spec.categorical),
        }
        for name, (kinds, cols) in expected.items():
            steps, fitted_cols = shapes.get(name, (None, None))
            if not (
                isinstance(steps, Pipeline)
                and [type(s) for s in steps.named_steps.values()] == kinds
                and fitted_cols == cols
            ):
                return None
        if set(shapes) - {"num", "cat", "remainder"}:
            return None
        imputer, _ = shapes["num"][0].named_steps.values()
        fill, encoder = shapes["cat"][0].named_steps.values()
        if (
            imputer.strategy != "median"
            or len(imputer.statistics_) != len(spec.numeric)  # a column it dropped as empty
            or fill.strategy != "constant"
            or encoder.handle_unknown != "ignore"
            or encoder.drop is not None
            or getattr(encoder, "infrequent_categories_", None)
        ):
            return None
        return cls(model, spec)

    def __call__(self, rows: list[Any]) -> np.ndarray:
        X = np.zeros((len(rows), self.width))
        if self.numeric:
            num = np.array(
                [[getattr(r, c) for c in self.numeric] for r in rows], dtype=float
            )  # None becomes NaN
            num = np.where(np.isnan(num), self.median, num)
            with np.errstate(over="ignore", invalid="ignore"):  # checked below, or by the model
                X[:, : len(self.numeric)] = (num - self.mean) / self.scale
        for j, col in enumerate(self.categorical):
            positions = self.positions[j]
            for i, r in enumerate(rows):
                value = getattr(r, col)
                at = positions.get(self.fill if value is None else value)
                if at is not None:  # an unknown category encodes as all zeros
                    X[i, at] = 1.0
        if self.linear is not None:
            if not np.isfinite(X).all():
                # As predict_proba's input check fails: a value the scaling took past float64.
                raise ValueError("Input X contains infinity or a value too large for float64")
            coef, intercept = self.linear
            p1 = expit(X @ coef + intercept)
            return p1 if self.positive == 1 else 1.0 - p1
        return self.estimator.predict_proba(X)[:, self.positive]
