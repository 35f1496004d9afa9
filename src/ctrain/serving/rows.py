"""What a request to ``ctrain serve`` holds: rows in the project's feature schema, checked.

The row model is built from ``dataset`` in the project YAML: the id column (text or integer),
the event time (optional: the request's time when absent), each feature as a finite number or
text, nullable only where the project says so; strict, so nothing is coerced (``true`` is not a
number or an id, ``"12"`` is not a number). A bad row is named by its index, its id where it
had one, and the column, so a caller can find it; nothing of the request is scored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
)

from ctrain.settings import DatasetConfig


def row_model(spec: DatasetConfig) -> type[BaseModel]:
    """The pydantic model of one row of ``spec``'s schema.

    Strict where a guess would change a value: a number is a JSON number (not ``true``, not
    ``"12"``), an id is a string or an integer (not ``true``, which would become ``"1"``)."""
    fields: dict[str, Any] = {
        spec.id_column: (
            StrictStr | StrictInt,
            Field(description="the row's id; labels join on it"),
        ),
        spec.event_time_column: (datetime | None, None),
    }
    for f in spec.features:
        kind = StrictFloat if f.type == "numeric" else StrictStr
        fields[f.name] = (kind | None, None) if f.nullable else (kind, ...)
    config = ConfigDict(extra="ignore", allow_inf_nan=False, str_max_length=1000)
    return create_model("Row", __config__=config, **fields)


def request_model(spec: DatasetConfig, max_rows: int) -> type[BaseModel]:
    """The body of ``POST /predict``: ``{"rows": [row, ...]}``, 1 to ``max_rows`` rows."""
    row = row_model(spec)
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        rows=(list[row], Field(min_length=1, max_length=max_rows)),
    )


def as_frame(rows: list[BaseModel], spec: DatasetConfig, now) -> pd.DataFrame:
    """The rows as a frame of the id, the event time (``now``, one time or one per row, where
    absent) and the features."""
    frame = pd.DataFrame([r.__dict__ for r in rows])
    frame[spec.id_column] = frame[spec.id_column].astype(str)
    given = pd.to_datetime(frame[spec.event_time_column], utc=True)
    fallback = pd.Series(pd.to_datetime(now, utc=True), index=frame.index)
    frame[spec.event_time_column] = given.where(given.notna(), fallback)
    return frame[[spec.id_column, spec.event_time_column, *spec.feature_names]]


def explain(errors: list[dict], body: Any, spec: DatasetConfig) -> list[dict]:
    """Pydantic's errors as (row, row id, column, message): where each problem is."""
    rows = body.get("rows") if isinstance(body, dict) else None
    out = []
    for e in errors:
        loc = [x for x in e.get("loc", ()) if x != "body"]
        item: dict[str, Any] = {"message": e.get("msg", "invalid")}
        if len(loc) >= 2 and loc[0] == "rows" and isinstance(loc[1], int):
            item["row"] = loc[1]
            if isinstance(rows, list) and loc[1] < len(rows) and isinstance(rows[loc[1]], dict):
                row_id = rows[loc[1]].get(spec.id_column)
                if isinstance(row_id, str | int):
                    item["row_id"] = str(row_id)
            if len(loc) >= 3:
                item["column"] = str(loc[2])
        else:
            item["field"] = ".".join(map(str, loc)) or "body"
        out.append(item)
    return out


def rows_from_frame(frame: pd.DataFrame, spec: DatasetConfig) -> list[BaseModel]:
    """The rows of ``frame`` that fit the schema, as validated row objects (for warm-up)."""
    row = row_model(spec)
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    out = []
    for r in records:
        try:
            out.append(row.model_validate(r))
        except ValueError:
            continue
    return out
