"""Validate a batch with Great Expectations 1.x: what failed, on which column and which rows.

Built-in checks come from the dataset description (schema, types, nulls, unique ids, row count,
target classes) and the reference profile (ranges, category sets); the user's own expectations come
from the project YAML. Every check has a severity (``block`` or ``warn``). Row-level failures name
the rows, so a batch can be split; batch-level failures (a missing column, too few rows, a failed
aggregate) condemn the whole batch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ctrain.settings import DatasetConfig, Severity, ValidationConfig

REASON_COLUMN = "_ctrain_reasons"


@dataclass
class Check:
    """One expectation's outcome on one batch."""

    check: str
    expectation: str
    column: str | None
    severity: Severity
    success: bool
    unexpected_count: int = 0
    rows: list[int] | None = None  # positions of failing rows; None for batch-level checks
    detail: str = ""

    def describe(self, batch_id: str, n_rows: int) -> str:
        """One line: the batch, the expectation, the column and what was wrong."""
        where = f"column {self.column!r}" if self.column else "the table"
        if self.rows is not None:
            what = f"{self.unexpected_count} of {n_rows} rows" + (
                f", {self.detail}" if self.detail else ""
            )
        elif self.expectation == "expect_column_to_exist":
            what = "the column is missing"
        else:
            what = self.detail or "failed"
        return f"batch {batch_id}: {self.expectation} failed on {where}: {what}"

    def short(self) -> str:
        origin = " [user]" if self.check == "user" else ""
        return f"{self.expectation}{origin} on {self.column!r} ({self.unexpected_count} rows" + (
            f", {self.detail})" if self.detail else ")"
        )


@dataclass
class Verdict:
    """What to do with a batch: accept it, split it, or quarantine it."""

    status: str  # accepted | partial | quarantined
    bad_rows: np.ndarray  # bool mask over the batch's rows
    reason: str
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)
    gx_result: dict[str, Any] = field(default_factory=dict)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _expectation(type_: str, kwargs: dict[str, Any], meta: dict[str, Any]):
    import great_expectations.expectations as gxe

    cls = getattr(gxe, _camel(type_), None)
    if cls is None:
        raise ValueError(f"unknown Great Expectations expectation type {type_!r}")
    return cls(**kwargs, meta=meta)


