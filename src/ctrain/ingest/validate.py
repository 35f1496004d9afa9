"""Validate a batch or a label file with Great Expectations: what failed, where, and the verdict.

Built-in checks come from the dataset description (schema, types, nulls, unique ids, row count,
target classes) and the reference profile (ranges, category sets); the user's own expectations come
from the project YAML. Every check has a severity (``block`` or ``warn``). Row-level failures name
the rows, so a file can be split; file-level failures (a missing column, too few rows, a failed
aggregate) condemn the whole file. Batches and label files are judged by the same rules
(``judge``), so both are split, or quarantined whole, the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ctrain.expectations import Check, Expectation, examples, run_expectations
from ctrain.settings import LEARNED_CHECKS, DatasetConfig, ValidationConfig

REASON_COLUMN = "_ctrain_reasons"
# Marks quarantined rows whose only blocking failures were on learned references (``learned_only``).
LEARNED_ONLY_COLUMN = "_ctrain_learned_only"
# A reason is one line of at most this many characters; the detail is in validation.json.
REASON_MAX = 600


@dataclass
class Verdict:
    """What to do with a file's rows: accept them all, split them, or quarantine the file."""

    status: str  # accepted | partial | quarantined
    bad_rows: np.ndarray  # bool mask over the file's rows
    reason: str
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)
    gx_result: dict[str, Any] = field(default_factory=dict)
    columns_dropped: int = 0


def _failed_rows(
    check: str, expectation: str, column: str, severity: Any, rows: Any, detail: str
) -> Check:
    """A failed check on the rows the boolean mask ``rows`` marks."""
    mask = np.asarray(rows, dtype=bool)
    return Check(
        check=check,
        expectation=expectation,
        column=column,
        severity=severity,
        success=False,
        unexpected_count=int(mask.sum()),
        rows=np.flatnonzero(mask).tolist(),
        detail=detail,
    )


def _cast(
    out: pd.DataFrame,
    col: str,
    kind: str,
    fn: Callable[[pd.Series], pd.Series],
    number_hint: str = "",
) -> Check | None:
    """Cast ``out[col]`` in place; the values that were present but do not parse fail the check
    (``number_hint`` is added to its detail when some of them are numbers)."""
    if col not in out.columns:
        return None
    raw = out[col]
    new = fn(raw)
    out[col] = new
    bad = raw.notna() & new.isna()
    if not bad.any():
        return None
    return _failed_rows(
        "type",
        f"values_parse_as_{kind}",
        col,
        "block",
        bad,
        examples(raw[bad].astype(str).head(3).tolist())
        + (
            number_hint
            if pd.to_numeric(raw[bad].astype(object), errors="coerce").notna().any()
            else ""
        ),
    )


# Why a number in a time column fails (the reason a person reads).
EPOCH_HINT = " (a bare number is refused: an epoch's unit, s or ms, cannot be known; send ISO 8601)"


