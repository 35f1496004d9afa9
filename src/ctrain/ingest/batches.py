"""Ingest feature batches: validate each landed file and route it (``route.py``); read what was
accepted.

A batch's rows go to ``accepted/<batch>.parquet`` or ``quarantine/<batch>/``; its outcome to
``outcomes/<batch>.json``; the input to ``processed/``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ctrain.ingest.profile import reference_name
from ctrain.ingest.route import (
    PLAIN_NAME,
    Destinations,
    is_batch_id,
    kept_name,
    outcomes,
    route_file,
)
from ctrain.ingest.validate import validate_batch
from ctrain.records import IngestOutcome
from ctrain.settings import Settings
from ctrain.storage import config_hash, is_regular_file, landed


def destinations(settings: Settings) -> Destinations:
    return Destinations(
        accepted=settings.accepted_dir,
        quarantine=settings.quarantine_dir,
        outcomes=settings.outcomes_dir,
        processed=settings.processed_dir,
    )


def pending_files(settings: Settings) -> list[Path]:
    """Entries waiting in the landing folder, by name (hidden names are uploads in flight)."""
    return landed(settings.landing_dir)


def requeue_record(settings: Settings, stem: str) -> Path | None:
    """Where the record of a file ctrain landed again (``ingest/revalidate.py``) named ``stem``
    is kept; None for a stem that is not a plain name (it cannot be one of ctrain's)."""
    if not PLAIN_NAME.fullmatch(stem):
        return None
    return settings.profile_path.parent / "requeued" / f"{stem}.json"


def ingest_file(path: Path, settings: Settings, profile: dict[str, Any] | None) -> IngestOutcome:
    """Validate one landed batch against the reference ``profile`` and route its rows.

    Rows ctrain landed again after the reference changed are a part of a batch that passed the
    row-count check once: they are not held to ``validation.min_rows`` again."""
    cfg = settings.validation
    record = requeue_record(settings, Path(path).stem)
    if record is not None and record.is_file():
        cfg = cfg.model_copy(update={"min_rows": 1})

    def validate(df: pd.DataFrame, name: str):
        return validate_batch(df, name, settings.dataset, cfg, profile)

    config = config_hash(
        settings.dataset.model_dump(mode="json"),
        cfg.model_dump(mode="json"),
        profile,
    )
    return route_file(
        Path(path), destinations(settings), validate, config, reference=reference_name(profile)
    )


def batch_outcomes(settings: Settings) -> list[IngestOutcome]:
    """Every batch outcome, by batch id."""
    return outcomes(destinations(settings))


def arrived_at(settings: Settings, outcome: IngestOutcome) -> float:
    """When ``outcome``'s file landed (the kept input keeps its time of writing), as a POSIX
    time; when it was judged if the input is not kept there."""
    kept = settings.processed_dir / kept_name(Path(outcome.source_file), outcome.batch_id)
    if kept.exists():
        return kept.stat().st_mtime
    return datetime.fromisoformat(outcome.validated_at).timestamp()


def awaiting_predictions(
    settings: Settings, outcomes: list[IngestOutcome] | None = None
) -> list[tuple[IngestOutcome, float]]:
    """Batches with accepted rows and no predictions yet, with when each landed, oldest first."""
    found = batch_outcomes(settings) if outcomes is None else outcomes
    out = [
        (o, arrived_at(settings, o))
        for o in found
        if o.rows_accepted and not (settings.predictions_dir / f"{o.batch_id}.parquet").exists()
    ]
    return sorted(out, key=lambda pair: pair[1])


class UnknownBatch(LookupError):
    """A batch id that is not one ingest made, or has no accepted data; nothing was read."""


def accepted_path(settings: Settings, batch_id: object) -> Path:
    """The accepted file of ``batch_id``, a name that came from outside (a param, a file name).

    Raises:
        UnknownBatch: ``batch_id`` does not have the form of an id ingest makes, or ingest
            accepted no rows under it.
    """
    if not is_batch_id(batch_id):
        raise UnknownBatch(
            f"{batch_id!r} is not a batch id ingest makes (a file stem of letters, digits, "
            "'.', '_', '-'); nothing was read"
        )
    path = settings.accepted_dir / f"{batch_id}.parquet"
    if not is_regular_file(path):
        raise UnknownBatch(f"batch {batch_id}: no accepted data in {settings.accepted_dir}")
    return path


def accepted_batches(settings: Settings) -> list[Path]:
    """Accepted batch files in the order they arrived (were validated), oldest first.

    Not by name: a late file with an early name must not count as old data.
    """
    folder = settings.accepted_dir
    if not folder.is_dir():
        return []
    arrived = {o.batch_id: o.validated_at for o in batch_outcomes(settings)}
    files = [p for p in folder.glob("*.parquet") if is_regular_file(p)]
    return sorted(files, key=lambda p: (arrived.get(p.stem, ""), p.name))


def read_accepted(paths: list[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def describe(outcomes: list[IngestOutcome]) -> str:
    """One line for a run of ingest: each file's outcome and its row counts."""
    if not outcomes:
        return "nothing landed"
    parts = []
    for o in outcomes:
        if o.status == "accepted":
            parts.append(f"{o.batch_id} accepted ({o.rows_accepted} rows)")
        elif o.status == "partial":
            parts.append(
                f"{o.batch_id} partial ({o.rows_accepted} accepted, {o.rows_quarantined} "
                "quarantined)"
            )
        elif o.status == "deferred":
            parts.append(f"{o.source_file} deferred (still being written)")
        else:
            parts.append(f"{o.batch_id} quarantined: {o.reason}")
    return "; ".join(parts)
