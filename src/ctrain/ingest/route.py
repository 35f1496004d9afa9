"""Route one landed file: its rows to the accepted store or to quarantine, then the input away.

Feature batches and label files go through the same steps, in the order that loses nothing:
outputs are written atomically, then the outcome record, and only then is the input moved (never
deleted) to ``processed/``. A retry finds the outcome record by name and content hash and
finishes the move instead of redoing the work. A file with the name of one handled before but
other content is a new batch, kept apart by its content hash. Accepted and quarantined rows are
disjoint and their counts add up to the input; quarantined rows keep the values they arrived with.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ctrain.ingest.validate import REASON_COLUMN, Verdict, row_reasons
from ctrain.records import IngestOutcome
from ctrain.storage import (
    UnreadableBatch,
    file_sha256,
    read_json,
    read_table,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)

# Validate a raw frame named ``name``: the typed frame and the verdict on its rows.
Validator = Callable[[pd.DataFrame, str], tuple[pd.DataFrame, Verdict]]


@dataclass(frozen=True)
class Destinations:
    """Where one kind of landed file goes."""

    accepted: Path  # accepted rows: <accepted>/<batch id>.parquet
    quarantine: Path  # <quarantine>/<prefix><batch id>/
    outcomes: Path  # <outcomes>/<batch id>.json
    processed: Path  # the input file, once its outcome is written
    prefix: str = ""  # names the quarantine folder and the messages ("labels-")

    def name(self, batch_id: str) -> str:
        return f"{self.prefix}{batch_id}"

    def accepted_path(self, batch_id: str) -> Path:
        return self.accepted / f"{batch_id}.parquet"

    def quarantine_dir(self, batch_id: str) -> Path:
        return self.quarantine / self.name(batch_id)

    def outcome_path(self, batch_id: str) -> Path:
        return self.outcomes / f"{batch_id}.json"


def route_file(
    path: Path, dest: Destinations, validate: Validator, columns: list[str] | None = None
) -> IngestOutcome:
    """Validate ``path`` and route its rows; returns the outcome (also written to ``outcomes``).

    ``columns``, when given, are the columns the accepted file keeps.
    """
    path = Path(path)
    sha = file_sha256(path)
    batch_id, prior = _batch_id(dest, path, sha)
    if prior is not None:
        _move_to_processed(dest, path, sha)
        return prior

    name = dest.name(batch_id)
    accepted_path, qdir = dest.accepted_path(batch_id), dest.quarantine_dir(batch_id)
    started = {
        "batch_id": batch_id,
        "source_file": path.name,
        "sha256": sha,
        "validated_at": datetime.now(UTC).isoformat(),
    }
    try:
        df = read_table(path)
    except UnreadableBatch as exc:
        reason = f"batch {name}: unreadable file {path.name}: {exc.reason}"
        _quarantine_whole_file(path, qdir, reason)
        write_json_atomic(qdir / "validation.json", {"success": False, "unreadable": exc.reason})
        accepted_path.unlink(missing_ok=True)
        outcome = IngestOutcome(
            **started,
            status="quarantined",
            reason=reason,
            rows_in=0,
            rows_accepted=0,
            rows_quarantined=0,
            accepted_uri=None,
            quarantine_uri=str(qdir),
        )
        return _finish(dest, path, sha, outcome)

    typed, verdict = validate(df, name)
    bad = df.reset_index(drop=True)[verdict.bad_rows].copy()
    if len(bad):
        reasons = row_reasons(verdict.checks, len(typed))
        bad[REASON_COLUMN] = [r for r, b in zip(reasons, verdict.bad_rows, strict=True) if b]
        # Keep the rows as they arrived (strings where the types were wrong), so nothing is lost.
        for c in bad.columns:
            if bad[c].dtype == object:
                bad[c] = bad[c].where(bad[c].isna(), bad[c].astype(str))
        write_parquet_atomic(qdir / "rows.parquet", bad)
        write_json_atomic(qdir / "validation.json", verdict.gx_result)
        write_text_atomic(qdir / "reason.txt", verdict.reason + "\n")
    else:
        shutil.rmtree(qdir, ignore_errors=True)
    accepted = verdict.status != "quarantined"
    if accepted:
        good = typed[~verdict.bad_rows]
        write_parquet_atomic(accepted_path, good[columns] if columns else good)
    else:
        accepted_path.unlink(missing_ok=True)

    outcome = IngestOutcome(
        **started,
        status=verdict.status,
        reason=verdict.reason,
        rows_in=len(df),
        rows_accepted=int((~verdict.bad_rows).sum()) if accepted else 0,
        rows_quarantined=len(bad),
        accepted_uri=str(accepted_path) if accepted else None,
        quarantine_uri=str(qdir) if len(bad) else None,
        warnings=tuple(verdict.warnings),
        failed_checks=tuple(
            {
                "check": c.check,
                "expectation": c.expectation,
                "column": c.column,
                "severity": c.severity,
                "unexpected_count": c.unexpected_count,
            }
            for c in verdict.checks
            if not c.success
        ),
    )
    if outcome.rows_accepted + outcome.rows_quarantined != outcome.rows_in:
        raise RuntimeError(f"batch {name}: row counts do not add up: {outcome}")
    return _finish(dest, path, sha, outcome)


def outcomes(dest: Destinations) -> list[IngestOutcome]:
    """Every outcome recorded for this kind of file, by batch id."""
    folder = dest.outcomes
    if not folder.is_dir():
        return []
    return [IngestOutcome.from_xcom(read_json(p)) for p in sorted(folder.glob("*.json"))]


def _batch_id(dest: Destinations, path: Path, sha: str) -> tuple[str, IngestOutcome | None]:
    """The file's batch id, and its earlier outcome when this exact file was handled before."""
    batch_id = path.stem
    record = dest.outcome_path(batch_id)
    if record.exists():
        prior = read_json(record)
        if prior["sha256"] == sha:
            return batch_id, IngestOutcome.from_xcom(prior)
        # Same name, other content: a new batch, kept apart by its content hash.
        batch_id = f"{path.stem}-{sha[:8]}"
        record = dest.outcome_path(batch_id)
        if record.exists():
            return batch_id, IngestOutcome.from_xcom(read_json(record))
    return batch_id, None


def _finish(dest: Destinations, path: Path, sha: str, outcome: IngestOutcome) -> IngestOutcome:
    write_json_atomic(dest.outcome_path(outcome.batch_id), outcome.to_xcom())
    _move_to_processed(dest, path, sha)
    return outcome


def _move_to_processed(dest: Destinations, path: Path, sha: str) -> Path:
    target = dest.processed / path.name
    if not path.exists():  # an earlier attempt moved it already
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and file_sha256(target) != sha:
        target = target.with_name(f"{path.stem}-{sha[:8]}{path.suffix}")
    os.replace(path, target)
    return target


def _quarantine_whole_file(path: Path, qdir: Path, reason: str) -> None:
    qdir.mkdir(parents=True, exist_ok=True)
    tmp = qdir / f".{path.name}.tmp"
    shutil.copyfile(path, tmp)
    os.replace(tmp, qdir / path.name)
    write_text_atomic(qdir / "reason.txt", reason + "\n")
