"""How fast ctrain adapts, measured the way a user feels it: prequential evaluation of streams.

    python bench/adaptation.py [--streams stable,covariate,boundary,concept,gradual] [--windows 16]
        [--stable-windows 30] [--change-after 6] [--repeat 1] [--cadence day|minute]
        [--scheduled [--force-scheduled]] [--out FILE.json]

Each stream runs in a fresh CTRAIN_HOME through the real DAGs: the first champion from batches
0-2 (``airflow dags test``, as in the demo), then one batch a window under the real scheduler,
triggerer and API server (``ctrain.harness.stream.run_stream``): each batch lands with the previous
batch's labels (labels one window late), the watchers start ct_ingest, and ct_batch_inference,
ct_drift_monitor and (when the monitor asks) ct_training follow on their own.

Per window, the predictions ctrain wrote (the champion of that moment) are scored against the
true labels, beside three models computed here, in the same run, on the same rows:

- ``static``: the first champion, never replaced;
- ``every_window``: retrained before every window on the last 3 labeled batches;
- ``best``: the model that knew the change point: retrained before every window on the labeled
  batches from the change on (the last 3 before it while none is labeled yet), the best
  achievable with labels one window late.

The baselines use the first champion's estimator and parameters, so they differ from ctrain
only in when and on what they train. Packaged defaults: the monitor's cooldown is counted in
windows, so it means the same here as at a batch a day.

``--cadence`` sets the event time between two batches (a day, or a minute; the windows arrive
seconds apart in wall-clock time either way): what ctrain decides must not depend on it.
``--scheduled`` starts ct_training once more as the daily schedule would (the default form: the
whole window), right after the first changed batch is judged and before its labels land: the
case of a scheduled retrain between a change and its labels, made on purpose;
``--force-scheduled`` makes that run win (``force``), as a daily run that happens to gain on the
pre-change rows would, so a champion trained before the change meets the change's labels.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FIRST_STREAM_BATCH = 3  # batches 0-2 make the first champion
RETRAIN_BATCHES = 3


CADENCES = {"day": 86_400.0, "minute": 60.0}


def stream_source(kind: str, change: int, demo: dict[str, Any]):
    from ctrain.data.demo_source import DemoSource

    extra = {
        "stable": {},
        "covariate": {"covariate_shift_from": change},
        "boundary": {"boundary_shift_from": change},
        "concept": {"concept_drift_from": change},
        "gradual": {"concept_drift_from": change, "concept_drift_over": 4},
    }[kind]
    return DemoSource(**demo | extra)


def _fit(batches: list[pd.DataFrame], settings, champion):
    """A fresh copy of the first champion's pipeline fitted on ``batches``."""
    from sklearn.base import clone

    from ctrain.model_io import features

    spec = settings.dataset
    df = pd.concat(batches, ignore_index=True)
    return clone(champion).fit(features(df, spec), df[spec.target].astype(int))


