"""Check scored windows (accepted batches) against the champion's own training reference.

The measurements: data drift per feature (the fast path in ``drift.py`` decides; Evidently's
report is kept as the evidence a person reads) and the rows outside the champion's learned
reference, weighed by how much the champion leans on the drifted features (``severity.py``);
prediction drift (champion scores on the window vs on its held-out rows); the champion's metric
estimated from its scores before labels arrive (``estimate.py``); and the realised metric once
enough labels have arrived (vs the champion's held-out figure). The summary JSON and the HTML report go under ``monitor/<batch>/`` and into an MLflow run
of the monitoring experiment. A window is judged for the version that served it; the champion
is also judged, on its own scores, on every matured window newer than its training data that
another version served (``rescore_newer_windows``). The champion's model, training rows and held-out scores are read
once per run (``load_reference``) and shared by every window that run checks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctrain.ingest.batches import accepted_path
from ctrain.ingest.labels import attach_labels
from ctrain.ingest.profile import outside, window_profile
from ctrain.metrics import greater_is_better, metric_value
from ctrain.model_io import features, positive_scores
from ctrain.monitoring.drift import detect_drift, evidently_report
from ctrain.monitoring.estimate import estimate_drop, fit_calibrator
from ctrain.monitoring.severity import drift_severity, feature_importance
from ctrain.records import DatasetWindow, Estimate, Performance, WindowCheck
from ctrain.registry import current_champion, load_model, training_window, version_uri
from ctrain.settings import Settings
from ctrain.stats import two_sample_bootstrap
from ctrain.storage import read_json, write_json_atomic
from ctrain.tracking import ensure_experiment


@dataclass(frozen=True)
class ChampionReference:
    """What every window is compared with: the champion's training rows and held-out scores."""

    version: str
    metric: str
    holdout_metric: float  # the champion's metric on its own held-out rows
    reference: pd.DataFrame  # its training rows
    holdout_scores: pd.DataFrame  # its scores on its held-out rows, column "score"
    holdout_positive: np.ndarray  # its held-out rows' labels, True for the positive class
    profile: dict  # the ranges and category sets learned from its training window
    calibrator: Any = None  # its score -> chance of the positive class, on its held-out rows
    importance: dict = field(default_factory=dict)  # each feature's share of its importance
    model: Any = None  # the version's model, loaded once (it scored the held-out rows)


def load_reference(settings: Settings, client, version: str) -> ChampionReference:
    """Read champion ``version``'s training window and score its held-out rows, once."""
    name, spec = settings.model_name, settings.dataset
    mv = client.get_model_version(name, version)
    tags = mv.tags
    folder = settings.datasets_dir / tags["data_content_hash"]
    metric = settings.promotion.metric
    holdout = pd.read_parquet(folder / "holdout.parquet")
    model = load_model(version_uri(name, version))
    scores = positive_scores(model, features(holdout, spec), spec.positive_class)
    positive = holdout[spec.target].astype(type(spec.positive_class)) == spec.positive_class
    return ChampionReference(
        version=version,
        metric=metric,
        holdout_metric=float(tags[f"holdout_{metric}"]),
        reference=pd.read_parquet(folder / "train.parquet"),
        holdout_scores=pd.DataFrame({"score": scores}),
        holdout_positive=positive.to_numpy(),
        profile=window_profile(settings, folder),
        calibrator=fit_calibrator(scores, positive.to_numpy()),
        importance=_importance(
            folder / f"importance-{mv.run_id}-{metric}.json", model, holdout, settings
        ),
        model=model,
    )


def _importance(path, model, holdout: pd.DataFrame, settings: Settings) -> dict[str, float]:
    """The version's feature importance on its held-out rows: computed once (it is the same for
    every window, and costs more than the rest of a check) and kept beside its training window,
    named by the version's run."""
    if path.exists():
        return read_json(path)
    importance = feature_importance(model, holdout, settings.dataset, settings.promotion.metric)
    write_json_atomic(path, importance)
    return importance


def champion_version(settings: Settings, client) -> str:
    """The champion's version; raises LookupError when there is none (nothing to monitor)."""
    version = current_champion(client, settings.model_name)
    if version is None:
        raise LookupError(f"{settings.model_name} has no champion: nothing to monitor yet")
    return version


def scored_by(settings: Settings, batch_id: str) -> str:
    """The model version whose predictions for ``batch_id`` were written."""
    path = settings.predictions_dir / f"{batch_id}.parquet"
    versions = pd.read_parquet(path, columns=["model_version"])["model_version"].unique()
    return str(versions[0])


