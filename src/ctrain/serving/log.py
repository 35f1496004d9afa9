"""Every online prediction, logged; the log lands as batches the rest of the loop already reads.

Rows are kept in memory per (version, arm) and land as a *window* (written by the service's
background thread, never on a request's path) after ``serving.log_window_rows`` rows or
``log_window_seconds`` seconds, when the version changes and when the service stops:

- ``predictions/<window>.parquet`` first: the columns batch scoring writes (batch id, row id,
  event time, model version, score, prediction) plus the arm, the request id, the time it was
  answered, the request's latency, the time this version took to score its rows, the rollout
  the split belonged to, and the error when this version failed on the row.
  ``ct_batch_inference`` never scores a batch that has predictions.

Arms: ``champion`` and ``challenger`` are the versions that answered; ``shadow`` is a version
that scored rows it did not answer (during a rollout every row is scored by both versions, the
other one after the answer is sent). Only answered windows land their rows; a shadow window is
evidence for the rollout (``ctrain.rollout.evidence``), joined to the answers by request id and row id.
- then the rows themselves (id, event time, features) in the landing folder as
  ``<window>.parquet``: ``ct_ingest`` validates them like any batch (its watcher starts it
  within seconds), so ``ct_drift_monitor`` checks the window for drift, prediction drift and,
  once delayed labels join by id, performance, exactly as it checks a scored batch, and labeled
  online rows become training data like any other.

Both files are written atomically. A window's id is ``online-<time>-<source>-<n>``: unique per
service process, and a name ingest accepts as a batch id.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from ctrain.serving.rows import as_frame
from ctrain.settings import Settings
from ctrain.storage import write_parquet_atomic

SHADOW = "shadow"  # the arm of a version that scored rows without answering them


@dataclass
class _Window:
    opened: float
    rows: list = field(default_factory=list)  # validated request rows
    scores: list[np.ndarray] = field(default_factory=list)
    # per request: request id, time, latency ms, rows, rollout id, scoring ms, error
    meta: list[tuple[str, datetime, float, int, str, float, str]] = field(default_factory=list)
    count: int = 0


class InferenceLog:
    """The open windows of one service process, and where they land."""

    def __init__(self, settings: Settings, source: str, keep: bool = True):
        self.settings, self.keep = settings, keep  # keep=False: rows are not live traffic
        self.source = re.sub(r"[^A-Za-z0-9]+", "-", source).strip("-")[:40] or "serve"
        self._open: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self.full = threading.Event()  # set when a window reached log_window_rows
        self.landed: list[str] = []  # window ids this process landed, oldest first

    def add(
        self,
        rows: list,
        scores: np.ndarray,
        version: str,
        arm: str,
        request_id: str,
        latency_ms: float,
        rollout: str = "",
        score_ms: float = 0.0,
        error: str = "",
        at: datetime | None = None,
    ) -> None:
        """Log one request's rows (validated row objects) and answers (NaN with ``error`` when
        the version failed on them). Cheap: the frame is built when the window lands, not on
        the request's path."""
        if not self.keep:
            return
        now = at or datetime.now(UTC)
        with self._lock:
            w = self._open.setdefault((version, arm), _Window(opened=time.monotonic()))
            w.rows.extend(rows)
            w.scores.append(scores)
            w.meta.append((request_id, now, latency_ms, len(rows), rollout, score_ms, error))
            w.count += len(rows)
            if w.count >= self.settings.serving.log_window_rows:
                self.full.set()  # the service's background thread lands it, off the request

    def flush(
        self, version: str | None = None, due_only: bool = False, max_age: float | None = None
    ) -> list[str]:
        """Land the open windows (of ``version`` only, or only those due by size or by age:
        ``log_window_seconds``; or ``max_age``, for a window that holds at least the rows
        ingest asks of a batch, ``validation.min_rows``: a rollout lands its evidence early,
        never as windows too small to be accepted)."""
        cfg = self.settings.serving
        early = min(cfg.log_window_seconds, max_age or cfg.log_window_seconds)
        enough = self.settings.validation.min_rows
        now = time.monotonic()
        with self._lock:
            self.full.clear()
            keys = [
                k
                for k, w in self._open.items()
                if (version is None or k[0] == version)
                and (
                    not due_only
                    or w.count >= cfg.log_window_rows
                    or now - w.opened >= cfg.log_window_seconds
                    or (now - w.opened >= early and w.count >= enough)
                )
            ]
            taken = [(k, self._open.pop(k)) for k in keys]
        out = []
        for key, w in taken:
            if not w.count:
                continue
            try:
                out.append(self._land(self._frame(w), *key))
            except Exception:  # nothing is lost: the rows wait for the next try
                with self._lock:
                    later = self._open.get(key)
                    if later is not None:  # rows that came in meanwhile stay after these
                        w.rows += later.rows
                        w.scores += later.scores
                        w.meta += later.meta
                        w.count += later.count
                    self._open[key] = w
                raise
        return out

    def _frame(self, w: _Window) -> pd.DataFrame:
        spec = self.settings.dataset
        negative = next(c for c in spec.classes if c != spec.positive_class)
        per_row = [m for m in w.meta for _ in range(m[3])]
        times = pd.to_datetime([m[1] for m in per_row], utc=True)
        frame = as_frame(w.rows, spec, times)
        scores = np.concatenate(w.scores)
        return frame.assign(
            score=scores,
            prediction=np.where(scores >= 0.5, spec.positive_class, negative),
            request_id=[m[0] for m in per_row],
            answered_at=times,
            latency_ms=[m[2] for m in per_row],
            rollout=[m[4] for m in per_row],
            score_ms=[m[5] for m in per_row],
            error=[m[6] for m in per_row],
        )

    def open_rows(self) -> int:
        with self._lock:
            return sum(w.count for w in self._open.values())

    def _land(self, frame: pd.DataFrame, version: str, arm: str) -> str:
        spec, s = self.settings.dataset, self.settings
        with self._lock:
            self._seq += 1
            seq = self._seq
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        window = f"online-{stamp}-{self.source}-{seq:04d}"
        if arm != "champion":
            window += f"-{arm}-v{version}"
        preds = pd.DataFrame(
            {
                "batch_id": window,
                spec.id_column: frame[spec.id_column].astype(str),
                spec.event_time_column: frame[spec.event_time_column],
                "model_version": version,
                "score": frame["score"],
                "prediction": frame["prediction"],
                "arm": arm,
                "request_id": frame["request_id"],
                "answered_at": frame["answered_at"],
                "latency_ms": frame["latency_ms"],
                "score_ms": frame["score_ms"],
                "rollout": frame["rollout"],
                "error": frame["error"],
            }
        )
        # Predictions first: batch scoring never scores a batch that has them.
        answers = write_parquet_atomic(s.predictions_dir / f"{window}.parquet", preds)
        if arm != SHADOW:  # the rows land once, with the answers callers were given
            rows = frame[[spec.id_column, spec.event_time_column, *spec.feature_names]]
            try:
                write_parquet_atomic(s.landing_dir / f"{window}.parquet", rows)
            except BaseException:
                answers.unlink(missing_ok=True)  # no answers without their rows; both retried
                raise
        with self._lock:
            self.landed.append(window)
        return window
