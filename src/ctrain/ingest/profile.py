"""The reference profile: valid ranges and category sets, learned once from reference data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctrain.settings import DatasetConfig, Settings
from ctrain.storage import UnreadableBatch, read_json, read_table, write_json_atomic


def learn_profile(
    df: pd.DataFrame, spec: DatasetConfig, margin: float, source: str
) -> dict[str, Any]:
    """Ranges (widened by ``margin`` times their span) and category sets of ``df``."""
    numeric = {}
    for col in spec.numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        # Only finite values bound a range: one inf would make every later value "in range".
        values = values[np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))]
        if values.empty:
            raise ValueError(
                f"reference {source}: column {col!r} has no finite values to learn a range from"
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


def ensure_profile(settings: Settings, candidates: list[Path]) -> dict[str, Any] | None:
    """Load the reference profile, learning it first if there is none.

    It is learned from ``dataset.reference_file`` when set, else from the first candidate batch
    that reads and has every declared column. Returns None when nothing to learn from yet.
    """
    profile = load_profile(settings.profile_path)
    if profile is not None:
        return profile
    spec, margin = settings.dataset, settings.validation.range_margin
    sources = [spec.reference_file] if spec.reference_file else candidates
    for path in sources:
        try:
            df = read_table(Path(path))
        except UnreadableBatch:
            if spec.reference_file:
                raise
            continue
        if not set(spec.feature_names) <= set(df.columns):
            if spec.reference_file:
                raise ValueError(
                    f"reference file {path} lacks features {sorted(set(spec.feature_names) - set(df.columns))}"
                )
            continue
        profile = learn_profile(df, spec, margin, source=str(path))
        save_profile(settings.profile_path, profile)
        return profile
    return None