def windows_to_check(settings: Settings) -> list[tuple[str, str]]:
    """(batch id, the version that scored it) for scored batches never checked, checked for
    another version (they were scored again), or checked before their labels matured.

    A window is judged for the model that scored it: labels that arrive after a promotion
    still measure the version that made those predictions.
    """
    if not settings.predictions_dir.is_dir():
        return []
    out = []
    for p in sorted(settings.predictions_dir.glob("*.parquet")):
        if not (settings.accepted_dir / p.name).exists():
            continue  # an online window ingest has not validated yet (serving/log.py)
        version = scored_by(settings, p.stem)
        summary = settings.monitor_dir / p.stem / "summary.json"
        if summary.exists():
            s = WindowCheck.from_xcom(read_json(summary))
            if s.champion_version == version and s.performance.status == "matured":
                continue
        out.append((p.stem, version))
    return out


def check_due_windows(settings: Settings, client) -> list[WindowCheck]:
    """Check every due window for the version that scored it, reading each version once; then
    rescore, with the champion, the matured windows newer than its training data that another
    version served (``rescore_newer_windows``)."""
    champion = champion_version(settings, client)  # nothing to monitor before a first champion
    refs: dict[str, ChampionReference] = {}
    out = []
    for batch_id, version in windows_to_check(settings):
        if version not in refs:
            refs[version] = load_reference(settings, client, version)
        out.append(
            check_window(
                settings, batch_id, refs[version], client, settings.monitoring.html_reports
            )
        )
    served_by_others = [s for s in load_summaries(settings) if s.champion_version != champion]
    if any(s.performance.status == "matured" for s in served_by_others):
        if champion not in refs:
            refs[champion] = load_reference(settings, client, champion)
        rescore_newer_windows(settings, client, refs[champion], served_by_others)
    return out


@dataclass(frozen=True)
class Labeled:
    """A window's predictions joined with the labels that have arrived for them."""

    rows: int
    labeled_rows: int
    matured: bool  # enough of its rows have labels to judge it (label_maturity, min_rows)
    positive: np.ndarray  # the labeled rows' labels, True for the positive class
    scores: np.ndarray  # the labeled rows' scores


def labeled(settings: Settings, preds: pd.DataFrame) -> Labeled:
    """The labeled part of a window's predictions, and whether its labels have matured."""
    spec, cfg = settings.dataset, settings.monitoring
    frame = attach_labels(preds, settings)
    mask = frame[spec.target].notna().to_numpy()
    n, n_lab = len(frame), int(mask.sum())
    matured = n_lab >= max(1, int(np.ceil(cfg.label_maturity * n))) and n_lab >= cfg.min_rows
    y = frame.loc[mask, spec.target].astype(type(spec.positive_class)).to_numpy()
    return Labeled(
        rows=n,
        labeled_rows=n_lab,
        matured=bool(matured),
        positive=y == spec.positive_class,
        scores=frame.loc[mask, "score"].to_numpy(),
    )


def _performance(settings: Settings, preds: pd.DataFrame, ref: ChampionReference) -> Performance:
    cfg = settings.monitoring
    lab = labeled(settings, preds)
    n, n_lab = lab.rows, lab.labeled_rows
    base = {
        "metric": ref.metric,
        "rows": n,
        "labeled_rows": n_lab,
        "labeled_share": n_lab / n if n else 0.0,
        "champion_value": ref.holdout_metric,
        "required_share": cfg.label_maturity,
    }
    if not lab.matured:
        return Performance(**base, status="immature" if n_lab else "no_labels")
    value = metric_value(ref.metric, lab.positive, lab.scores)
    sign = 1.0 if greater_is_better(ref.metric) else -1.0
    drop = sign * (ref.holdout_metric - value)
    # How sure the drop is: the window's rows and the champion's held-out rows resampled apart.
    gap = two_sample_bootstrap(
        lab.positive,
        lab.scores,
        ref.holdout_positive,
        ref.holdout_scores["score"].to_numpy(),
        ref.metric,
        cfg.n_bootstrap,
        cfg.decisive_confidence,
        seed=0,
    )
    low, high = -gap.ci_high, -gap.ci_low  # the interval of the drop, not of the difference
    return Performance(
        **base,
        status="matured",
        value=value,
        drop=drop,
        degraded=bool(drop > cfg.performance_drop),
        drop_low=None if np.isnan(low) else float(low),
        drop_high=None if np.isnan(high) else float(high),
        decisive=bool(low > cfg.performance_drop),
    )


