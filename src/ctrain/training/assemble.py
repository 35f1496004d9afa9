"""Assemble the training window from accepted batches and split off a time-ordered held-out slice."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ctrain.ingest.batches import accepted_batches, read_accepted
from ctrain.ingest.labels import attach_labels
from ctrain.records import DatasetWindow
from ctrain.settings import Settings
from ctrain.storage import (
    config_hash,
    frame_hash,
    read_json,
    write_json_atomic,
    write_parquet_atomic,
)


class NoTrainingData(Exception):
    """There is nothing accepted to train on."""


def assemble_window(settings: Settings, window_batches: int | None = None) -> DatasetWindow:
    """Write the window's train and held-out Parquet files, addressed by content hash.

    The last ``holdout_fraction`` of rows by event time is held out, so evaluation and the
    champion comparison look at the newest data. Re-running on the same accepted data finds the
    same hash and returns the existing files.
    """
    window = settings.training.window_batches if window_batches is None else window_batches
    paths = accepted_batches(settings)
    if not paths:
        raise NoTrainingData(f"no accepted batches in {settings.accepted_dir}: ingest data first")
    spec = settings.dataset
    paths, df, unlabeled = _labeled_batches(paths, window, settings)
    if df.empty:
        raise NoTrainingData(f"none of the {unlabeled} accepted rows has a label yet")
    if all(isinstance(c, int) for c in spec.classes):
        df[spec.target] = df[spec.target].astype(float).astype(int)
    # An id that arrives again replaces its earlier row: batches are read in arrival order, so
    # the latest arrival wins. Counted, so the window says how many rows it left out.
    rows = len(df)
    df = df.drop_duplicates(subset=[spec.id_column], keep="last")
    superseded = rows - len(df)
    df = df.sort_values([spec.event_time_column, spec.id_column], kind="stable").reset_index(
        drop=True
    )
    content_hash = frame_hash(df)
    folder = settings.datasets_dir / content_hash
    if (folder / "meta.json").exists():
        return DatasetWindow.from_xcom(read_json(folder / "meta.json"))

    n_hold = math.ceil(len(df) * settings.training.holdout_fraction)
    train, holdout = df.iloc[:-n_hold], df.iloc[-n_hold:]
    times = df[spec.event_time_column]
    fmt = "%Y-%m-%d %H:%M"
    meta = DatasetWindow(
        content_hash=content_hash,
        train_uri=str(write_parquet_atomic(folder / "train.parquet", train)),
        holdout_uri=str(write_parquet_atomic(folder / "holdout.parquet", holdout)),
        rows_train=len(train),
        rows_holdout=len(holdout),
        rows_unlabeled=unlabeled,
        batches=tuple(p.stem for p in paths),
        window_start=times.min().isoformat(),
        window_end=times.max().isoformat(),
        holdout_start=holdout[spec.event_time_column].min().isoformat(),
        window=f"{times.min():{fmt}}..{times.max():{fmt}} UTC ({_batches(len(paths))})",
        rows_superseded=superseded,
    )
    write_json_atomic(folder / "meta.json", meta.to_xcom())
    return meta


def _labeled_batches(paths: list[Path], window: int, settings: Settings):
    """The newest ``window`` batches (0: all) that have labeled rows, their labeled rows, and
    the number of rows left out for want of a label.

    A batch whose labels have not arrived yet does not count towards the window: a retrain
    asked for on two batches trains on two labeled batches, and its record says so.
    """
    target = settings.dataset.target
    chosen: list[Path] = []
    frames: list[pd.DataFrame] = []
    unlabeled = 0
    for path in reversed(paths):
        if window and len(chosen) == window:
            break
        df = attach_labels(read_accepted([path]), settings)
        labeled = df[target].notna()
        # Rows whose label has not arrived yet cannot be trained on; they are counted, not lost.
        unlabeled += int((~labeled).sum())
        if labeled.any():
            chosen.append(path)
            frames.append(df[labeled])
    chosen.reverse()
    frames.reverse()  # arrival order: a later arrival of an id replaces an earlier one
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return chosen, df, unlabeled


def _batches(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


def training_config_hash(settings: Settings) -> str:
    """What a model depends on besides its rows: the training settings and the dataset's schema."""
    return config_hash(
        settings.training.model_dump(mode="json"), settings.dataset.model_dump(mode="json")
    )


def trained_before(settings: Settings, client, dataset: DatasetWindow) -> str | None:
    """The version already trained on exactly this window under this config, or None.

    Training is seeded, so the same rows under the same config give the same model again.
    """
    from mlflow.exceptions import MlflowException

    name = settings.model_name
    try:
        found = client.search_model_versions(
            f"name = '{name}' and tags.data_content_hash = '{dataset.content_hash}'"
        )
    except MlflowException:  # no registered model yet
        return None
    config = training_config_hash(settings)
    same = [mv for mv in found if mv.tags.get("training_config_hash") == config]
    return str(max(int(mv.version) for mv in same)) if same else None
