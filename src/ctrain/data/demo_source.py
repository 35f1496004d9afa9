"""A generated stream of realistic tabular batches for the demo and the tests.

Churn-like binary classification: numeric and categorical features, correlated inputs, noise, an
imbalanced target, a missing-value column. Deterministic by (seed, batch index). Two knobs drive
drift from a chosen batch on: ``covariate_shift_from`` moves feature distributions (the label rule
is unchanged), ``concept_drift_from`` changes the label rule (feature distributions unchanged),
at once or, with ``concept_drift_over`` > 1, row by row over that many batches (a gradual change).
``boundary_shift_from`` is a covariate shift that hurts: rows crowd towards the decision boundary
(chosen by their features alone, so the label rule is unchanged), where no model ranks well.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ctrain.storage import write_bytes_atomic, write_parquet_atomic

REGIONS = ["north", "south", "east", "west"]
PLANS = ["basic", "standard", "premium"]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DemoSource:
    """Generator of batch ``i`` of the demo stream."""

    seed: int = 7
    batch_rows: int = 1500
    positive_rate: float = 0.2
    covariate_shift_from: int | None = None
    covariate_shift: float = 1.5
    concept_drift_from: int | None = None
    concept_drift_over: int = 1
    boundary_shift_from: int | None = None
    label_delay_days: float = 2.0
    batch_seconds: float = 86_400.0  # event time between two batches' starts (a day)

    def concept_share(self, index: int) -> float:
        """The share of batch ``index``'s rows labelled by the new rule."""
        if self.concept_drift_from is None or index < self.concept_drift_from:
            return 0.0
        return min(1.0, (index - self.concept_drift_from + 1) / max(1, self.concept_drift_over))

    def batch(self, index: int) -> pd.DataFrame:
        if self.boundary_shift_from is not None and index >= self.boundary_shift_from:
            return self._near_the_boundary(index)
        rng = np.random.default_rng([self.seed, index])
        n = self.batch_rows
        shifted = self.covariate_shift_from is not None and index >= self.covariate_shift_from
        concept = self.concept_drift_from is not None and index >= self.concept_drift_from
        s = self.covariate_shift if shifted else 0.0

        region = rng.choice(
            REGIONS, size=n, p=[0.4, 0.3, 0.2, 0.1] if not shifted else [0.1, 0.2, 0.3, 0.4]
        )
        plan = rng.choice(PLANS, size=n, p=[0.5, 0.35, 0.15])
        tenure = rng.gamma(2.0, 12.0, size=n) + 4.0 * s
        spend = (
            20 + 15 * (plan == "standard") + 45 * (plan == "premium") + rng.normal(0, 8, n) + 10 * s
        )
        calls = rng.poisson(1.5 + 1.0 * s, size=n).astype(float)
        usage = np.clip(rng.normal(30 - 0.1 * tenure, 8, n), 0, None)
        discount = np.clip(rng.beta(2, 8, n) + 0.1 * s, 0, 1)
        delay = rng.exponential(3.0 + 2 * s, n)
        delay[rng.random(n) < 0.05] = np.nan  # payment_delay_days is nullable: 5% missing

        z = (
            -0.045 * tenure
            + 0.55 * calls
            - 0.04 * usage
            + 0.02 * (spend - 40)
            - 2.0 * discount
            + 0.08 * np.nan_to_num(delay, nan=3.0)
            + 0.6 * (region == "west")
            - 0.3 * (plan == "premium")
        )
        if concept:
            # The label rule changes: tenure and support calls swap roles, usage flips sign.
            old_rule = z
            z = (
                0.04 * tenure
                - 0.5 * calls
                + 0.05 * usage
                + 0.02 * (spend - 40)
                - 2.0 * discount
                - 0.6 * (region == "west")
            )
            share = self.concept_share(index)
            if share < 1:
                # A gradual change: a growing share of rows follows the new rule (drawn apart,
                # so the batch's other values are those of an abrupt change).
                mix = np.random.default_rng([self.seed, index, 1]).random(n) < share
                z = np.where(mix, z, old_rule)
        z = z + rng.normal(0, 0.6, n)
        # Centre the logit so the positive rate is close to the chosen one (class imbalance).
        z = z - np.quantile(z, 1 - self.positive_rate)
        label = (rng.random(n) < 1 / (1 + np.exp(-3 * z))).astype(int)

        start = EPOCH + timedelta(seconds=index * self.batch_seconds)
        times = start + pd.to_timedelta(np.sort(rng.uniform(0, self.batch_seconds, n)), unit="s")
        return pd.DataFrame(
            {
                "row_id": [f"b{index:04d}-{i:06d}" for i in range(n)],
                "event_time": times,
                "tenure_months": tenure.round(2),
                "monthly_spend": spend.round(2),
                "support_calls": calls,
                "usage_hours": usage.round(2),
                "discount_rate": discount.round(4),
                "payment_delay_days": delay.round(2),
                "region": region,
                "plan": plan,
                "label": label,
            }
        )

    def _near_the_boundary(self, index: int) -> pd.DataFrame:
        """Batch ``index`` as the ``batch_rows`` rows, of four times as many drawn as usual, whose
        features put them nearest the decision boundary. The choice looks at the features only,
        so each row's label follows the same rule as before: the model is not wrong, the rows are
        harder."""
        pool = replace(self, batch_rows=4 * self.batch_rows, boundary_shift_from=None).batch(index)
        z = (
            -0.045 * pool["tenure_months"]
            + 0.55 * pool["support_calls"]
            - 0.04 * pool["usage_hours"]
            + 0.02 * (pool["monthly_spend"] - 40)
            - 2.0 * pool["discount_rate"]
            + 0.08 * pool["payment_delay_days"].fillna(3.0)
            + 0.6 * (pool["region"] == "west")
            - 0.3 * (pool["plan"] == "premium")
        )
        edge = np.quantile(z, 1 - self.positive_rate)
        nearest = np.argsort(np.abs(z.to_numpy() - edge), kind="stable")[: self.batch_rows]
        return pool.iloc[np.sort(nearest)].reset_index(drop=True)

    def labels(self, index: int) -> pd.DataFrame:
        """Batch ``index``'s labels as they arrive later: (row_id, label, label_time)."""
        df = self.batch(index)
        return pd.DataFrame(
            {
                "row_id": df["row_id"],
                "label": df["label"],
                # Late by label_delay_days at a batch a day; by as many batches at any cadence.
                "label_time": df["event_time"]
                + pd.Timedelta(seconds=self.label_delay_days * self.batch_seconds),
            }
        )

    def write_labels(self, index: int, folder: Path, fraction: float = 1.0) -> Path:
        """Write the first ``fraction`` of batch ``index``'s labels to ``labels_{index:04d}[_part].parquet``."""
        labels = self.labels(index)
        part = labels.iloc[: int(round(len(labels) * fraction))]
        suffix = "" if fraction >= 1 else f"_{int(fraction * 100)}pct"
        return write_parquet_atomic(folder / f"labels_{index:04d}{suffix}.parquet", part)

    def write_batch(
        self, index: int, folder: Path, fmt: str = "parquet", with_labels: bool = True
    ) -> Path:
        """Write batch ``index`` atomically into ``folder`` as ``batch_{index:04d}.{fmt}``."""
        df = self.batch(index)
        if not with_labels:
            df = df.drop(columns=["label"])
        path = folder / f"batch_{index:04d}.{fmt}"
        if fmt == "csv":
            write_bytes_atomic(path, df.to_csv(index=False).encode("utf-8"))
        else:
            write_parquet_atomic(path, df)
        return path


def corrupt_rows(df: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """Break a share of rows the way real feeds break: unknown categories, impossible values, nulls."""
    out = df.copy()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(out), size=max(1, int(len(out) * fraction)), replace=False)
    thirds = np.array_split(idx, 3)
    out.loc[out.index[thirds[0]], "region"] = "atlantis"
    out.loc[out.index[thirds[1]], "discount_rate"] = 7.5
    out.loc[out.index[thirds[2]], "label"] = np.nan
    return out