def run_expectations(
    df: pd.DataFrame, expectations: list[tuple[str, str, dict[str, Any], Severity]]
) -> tuple[list[Check], dict[str, Any]]:
    """Run ``(check, type, kwargs, severity)`` expectations on ``df`` with GX; rows by position."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    frame = df.reset_index(drop=True)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        ctx.data_sources.add_pandas("ctrain")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name="ctrain"))
    for i, (check, type_, kwargs, severity) in enumerate(expectations):
        suite.add_expectation(
            _expectation(type_, kwargs, {"ctrain_check": check, "severity": severity, "i": i})
        )
    vd = ctx.validation_definitions.add(
        gx.ValidationDefinition(name="ctrain", data=batch_def, suite=suite)
    )
    result = vd.run(
        batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"}
    )

    checks = []
    for r in result.results:
        cfg = r.expectation_config
        res = r.result or {}
        rows = res.get("unexpected_index_list")
        exc = (
            (r.exception_info or {}).get("exception_message")
            if isinstance(r.exception_info, dict)
            else None
        )
        detail = ""
        if exc:
            detail = f"could not be evaluated: {exc}"
        elif rows is None and "observed_value" in res:
            detail = f"observed {res['observed_value']!r}"
        elif (
            res.get("partial_unexpected_list") and cfg.type != "expect_column_values_to_not_be_null"
        ):
            detail = f"e.g. {res['partial_unexpected_list'][:3]}"
        checks.append(
            Check(
                check=cfg.meta.get("ctrain_check", "user"),
                expectation=cfg.type,
                column=cfg.kwargs.get("column"),
                severity=cfg.meta.get("severity", "block"),
                success=bool(r.success),
                unexpected_count=int(res.get("unexpected_count") or 0),
                rows=[int(i) for i in rows] if rows is not None and not r.success else None,
                detail=detail,
            )
        )
    return checks, result.to_json_dict()


def coerce_types(df: pd.DataFrame, spec: DatasetConfig) -> tuple[pd.DataFrame, list[Check]]:
    """Cast columns to their declared types; values that do not parse become row failures."""
    out = df.reset_index(drop=True).copy()
    failures: list[Check] = []

    def cast(col: str, kind: str, fn) -> None:
        if col not in out.columns:
            return
        raw = out[col]
        new = fn(raw)
        bad = raw.notna() & new.isna()
        if bad.any():
            sample = raw[bad].astype(str).head(3).tolist()
            failures.append(
                Check(
                    check="type",
                    expectation=f"values_parse_as_{kind}",
                    column=col,
                    severity="block",
                    success=False,
                    unexpected_count=int(bad.sum()),
                    rows=np.flatnonzero(bad.to_numpy()).tolist(),
                    detail=f"e.g. {sample}",
                )
            )
        out[col] = new

    for col in spec.numeric:
        cast(col, "number", lambda s: pd.to_numeric(s, errors="coerce").astype(float))
    cast(
        spec.event_time_column,
        "timestamp",
        lambda s: pd.to_datetime(s, utc=True, errors="coerce", format="mixed"),
    )
    for col in [*spec.categorical, spec.id_column]:
        if col in out.columns:
            out[col] = out[col].where(out[col].isna(), out[col].astype(str))
    if spec.target in out.columns and all(isinstance(c, int) for c in spec.classes):
        cast(spec.target, "class label", lambda s: pd.to_numeric(s, errors="coerce"))
        # Integral floats (1.0 from a CSV column with gaps) are the same class as 1.
        tgt = out[spec.target]
        out[spec.target] = tgt.where(tgt.isna() | (tgt % 1 != 0), tgt.round()).astype("Float64")
    return out, failures


def build_expectations(
    df: pd.DataFrame, spec: DatasetConfig, cfg: ValidationConfig, profile: dict[str, Any] | None
) -> list[tuple[str, str, dict[str, Any], Severity]]:
    """The built-in and user expectations for this dataset, for the columns ``df`` has."""

    def sev(check: str) -> Severity:
        return cfg.severity.get(check, "block")

    inline = spec.labels == "inline"
    # With delayed labels the target arrives in label files; a batch may still carry some.
    required = [
        spec.id_column,
        spec.event_time_column,
        *([spec.target] if inline else []),
        *spec.feature_names,
    ]
    present = set(df.columns)
    exps: list[tuple[str, str, dict[str, Any], Severity]] = [
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


def validate_batch(
    df: pd.DataFrame,
    batch_id: str,
    spec: DatasetConfig,
    cfg: ValidationConfig,
    profile: dict[str, Any] | None,
) -> tuple[pd.DataFrame, Verdict]:
    """Coerce and validate one batch; returns the typed frame and the verdict on it."""
    typed, type_checks = coerce_types(df, spec)
    checks, gx_result = run_expectations(typed, build_expectations(typed, spec, cfg, profile))
    for c in type_checks:
        c.severity = cfg.severity.get("type", "block")
    checks = type_checks + checks
    n = len(typed)

    failed = [c for c in checks if not c.success]
    blocking = [c for c in failed if c.severity == "block"]
    warnings = [c.describe(batch_id, n) for c in failed if c.severity == "warn"]
    bad = np.zeros(n, dtype=bool)
    batch_level = [c for c in blocking if c.rows is None]
    for c in blocking:
        if c.rows is not None:
            bad[c.rows] = True

    if batch_level:
        status, reason, bad[:] = "quarantined", batch_level[0].describe(batch_id, n), True
    elif bad.any():
        row_failures = "; ".join(c.short() for c in blocking if c.rows)
        reason = f"batch {batch_id}: {int(bad.sum())} of {n} rows fail: {row_failures}"
        if bad.mean() > cfg.row_split_max_fraction:
            reason += f"; more than row_split_max_fraction={cfg.row_split_max_fraction}, so the whole batch is quarantined"
            status, bad[:] = "quarantined", True
        else:
            status = "partial"
    else:
        status, reason = "accepted", ""
    return typed, Verdict(status, bad, reason, checks, warnings, gx_result)


def row_reasons(checks: list[Check], n: int) -> list[str]:
    """Per row, the blocking checks it failed, as ``check:column`` joined by ``;``."""
    reasons: list[list[str]] = [[] for _ in range(n)]
    for c in checks:
        if not c.success and c.severity == "block" and c.rows:
            for i in c.rows:
                reasons[i].append(f"{c.expectation}:{c.column}")
    return [";".join(r) for r in reasons]
