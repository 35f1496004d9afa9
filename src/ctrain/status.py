"""What people see of ctrain's records: ``ctrain status`` in a terminal, and ``overview`` for the
ctrain view in Airflow's UI (the serving model, the history of decisions, the monitored windows)."""

from __future__ import annotations

import contextlib
from typing import Any

from ctrain.credentials import refused
from ctrain.monitoring.hold import last_verdict
from ctrain.monitoring.trigger import describe
from ctrain.promotion.decisions import headline, list_decisions, open_records, read_intent
from ctrain.records import Decision, RetrainVerdict, WindowCheck
from ctrain.registry import CHALLENGER, CHAMPION, aliased_version
from ctrain.settings import Settings
from ctrain.tracking import MlflowLinks


def status(settings: Settings, client, limit: int = 10) -> dict[str, Any]:
    """The champion and challenger with their tags, and the ``limit`` newest decisions."""
    name = settings.model_name
    out: dict[str, Any] = {"model": name}
    for alias in (CHAMPION, CHALLENGER):
        mv = aliased_version(client, name, alias)
        out[alias] = (
            None
            if mv is None
            else {
                "version": mv.version,
                **{k: v for k, v in mv.tags.items() if not k.startswith("mlflow.")},
            }
        )
    out["traffic"] = _traffic(client, settings)
    verdict = last_verdict(settings)
    out["monitor"] = verdict.to_xcom() if verdict else None
    out["unfinished"] = unfinished(settings, client)
    out["decisions"] = [d.to_xcom() for d in list_decisions(client, settings, limit=limit)]
    exp = client.get_experiment_by_name(settings.decisions_experiment)
    out["decisions_url"] = (
        MlflowLinks(settings.mlflow_ui_url).experiment(exp.experiment_id) if exp else None
    )
    return out


def unfinished(settings: Settings, client) -> list[dict[str, Any]]:
    """The moves whose records are open, oldest first: under way, or killed and not yet
    reconciled (``promote.settle``). Each says what it was about to do, when it says so."""
    out = []
    for run in open_records(client, settings):
        intent = read_intent(client, run)
        out.append(
            {
                "record_run_id": run.info.run_id,
                "opened": _iso(run.info.start_time),
                "to": intent["champion_after"] if intent else None,
                "from": intent["champion_before"] if intent else None,
            }
        )
    return out


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def format_status(report: dict[str, Any], metric: str) -> str:
    """``status()`` for a terminal."""
    key = f"holdout_{metric}"
    lines = []
    for u in report.get("unfinished", []):
        what = (
            f"a move {u['from'] or 'none'}→{u['to']}"
            if u["to"]
            else "a move (target not yet recorded)"
        )
        lines.append(
            f"{'UNFINISHED':<10}: {what} (record {u['record_run_id']}, opened {u['opened']}) "
            "holds the lock or was killed; champion below is where the alias points now"
        )
    for alias in (CHAMPION, CHALLENGER):
        v = report[alias]
        lines.append(
            f"{alias:<10}: "
            + (
                f"version {v['version']}  {key}={v.get(key)}  data_window={v.get('data_window')}"
                if v
                else "none"
            )
        )
    if report.get("traffic"):
        lines.append(f"{'traffic':<10}: {report['traffic']['describe']}")
    if report.get("monitor"):
        verdict = RetrainVerdict.from_xcom(report["monitor"])
        lines.append(
            f"{'monitor':<10}: last verdict at {verdict.decided_at[:19].replace('T', ' ')} "
            f"(decisions after it are below): {describe(verdict)}"
        )
    lines.append(f"\nrecent decisions (newest first) for {report['model']}:")
    for d in report["decisions"]:
        lines.append(f"  {d['decided_at'][:19].replace('T', ' ')}  {d['headline'] or headline(d)}")
        lines.append(f"  {'':19}  trigger: {d['trigger_reason']}")
    if not report["decisions"]:
        lines.append("  (none yet)")
    elif report.get("decisions_url"):
        lines.append(f"\n  in MLflow: {report['decisions_url']}")
    return "\n".join(lines)


def _traffic(client, settings: Settings) -> dict[str, Any]:
    """The traffic split of a rollout (``serving/traffic.py``): who answers which rows; while
    one runs, its steps and the newest look at the current one (each guardrail's figure
    against its bound)."""
    import dataclasses

    from ctrain.rollout.evidence import read_look, rollout_steps
    from ctrain.serving.traffic import read_split

    split = read_split(client, settings.model_name)
    look = read_look(settings, split) if split.active else None
    # The steps the rollout looked with (the settings may have changed since it began).
    steps = (look or {}).get("steps") or rollout_steps(settings, split)
    return dataclasses.asdict(split) | {
        "active": split.active,
        "describe": split.describe(),
        "steps": steps,
        "look": look,
    }


