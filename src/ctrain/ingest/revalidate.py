"""Send rows that only a learned reference quarantined through ingest again.

A learned range is only as wide as the data it was learned from: after a shift, rows outside it
may be what the next champion learned from. When the reference changes (the champion moved),
every quarantined batch judged under another reference gives back its rows whose only blocking
failures were learned checks (range, category): they land again as ``<batch>.after-v<N>`` and
are validated, and scored, like any batch. The quarantine keeps the rows as they arrived, and a
``requeued.json`` beside them says where they went, so each row is sent on once.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from ctrain.ingest.batches import batch_outcomes, requeue_record
from ctrain.ingest.validate import LEARNED_ONLY_COLUMN, REASON_COLUMN
from ctrain.settings import Settings
from ctrain.storage import write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)

_AFTER = re.compile(r"\.after-v[0-9]+$")
MARKER = "requeued.json"


def requeue_learned_only(settings: Settings, reference: str) -> list[Path]:
    """Land again the learned-only quarantined rows of every batch judged under a reference other
    than ``reference``; returns the files written to the landing folder."""
    landed = []
    for outcome in batch_outcomes(settings):
        if not outcome.rows_quarantined or not outcome.quarantine_uri:
            continue
        if outcome.reference in ("", reference):
            continue  # judged with no learned reference, or with this very one
        qdir = Path(outcome.quarantine_uri)
        rows_path = qdir / "rows.parquet"
        if (qdir / MARKER).exists() or not rows_path.is_file():
            continue
        rows = pd.read_parquet(rows_path)
        again = (
            rows[rows[LEARNED_ONLY_COLUMN].astype(bool)]
            if LEARNED_ONLY_COLUMN in rows.columns
            else rows.iloc[0:0]
        )
        target = None
        if len(again):
            name = f"{_AFTER.sub('', outcome.batch_id)}.after-v{reference}"
            target = settings.landing_dir / f"{name}.parquet"
            write_json_atomic(
                requeue_record(settings, name),
                {"from_batch": outcome.batch_id, "rows": len(again), "reference": reference},
            )
            write_parquet_atomic(target, again.drop(columns=[REASON_COLUMN, LEARNED_ONLY_COLUMN]))
            landed.append(target)
            log.info(
                "batch %s: %d rows quarantined only by the learned reference of %s land again "
                "as %s, to be validated against version %s's",
                outcome.batch_id,
                len(again),
                outcome.reference,
                target.name,
                reference,
            )
        write_json_atomic(
            qdir / MARKER,
            {
                "reference": reference,
                "rows": len(again),
                "landed_as": target.name if target else None,
            },
        )
    return landed