def _measure(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from ctrain.metrics import metric_value

    return {
        "accuracy": metric_value("accuracy", y, scores),
        "roc_auc": metric_value("roc_auc", y, scores),
    }


def run_stream_once(
    kind: str,
    n_windows: int,
    change_after: int,
    log_dir: Path,
    cadence: str = "day",
    scheduled: bool = False,
    force_scheduled: bool = False,
) -> dict:
    """One stream in a fresh home: the per-window figures and the stream's summary."""
    from ctrain import dag_ids
    from ctrain.harness.stream import run_stream, stream_services
    from ctrain.model_io import features, positive_scores
    from ctrain.monitoring.trigger import trigger_log
    from ctrain.promotion.decisions import list_decisions
    from ctrain.registry import load_model, version_uri
    from ctrain.runtime import dag_test, migrate
    from ctrain.settings import load_settings
    from ctrain.tracking import configure

    settings = load_settings()
    change = FIRST_STREAM_BATCH + change_after if kind != "stable" else None
    demo = settings.demo.model_dump() | {"batch_seconds": CADENCES[cadence]}
    src = stream_source(kind, change if change is not None else 10**6, demo)
    log = log_dir / "airflow.log"
    migrate(settings, log)
    for i in range(FIRST_STREAM_BATCH):
        src.write_batch(i, settings.landing_dir, with_labels=False)
        src.write_labels(i, settings.labels_landing_dir)
    dag_test(settings, dag_ids.INGEST, log)
    dag_test(settings, dag_ids.TRAINING, log, {"reason": "bench: first training"})
    stop = FIRST_STREAM_BATCH + n_windows
    started = time.monotonic()
    with stream_services(settings, log_dir) as af:
        timeline = run_stream(
            settings,
            af,
            start=FIRST_STREAM_BATCH,
            drift_from=change or stop,
            stop=stop,
            src=src,
            train_at=change if scheduled else None,
            train_force=force_scheduled,
        )
    stream_s = time.monotonic() - started

    client = configure(settings)
    spec = settings.dataset
    first = load_model(version_uri(settings.model_name, "1"))
    batches = {i: src.batch(i) for i in range(stop)}
    rows = []
    for i in range(FIRST_STREAM_BATCH, stop):
        truth = batches[i]
        y = (truth[spec.target] == spec.positive_class).to_numpy()
        X = features(truth, spec)
        preds_path = settings.predictions_dir / f"batch_{i:04d}.parquet"
        preds = pd.read_parquet(preds_path) if preds_path.exists() else pd.DataFrame()
        # Predictions ctrain wrote, for every row it scored (a re-landed part included).
        for extra in sorted(settings.predictions_dir.glob(f"batch_{i:04d}.after-v*.parquet")):
            preds = pd.concat([preds, pd.read_parquet(extra)], ignore_index=True)
        joined = truth[[spec.id_column]].merge(preds, on=spec.id_column, how="inner")
        yj = (
            truth.set_index(spec.id_column).loc[joined[spec.id_column], spec.target]
            == spec.positive_class
        ).to_numpy()
        before = [batches[j] for j in range(max(0, i - RETRAIN_BATCHES), i)]
        if change is not None and i > change:
            after = [batches[j] for j in range(change, i)]
            best_train = after
        else:
            best_train = (
                [batches[j] for j in range(i)] if change is None else before
            )  # no change: all data; before it: as every_window
        models = {
            "static": first,
            "every_window": _fit(before, settings, first),
            "best": _fit(best_train, settings, first),
        }
        row = {
            "batch": i,
            "after_change": change is not None and i >= change,
            "ctrain": _measure(yj, joined["score"].to_numpy()) if len(joined) else None,
            "ctrain_version": ",".join(sorted(joined["model_version"].astype(str).unique()))
            if len(joined)
            else "",
            "rows": len(truth),
            "rows_scored": len(joined),
        }
        for name, model in models.items():
            row[name] = _measure(y, positive_scores(model, X, spec.positive_class))
        rows.append(row)

    requests = trigger_log(settings)
    requested_at = [e["batch"] for e in timeline if e["requested"]]
    decisions = list_decisions(client, settings, limit=100)
    trained = [d for d in decisions if d.decision in ("promoted", "rejected")]
    latencies = [e["landing_to_predictions"] for e in timeline if "landing_to_predictions" in e]
    after = [r for r in rows if r["after_change"]] if change is not None else rows
    first_retrain = requested_at[0] if requested_at else None
    recovered_from = [r for r in after if first_retrain is not None and r["batch"] > first_retrain]

    def mean(key: str, metric: str, of: list[dict]) -> float | None:
        vals = [r[key][metric] for r in of if r.get(key)]
        return float(np.mean(vals)) if vals else None

    scheduled_runs = [e["scheduled"] for e in timeline if e.get("scheduled")]
    summary = {
        "stream": kind,
        "cadence": cadence,
        "scheduled_forced": force_scheduled,
        "scheduled_run": (
            f"after batch {change}: {scheduled_runs[0].headline}" if scheduled_runs else None
        ),
        "windows": n_windows,
        "change_at": change,
        "stream_s": stream_s,
        "retrain_requests": len(requests),
        "requested_at": requested_at,
        "reasons": [r.reason for r in requests],
        "training_runs": len(trained) - 1,  # the first champion is not a retrain
        # ... of which the monitor's (the scheduled run is the schedule's, not a reaction)
        "monitor_training_runs": len(trained)
        - 1
        - sum(d.decision in ("promoted", "rejected") for d in scheduled_runs),
        "decisions": [d.headline for d in reversed(decisions)],
        "false_retrains": len([b for b in requested_at if change is None or b < change]),
        "detection_delay": (
            min([b for b in requested_at if b >= change], default=None) - change
            if change is not None and any(b >= change for b in requested_at)
            else None
        ),
        "latency_p50_s": statistics.median(latencies) if latencies else None,
        "latency_max_s": max(latencies) if latencies else None,
        "scored_share_after_retrain": (
            sum(r["rows_scored"] for r in recovered_from) / sum(r["rows"] for r in recovered_from)
            if recovered_from
            else None
        ),
        "scored_share": sum(r["rows_scored"] for r in rows) / sum(r["rows"] for r in rows),
    }
    for key in ("ctrain", "static", "every_window", "best"):
        for metric in ("accuracy", "roc_auc"):
            summary[f"{key}_{metric}_after_change"] = mean(key, metric, after)
    return {"summary": summary, "windows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="stable,covariate,boundary,concept,gradual")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--stable-windows", type=int, default=30)
    ap.add_argument("--change-after", type=int, default=6, help="stream windows before the change")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cadence", choices=sorted(CADENCES), default="day")
    ap.add_argument("--scheduled", action="store_true", help="a scheduled run after the change")
    ap.add_argument("--force-scheduled", action="store_true", help="... which wins (force)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results: list[dict] = []
    # As in the demo: labels arrive late, as separate files; retraining is the monitor's call.
    os.environ["CTRAIN_DATASET__LABELS"] = "delayed"
    # Packaged defaults otherwise: the monitor's cooldown is counted in windows, so it means the
    # same here (a window every ~25 s) as at a batch a day.
    # SIGTERM unwinds like Ctrl-C, so the Airflow services a stream started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for rep in range(args.repeat):
        for kind in args.streams.split(","):
            home = Path(tempfile.mkdtemp(prefix=f"ctrain-adapt-{kind}-")) / "home"
            os.environ["CTRAIN_HOME"] = str(home)
            n = args.stable_windows if kind == "stable" else args.windows
            print(
                f"\n== adaptation: {kind}, {n} windows, a batch a {args.cadence} in event time"
                f"{', a scheduled run after the change' if args.scheduled else ''}, run "
                f"{rep + 1}/{args.repeat} in {home}"
            )
            out = run_stream_once(
                kind,
                n,
                args.change_after,
                home / "logs",
                args.cadence,
                args.scheduled,
                args.force_scheduled,
            )
            out["summary"]["run"] = rep + 1
            print(json.dumps(out["summary"], indent=1), flush=True)
            results.append(out)
    text = json.dumps(results, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
