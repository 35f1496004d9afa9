"""Delayed labels: validate label files (id, label, time) into the label store; join them by id.

Label files land in ``labels_landing_dir`` as CSV or Parquet. They are validated with Great
Expectations and routed like feature batches (``route.py``): valid rows go to ``labels/``, invalid
rows or unreadable files to ``quarantine/labels-<file>/`` with the reason, the outcome to
``outcomes/labels/``, and the input to ``processed/labels/`` once the outcome is written. A file
delivered again under the same name with other content is a new delivery, kept beside the first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ctrain.ingest.route import Destinations, route_file
from ctrain.ingest.validate import validate_labels
from ctrain.records import IngestOutcome
from ctrain.settings import Settings
from ctrain.storage import config_hash, landed


def destinations(settings: Settings) -> Destinations:
    return Destinations(
        accepted=settings.labels_dir,
        quarantine=settings.quarantine_dir,
        outcomes=settings.outcomes_dir / "labels",
        processed=settings.processed_dir / "labels",
        prefix="labels-",
    )


def pending_label_files(settings: Settings) -> list[Path]:
    """Entries waiting in the labels landing folder, by name (hidden names are skipped)."""
    return landed(settings.labels_landing_dir)


def ingest_label_file(path: Path, settings: Settings) -> IngestOutcome:
    """Validate one label file and route its rows; the outcome says what went where and why."""
    spec = settings.dataset

    known = label_store(settings)[[spec.id_column, spec.target]]

    def validate(df: pd.DataFrame, name: str):
        return validate_labels(df, name, spec, settings.validation, known)

    columns = [spec.id_column, spec.target, spec.label_time_column]
    config = config_hash(spec.model_dump(mode="json"), settings.validation.model_dump(mode="json"))
    return route_file(Path(path), destinations(settings), validate, config, columns)


def label_store(settings: Settings) -> pd.DataFrame:
    """Every accepted label, newest per id, as (id, target, label time)."""
    spec = settings.dataset
    cols = [spec.id_column, spec.target, spec.label_time_column]
    files = sorted(settings.labels_dir.glob("*.parquet")) if settings.labels_dir.is_dir() else []
    if not files:
        return pd.DataFrame(columns=cols)
    labels = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return labels.sort_values(spec.label_time_column, kind="stable").drop_duplicates(
        spec.id_column, keep="last"
    )


def attach_labels(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """``frame`` with its target filled from the label store where the batch had none."""
    spec = settings.dataset
    store = label_store(settings)
    out = frame.copy()
    if spec.target not in out.columns:
        out[spec.target] = np.nan
    if store.empty:
        return out
    mapped = out[spec.id_column].astype(str).map(store.set_index(spec.id_column)[spec.target])
    out[spec.target] = out[spec.target].astype(object).where(out[spec.target].notna(), mapped)
    return out