def _version(client, settings: Settings, alias: str, links) -> dict[str, Any] | None:
    """What an aliased version is: its window, figure, code, data, and where it lives in MLflow."""
    name, metric = settings.model_name, settings.promotion.metric
    mv = aliased_version(client, name, alias)
    if mv is None:
        return None
    tags = mv.tags
    run_id = tags.get("mlflow_run_id") or mv.run_id
    exp_id = None
    if run_id:
        with contextlib.suppress(Exception):
            exp_id = client.get_run(run_id).info.experiment_id
    holdout = tags.get(f"holdout_{metric}")
    return {
        "version": str(mv.version),
        "data_window": tags.get("data_window"),
        "data_hash": tags.get("data_content_hash"),
        "code_version": tags.get("code_version"),
        "estimator": tags.get("estimator"),
        "validation_status": tags.get("validation_status"),
        "trigger_reason": tags.get("trigger_reason"),
        "metric": metric,
        "holdout_value": float(holdout) if holdout else None,
        "airflow_dag_id": tags.get("airflow_dag_id"),
        "airflow_run_id": tags.get("airflow_run_id"),
        "description": mv.description or "",
        "mlflow_version_url": links.model_version(name, str(mv.version)),
        "mlflow_run_url": links.run(exp_id, run_id) if exp_id and run_id else None,
    }


def _decision_entry(d: Decision, links, exp_id: str | None) -> dict[str, Any]:
    out = d.to_xcom()
    out["headline"] = d.headline or headline(out)
    out["moved"] = d.moved
    url = links.run(exp_id, d.record_run_id) if exp_id else None
    out["record_url"] = url
    out["model_card_url"] = links.run(exp_id, d.record_run_id, "model_card.md") if exp_id else None
    return out


def _window_entry(w: WindowCheck, requested: set[str], links, exp_id: str | None) -> dict:
    perf = w.performance
    return {
        "batch_id": w.batch_id,
        "window_end": w.window_end,
        "checked_at": w.checked_at,
        "champion_version": w.champion_version,
        "rows": w.rows,
        "share_drifted": w.share_drifted,
        "dataset_drift": w.dataset_drift,
        "drifted_columns": list(w.drifted_columns),
        "prediction_drift": w.prediction_drift,
        "performance": perf.to_xcom(),
        "estimate": w.estimate.to_xcom() if w.estimate else None,
        "outside_reference": w.outside_reference,
        "drift_severity": w.drift_severity,
        "flags": list(w.flags),
        "retrain_requested": w.batch_id in requested,
        "mlflow_run_url": links.run(exp_id, w.mlflow_run_id)
        if exp_id and w.mlflow_run_id
        else None,
        "report_url": (
            links.run(exp_id, w.mlflow_run_id, "data_drift.html")
            if exp_id and w.mlflow_run_id and w.report_uri
            else None
        ),
    }


def overview(settings: Settings, client, limit: int = 200) -> dict[str, Any]:
    """Everything the Airflow UI's ctrain view shows for the project's model, read from records.

    The serving model and the challenger, the history of decisions (newest first), every
    monitored window (oldest first) with the retrain requests, and the thresholds the monitor
    applies. Reads MLflow and the monitor's files; computes nothing.
    """
    from ctrain.monitoring.check import load_summaries
    from ctrain.monitoring.trigger import trigger_log

    links = MlflowLinks(settings.mlflow_ui_url)
    name = settings.model_name
    decisions_exp = client.get_experiment_by_name(settings.decisions_experiment)
    monitoring_exp = client.get_experiment_by_name(settings.monitoring_experiment)
    d_id = decisions_exp.experiment_id if decisions_exp else None
    m_id = monitoring_exp.experiment_id if monitoring_exp else None
    requests = trigger_log(settings)
    requested = {b for r in requests for b in r.flagged_windows}
    cfg = settings.monitoring
    return {
        "model": name,
        "metric": settings.promotion.metric,
        "mlflow_model_url": links.model(name),
        "champion": _version(client, settings, CHAMPION, links),
        "challenger": _version(client, settings, CHALLENGER, links),
        "traffic": _traffic(client, settings),
        "history": [
            _decision_entry(d, links, d_id) for d in list_decisions(client, settings, limit=limit)
        ],
        "windows": [_window_entry(w, requested, links, m_id) for w in load_summaries(settings)],
        "requests": [
            r.to_xcom()
            | {
                "evidence_url": links.run(m_id, r.evidence_run_id)
                if m_id and r.evidence_run_id
                else None
            }
            for r in requests
        ],
        "thresholds": {
            "drift_share": cfg.drift_share,
            "performance_drop": cfg.performance_drop,
            "debounce": f"{cfg.debounce_k} of {cfg.debounce_n}",
            "decisive_confidence": cfg.decisive_confidence,
        },
        "decisions_url": links.experiment(d_id) if d_id else None,
        "monitoring_url": links.experiment(m_id) if m_id else None,
    }


