"""The loop's steps with their default collaborators, in XCom-sized values in and out.

Each DAG task calls one of these; the CLI and the benchmarks call them in one process. They build
the settings and MLflow client, then hand them to the verb modules, which take them as arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctrain.context import RunContext
from ctrain.settings import Settings, load_settings


def _settings(settings: Settings | None) -> Settings:
    return settings or load_settings()


def list_landed(settings: Settings | None = None) -> list[str]:
    """Files waiting in the landing folder; learns the reference profile on first use."""
    from ctrain.ingest.ingest import ensure_profile, pending_files

    s = _settings(settings)
    files = pending_files(s)
    ensure_profile(s, files)
    return [str(p) for p in files]


def ingest_one(path: str, settings: Settings | None = None) -> dict[str, Any]:
    from ctrain.ingest.ingest import ingest_file
    from ctrain.ingest.profile import load_profile

    s = _settings(settings)
    out = ingest_file(Path(path), s, load_profile(s.profile_path))
    keep = (
        "batch_id",
        "status",
        "reason",
        "rows_in",
        "rows_accepted",
        "rows_quarantined",
        "accepted_uri",
        "quarantine_uri",
    )
    return {k: out.get(k) for k in keep}


def assemble(window_batches: int | None = None, settings: Settings | None = None) -> dict[str, Any]:
    from ctrain.training.assemble import assemble_window

    return assemble_window(_settings(settings), window_batches)


def validate_set(dataset: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    from ctrain.training.validate_set import validate_training_set

    return validate_training_set(_settings(settings), dataset)


def train(
    dataset: dict[str, Any], ctx: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    from ctrain.tracking import configure
    from ctrain.training.train import train as _train

    s = _settings(settings)
    return _train(s, dataset, RunContext.from_dict(ctx), configure(s))


def evaluate(
    trained: dict[str, Any], dataset: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    from ctrain.tracking import configure
    from ctrain.training.evaluate import evaluate as _evaluate

    s = _settings(settings)
    configure(s)
    return {
        **_evaluate(s, trained, dataset),
        "mlflow_run_id": trained["mlflow_run_id"],
        "experiment_id": trained["experiment_id"],
    }


def register(
    trained: dict[str, Any],
    dataset: dict[str, Any],
    validation: dict[str, Any],
    evaluation: dict[str, Any],
    ctx: dict[str, Any],
    settings: Settings | None = None,
) -> dict[str, Any]:
    from ctrain.promotion.register import register as _register
    from ctrain.tracking import configure

    s = _settings(settings)
    return _register(
        s, trained, dataset, validation, evaluation, RunContext.from_dict(ctx), configure(s)
    )


def compare(
    challenger: dict[str, Any],
    dataset: dict[str, Any],
    ctx: dict[str, Any],
    settings: Settings | None = None,
) -> dict[str, Any]:
    from ctrain.promotion.compare import compare as _compare
    from ctrain.tracking import configure

    s = _settings(settings)
    return _compare(s, challenger, dataset, RunContext.from_dict(ctx), configure(s))


def promote(
    comparison: dict[str, Any], ctx: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    from ctrain.promotion.promote import promote as _promote
    from ctrain.tracking import configure

    s = _settings(settings)
    rec = _promote(s, comparison, RunContext.from_dict(ctx), configure(s))
    keep = (
        "decision",
        "rule",
        "reason",
        "challenger_version",
        "champion_before",
        "champion_after",
        "record_run_id",
        "model_name",
    )
    return {k: rec.get(k) for k in keep}


def run_training(
    ctx: RunContext, window_batches: int | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """The whole ct_training pipeline in this process (what the DAG runs, without Airflow)."""
    s = _settings(settings)
    c = ctx.to_dict()
    dataset = assemble(window_batches, s)
    validation = validate_set(dataset, s)
    trained = train(dataset, c, s)
    evaluation = evaluate(trained, dataset, s)
    challenger = register(trained, dataset, validation, evaluation, c, s)
    comparison = compare(challenger, dataset, c, s)
    return promote(comparison, c, s)


def ingest_labels(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Validate every waiting label file; returns one outcome per file."""
    from ctrain.monitoring.labels import ingest_label_file, pending_label_files

    s = _settings(settings)
    return [ingest_label_file(p, s) for p in pending_label_files(s)]


def unscored(settings: Settings | None = None) -> list[str]:
    from ctrain.monitoring.score import unscored_batches

    return unscored_batches(_settings(settings))


def score(batch_id: str, settings: Settings | None = None) -> dict[str, Any]:
    from ctrain.monitoring.score import score_batch
    from ctrain.tracking import configure

    s = _settings(settings)
    return score_batch(s, batch_id, configure(s))


def check_windows(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Check every window due under the current champion; returns a line per window."""
    from ctrain.monitoring.check import champion_reference, check_window, windows_to_check
    from ctrain.tracking import configure

    s = _settings(settings)
    client = configure(s)
    version = champion_reference(s, client)["version"]
    out = []
    for batch_id in windows_to_check(s, version):
        w = check_window(s, batch_id, client, html_report=s.monitoring.html_reports)
        out.append(
            {
                "batch_id": batch_id,
                "flags": w["flags"],
                "share_drifted": w["data_drift"]["share_drifted"],
                "performance": w["performance"]["status"],
                "live_metric": w["performance"]["value"],
            }
        )
    return out


def decide_retrain(
    key: str, training_active: bool, settings: Settings | None = None
) -> dict[str, Any]:
    """The retrain verdict on the recent windows; a positive one is logged once per ``key``."""
    from ctrain.monitoring.check import load_summaries
    from ctrain.monitoring.trigger import decide_retrain as _decide
    from ctrain.monitoring.trigger import now_utc, record_request
    from ctrain.promotion.promote import current_champion
    from ctrain.storage import write_json_atomic
    from ctrain.tracking import configure

    s = _settings(settings)
    version = current_champion(configure(s), s.model_name)
    summaries = load_summaries(s)
    verdict = _decide(s, summaries, version, now_utc(), training_active)
    if verdict["trigger"]:
        verdict = record_request(s, verdict, key, summaries)
    write_json_atomic(s.monitor_dir / "last_verdict.json", {**verdict, "key": key})
    keep = ("trigger", "reason", "suppressed_by", "flagged_windows", "windows", "evidence_uri")
    return {k: verdict.get(k) for k in keep} | {
        "champion_version": version,
        "window": s.monitoring.retrain_window_batches,
    }
