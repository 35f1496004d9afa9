"""Route one landed file: its rows to the accepted store or to quarantine, then the input away.

Feature batches and label files go through the same steps, in the order that loses nothing:
outputs are written atomically, then the outcome record, and only then is the input moved (never
deleted) to ``processed/``. A retry finds the outcome record by name and content hash and
finishes the move instead of redoing the work. A file with the name of one handled before but
other content is a new batch, kept apart by its content hash. Accepted and quarantined rows are
disjoint and their counts add up to the input; quarantined rows keep the values they arrived with.

Batch ids are made here and nowhere else: a plain file name (``PLAIN_NAME``) keeps its stem, any
other name is ingested under a sanitized id with its content hash. Later steps accept only ids of
this form (``is_batch_id``), so a name from outside never becomes a path unchecked. Links,
folders, pipes and devices are quarantined as such, moved aside without being opened.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ctrain.ingest.validate import (
    LEARNED_ONLY_COLUMN,
    REASON_COLUMN,
    Verdict,
    learned_only,
    row_reasons,
)
from ctrain.records import IngestOutcome
from ctrain.storage import (
    SUPPORTED_SUFFIXES,
    Snapshot,
    StillWriting,
    UnreadableBatch,
    entry_kind,
    file_sha256,
    is_regular_file,
    read_json,
    read_table,
    snapshot,
    unchanged,
    write_bytes_atomic,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)

log = logging.getLogger(__name__)

# Validate a raw frame named ``name``: the typed frame and the verdict on its rows.
Validator = Callable[[pd.DataFrame, str], tuple[pd.DataFrame, Verdict]]

# What a batch id looks like: a file stem of letters, digits, '.', '_', '-' (no separator, no
# leading dot), at most 100 characters, plus an optional "-<8 hex>" content suffix.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(-[0-9a-f]{8})?(-[0-9a-f]{6})?")


def is_batch_id(value: object) -> bool:
    """Whether ``value`` has the form of an id ingest makes (not whether that batch exists)."""
    return isinstance(value, str) and _BATCH_ID.fullmatch(value) is not None


def _base_id(stem: str, sha: str) -> tuple[str, bool]:
    """The batch id a file stem gives, and whether the stem was plain (kept as it is)."""
    if PLAIN_NAME.fullmatch(stem):
        return stem, True
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:80].lstrip("._-") or "file"
    return f"{plain}-{sha[:8]}", False


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
    path: Path,
    dest: Destinations,
    validate: Validator,
    config_hash: str,
    columns: list[str] | None = None,
    reference: str = "",
) -> IngestOutcome:
    """Validate ``path`` and route its rows; returns the outcome (also written to ``outcomes``).

    ``config_hash`` names the validation config: an earlier outcome of the same bytes is replayed
    only if it was judged under the same one. ``columns``, when given, are the columns the
    accepted file keeps; ``reference`` names the learned reference the file is judged under.
    """
    path = Path(path)
    if not is_regular_file(path):
        return _quarantine_entry(dest, path)
    # The file is read once; those bytes are judged, hashed and kept (a writer may still be at it).
    try:
        snap = snapshot(path)
    except StillWriting as exc:
        return _deferred(path, exc.reason)
    sha = snap.sha256
    batch_id, prior = _batch_id(dest, path, sha, config_hash)
    if prior is not None:
        _move_to_processed(dest, path, snap, batch_id)
        return prior

    name = dest.name(batch_id)
    accepted_path, qdir = dest.accepted_path(batch_id), dest.quarantine_dir(batch_id)
    started = {
        "batch_id": batch_id,
        "source_file": path.name,
        "sha256": sha,
        "validated_at": datetime.now(UTC).isoformat(),
        "config_hash": config_hash,
        "reference": reference,
    }
    renamed = (
        ()
        if PLAIN_NAME.fullmatch(path.stem)
        else (f"file name {path.name!r} is not a plain batch name; its batch id is {batch_id}",)
    )
    try:
        df = read_table(path, snap.data)
    except UnreadableBatch as exc:
        if not unchanged(path, snap):
            return _deferred(path, "it changed while it was read")
        reason = f"batch {name}: unreadable file {path.name}: {exc.reason}"
        _quarantine_whole_file(path, snap, qdir, reason, batch_id)
        write_json_atomic(qdir / "validation.json", {"success": False, "unreadable": exc.reason})
        accepted_path.unlink(missing_ok=True)
        return _finish(dest, path, snap, _whole(started, reason, qdir, renamed))

    typed, verdict = validate(df, name)
    if not unchanged(path, snap):  # before anything is written: nothing to undo
        return _deferred(path, "it changed while it was judged")
    bad = df.reset_index(drop=True)[verdict.bad_rows].copy()
    if len(bad):
        reasons = row_reasons(verdict.checks, len(typed))
        bad[REASON_COLUMN] = [r for r, b in zip(reasons, verdict.bad_rows, strict=True) if b]
        bad[LEARNED_ONLY_COLUMN] = learned_only(verdict.checks, len(typed))[verdict.bad_rows]
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
        warnings=renamed + tuple(verdict.warnings),
        columns_dropped=verdict.columns_dropped,
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
    return _finish(dest, path, snap, outcome)


def _deferred(path: Path, why: str) -> IngestOutcome:
    """The outcome of a file left in the landing folder, untouched and unrecorded: it changed
    while ingest looked at it, so a writer is still at it; the next look takes it whole."""
    return IngestOutcome(
        batch_id=path.stem if PLAIN_NAME.fullmatch(path.stem) else "",
        source_file=path.name,
        sha256="",
        validated_at=datetime.now(UTC).isoformat(),
        status="deferred",
        reason=f"{path.name}: {why}; left where it landed for the next look (nothing written)",
        rows_in=0,
        rows_accepted=0,
        rows_quarantined=0,
        accepted_uri=None,
        quarantine_uri=None,
    )


def outcomes(dest: Destinations) -> list[IngestOutcome]:
    """Every outcome recorded for this kind of file, by batch id."""
    folder = dest.outcomes
    if not folder.is_dir():
        return []
    return [IngestOutcome.from_xcom(read_json(p)) for p in sorted(folder.glob("*.json"))]


def _whole(started: dict, reason: str, qdir: Path, warnings: tuple[str, ...] = ()) -> IngestOutcome:
    """The outcome of an entry quarantined whole, before any row was read."""
    return IngestOutcome(
        **started,
        status="quarantined",
        reason=reason,
        rows_in=0,
        rows_accepted=0,
        rows_quarantined=0,
        accepted_uri=None,
        quarantine_uri=str(qdir),
        warnings=warnings,
    )


def _batch_id(
    dest: Destinations, path: Path, sha: str, config_hash: str
) -> tuple[str, IngestOutcome | None]:
    """The file's batch id, and its earlier outcome when this very file (same name, same bytes)
    was handled before under the same validation config (after a config change it is judged
    again). Another file whose stem is taken gets its content hash in its id."""
    base, plain = _base_id(path.stem, sha)
    name_tag = hashlib.sha256(path.name.encode()).hexdigest()[:6]
    candidates = [base, f"{base}-{sha[:8]}", f"{base}-{sha[:8]}-{name_tag}"]
    for batch_id in candidates if plain else [base, f"{base}-{name_tag}"]:
        record = dest.outcome_path(batch_id)
        if not record.exists():
            return batch_id, None
        prior = read_json(record)
        if prior["sha256"] == sha and prior["source_file"] == path.name:
            same = prior.get("config_hash") == config_hash
            return batch_id, IngestOutcome.from_xcom(prior) if same else None
    raise RuntimeError(f"{path.name}: every batch id it could take is another file's")


def _finish(
    dest: Destinations, path: Path, snap: Snapshot, outcome: IngestOutcome
) -> IngestOutcome:
    write_json_atomic(dest.outcome_path(outcome.batch_id), outcome.to_xcom())
    _move_to_processed(dest, path, snap, outcome.batch_id)
    return outcome


def kept_name(path: Path, batch_id: str) -> str:
    """The name the input is kept under: its own when plain, else its batch id."""
    if PLAIN_NAME.fullmatch(path.stem) and path.suffix.lower() in SUPPORTED_SUFFIXES:
        return path.name
    suffix = path.suffix.lower() if PLAIN_NAME.fullmatch(path.suffix[1:] or "-") else ""
    return f"{batch_id}{suffix[:16]}"


def _move_to_processed(dest: Destinations, path: Path, snap: Snapshot, batch_id: str) -> Path:
    """Keep the input under ``processed/``: the very bytes that were judged."""
    target = dest.processed / kept_name(path, batch_id)
    if not path.exists():  # an earlier attempt moved it already
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and file_sha256(target) != snap.sha256:
        target = target.with_name(f"{target.stem}-{snap.sha256[:8]}{target.suffix}")
    os.replace(path, target)
    if not unchanged(target, snap):
        # Written to between the last look and the move: the name keeps what was judged, the
        # file as it is now stays beside it, so no byte is lost and none is ingested twice.
        later = target.with_name(f"{target.stem}.changed-after-ingest{target.suffix}")
        os.replace(target, later)
        write_bytes_atomic(target, snap.data)
        log.warning(
            "%s changed after it was judged: the judged bytes are kept as %s, the file as it "
            "is now as %s (not ingested)",
            path.name,
            target,
            later,
        )
    return target


def _quarantine_whole_file(
    path: Path, snap: Snapshot, qdir: Path, reason: str, batch_id: str
) -> None:
    qdir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(qdir / kept_name(path, batch_id), snap.data)
    write_text_atomic(qdir / "reason.txt", reason + "\n")


def _quarantine_entry(dest: Destinations, path: Path) -> IngestOutcome:
    """Quarantine a link, folder, pipe or device as it is: moved aside, never opened or read."""
    kind = entry_kind(path)
    # Named by what it is, so a retry after a crash finds the same outcome.
    digest = hashlib.sha256(f"{path.name}\0{kind}".encode()).hexdigest()
    batch_id = f"not-a-file-{digest[:12]}"
    name = dest.name(batch_id)
    qdir = dest.quarantine_dir(batch_id)
    reason = (
        f"batch {name}: {path.name!r} is {kind}, not a regular file: "
        "moved to quarantine without being read"
    )
    started = {
        "batch_id": batch_id,
        "source_file": path.name,
        "sha256": "",
        "validated_at": datetime.now(UTC).isoformat(),
    }
    outcome = _whole(started, reason, qdir)
    qdir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(qdir / "reason.txt", reason + "\n")
    write_json_atomic(dest.outcome_path(batch_id), outcome.to_xcom())
    os.replace(path, qdir / "entry")  # the link itself moves, not what it points at
    return outcome
