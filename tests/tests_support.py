"""Paths shared by tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bootstrap_champion(settings, src, n: int = 3) -> None:
    """Land ``n`` batches with their labels in separate files, ingest them, train the first champion."""
    from ctrain import steps
    from ctrain.context import RunContext

    for i in range(n):
        src.write_batch(i, settings.landing_dir, with_labels=False)
        src.write_labels(i, settings.labels_landing_dir)
    for p in steps.list_landed(settings):
        steps.ingest_one(p, settings)
    steps.ingest_labels(settings)
    steps.run_training(RunContext(run_id="bootstrap"), settings=settings)
