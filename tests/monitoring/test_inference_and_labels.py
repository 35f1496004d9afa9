"""Batch inference and delayed labels on real files and a real temporary MLflow store."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from tests_support import trained_champion

from ctrain import steps
from ctrain.ingest.labels import attach_labels, label_store
from ctrain.monitoring.score import NoChampion
from ctrain.records import RunContext


def test_scoring_needs_a_champion(settings, ingested):
    ingested(1)
    with pytest.raises(NoChampion, match="no champion yet"):
        steps.score("batch_0000", settings)


def test_rescoring_leaves_exactly_one_prediction_per_row(settings):
    trained_champion(settings)
    first = steps.score("batch_0001", settings)
    again = steps.score("batch_0001", settings)
    assert first == again
    preds = pd.read_parquet(first["predictions_uri"])
    batch = pd.read_parquet(settings.accepted_dir / "batch_0001.parquet")
    assert len(preds) == len(batch) and preds["row_id"].is_unique
    assert set(preds["row_id"]) == set(batch["row_id"])
    assert (preds["model_version"] == "1").all() and preds["score"].between(0, 1).all()
    assert steps.unscored(settings) == ["batch_0000", "batch_0002"]


@pytest.mark.parametrize("ids", ["text", "integer"])
def test_predictions_are_the_champions_scores_with_the_batchs_keys_unchanged(settings, ids):
    from ctrain.model_io import features, positive_scores
    from ctrain.registry import load_model
    from ctrain.storage import write_parquet_atomic

    trained_champion(settings)
    batch = pd.read_parquet(settings.accepted_dir / "batch_0002.parquet")
    if ids == "integer":
        batch["row_id"] = range(10**6, 10**6 + len(batch))
        write_parquet_atomic(settings.accepted_dir / "batch_0002.parquet", batch)

    preds = pd.read_parquet(steps.score("batch_0002", settings)["predictions_uri"])

    model = load_model(f"models:/{settings.model_name}@champion")
    own = positive_scores(model, features(batch, settings.dataset), 1)
    assert preds["score"].to_numpy().tolist() == own.tolist()
    assert (preds["prediction"].to_numpy() == (own >= 0.5).astype(int)).all()
    assert preds["row_id"].tolist() == batch["row_id"].astype(str).tolist()
    assert preds["event_time"].equals(batch["event_time"])
    # The batch keeps its target as pandas' nullable Float64; the file holds the same values.
    labels = batch["label"].to_numpy(dtype=float, na_value=np.nan)
    assert np.array_equal(preds["label"].to_numpy(dtype=float), labels, equal_nan=True)
    assert (preds["batch_id"] == "batch_0002").all()


def test_a_killed_scoring_run_then_retried_leaves_one_prediction_per_row(settings):
    trained_champion(settings)
    code = "import time\nfrom ctrain import steps\ntime.sleep(3.5)\nsteps.score('batch_0002')\n"
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    time.sleep(5)  # imports done, scoring under way or about to write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = (
        [p.name for p in settings.predictions_dir.glob("*")]
        if settings.predictions_dir.exists()
        else []
    )
    assert all(n == "batch_0002.parquet" or n.startswith(".batch_0002.parquet.") for n in leftovers)
    out = steps.score("batch_0002", settings)  # the retry
    preds = pd.read_parquet(out["predictions_uri"])
    assert len(preds) == 1500 and preds["row_id"].is_unique


def test_delayed_labels_are_validated_and_joined(delayed, source):
    delayed = delayed()  # this test's settings
    source.write_batch(0, delayed.landing_dir, with_labels=False)
    (b,) = [steps.ingest_one(p, delayed) for p in steps.list_landed(delayed)]
    assert b["status"] == "accepted"
    source.write_labels(0, delayed.labels_landing_dir, fraction=0.5)
    bad = source.labels(0).iloc[:10].assign(label=7)
    bad.to_parquet(delayed.labels_landing_dir / "labels_bad.parquet")
    out = {o["source_file"]: o for o in steps.ingest_labels(delayed)}
    assert out["labels_0000_50pct.parquet"]["rows_accepted"] == 750
    assert out["labels_bad.parquet"]["status"] == "quarantined"
    assert "expect_column_values_to_be_in_set on 'label'" in out["labels_bad.parquet"]["reason"]
    assert len(label_store(delayed)) == 750
    joined = attach_labels(pd.read_parquet(delayed.accepted_dir / "batch_0000.parquet"), delayed)
    assert joined["label"].notna().sum() == 750


def test_the_cli_ingests_label_files_as_ct_ingest_does(delayed, source, capsys):
    """``ctrain ingest`` takes the waiting label files too, and says what it did with each."""
    from ctrain import cli

    delayed = delayed()
    source.write_batch(0, delayed.landing_dir, with_labels=False)
    source.write_labels(0, delayed.labels_landing_dir)
    assert cli.main(["ingest"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["labels", "labels_0000", "accepted"], lines
    assert lines[1].split()[:3] == ["batch", "batch_0000", "accepted"], lines
    assert not list(delayed.labels_landing_dir.iterdir())
    assert len(label_store(delayed)) == 1500


def test_training_uses_only_labeled_rows(delayed, source):
    delayed = delayed()  # this test's settings
    for i in range(3):
        source.write_batch(i, delayed.landing_dir, with_labels=False)
    [steps.ingest_one(p, delayed) for p in steps.list_landed(delayed)]
    for i in range(2):
        source.write_labels(i, delayed.labels_landing_dir)
    steps.ingest_labels(delayed)
    dataset = steps.assemble(RunContext().to_xcom(), delayed)
    assert (
        dataset["rows_train"] + dataset["rows_holdout"] == 3000
        and dataset["rows_unlabeled"] == 1500
    )


def test_a_window_of_n_batches_is_n_labeled_batches(delayed, source):
    delayed = delayed()  # this test's settings
    # A retrain asked for on two batches, before the newest batch's labels arrived: it trains
    # on the two newest labeled batches, and its record names those.
    for i in range(3):
        source.write_batch(i, delayed.landing_dir, with_labels=False)
    [steps.ingest_one(p, delayed) for p in steps.list_landed(delayed)]
    for i in range(2):
        source.write_labels(i, delayed.labels_landing_dir)
    steps.ingest_labels(delayed)
    dataset = steps.assemble(RunContext(window_batches=2).to_xcom(), delayed)
    assert dataset["batches"] == ["batch_0000", "batch_0001"]
    assert dataset["rows_train"] + dataset["rows_holdout"] == 3000
    assert dataset["rows_unlabeled"] == 1500
    assert dataset["span"].endswith("(2 batches)")
    one = steps.assemble(RunContext(window_batches=1).to_xcom(), delayed)
    assert one["batches"] == ["batch_0001"] and one["span"].endswith("(1 batch)")


def test_a_retrain_after_a_change_trains_from_the_change_on(delayed, source):
    delayed = delayed()  # this test's settings
    from ctrain.ingest.batches import UnknownBatch
    from ctrain.training.assemble import assemble_window

    for i in range(5):
        source.write_batch(i, delayed.landing_dir, with_labels=False)
        source.write_labels(i, delayed.labels_landing_dir)
    [steps.ingest_one(p, delayed) for p in steps.list_landed(delayed)]
    steps.ingest_labels(delayed)

    after = steps.assemble(
        RunContext(window_batches=2, since_batch="batch_0003").to_xcom(), delayed
    )
    assert after["batches"] == ["batch_0003", "batch_0004"] and after["topped_up"] == []
    assert after["since_batch"] == "batch_0003"
    assert after["span"].endswith(
        "(2 batches), from batch_0003 on, where the monitor saw the change begin"
    )
    # The held-out rows the challenger is compared on come after the change too.
    holdout = pd.read_parquet(after["holdout_uri"])
    changed = pd.read_parquet(delayed.accepted_dir / "batch_0003.parquet")
    assert holdout["event_time"].min() >= changed["event_time"].min()

    # Too few rows after the change for min_train_rows: topped up from just before it.
    few = assemble_window(delayed, 2, since_batch="batch_0004")
    assert few.batches == ("batch_0004",)  # 1500 rows: enough for 500 training rows
    need_more = delayed.model_copy(
        update={"training": delayed.training.model_copy(update={"min_train_rows": 2000})}
    )
    topped = assemble_window(need_more, 2, since_batch="batch_0004")
    assert topped.batches == ("batch_0003", "batch_0004") and topped.topped_up == ("batch_0003",)
    assert "; topped up with batch_0003 from before it to reach 3000 labeled rows" in topped.span

    with pytest.raises(UnknownBatch, match="not a batch id ingest makes"):
        assemble_window(delayed, 2, since_batch="../accepted/batch_0001")
    with pytest.raises(UnknownBatch, match="no accepted data"):
        assemble_window(delayed, 2, since_batch="batch_0099")
