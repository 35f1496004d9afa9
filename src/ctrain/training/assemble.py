"""Assemble the training window from accepted batches and split off a time-ordered held-out slice."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from ctrain.ingest.batches import accepted_batches, accepted_path, read_accepted
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


def assemble_window(
    settings: Settings, window_batches: int | None = None, since_batch: str | None = None
) -> DatasetWindow:
    """Write the window's train and held-out Parquet files, addressed by content hash.

    The last ``holdout_fraction`` of rows by event time is held out, so evaluation and the
    champion comparison look at the newest data. Re-running on the same accepted data finds the
    same hash and returns the existing files.

    With ``since_batch`` (where the monitor saw a change begin) the window starts at that batch:
    a model for the new regime is trained and compared on rows from after the change. Batches
    from before it are added, newest first, only when too few labeled rows came after it for
    ``min_train_rows`` training rows.

    Raises:
        NoTrainingData: nothing accepted, or nothing labeled yet.
        UnknownBatch: ``since_batch`` is not a batch ingest accepted.
    """
    if window_batches is None:
        window_batches = settings.training.window_batches
    paths = accepted_batches(settings)
    if not paths:
        raise NoTrainingData(f"no accepted batches in {settings.accepted_dir}: ingest data first")
    spec = settings.dataset
    before: list[Path] = []
    if since_batch:
        start = accepted_path(settings, since_batch)  # checked: a name from a trigger's conf
        at = [p.name for p in paths].index(start.name)
        before, paths = paths[:at], paths[at:]
    paths, df, unlabeled = _labeled_batches(paths, window_batches, settings)
    topped_up: list[Path] = []
    if since_batch:
        need = math.ceil(
            settings.training.min_train_rows / (1 - settings.training.holdout_fraction)
        )
        for path in reversed(before):
            if len(df) >= need:
                break
            _, extra, _ = _labeled_batches([path], 0, settings)
            if not extra.empty:
                topped_up.insert(0, path)
                df = pd.concat([extra, df], ignore_index=True)
        paths = topped_up + paths
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
    times = df[spec.event_time_column]
    fmt = "%Y-%m-%d %H:%M"
    # How these rows were chosen: said for this request, also when the same rows were chosen
    # before (the files are addressed by their content and written once).
    how = {
        "rows_unlabeled": unlabeled,
        "batches": tuple(p.stem for p in paths),
        "span": f"{times.min():{fmt}}..{times.max():{fmt}} UTC ({_batches(len(paths))})"
        + _why(since_batch, topped_up, len(df)),
        "since_batch": since_batch,
        "topped_up": tuple(p.stem for p in topped_up),
    }
    if (folder / "meta.json").exists():
        return dataclasses.replace(DatasetWindow.from_xcom(read_json(folder / "meta.json")), **how)

    n_hold = math.ceil(len(df) * settings.training.holdout_fraction)
    train, holdout = df.iloc[:-n_hold], df.iloc[-n_hold:]
    meta = DatasetWindow(
        content_hash=content_hash,
        train_uri=str(write_parquet_atomic(folder / "train.parquet", train)),
        holdout_uri=str(write_parquet_atomic(folder / "holdout.parquet", holdout)),
        rows_train=len(train),
        rows_holdout=len(holdout),
        window_start=times.min().isoformat(),
        window_end=times.max().isoformat(),
        holdout_start=holdout[spec.event_time_column].min().isoformat(),
        rows_superseded=superseded,
        **how,
    )
    write_json_atomic(folder / "meta.json", meta.to_xcom())
    return meta


def _labeled_batches(paths: list[Path], window_batches: int, settings: Settings):
    """The newest ``window_batches`` batches (0: all) that have labeled rows, their labeled rows, and
    the number of rows left out for want of a label.

    A batch whose labels have not arrived yet does not count towards the window: a retrain
    asked for on two batches trains on two labeled batches, and its record says so.
    """
    target = settings.dataset.target
    chosen: list[Path] = []
    frames: list[pd.DataFrame] = []
    unlabeled = 0
    for path in reversed(paths):
        if window_batches and len(chosen) == window_batches:
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


def _why(since_batch: str | None, topped_up: list[Path], rows: int) -> str:
    """Why the window starts where it does, for the version's tags and the decision."""
    if not since_batch:
        return ""
    why = f", from {since_batch} on, where the monitor saw the change begin"
    if topped_up:
        names = ", ".join(p.stem for p in topped_up)
        why += f"; topped up with {names} from before it to reach {rows} labeled rows"
    return why


def _batches(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


def training_config_hash(settings: Settings) -> str:
    """What a model depends on besides its rows: the training settings and the dataset's schema."""
    # Tuning says where the candidates come from; the candidates themselves are hashed.
    training = settings.training.model_dump(mode="json", exclude={"tuning"})
    return config_hash(training, settings.dataset.model_dump(mode="json"))


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