def _as_number(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype(float)


def _as_timestamp(s: pd.Series) -> pd.Series:
    """Dates and times as text (ISO 8601 and the like) or as a timestamp type. A bare number (an
    epoch) does not parse: its unit (seconds, milliseconds, ...) cannot be known, and pandas would
    read it as nanoseconds, near 1970-01-01."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return pd.to_datetime(s, utc=True)
    number = pd.to_numeric(s.astype(object), errors="coerce").notna()
    parsed = pd.to_datetime(
        s.where(~number).astype(object), utc=True, errors="coerce", format="mixed"
    )
    return parsed.where(~number)


def _as_text(out: pd.DataFrame, col: str) -> Check | None:
    """Text columns (ids, categories) take text, numbers and booleans, as text. A list, array or
    mapping (a nested Parquet column) fails its row: written as text it would be a new category."""
    if col not in out.columns:
        return None
    raw = out[col]
    nested = raw.map(lambda v: isinstance(v, list | tuple | dict | set | np.ndarray)).to_numpy(
        dtype=bool
    )
    out[col] = raw.where(raw.isna() | nested, raw.astype(str))
    if not nested.any():
        return None
    out.loc[nested, col] = None
    return _failed_rows(
        "type",
        "values_are_scalars",
        col,
        "block",
        nested,
        "lists or mappings, " + examples(raw[nested].astype(str).head(3).tolist()),
    )


def _as_class(out: pd.DataFrame, spec: DatasetConfig) -> Check | None:
    """The target as a class: int classes parse as numbers, and 1.0 is the same class as 1."""
    if spec.target not in out.columns or not all(isinstance(c, int) for c in spec.classes):
        return None
    failed = _cast(out, spec.target, "class label", lambda s: pd.to_numeric(s, errors="coerce"))
    tgt = out[spec.target]
    out[spec.target] = tgt.where(tgt.isna() | (tgt % 1 != 0), tgt.round()).astype("Float64")
    return failed


def coerce_types(df: pd.DataFrame, spec: DatasetConfig) -> tuple[pd.DataFrame, list[Check]]:
    """Cast a batch's columns to their declared types; values that do not parse fail their row."""
    out = df.reset_index(drop=True).copy()
    failed = [_cast(out, col, "number", _as_number) for col in spec.numeric]
    failed.append(_cast(out, spec.event_time_column, "timestamp", _as_timestamp, EPOCH_HINT))
    failed += [_as_text(out, col) for col in [*spec.categorical, spec.id_column]]
    failed.append(_as_class(out, spec))
    return out, [c for c in failed if c is not None]


def build_expectations(
    df: pd.DataFrame, spec: DatasetConfig, cfg: ValidationConfig, profile: dict[str, Any] | None
) -> list[Expectation]:
    """The built-in and user expectations for this dataset, for the columns ``df`` has."""

    sev = cfg.severity_of
    inline = spec.labels == "inline"
    # With delayed labels the target arrives in label files; a batch may still carry some.
    required = [
        spec.id_column,
        spec.event_time_column,
        *([spec.target] if inline else []),
        *spec.feature_names,
    ]
    present = set(df.columns)
    exps: list[Expectation] = [
        ("schema", "expect_column_to_exist", {"column": c}, "block") for c in required
    ]
    exps.append(
        (
            "row_count",
            "expect_table_row_count_to_be_between",
            {"min_value": cfg.min_rows},
            sev("row_count"),
        )
    )
    not_null = [spec.id_column, spec.event_time_column, *([spec.target] if inline else [])] + [
        f.name for f in spec.features if not f.nullable
    ]
    exps += [
        ("not_null", "expect_column_values_to_not_be_null", {"column": c}, sev("not_null"))
        for c in not_null
        if c in present
    ]
    if spec.id_column in present:
        exps.append(
            (
                "unique_id",
                "expect_column_values_to_be_unique",
                {"column": spec.id_column},
                sev("unique_id"),
            )
        )
    if spec.target in present:
        exps.append(
            (
                "target",
                "expect_column_values_to_be_in_set",
                {"column": spec.target, "value_set": list(spec.classes)},
                sev("target"),
            )
        )
    if profile:
        for col, (lo, hi) in profile["numeric"].items():
            if col in present:
                exps.append(
                    (
                        "range",
                        "expect_column_values_to_be_between",
                        {"column": col, "min_value": lo, "max_value": hi},
                        sev("range"),
                    )
                )
        for col, values in profile["categorical"].items():
            if col in present:
                exps.append(
                    (
                        "category",
                        "expect_column_values_to_be_in_set",
                        {"column": col, "value_set": values},
                        sev("category"),
                    )
                )
    for e in spec.expectations:
        column = e.kwargs.get("column")
        if column is None or column in present:
            exps.append(("user", e.type, dict(e.kwargs), e.severity))
    return exps


def label_expectations(df: pd.DataFrame, spec: DatasetConfig) -> list[Expectation]:
    """A label file's expectations: id, label and label time present and not null, ids unique,
    labels in the declared classes."""
    cols = [spec.id_column, spec.target, spec.label_time_column]
    exps: list[Expectation] = [
        ("schema", "expect_column_to_exist", {"column": c}, "block") for c in cols
    ]
    exps += [
        ("not_null", "expect_column_values_to_not_be_null", {"column": c}, "block")
        for c in cols
        if c in df.columns
    ]
    if spec.id_column in df.columns:
        exps.append(
            ("unique_id", "expect_column_values_to_be_unique", {"column": spec.id_column}, "block")
        )
    if spec.target in df.columns:
        exps.append(
            (
                "target",
                "expect_column_values_to_be_in_set",
                {"column": spec.target, "value_set": list(spec.classes)},
                "block",
            )
        )
    return exps


def judge(checks: list[Check], n: int, name: str, split_max_fraction: float) -> Verdict:
    """The verdict on ``n`` rows from their checks: accepted, partial (bad rows split off), or
    quarantined (a file-level check failed, or more than ``split_max_fraction`` of rows fail)."""
    failed = [c for c in checks if not c.success]
    blocking = [c for c in failed if c.severity == "block"]
    warnings = [c.describe(name, n) for c in failed if c.severity == "warn"]
    bad = np.zeros(n, dtype=bool)
    file_level = [c for c in blocking if c.rows is None]
    for c in blocking:
        if c.rows is not None:
            bad[c.rows] = True

    if file_level:
        status, reason, bad[:] = "quarantined", file_level[0].describe(name, n), True
    elif bad.any():
        row_failures = "; ".join(c.short() for c in blocking if c.rows)
        if len(row_failures) > REASON_MAX:
            row_failures = row_failures[:REASON_MAX] + "… (all of them in validation.json)"
        reason = f"batch {name}: {int(bad.sum())} of {n} rows fail: {row_failures}"
        if bad.mean() > split_max_fraction:
            reason += (
                f"; more than row_split_max_fraction={split_max_fraction}, "
                "so the whole batch is quarantined"
            )
            status, bad[:] = "quarantined", True
        else:
            status = "partial"
    else:
        status, reason = "accepted", ""
    return Verdict(status, bad, reason, checks, warnings)


def _future(typed: pd.DataFrame, col: str, cfg: ValidationConfig) -> Check | None:
    """Rows stamped (in ``col``) later than now plus the tolerance: a clock or a unit gone wrong."""
    if col not in typed.columns:
        return None
    limit = pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=cfg.future_tolerance_hours)
    late = (typed[col] > limit).fillna(False).to_numpy(dtype=bool)
    if not late.any():
        return None
    return _failed_rows(
        "future",
        f"{col}_not_in_future",
        col,
        cfg.severity_of("future"),
        late,
        f"later than {limit:%Y-%m-%d %H:%M} UTC, "
        + examples(typed.loc[late, col].astype(str).head(3).tolist()),
    )


