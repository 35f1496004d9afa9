"""Ingest one landed file: validate it, then route rows to accepted/ or quarantine/.

Nothing is lost. Outputs are written atomically, then the outcome record, and only then is the
input moved (never deleted) to processed/. A retry finds the outcome record by batch id and file
hash and finishes the move instead of redoing the work. Whole batches never land in both places;
a split batch's rows are disjoint and its counts add up to the input.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ctrain.ingest.profile import learn_profile, load_profile, save_profile
from ctrain.ingest.validate import REASON_COLUMN, row_reasons, validate_batch
from ctrain.settings import Settings
from ctrain.storage import (
    UnreadableBatch,
    batch_files,
    file_sha256,
    read_json,
    read_table,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)


def pending_files(settings: Settings) -> list[Path]:
    """Batch files waiting in the landing folder, oldest name first (hidden and temp files skipped)."""
    return batch_files(settings.landing_dir)


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


def _batch_id(settings: Settings, path: Path, sha: str) -> tuple[str, dict[str, Any] | None]:
    """The file's batch id, and its earlier outcome when this exact file was handled before."""
    batch_id = path.stem
    record = settings.outcomes_dir / f"{batch_id}.json"
    if record.exists():
        prior = read_json(record)
        if prior["sha256"] == sha:
            return batch_id, prior
        # Same name, other content: a new batch, kept apart by its content hash.
        batch_id = f"{path.stem}-{sha[:8]}"
        record = settings.outcomes_dir / f"{batch_id}.json"
        if record.exists():
            return batch_id, read_json(record)
    return batch_id, None


def _move_to_processed(settings: Settings, path: Path, sha: str) -> Path:
    if not path.exists():  # an earlier attempt moved it already
        return settings.processed_dir / path.name
    dest = settings.processed_dir / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and file_sha256(dest) != sha:
        dest = dest.with_name(f"{path.stem}-{sha[:8]}{path.suffix}")
    os.replace(path, dest)
    return dest


def _quarantine_whole_file(settings: Settings, path: Path, batch_id: str, reason: str) -> Path:
    qdir = settings.quarantine_dir / batch_id
    qdir.mkdir(parents=True, exist_ok=True)
    copy = qdir / path.name
    tmp = qdir / f".{path.name}.tmp"
    shutil.copyfile(path, tmp)
    os.replace(tmp, copy)
    write_text_atomic(qdir / "reason.txt", reason + "\n")
    return qdir


def ingest_file(path: Path, settings: Settings, profile: dict[str, Any] | None) -> dict[str, Any]:
    """Validate ``path`` and route it; returns the outcome record (also written to outcomes/)."""
    path = Path(path)
    sha = file_sha256(path)
    batch_id, prior = _batch_id(settings, path, sha)
    if prior is not None:
        _move_to_processed(settings, path, sha)
        return prior

    accepted_path = settings.accepted_dir / f"{batch_id}.parquet"
    qdir = settings.quarantine_dir / batch_id
    outcome: dict[str, Any] = {
        "batch_id": batch_id,
        "source_file": path.name,
        "sha256": sha,
        "validated_at": datetime.now(UTC).isoformat(),
        "warnings": [],
    }
    try:
        df = read_table(path)
    except UnreadableBatch as exc:
        reason = f"batch {batch_id}: unreadable file {path.name}: {exc.reason}"
        _quarantine_whole_file(settings, path, batch_id, reason)
        write_json_atomic(qdir / "validation.json", {"success": False, "unreadable": exc.reason})
        accepted_path.unlink(missing_ok=True)
        outcome.update(
            status="quarantined",
            reason=reason,
            rows_in=0,
            rows_accepted=0,
            rows_quarantined=0,
            accepted_uri=None,
            quarantine_uri=str(qdir),
        )
        write_json_atomic(settings.outcomes_dir / f"{batch_id}.json", outcome)
        _move_to_processed(settings, path, sha)
        return outcome

    typed, verdict = validate_batch(df, batch_id, settings.dataset, settings.validation, profile)
    good = typed[~verdict.bad_rows]
    bad = df.reset_index(drop=True)[verdict.bad_rows].copy()
    if len(bad):
        bad[REASON_COLUMN] = [
            r
            for r, b in zip(row_reasons(verdict.checks, len(typed)), verdict.bad_rows, strict=True)
            if b
        ]
        # Keep the rows as they arrived (strings where the types were wrong), so nothing is lost.
        for c in bad.columns:
            if bad[c].dtype == object:
                bad[c] = bad[c].where(bad[c].isna(), bad[c].astype(str))
        write_parquet_atomic(qdir / "rows.parquet", bad)
        write_json_atomic(qdir / "validation.json", verdict.gx_result)
        write_text_atomic(qdir / "reason.txt", verdict.reason + "\n")
    else:
        shutil.rmtree(qdir, ignore_errors=True)
    if verdict.status == "quarantined":
        accepted_path.unlink(missing_ok=True)
    else:
        write_parquet_atomic(accepted_path, good)

    outcome.update(
        status=verdict.status,
        reason=verdict.reason,
        warnings=verdict.warnings,
        rows_in=len(df),
        rows_accepted=0 if verdict.status == "quarantined" else len(good),
        rows_quarantined=len(bad),
        accepted_uri=None if verdict.status == "quarantined" else str(accepted_path),
        quarantine_uri=str(qdir) if len(bad) else None,
        failed_checks=[
            {
                "check": c.check,
                "expectation": c.expectation,
                "column": c.column,
                "severity": c.severity,
                "unexpected_count": c.unexpected_count,
            }
            for c in verdict.checks
            if not c.success
        ],
    )
    if outcome["rows_accepted"] + outcome["rows_quarantined"] != outcome["rows_in"]:
        raise RuntimeError(f"batch {batch_id}: row counts do not add up: {outcome}")
    write_json_atomic(settings.outcomes_dir / f"{batch_id}.json", outcome)
    _move_to_processed(settings, path, sha)
    return outcome


def accepted_batches(settings: Settings) -> list[Path]:
    """Accepted batch files, oldest batch id first."""
    folder = settings.accepted_dir
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def outcomes(settings: Settings) -> list[dict[str, Any]]:
    folder = settings.outcomes_dir
    return [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def read_accepted(paths: list[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
