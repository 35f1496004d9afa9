"""The model that answers, and how it changes: load, check, warm, then swap whole.

``ModelSlot.refresh`` looks where an alias points. When it has moved, the new version is loaded
through the registry's safe loader, its signature is checked against the project's features,
and it scores a few rows (warm-up) before one assignment makes it the answering model. Requests
already running finish on the model they started with; none is dropped or fails. A version
that fails any of those steps never answers: the slot keeps the previous one, remembers the
failure (``/health`` shows it) and does not try that version again until the alias moves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ctrain.model_io import features, positive_scores
from ctrain.registry import aliased_version, load_model_and_signature, version_uri
from ctrain.serving.fast import FastScorer
from ctrain.serving.rows import as_frame
from ctrain.settings import Settings

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Served:
    """A loaded, checked and warmed version, and how it scores rows."""

    version: str
    model: Any
    loaded_at: str
    warmed_rows: int
    score: Callable[[list], np.ndarray]  # rows (objects with a field per feature) -> scores
    fast: bool  # ``score`` is the NumPy path (``fast.py``), checked against the pipeline


@dataclass(frozen=True)
class Failure:
    """Why the slot is not serving what the alias points at."""

    version: str | None
    error: str
    at: str


class NotServable(Exception):
    """A version that loaded but cannot answer this project's rows."""


def check_signature(signature, uri: str, settings: Settings) -> None:
    """Raise ``NotServable`` unless a model's input ``signature`` (None: it has none) holds
    the project's features."""
    if signature is None:
        return
    names = set(signature.inputs.input_names())
    missing = [c for c in settings.dataset.feature_names if c not in names]
    extra = sorted(names - set(settings.dataset.feature_names))
    if missing or extra:
        raise NotServable(
            f"{uri}: its signature does not match dataset.features of the project "
            f"(missing {missing}, not in the project {extra})"
        )


class ModelSlot:
    """The version ``alias`` pointed at when last looked, loaded; swapped only when ready.

    ``warm_rows`` gives rows (validated request rows) to warm a new version with: the last rows
    served, or its training window's held-out rows; ``before_swap(old, new)`` runs before the swap (the inference log
    closes the old version's window there).
    """

    def __init__(
        self,
        settings: Settings,
        client,
        alias: str,
        warm_rows: Callable[[str], list] = lambda version: [],
        before_swap: Callable[[Served | None, Served], None] = lambda old, new: None,
    ):
        self.settings, self.client, self.alias = settings, client, alias
        self.warm_rows, self.before_swap = warm_rows, before_swap
        self.current: Served | None = None
        self.failure: Failure | None = None
        self._failed: set[str] = set()
        self._lock = threading.Lock()  # one refresh at a time
        self._loading_until = 0.0  # monotonic time a load in progress (and its wake) ends

    def reloading(self) -> bool:
        """Whether a version is being loaded now, or was swapped in within the last second:
        the load holds the interpreter for a moment, and requests wait it out."""
        return time.monotonic() < self._loading_until

    def refresh(self) -> bool:
        """Look at the alias; load, check, warm and swap in a version it moved to. True if the
        answering version changed. Never raises: a failure is kept in ``failure``."""
        try:
            mv = aliased_version(self.client, self.settings.model_name, self.alias)
        except Exception as exc:  # the registry is down: keep answering with what we have
            self.failure = Failure(None, f"registry unreachable: {exc}"[:500], _now())
            return False
        return self.serve(None if mv is None else str(mv.version))

    def serve(self, version: str | None) -> bool:
        """Make ``version`` the answering one (load, check, warm, swap), unless it is already or
        it failed before; None keeps what answers. True if the answering version changed."""
        with self._lock:
            now = _now()
            if version is None:
                if self.current is None:
                    self.failure = Failure(None, f"no version has the alias {self.alias}", now)
                return False
            if self.current and self.current.version == version:
                self.failure = None
                return False
            if version in self._failed:
                return False
            self._loading_until = float("inf")
            try:
                new = self._load(version, now)
            except Exception as exc:  # whatever went wrong, this version does not answer
                self._loading_until = time.monotonic() + 1.0
                self._failed.add(version)
                self.failure = Failure(version, f"{type(exc).__name__}: {exc}"[:500], now)
                log.error("v%s of %s not served: %s", version, self.settings.model_name, exc)
                return False
            self.before_swap(self.current, new)
            self.current, self.failure = new, None
            self._loading_until = time.monotonic() + 1.0
            log.info("v%s of %s now loaded as %s", version, self.settings.model_name, self.alias)
            return True

    def clear(self) -> None:
        """Drop the loaded version (a rollout ended: its challenger no longer scores)."""
        with self._lock:
            self.current, self.failure = None, None

    def failed(self, version: str) -> Failure | None:
        """Why ``version`` cannot answer, when it was tried and failed."""
        failure = self.failure
        return failure if failure is not None and failure.version == version else None

    def _load(self, version: str, now: str) -> Served:
        uri = version_uri(self.settings.model_name, version)
        model, signature = load_model_and_signature(uri)
        check_signature(signature, uri, self.settings)
        spec = self.settings.dataset

        def slow(rows: list) -> np.ndarray:
            frame = as_frame(rows, spec, datetime.now(UTC))
            return positive_scores(model, features(frame, spec), spec.positive_class)

        rows = self.warm_rows(version)
        if not rows:
            return Served(version, model, now, 0, slow, fast=False)
        expected = slow(rows)
        if not (len(expected) == len(rows) and ((expected >= 0) & (expected <= 1)).all()):
            raise NotServable(f"{uri}: warm-up scores are not probabilities")
        fast = FastScorer.of(model, spec)
        # The fast path answers only where it gives the pipeline's own scores.
        if fast is not None and np.allclose(fast(rows), expected, rtol=0, atol=1e-9):
            return Served(version, model, now, len(rows), fast, fast=True)
        return Served(version, model, now, len(rows), slow, fast=False)
