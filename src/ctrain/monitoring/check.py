"""Check one scored window (an accepted batch) against the champion's own training reference.

Three measurements: data drift per feature (the fast path in ``drift.py`` decides; Evidently's
report is kept as the evidence a person reads), prediction drift (champion scores on the window vs
on its held-out rows), and performance once enough labels have arrived (vs the champion's held-out
figure). The summary JSON and the HTML report go under ``monitor/<batch>/`` and into an MLflow run
of the monitoring experiment.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from ctrain.monitoring.drift import detect_drift, evidently_report
from ctrain.monitoring.labels import attach_labels
from ctrain.promotion.metrics import greater_is_better, metric_value
from ctrain.promotion.promote import current_champion
from ctrain.settings import Settings
from ctrain.storage import read_json, write_json_atomic
from ctrain.tracking import ensure_experiment
from ctrain.training.model import features, positive_scores

MONITORING_EXPERIMENT = "ctrain-monitoring"


def champion_reference(settings: Settings, client) -> dict[str, Any]:
    """The champion's version, training/held-out files and held-out metric, from its tags."""
    name = settings.model_name
    version = current_champion(client, name)
    if version is None:
        raise LookupError(f"{name} has no champion: nothing to monitor yet")
    tags = client.get_model_version(name, version).tags
    folder = settings.datasets_dir / tags["data_content_hash"]
    metric = settings.promotion.metric
    return {
        "version": version,
        "train_uri": str(folder / "train.parquet"),
        "holdout_uri": str(folder / "holdout.parquet"),
        "metric": metric,
        "holdout_metric": float(tags[f"holdout_{metric}"]),
    }


def windows_to_check(settings: Settings, champion_version: str) -> list[str]:
    """Scored batches never checked, or checked before their labels matured, under this champion."""
    if not settings.predictions_dir.is_dir():
        return []
    out = []
    for p in sorted(settings.predictions_dir.glob("*.parquet")):
        summary = settings.monitor_dir / p.stem / "summary.json"
        if not summary.exists():
            out.append(p.stem)
            continue
        s = read_json(summary)
        if s["champion_version"] == champion_version and s["performance"]["status"] != "matured":
            out.append(p.stem)
    return out


def _performance(settings: Settings, preds: pd.DataFrame, ref: dict[str, Any]) -> dict[str, Any]:
    spec, cfg = settings.dataset, settings.monitoring
    labeled = attach_labels(preds, settings)
    mask = labeled[spec.target].notna().to_numpy()
    n, n_lab = len(labeled), int(mask.sum())
    out: dict[str, Any] = {
        "metric": ref["metric"],
        "rows": n,
        "labeled_rows": n_lab,
        "labeled_share": n_lab / n if n else 0.0,
        "champion_value": ref["holdout_metric"],
        "required_share": cfg.label_maturity,
        "value": None,
        "drop": None,
        "degraded": False,
    }
    if n_lab < max(1, int(np.ceil(cfg.label_maturity * n))) or n_lab < cfg.min_rows:
        out["status"] = "immature" if n_lab else "no_labels"
        return out
    y = (
        labeled.loc[mask, spec.target].astype(type(spec.positive_class)).to_numpy()
        == spec.positive_class
    )
    value = metric_value(ref["metric"], y, labeled.loc[mask, "score"].to_numpy())
    sign = 1.0 if greater_is_better(ref["metric"]) else -1.0
    drop = sign * (ref["holdout_metric"] - value)
    out.update(status="matured", value=value, drop=drop, degraded=bool(drop > cfg.performance_drop))
    return out


def check_window(
    settings: Settings, batch_id: str, client, html_report: bool = True
) -> dict[str, Any]:
    """Measure drift and performance for one scored batch; write and log the evidence."""
    import mlflow

    spec, cfg = settings.dataset, settings.monitoring
    ref = champion_reference(settings, client)
    reference = pd.read_parquet(ref["train_uri"])
    current = pd.read_parquet(settings.accepted_dir / f"{batch_id}.parquet")
    preds = pd.read_parquet(settings.predictions_dir / f"{batch_id}.parquet")
    folder = settings.monitor_dir / batch_id

    data = detect_drift(
        reference,
        current,
        spec.numeric,
        spec.categorical,
        cfg.numeric,
        cfg.categorical,
        cfg.drift_share,
    )
    model = mlflow.sklearn.load_model(f"models:/{settings.model_name}/{ref['version']}")
    holdout = pd.read_parquet(ref["holdout_uri"])
    ref_scores = pd.DataFrame(
        {"score": positive_scores(model, features(holdout, spec), spec.positive_class)}
    )
    pred = detect_drift(
        ref_scores, preds[["score"]], ["score"], [], cfg.prediction, cfg.categorical, 1.0
    )
    perf = _performance(settings, preds, ref)

    flags = []
    if data.dataset_drift and len(current) >= cfg.min_rows:
        flags.append("data_drift")
    if perf["degraded"]:
        flags.append("performance")
    summary = {
        "batch_id": batch_id,
        "checked_at": datetime.now(UTC).isoformat(),
        "window_end": str(pd.to_datetime(current[spec.event_time_column]).max()),
        "champion_version": ref["version"],
        "rows": len(current),
        "data_drift": {**data.to_dict(), "drifted_columns": data.drifted_columns()},
        "prediction_drift": asdict(pred.columns[0]) | {"rows_reference": len(ref_scores)},
        "performance": perf,
        "flags": flags,
        "flagged": bool(flags),
    }
    report = folder / "data_drift.html"
    if html_report and not report.exists():
        _, snapshot = evidently_report(
            reference,
            current,
            spec.numeric,
            spec.categorical,
            cfg.numeric,
            cfg.categorical,
            cfg.drift_share,
            sample_rows=cfg.report_sample_rows,
        )
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".data_drift.html.tmp"
        snapshot.save_html(str(tmp))
        tmp.replace(report)
    summary["report_uri"] = str(report) if report.exists() else None
    summary_path = write_json_atomic(folder / "summary.json", summary)

    exp_id = ensure_experiment(client, MONITORING_EXPERIMENT, settings)
    run = client.create_run(
        exp_id,
        run_name=f"check {batch_id}",
        tags={
            "batch_id": batch_id,
            "champion_version": ref["version"],
            "flags": ",".join(flags) or "none",
            "drifted_columns": ",".join(data.drifted_columns()),
        },
    )
    rid = run.info.run_id
    client.log_metric(rid, "share_drifted", data.share_drifted)
    client.log_metric(rid, "prediction_drift", float(pred.columns[0].statistic))
    client.log_metric(rid, "labeled_share", perf["labeled_share"])
    if perf["value"] is not None:
        client.log_metric(rid, f"live_{ref['metric']}", perf["value"])
    client.log_artifact(rid, str(summary_path))
    if summary["report_uri"]:
        client.log_artifact(rid, summary["report_uri"])
    client.set_terminated(rid, "FINISHED")
    summary["mlflow_run_id"] = rid
    write_json_atomic(summary_path, summary)
    return summary


def load_summaries(settings: Settings) -> list[dict[str, Any]]:
    """Every window's latest check, oldest window first."""
    if not settings.monitor_dir.is_dir():
        return []
    found = [read_json(p) for p in settings.monitor_dir.glob("*/summary.json")]
    return sorted(found, key=lambda s: (s["window_end"], s["batch_id"]))
