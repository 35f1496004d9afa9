"""Batch inference: score an accepted batch with the model that is champion right now.

One Parquet file per batch, ``predictions/<batch>.parquet``, keyed by (batch id, row id, model
version), written atomically: a retry or a re-run replaces the whole file, so each row has exactly
one prediction and none is missing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctrain.ingest.batches import accepted_path
from ctrain.model_io import features, positive_scores
from ctrain.records import ScoredBatch
from ctrain.registry import current_champion, load_model, version_uri
from ctrain.settings import Settings
from ctrain.storage import write_parquet_atomic


class NoChampion(Exception):
    """There is no champion to score with yet."""


def unscored_batches(settings: Settings) -> list[str]:
    """Accepted batch ids that have no predictions yet, oldest first."""
    accepted = (
        sorted(p.stem for p in settings.accepted_dir.glob("*.parquet"))
        if settings.accepted_dir.is_dir()
        else []
    )
    return [b for b in accepted if not (settings.predictions_dir / f"{b}.parquet").exists()]


def score_batch(settings: Settings, batch_id: str, client) -> ScoredBatch:
    """Score every row of accepted batch ``batch_id``; returns the file's URI and counts."""
    spec, name = settings.dataset, settings.model_name
    source = accepted_path(settings, batch_id)  # checks the id before it becomes a path
    version = current_champion(client, name)
    if version is None:
        raise NoChampion(
            f"{name} has no champion yet: batch {batch_id} stays unscored until one is promoted"
        )
    # Only the model's inputs become pandas objects; the id, time and target columns go from the
    # batch file to the predictions file in Arrow. Text categories are read as dictionaries: one
    # Python string per distinct value instead of one per row, for the same input frame.
    schema = pq.read_schema(source)
    text = [c for c in spec.categorical if c in schema.names and _is_text(schema.field(c).type)]
    table = pq.read_table(source, read_dictionary=text)
    model = load_model(version_uri(name, version))
    X = features(table.select(spec.feature_names).to_pandas(), spec)
    scores = positive_scores(model, X, spec.positive_class)
    negative = next(c for c in spec.classes if c != spec.positive_class)
    n = table.num_rows
    columns = {
        "batch_id": _constant(batch_id, n),
        spec.id_column: _as_text(table[spec.id_column]),
        spec.event_time_column: table[spec.event_time_column],
        "model_version": _constant(str(version), n),
        "score": pa.array(scores),
        "prediction": pa.array(np.where(scores >= 0.5, spec.positive_class, negative)),
    }
    if spec.target in table.column_names:
        columns[spec.target] = table[spec.target]
    out = pa.table(columns)
    path = write_parquet_atomic(settings.predictions_dir / f"{batch_id}.parquet", out)
    return ScoredBatch(batch_id=batch_id, model_version=version, rows=n, predictions_uri=str(path))


def _constant(value: str, n: int) -> pa.DictionaryArray:
    """``value`` on every row, stored once (a one-entry dictionary)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int8)), pa.array([value]))


def _as_text(ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """Row ids as text, spelled as ``str()`` spells them (labels are joined on that form)."""
    if _is_text(ids.type):
        return ids
    return pa.chunked_array([pa.array(ids.to_pandas().astype(str), type=pa.string())])


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)
