"""Write a project YAML for a user's own data from a sample batch (``ctrain new-project``).

The packaged ``project.yaml`` describes the demo's columns; copied as it is, its slices and
expectations name columns another data set does not have. This reads a sample file, describes
its columns (numeric or categorical, nullable or not) and writes a project file that runs on
them as it stands: no slices and no expectations of the demo, the demo's training and promotion
defaults otherwise, with comments that say what to review.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ctrain.settings import default_project_file, load_settings

# Sections taken from the packaged project as they are: they name no column.
_KEPT = ("validation", "training")


class CannotDescribe(ValueError):
    """The sample cannot be described as a ctrain data set; nothing was written."""


def read_sample(path: Path) -> pd.DataFrame:
    """A CSV or Parquet sample batch."""
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise CannotDescribe(f"cannot read sample {path}: {exc}") from exc


def describe(
    sample: pd.DataFrame,
    *,
    target: str,
    id_column: str,
    event_time_column: str,
    model_name: str,
    landing_dir: Path | None = None,
) -> dict[str, Any]:
    """The project mapping for ``sample``: every other column is a feature.

    Raises:
        CannotDescribe: a named column is missing, the target does not have two classes, or the
            time column does not hold times.
    """
    named = {"target": target, "id column": id_column, "event time column": event_time_column}
    missing = {what: col for what, col in named.items() if col not in sample.columns}
    if missing:
        raise CannotDescribe(
            f"the sample has no {', '.join(f'{w} {c!r}' for w, c in missing.items())}; "
            f"its columns are {list(sample.columns)}"
        )
    times = pd.to_datetime(sample[event_time_column], errors="coerce", utc=True)
    if times.isna().all():
        raise CannotDescribe(f"event time column {event_time_column!r} holds no readable times")
    classes = sample[target].dropna().unique().tolist()
    if len(classes) != 2:
        raise CannotDescribe(
            f"target {target!r} must have two classes in the sample; it has {sorted(classes)[:10]}"
        )
    classes = sorted(_plain(c) for c in classes)
    # The rarer class is usually the event a model is asked to find (churn, fraud, default).
    counts = sample[target].map(_plain).value_counts()
    positive = min(classes, key=lambda c: (counts.get(c, 0), str(c)))
    features = []
    for col in sample.columns:
        if col in (target, id_column, event_time_column):
            continue
        series = sample[col]
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        spec: dict[str, Any] = {"name": str(col), "type": "numeric" if numeric else "categorical"}
        if series.isna().any():
            spec["nullable"] = True
        features.append(spec)
    if not features:
        raise CannotDescribe("the sample has no column besides the target, id and time")
    dataset: dict[str, Any] = {}
    if landing_dir is not None:
        dataset["landing_dir"] = str(landing_dir)
    dataset |= {
        "target": target,
        "classes": classes,
        "positive_class": positive,
        "id_column": id_column,
        "event_time_column": event_time_column,
        "features": features,
        "expectations": [],
    }
    template = yaml.safe_load(default_project_file().read_text(encoding="utf-8"))
    promotion = dict(template["promotion"]) | {"slice_columns": []}
    return (
        {"model_name": model_name, "dataset": dataset}
        | {key: template[key] for key in _KEPT}
        | {"promotion": promotion}
    )


def _plain(value: Any) -> int | str:
    """A class label as YAML writes it back: an integer if it is one, else text."""
    if isinstance(value, bool):
        return str(value).lower()
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        return str(value)
    return int(as_float) if as_float.is_integer() else str(value)


_HEADER = """\
# ctrain project for {model}, described from {sample} by `ctrain new-project`.
# Review before the first run:
# - features: every column besides the target, id and time; numeric or categorical as read from
#   the sample. Remove what the model must not see (free text, leaks of the target).
# - positive_class: the rarer class in the sample.
# - dataset.expectations: your own Great Expectations checks (block or warn), e.g.
#     - {{type: expect_column_values_to_be_between, kwargs: {{column: <col>, min_value: 0}}, severity: block}}
# - promotion.slice_columns: categorical features whose every value a challenger must not make
#   worse (by more than slice_tolerance), e.g. [{slice_hint}].
# Run it: CTRAIN_PROJECT={out} ctrain init && CTRAIN_PROJECT={out} ctrain up
"""


def write_project(project: dict[str, Any], out: Path, sample: Path, force: bool = False) -> Path:
    """Write ``project`` to ``out`` atomically, after checking that ctrain loads it.

    Raises:
        FileExistsError: ``out`` exists and ``force`` is false.
        ValueError: the written settings do not load (the message names the key).
    """
    out = out.expanduser().resolve()
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    categorical = [f["name"] for f in project["dataset"]["features"] if f["type"] == "categorical"]
    text = _HEADER.format(
        model=project["model_name"],
        sample=sample,
        slice_hint=", ".join(categorical[:1]) or "<a categorical feature>",
        out=out,
    ) + yaml.safe_dump(project, sort_keys=False, default_flow_style=None, width=100)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        load_settings(tmp)  # what is written is a project ctrain runs
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
