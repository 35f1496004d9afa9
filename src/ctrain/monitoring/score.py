"""Batch inference: score an accepted batch with the model that is champion right now.

One Parquet file per batch, ``predictions/<batch>.parquet``, keyed by (batch id, row id, model
version), written atomically: a retry or a re-run replaces the whole file, so each row has exactly
one prediction and none is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ctrain.promotion.promote import current_champion
from ctrain.settings import Settings
from ctrain.storage import write_parquet_atomic
from ctrain.training.model import features, positive_scores


def _constant(value: str, n: int) -> pd.Categorical:
    return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[value])


class NoChampion(Exception):
    """There is no champion to score with yet."""


def unscored_batches(settings: Settings) -> list[str]:
    """Accepted batch ids that have no predictions yet, oldest first."""
    accepted = (
        sorted(p.stem for p in settings.accepted_dir.glob("*.parquet"))
        if settings.accepted_dir.is_dir()
        else []
    )
    return [b for b in accepted if not (settings.predictions_dir / f"{b}.parquet").exists()]


def score_batch(settings: Settings, batch_id: str, client) -> dict[str, Any]:
    """Score every row of accepted batch ``batch_id``; returns the file's URI and counts."""
    import mlflow

    spec, name = settings.dataset, settings.model_name
    source = settings.accepted_dir / f"{batch_id}.parquet"
    if not source.exists():
        raise FileNotFoundError(f"batch {batch_id}: no accepted data at {source}")
    version = current_champion(client, name)
    if version is None:
        raise NoChampion(
            f"{name} has no champion yet: batch {batch_id} stays unscored until one is promoted"
        )
    df = pd.read_parquet(source)
    model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    scores = positive_scores(model, features(df, spec), spec.positive_class)
    negative = next(c for c in spec.classes if c != spec.positive_class)
    # Columns go in as Series (same index): to_numpy() on a tz-aware time column would build one
    # Python Timestamp per row, and the frame would infer them back, most of the step's time.
    # The two constant columns are categoricals: one dictionary entry each in Parquet, instead of
    # a Python string per row to convert.
    out = pd.DataFrame(
        {
            "batch_id": _constant(batch_id, len(df)),
            spec.id_column: df[spec.id_column].astype(str),
            spec.event_time_column: df[spec.event_time_column],
            "model_version": _constant(str(version), len(df)),
            "score": scores,
            "prediction": np.where(scores >= 0.5, spec.positive_class, negative),
        },
        index=df.index,
    )
    if spec.target in df.columns:
        out[spec.target] = df[spec.target]
    path = write_parquet_atomic(settings.predictions_dir / f"{batch_id}.parquet", out)
    return {
        "batch_id": batch_id,
        "model_version": str(version),
        "rows": len(out),
        "predictions_uri": str(path),
    }
