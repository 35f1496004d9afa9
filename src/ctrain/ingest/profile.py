"""The learned reference: valid ranges and category sets, learned from data.

Before the first champion, batches are validated against a profile learned once from
``dataset.reference_file`` or the first batch. After it, the reference follows the champion: each
training window learns its own (``window_profile``, kept beside the window's rows), and every
move of the champion makes that version's the one batches are validated against
(``follow_champion``). Rows that only a learned check quarantined are sent through ingest again
when the reference changes (``ingest/revalidate.py``).
"""

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


def window_profile(settings: Settings, folder: Path) -> dict[str, Any]:
    """The learned reference of the training window in ``folder`` (its train and held-out rows),
    learned once and kept there as ``profile.json``."""
    path = folder / "profile.json"
    if path.exists():
        return read_json(path)
    rows = pd.concat(
        [pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "holdout.parquet")],
        ignore_index=True,
    )
    profile = learn_profile(
        rows, settings.dataset, settings.validation.range_margin, f"training window {folder.name}"
    )
    save_profile(path, profile)
    return profile


def follow_champion(settings: Settings, version: str, folder: Path) -> bool:
    """Make champion ``version``'s learned reference (from its training window in ``folder``) the
    one batches are validated against; returns whether it changed."""
    active = load_profile(settings.profile_path)
    if active is not None and active.get("model_version") == version:
        return False
    save_profile(
        settings.profile_path, window_profile(settings, folder) | {"model_version": version}
    )
    return True


def reference_name(profile: dict[str, Any] | None) -> str:
    """How an outcome names the reference it was judged under: the champion version it was
    learned for, ``bootstrap`` before the first champion, empty when there was none."""
    if profile is None:
        return ""
    return str(profile.get("model_version") or "bootstrap")


def outside(df: pd.DataFrame, profile: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """Which rows of ``df`` lie outside ``profile`` (a range or a category set), and on which
    columns. Missing values are not outside: nullability is checked on its own."""
    mask = np.zeros(len(df), dtype=bool)
    columns = []
    for col, (lo, hi) in profile["numeric"].items():
        if col in df.columns:
            v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            out = ~np.isnan(v) & ((v < lo) | (v > hi))
            if out.any():
                mask |= out
                columns.append(col)
    for col, values in profile["categorical"].items():
        if col in df.columns:
            v = df[col]
            out = (v.notna() & ~v.astype(str).isin(values)).to_numpy(dtype=bool)
            if out.any():
                mask |= out
                columns.append(col)
    return mask, columns


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
