"""Run Great Expectations 1.x on a frame: which expectation failed, on which column, which rows.

Ingest (batches and label files) and the training-set check both describe what they expect as
``(check, expectation type, kwargs, severity)`` and read back one ``Check`` per expectation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache
from typing import Any

import pandas as pd

from ctrain.settings import Severity

# (ctrain's name for the check, GX expectation type in snake_case, its kwargs, severity)
Expectation = tuple[str, str, dict[str, Any], Severity]


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


def brief(value: Any, limit: int = 40) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters: a cell may hold a megabyte."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def examples(values: list[Any], n: int = 3) -> str:
    """A few failing values for a one-line reason (the full list is in the GX result)."""
    return "e.g. [" + ", ".join(brief(v) for v in list(values)[:n]) + "]"


@cache
def _classes() -> dict[str, type]:
    """GX's expectation classes by their own snake-case type name."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.expectation import Expectation as GxExpectation

    return {
        c.expectation_type: c
        for c in vars(gxe).values()
        if isinstance(c, type) and issubclass(c, GxExpectation) and c.expectation_type
    }


def _expectation(type_: str, kwargs: dict[str, Any], meta: dict[str, Any]):
    cls = _classes().get(type_)
    if cls is None:
        raise ValueError(f"unknown Great Expectations expectation type {type_!r}")
    return cls(**kwargs, meta=meta)


def run_expectations(
    df: pd.DataFrame, expectations: list[Expectation]
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
    # The suite is built whole and stored once: adding expectations one by one to a stored
    # suite serializes it again on every add (most of a small batch's validation time).
    suite = ctx.suites.add(
        gx.ExpectationSuite(
            name="ctrain",
            expectations=[
                _expectation(type_, kwargs, {"ctrain_check": check, "severity": severity, "i": i})
                for i, (check, type_, kwargs, severity) in enumerate(expectations)
            ],
        )
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
            detail = f"could not be evaluated: {brief(exc, 160)}"
        elif rows is None and "observed_value" in res:
            detail = f"observed {brief(res['observed_value'])}"
        elif (
            res.get("partial_unexpected_list") and cfg.type != "expect_column_values_to_not_be_null"
        ):
            detail = examples(res["partial_unexpected_list"])
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
