"""Validate the assembled training set before anything is trained on it."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ctrain.expectations import Expectation, run_expectations
from ctrain.records import DatasetWindow, ValidatedSet
from ctrain.settings import Settings
from ctrain.storage import write_json_atomic


class TrainingSetInvalid(Exception):
    """The assembled window cannot be trained on; the message says which check failed."""


def validate_training_set(settings: Settings, dataset: DatasetWindow) -> ValidatedSet:
    """Check both parts of the window with Great Expectations; raise if any check fails.

    Returns the passed status, which the model version carries as a tag.
    """
    spec = settings.dataset
    required = [spec.target, spec.id_column, *(f.name for f in spec.features if not f.nullable)]
    report: dict[str, Any] = {}
    problems = []
    for part, uri, min_rows in (
        ("train", dataset.train_uri, settings.training.min_train_rows),
        ("holdout", dataset.holdout_uri, settings.promotion.slice_min_rows),
    ):
        df = pd.read_parquet(uri)
        exps: list[Expectation] = [
            ("row_count", "expect_table_row_count_to_be_between", {"min_value": min_rows}, "block")
        ]
        exps.append(
            (
                "target",
                "expect_column_distinct_values_to_contain_set",
                {"column": spec.target, "value_set": list(spec.classes)},
                "block",
            )
        )
        exps.append(
            ("unique_id", "expect_column_values_to_be_unique", {"column": spec.id_column}, "block")
        )
        exps += [
            ("not_null", "expect_column_values_to_not_be_null", {"column": c}, "block")
            for c in required
        ]
        checks, result = run_expectations(df, exps)
        report[part] = result
        problems += [
            f"{part} set: {c.describe(dataset.dataset_id, len(df))}"
            for c in checks
            if not c.success
        ]
    path = write_json_atomic(settings.datasets_dir / dataset.dataset_id / "validation.json", report)
    if problems:
        raise TrainingSetInvalid("; ".join(problems))
    return ValidatedSet(
        dataset_id=dataset.dataset_id, validation_status="passed", report_uri=str(path)
    )