def environments(settings: Settings) -> list[dict[str, Any]]:
    """Each environment of ``environments``, read from its own MLflow: its champion (version,
    files' sha256, where it came from), the configuration its restricted training uses, its
    rollout and its moves under way. An environment this process cannot reach (down, or no
    permission there) says so in its ``error`` and the others are still read."""
    from ctrain.serving.traffic import read_split
    from ctrain.tracking import client_of
    from ctrain.training.restricted import CONFIG_FROM_TAG, CONFIG_TAG

    out = []
    for name in settings.environments:
        env = settings.of(name)
        entry: dict[str, Any] = {
            "environment": name,
            "this": name == settings.environment,
            "tracking_uri": _without_password(env.resolved_tracking_uri),
            "model": env.model_name,
        }
        try:
            _answers(env.resolved_tracking_uri)
            client = client_of(env)
            mv = aliased_version(client, env.model_name, CHAMPION)
            tags = mv.tags if mv else {}
            entry["champion"] = (
                None
                if mv is None
                else {
                    "version": mv.version,
                    "model_sha256": tags.get("model_sha256"),
                    "from": (
                        f"{tags['source_environment']} v{tags.get('source_version')}"
                        if tags.get("source_environment")
                        else f"trained here ({tags.get('data_window') or 'no window recorded'})"
                    ),
                }
            )
            model_tags = _model_tags(client, env.model_name)
            entry["training_config"] = (
                {"config": model_tags[CONFIG_TAG], "from": model_tags.get(CONFIG_FROM_TAG)}
                if CONFIG_TAG in model_tags
                else None
            )
            split = read_split(client, env.model_name)
            entry["rollout"] = split.describe() if split.active else None
            entry["pending"] = unfinished(env, client)
        except Exception as exc:  # one environment down must not hide the others
            entry["error"] = (
                refused(exc)
                or f"unreachable: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            )
        out.append(entry)
    return out


def _answers(tracking_uri: str, timeout: float = 5.0) -> None:
    """Raise ``OSError`` unless an MLflow server at ``tracking_uri`` answers its health check
    within ``timeout``: MLflow's client retries a server that is down for minutes, and a
    status page must not wait that long for one environment."""
    import urllib.request

    if not tracking_uri.startswith(("http://", "https://")):
        return  # a local store: opened directly
    with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout) as r:
        r.read()


def _model_tags(client, name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(name).tags)
    except MlflowException:
        return {}


def _without_password(uri: str) -> str:
    """A URI as it may be shown: a password in it is masked."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password:
        host = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=host))
    return uri


def format_environments(entries: list[dict[str, Any]]) -> str:
    """``ctrain env status``: a block per environment."""
    lines = []
    for e in entries:
        mark = " (this one)" if e["this"] else ""
        lines.append(f"{e['environment']}{mark}: {e['model']} at {e['tracking_uri']}")
        if "error" in e:
            lines.append(f"  {e['error']}")
            continue
        c = e["champion"]
        lines.append(
            "  champion: none"
            if c is None
            else f"  champion: v{c['version']}, sha256 {(c['model_sha256'] or 'not recorded')[:16]}, "
            f"from {c['from']}"
        )
        cfg = e["training_config"]
        if cfg:
            lines.append(f"  restricted training trains: {cfg['config']} (from {cfg['from']})")
        if e["rollout"]:
            lines.append(f"  rollout: {e['rollout']}")
        for p in e["pending"]:
            lines.append(
                f"  move under way: {p['from'] or 'none'} -> {p['to'] or '?'} ({p['opened']})"
            )
    return "\n".join(lines)
