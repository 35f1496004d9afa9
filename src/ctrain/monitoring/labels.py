"""Delayed labels: validate label files (id, label, time) and keep them as the label store.

Label files land in ``labels_landing_dir`` as CSV or Parquet. They are validated with Great
Expectations like feature batches (columns present, ids present and unique, labels in the declared
classes, times parse); valid rows go to ``labels/``, invalid rows or unreadable files to
``quarantine/labels-<file>/`` with the reason. As with batches, the input is moved to
``processed/labels/`` only after the outcome is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctrain.ingest.validate import run_expectations
from ctrain.settings import Settings
from ctrain.storage import (
    UnreadableBatch,
    batch_files,
    file_sha256,
    read_table,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)


def pending_label_files(settings: Settings) -> list[Path]:
    """Label files waiting in the labels landing folder, by name."""
    return batch_files(settings.labels_landing_dir)


def ingest_label_file(path: Path, settings: Settings) -> dict[str, Any]:
    """Validate one label file and route its rows; returns counts and the reason for any rejection."""
    spec = settings.dataset
    cols = [spec.id_column, spec.target, spec.label_time_column]
    name = f"labels-{path.stem}"
    qdir = settings.quarantine_dir / name
    out: dict[str, Any] = {"file": path.name, "sha256": file_sha256(path)}
    try:
        df = read_table(path).reset_index(drop=True)
    except UnreadableBatch as exc:
        reason = f"labels {path.name}: unreadable: {exc.reason}"
        qdir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(qdir / "reason.txt", reason + "\n")
        (qdir / path.name).write_bytes(path.read_bytes())
        out.update(
            status="quarantined", reason=reason, rows_in=0, rows_accepted=0, rows_quarantined=0
        )
        return _finish(settings, path, out)

    exps: list = [("schema", "expect_column_to_exist", {"column": c}, "block") for c in cols]
    present = [c for c in cols if c in df.columns]
    exps += [
        ("not_null", "expect_column_values_to_not_be_null", {"column": c}, "block") for c in present
    ]
    if spec.id_column in df.columns:
        exps.append(
            ("unique_id", "expect_column_values_to_be_unique", {"column": spec.id_column}, "block")
        )
    if spec.target in df.columns:
        if all(isinstance(c, int) for c in spec.classes):
            df[spec.target] = pd.to_numeric(df[spec.target], errors="coerce")
        exps.append(
            (
                "target",
                "expect_column_values_to_be_in_set",
                {"column": spec.target, "value_set": list(spec.classes)},
                "block",
            )
        )
    if spec.label_time_column in df.columns:
        df[spec.label_time_column] = pd.to_datetime(
            df[spec.label_time_column], utc=True, errors="coerce", format="mixed"
        )
    checks, result = run_expectations(df, exps)
    failed = [c for c in checks if not c.success]
    bad = np.zeros(len(df), dtype=bool)
    batch_level = [c for c in failed if c.rows is None]
    for c in failed:
        if c.rows:
            bad[c.rows] = True
    if batch_level:
        bad[:] = True
    if bad.any():
        reasons = [c.describe(name, len(df)) for c in failed]
        reason = "; ".join(reasons)
        write_parquet_atomic(
            qdir / "rows.parquet",
            df[bad].astype({spec.id_column: str}) if spec.id_column in df else df[bad],
        )
        write_json_atomic(qdir / "validation.json", result)
        write_text_atomic(qdir / "reason.txt", reason + "\n")
    else:
        reason = ""
    good = df[~bad]
    if len(good):
        good = good[cols].astype({spec.id_column: str})
        write_parquet_atomic(settings.labels_dir / f"{path.stem}.parquet", good)
    status = "accepted" if not bad.any() else ("quarantined" if bad.all() else "partial")
    out.update(
        status=status,
        reason=reason,
        rows_in=len(df),
        rows_accepted=int((~bad).sum()),
        rows_quarantined=int(bad.sum()),
    )
    return _finish(settings, path, out)


def _finish(settings: Settings, path: Path, out: dict[str, Any]) -> dict[str, Any]:
    write_json_atomic(settings.outcomes_dir / "labels" / f"{path.stem}.json", out)
    dest = settings.processed_dir / "labels" / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return out


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