def _estimate(settings: Settings, preds: pd.DataFrame, ref: ChampionReference) -> Estimate:
    """The champion's metric on the window estimated from its scores (CBPE), with the drop."""
    cfg = settings.monitoring
    e = estimate_drop(
        ref.metric,
        ref.calibrator,
        preds["score"].to_numpy(),
        ref.holdout_positive,
        ref.holdout_scores["score"].to_numpy(),
        cfg.n_bootstrap,
        cfg.decisive_confidence,
    )
    return Estimate(
        metric=ref.metric,
        value=e.value,
        low=e.low,
        high=e.high,
        drop=e.drop,
        drop_low=e.drop_low,
        drop_high=e.drop_high,
        harmful=bool(e.drop_low > cfg.performance_drop),
        harmless=bool(e.drop_high <= cfg.performance_drop),
    )


def check_window(
    settings: Settings,
    batch_id: str,
    ref: ChampionReference,
    client,
    html_report: bool = True,
) -> WindowCheck:
    """Measure drift and performance for one scored batch; write and log the evidence."""
    spec, cfg = settings.dataset, settings.monitoring
    current = pd.read_parquet(accepted_path(settings, batch_id))
    preds = pd.read_parquet(settings.predictions_dir / f"{batch_id}.parquet")
    folder = settings.monitor_dir / batch_id

    # The decision path and Evidently's report judge the same columns with the same methods.
    same = (ref.reference, current, spec.numeric, spec.categorical, cfg.numeric, cfg.categorical)
    data = detect_drift(*same, cfg.drift_share)
    pred = detect_drift(
        ref.holdout_scores, preds[["score"]], ["score"], [], cfg.prediction, cfg.categorical, 1.0
    )
    perf = _performance(settings, preds, ref)

    # Rows the champion never saw the like of (outside its training window's learned ranges and
    # categories) are drift evidence of their own: ingest scored them with a warning.
    out_mask, out_columns = outside(current, ref.profile)
    out_share = float(out_mask.mean()) if len(current) else 0.0
    judged = len(current) >= cfg.min_rows
    outside_counts = out_share >= cfg.outside_reference_share
    drifted = judged and (data.dataset_drift or outside_counts)
    est = _estimate(settings, preds, ref) if cfg.estimate_performance and judged else None
    severity = drift_severity(
        ref.importance, [*data.drifted_columns(), *(out_columns if outside_counts else [])]
    )
    severe = bool(
        drifted and severity >= cfg.severe_drift_importance and not (est and est.harmless)
    )
    flags = []
    if drifted:
        flags.append("data_drift")
    if est is not None and est.harmful:
        flags.append("estimated_drop")
    if perf.degraded:
        flags.append("performance")

    report = folder / "data_drift.html"
    if html_report and not report.exists():
        _, snapshot = evidently_report(*same, cfg.drift_share, sample_rows=cfg.report_sample_rows)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".data_drift.html.tmp"
        snapshot.save_html(str(tmp))
        tmp.replace(report)
    summary_path = folder / "summary.json"
    check = WindowCheck(
        batch_id=batch_id,
        checked_at=datetime.now(UTC).isoformat(),
        window_end=str(pd.to_datetime(current[spec.event_time_column]).max()),
        champion_version=ref.version,
        rows=len(current),
        share_drifted=data.share_drifted,
        dataset_drift=data.dataset_drift,
        drifted_columns=tuple(data.drifted_columns()),
        prediction_drift=float(pred.columns[0].statistic),
        performance=perf,
        flags=tuple(flags),
        outside_reference=out_share,
        outside_columns=tuple(out_columns),
        drift_severity=severity,
        severe_drift=severe,
        estimate=est,
        summary_uri=str(summary_path),
        report_uri=str(report) if report.exists() else None,
    )
    # The evidence document: the verdict plus every column's statistic.
    detail = {
        "data_drift": data.to_dict(),
        "prediction_drift_detail": asdict(pred.columns[0])
        | {"rows_reference": len(ref.holdout_scores)},
    }
    write_json_atomic(summary_path, check.to_xcom() | detail)

    exp_id = ensure_experiment(client, settings.monitoring_experiment, settings)
    # Named by what it found: a window is checked again when its labels mature, and each check
    # must be told apart in MLflow's runs table.
    measured = (
        f"{perf.metric} {perf.value:.3f} on {perf.labeled_rows} labeled rows"
        if perf.value is not None
        else f"{perf.labeled_share:.0%} labeled"
    )
    run = client.create_run(
        exp_id,
        run_name=f"{batch_id} on v{ref.version}: drift {data.share_drifted:.0%}, {measured}",
        tags={
            "batch_id": batch_id,
            "champion_version": ref.version,
            "flags": ",".join(flags) or "none",
            "drifted_columns": ",".join(check.drifted_columns),
        },
    )
    rid = run.info.run_id
    client.log_metric(rid, "share_drifted", data.share_drifted)
    client.log_metric(rid, "prediction_drift", check.prediction_drift)
    client.log_metric(rid, "outside_reference", out_share)
    client.log_metric(rid, "labeled_share", perf.labeled_share)
    if perf.value is not None:
        client.log_metric(rid, f"live_{ref.metric}", perf.value)
    if est is not None:
        client.log_metric(rid, f"estimated_{ref.metric}", est.value)
    client.log_artifact(rid, str(summary_path))
    if check.report_uri:
        client.log_artifact(rid, check.report_uri)
    client.set_terminated(rid, "FINISHED")
    check = replace(check, mlflow_run_id=rid)
    write_json_atomic(summary_path, check.to_xcom() | detail)
    return check