def _infinite(typed: pd.DataFrame, spec: DatasetConfig, cfg: ValidationConfig) -> list[Check]:
    """Rows with an infinite number: no range was said to allow them, and no model scores them.

    Checked apart from the learned ranges, which only warn by default."""
    out = []
    for col in spec.numeric:
        if col not in typed.columns:
            continue
        inf = np.isinf(typed[col].to_numpy(dtype=float, na_value=np.nan))
        if inf.any():
            out.append(
                _failed_rows(
                    "finite",
                    "values_are_finite",
                    col,
                    cfg.severity_of("finite"),
                    inf,
                    examples(typed.loc[inf, col].astype(str).head(3).tolist()),
                )
            )
    return out


def _undeclared(df: pd.DataFrame, spec: DatasetConfig) -> list[str]:
    declared = {spec.id_column, spec.event_time_column, spec.target, *spec.feature_names}
    return [str(c) for c in df.columns if c not in declared]


def validate_batch(
    df: pd.DataFrame,
    batch_id: str,
    spec: DatasetConfig,
    cfg: ValidationConfig,
    profile: dict[str, Any] | None,
) -> tuple[pd.DataFrame, Verdict]:
    """Coerce and validate one batch; returns the typed frame (declared columns only) and the
    verdict on it."""
    extra = _undeclared(df, spec)
    typed, type_checks = coerce_types(df.drop(columns=extra), spec)
    checks, gx_result = run_expectations(typed, build_expectations(typed, spec, cfg, profile))
    for c in type_checks:
        c.severity = cfg.severity_of("type")
    own = [
        c
        for c in (_future(typed, spec.event_time_column, cfg), *_infinite(typed, spec, cfg))
        if c is not None
    ]
    if extra and cfg.undeclared_columns == "quarantine":
        own.append(
            Check(
                check="schema",
                expectation="no_undeclared_columns",
                column=None,
                severity="block",
                success=False,
                unexpected_count=len(extra),
                detail=f"{len(extra)} columns not in the dataset description, " + examples(extra),
            )
        )
    verdict = judge(type_checks + own + checks, len(typed), batch_id, cfg.row_split_max_fraction)
    verdict.gx_result = gx_result
    if extra and cfg.undeclared_columns == "drop":
        verdict.columns_dropped = len(extra)
        verdict.warnings.append(
            f"batch {batch_id}: {len(extra)} undeclared columns dropped, {examples(extra)}"
        )
    return typed, verdict


