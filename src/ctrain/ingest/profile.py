"""The reference profile: valid ranges and category sets, learned once from reference data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ctrain.settings import DatasetConfig
from ctrain.storage import read_json, write_json_atomic


def learn_profile(
    df: pd.DataFrame, spec: DatasetConfig, margin: float, source: str
) -> dict[str, Any]:
    """Ranges (widened by ``margin`` times their span) and category sets of ``df``."""
    numeric = {}
    for col in spec.numeric:
        values = pd.to_numeric(df[col], errors="coerce").dropna()
        if values.empty:
            raise ValueError(
                f"reference {source}: column {col!r} has no numeric values to learn a range from"
            )
        lo, hi = float(values.min()), float(values.max())
        pad = (hi - lo) * margin or abs(hi) * margin or 1.0
        numeric[col] = [lo - pad, hi + pad]
    categorical = {
        col: sorted(df[col].dropna().astype(str).unique().tolist()) for col in spec.categorical
    }
    return {
        "source": source,
        "rows": len(df),
        "learned_at": datetime.now(UTC).isoformat(),
        "margin": margin,
        "numeric": numeric,
        "categorical": categorical,
    }


def load_profile(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.exists() else None


def save_profile(path: Path, profile: dict[str, Any]) -> Path:
    return write_json_atomic(path, profile)