def _rescored_path(settings: Settings, batch_id: str, version: str) -> Path:
    return settings.monitor_dir / batch_id / f"rescored-v{version}.json"


def rescore_newer_windows(
    settings: Settings, client, ref: ChampionReference, summaries: list[WindowCheck]
) -> list[WindowCheck]:
    """Champion ``ref`` judged on every matured window newer than its own training data that
    another version served: its own scores on the window's labeled rows, against its own
    held-out figure. A champion trained before a change then carries the evidence against it at
    once; one trained after it is not blamed for windows it never saw (they are in its data).

    Each is kept in ``monitor/<batch>/rescored-v<version>.json`` and made again only when the
    window's own check is newer (more labels came).
    """
    folder = training_window(client, settings.model_name, ref.version, settings.datasets_dir)
    if folder is None:
        return []
    window = DatasetWindow.from_xcom(read_json(folder / "meta.json"))
    trained_until = pd.Timestamp(window.window_end)
    spec, out = settings.dataset, []
    for s in summaries:
        if (
            s.champion_version == ref.version
            or s.rescored_from is not None
            or s.performance.status != "matured"
            or s.batch_id in window.batches
            or pd.Timestamp(s.window_end) <= trained_until
        ):
            continue
        path = _rescored_path(settings, s.batch_id, ref.version)
        if path.exists():
            kept = WindowCheck.from_xcom(read_json(path))
            if kept.checked_at >= s.checked_at:
                out.append(kept)
                continue
        rows = pd.read_parquet(accepted_path(settings, s.batch_id))
        preds = pd.DataFrame(
            {
                spec.id_column: rows[spec.id_column].astype(str),
                "score": positive_scores(ref.model, features(rows, spec), spec.positive_class),
            }
        )
        perf = _performance(settings, preds, ref)
        check = replace(
            s,
            checked_at=datetime.now(UTC).isoformat(),
            champion_version=ref.version,
            share_drifted=0.0,
            dataset_drift=False,
            drifted_columns=(),
            prediction_drift=0.0,
            performance=perf,
            flags=("performance",) if perf.degraded else (),
            outside_reference=0.0,
            outside_columns=(),
            drift_severity=0.0,
            severe_drift=False,
            estimate=None,
            summary_uri=str(path),
            report_uri=None,
            mlflow_run_id=None,
            rescored_from=s.champion_version,
        )
        write_json_atomic(path, check.to_xcom())
        out.append(check)
    return out


def load_rescored(settings: Settings, version: str) -> list[WindowCheck]:
    """Champion ``version``'s checks on windows another version served (``rescore_newer_windows``)."""
    if not settings.monitor_dir.is_dir():
        return []
    return [
        WindowCheck.from_xcom(read_json(p))
        for p in settings.monitor_dir.glob(f"*/rescored-v{version}.json")
    ]


def load_summaries(settings: Settings) -> list[WindowCheck]:
    """Every window's latest check, oldest window first."""
    if not settings.monitor_dir.is_dir():
        return []
    found = [
        WindowCheck.from_xcom(read_json(p)) for p in settings.monitor_dir.glob("*/summary.json")
    ]
    return sorted(found, key=lambda s: (s.window_end, s.batch_id))
