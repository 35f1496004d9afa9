"""Ingest feature batches: validate each landed file and route it (``route.py``); read what was
accepted.

A batch's rows go to ``accepted/<batch>.parquet`` or ``quarantine/<batch>/``; its outcome to
``outcomes/<batch>.json``; the input to ``processed/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ctrain.ingest.route import Destinations, outcomes, route_file
from ctrain.ingest.validate import validate_batch
from ctrain.records import IngestOutcome
from ctrain.settings import Settings
from ctrain.storage import batch_files


def destinations(settings: Settings) -> Destinations:
    return Destinations(
        accepted=settings.accepted_dir,
        quarantine=settings.quarantine_dir,
        outcomes=settings.outcomes_dir,
        processed=settings.processed_dir,
    )


def pending_files(settings: Settings) -> list[Path]:
    """Batch files waiting in the landing folder, oldest name first (hidden and temp files skipped)."""
    return batch_files(settings.landing_dir)


def ingest_file(path: Path, settings: Settings, profile: dict[str, Any] | None) -> IngestOutcome:
    """Validate one landed batch against the reference ``profile`` and route its rows."""

    def validate(df: pd.DataFrame, name: str):
        return validate_batch(df, name, settings.dataset, settings.validation, profile)

    return route_file(Path(path), destinations(settings), validate)


def batch_outcomes(settings: Settings) -> list[IngestOutcome]:
    """Every batch outcome, by batch id."""
    return outcomes(destinations(settings))


def accepted_batches(settings: Settings) -> list[Path]:
    """Accepted batch files, oldest batch id first."""
    folder = settings.accepted_dir
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def read_accepted(paths: list[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