def _conflicts(
    typed: pd.DataFrame, spec: DatasetConfig, cfg: ValidationConfig, known: pd.DataFrame | None
) -> Check | None:
    """Labels that contradict the label store: an id labelled one class before and another
    here. Blocked by default (the store would hold both); ``severity: {label_conflict: warn}``
    accepts them, counted, and the newer label time wins."""
    ids, tgt = spec.id_column, spec.target
    if known is None or known.empty or ids not in typed.columns or tgt not in typed.columns:
        return None
    before = typed[ids].map(known.set_index(ids)[tgt]).astype(object)
    now = typed[tgt].astype(object)
    differ = (before.notna() & now.notna() & (before.astype(str) != now.astype(str))).to_numpy(
        dtype=bool
    )
    if not differ.any():
        return None

    def text(v) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    shown = [
        f"{i}: {text(b)} before, {text(n)} here"
        for i, b, n in zip(
            typed[ids][differ].head(3), before[differ].head(3), now[differ].head(3), strict=True
        )
    ]
    return _failed_rows(
        "label_conflict",
        "labels_agree_with_the_label_store",
        tgt,
        cfg.severity_of("label_conflict"),
        differ,
        examples(shown),
    )


def validate_labels(
    df: pd.DataFrame,
    name: str,
    spec: DatasetConfig,
    cfg: ValidationConfig,
    known: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, Verdict]:
    """Coerce and validate one label file against the labels accepted before (``known``: id and
    target); returns the typed frame and the verdict on it."""
    typed = df.reset_index(drop=True).copy()
    failed = [
        _as_class(typed, spec),
        _cast(typed, spec.label_time_column, "timestamp", _as_timestamp, EPOCH_HINT),
        _as_text(typed, spec.id_column),
    ]
    failed += [_future(typed, spec.label_time_column, cfg), _conflicts(typed, spec, cfg, known)]
    type_checks = [c for c in failed if c is not None]
    checks, gx_result = run_expectations(typed, label_expectations(typed, spec))
    verdict = judge(type_checks + checks, len(typed), name, cfg.row_split_max_fraction)
    verdict.gx_result = gx_result
    return typed, verdict


def learned_only(checks: list[Check], n: int) -> np.ndarray:
    """Per row, whether every blocking check it failed is one on a learned reference (range,
    category): such a row may pass once the reference is learned again. False for every row
    when a file-level check failed."""
    blocking = [c for c in checks if not c.success and c.severity == "block"]
    ok = np.ones(n, dtype=bool)
    for c in blocking:
        if c.rows is None:
            return np.zeros(n, dtype=bool)
        if c.check not in LEARNED_CHECKS:
            ok[c.rows] = False
    return ok


def row_reasons(checks: list[Check], n: int) -> list[str]:
    """Per row, the blocking checks it failed, as ``check:column`` joined by ``;``."""
    reasons: list[list[str]] = [[] for _ in range(n)]
    for c in checks:
        if not c.success and c.severity == "block" and c.rows:
            for i in c.rows:
                reasons[i].append(f"{c.expectation}:{c.column}")
    return [";".join(r) for r in reasons]
