"""Decision records: one MLflow run per decision in the decisions experiment, with a model card.

Tags carry what is searched on (decision, versions, trigger, Airflow run, key); metrics carry the
figures; ``decision.json`` and ``model_card.md`` carry the whole evidence. A record that moved
``champion`` carries the metric ``move``: its place in the champion's history (1, 2, ...), so the
history is the moves in that order, whatever order the records were opened in.

The run is named by its headline (``v2 promoted 1→2 (significant_improvement)``) and its
description is the model card; evidence files the decision rests on (the comparison, the
monitor's retrain request) are uploaded into it.

A record is written ahead of its move: ``intent.json`` and the ``intent_*`` tags say what is about
to move, so whoever next holds the promotion lock can tell, after a crash, whether the move
happened (see ``promote.reconcile``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctrain.records import Decision, DecisionKind, RunContext
from ctrain.settings import Settings
from ctrain.tracking import ensure_experiment

_TAGS = (
    "decision",
    "rule",
    "reason",
    "model_name",
    "challenger_version",
    "champion_before",
    "champion_after",
    "trigger_reason",
    "airflow_dag_id",
    "airflow_run_id",
    "decision_key",
    "metric",
    "decided_at",
    "started_by",
    "trigger_evidence",
    "comparison_uri",
    "headline",
    "approver",
    "approval_comment",
)
_METRICS = ("challenger_metric", "champion_metric", "diff", "ci_low", "ci_high", "move")


def find_record(client, settings: Settings, key: str):
    """The decision run with ``decision_key == key`` (any status), or None."""
    exp_id = ensure_experiment(client, settings.decisions_experiment, settings)
    runs = client.search_runs([exp_id], filter_string=f"tags.decision_key = '{key}'", max_results=1)
    return runs[0] if runs else None


def open_record(client, settings: Settings, key: str) -> str:
    """Start (or resume, after a crash) the decision run for ``key``; returns its run id."""
    prior = find_record(client, settings, key)
    if prior is not None:
        return prior.info.run_id
    exp_id = ensure_experiment(client, settings.decisions_experiment, settings)
    run = client.create_run(
        exp_id,
        run_name=f"decision {key}",
        tags={"decision_key": key, "decision": DecisionKind.PENDING},
    )
    return run.info.run_id


def record_once(
    client, settings: Settings, key: str, ctx: RunContext, champion: str | None, record: dict
) -> Decision:
    """Record, under ``key`` and once, a decision that leaves ``champion`` where it is (a
    traffic split, a proposal to another environment, a configuration): ``record`` holds its
    kind, rule, reason and evidence; who asked comes from ``ctx``. A retry returns the record
    its first attempt finished, or finishes it."""
    done = find_record(client, settings, key)
    if done is not None and done.info.status == "FINISHED":
        return record_of(done)
    run_id = done.info.run_id if done is not None else open_record(client, settings, key)
    return close_record(
        client,
        run_id,
        {
            "model_name": settings.model_name,
            "champion_before": champion,
            "champion_after": champion,
            "trigger_reason": ctx.trigger_reason,
            "started_by": ctx.started_by or None,
            "airflow_dag_id": ctx.dag_id,
            "airflow_run_id": ctx.run_id,
            **record,
            "decision_key": key,
        },
    )


def _interval(rec: dict[str, Any]) -> str:
    """``roc_auc +0.0680 [+0.0597, +0.0760]``, or the challenger's figure alone, or ""."""
    if rec.get("challenger_metric") is None:
        return ""
    if rec.get("diff") is None or rec.get("ci_low") is None:
        return f"{rec.get('metric')} {rec['challenger_metric']:.4f}"
    return f"{rec.get('metric')} {rec['diff']:+.4f} [{rec['ci_low']:+.4f}, {rec['ci_high']:+.4f}]"


def headline(rec: dict[str, Any]) -> str:
    """A decision in one line, for run names, DAG run notes and logs.

    ``v2 promoted 1→2 (significant_improvement): roc_auc +0.0680 [+0.0597, +0.0760]``
    """
    kind = str(rec.get("decision") or "")
    v = rec.get("challenger_version")
    before, after = rec.get("champion_before") or "none", rec.get("champion_after") or "none"
    figure = _interval(rec)
    tail = f": {figure}" if figure else ""
    rule = rec.get("rule") or ""
    if rec.get("approver") and kind in (DecisionKind.PROMOTED, DecisionKind.REJECTED):
        verb = "approved" if kind == DecisionKind.PROMOTED else "rejected"
        tail += f"; {verb} by {rec['approver']}"
    if kind == DecisionKind.PROMOTED:
        return f"v{v} promoted {before}→{after} ({rule}){tail}"
    if kind == DecisionKind.DRY_RUN:
        would = "promote" if rec.get("action") == "promote" else "reject"
        return f"v{v} dry run: would {would} ({rule}){tail}; champion stays {before}"
    if kind == DecisionKind.REJECTED:
        return f"v{v} rejected ({rule}){tail}; champion stays {before}"
    if kind == DecisionKind.MANUAL_PROMOTE:
        return f"v{v} promoted by hand {before}→{after}"
    if kind == DecisionKind.ROLLBACK:
        return f"rollback {before}→{after}"
    if kind == DecisionKind.EXTERNAL:
        return f"champion found moved {before}→{after} outside ctrain"
    if kind == DecisionKind.EXPIRED:
        return f"v{v} expired ({rule}): no answer to its approval request; champion stays {before}"
    if kind == DecisionKind.ROLLOUT:
        return f"v{v} won ({rule}){tail}: rolled out on live traffic; champion stays {before}"
    if kind == DecisionKind.TRAFFIC:
        return f"traffic: {rec.get('reason')}"
    if kind in (DecisionKind.PROPOSED, DecisionKind.CONFIGURED):
        return f"{kind}: {rec.get('reason')}"
    if kind == DecisionKind.SKIPPED:
        return f"skipped ({rule}): same window and training config as v{v}"
    return f"{kind} v{v}"


def model_card(rec: dict[str, Any]) -> str:
    lines = [
        f"# {rec['model_name']}: {headline(rec)}",
        "",
        f"- decided at: {rec['decided_at']}",
        f"- champion: {rec['champion_before'] or 'none'} -> {rec['champion_after'] or 'none'}",
        f"- challenger: {rec.get('challenger_version') or '-'}",
        f"- rule: `{rec['rule']}`: {rec['reason']}",
        f"- trigger: {rec['trigger_reason']}",
        f"- started by: {rec.get('started_by') or rec['airflow_dag_id'] or '-'}",
        *(
            [
                f"- approval: {rec['approver']}"
                + (f": {rec['approval_comment']}" if rec.get("approval_comment") else "")
            ]
            if rec.get("approver")
            else []
        ),
        f"- Airflow: dag `{rec['airflow_dag_id']}`, run `{rec['airflow_run_id']}`",
    ]
    if rec.get("challenger_metric") is not None:
        lines.append(
            f"- {rec['metric']}: challenger {rec['challenger_metric']:.4f}"
            + (
                f", champion {rec['champion_metric']:.4f}, difference {rec['diff']:+.4f} "
                f"[{rec['ci_low']:+.4f}, {rec['ci_high']:+.4f}] at {rec.get('confidence', 0.95):.0%}"
                if rec.get("champion_metric") is not None
                else ""
            )
        )
    for name, f in (rec.get("floors") or {}).items():
        lines.append(f"- floor {name}: {f['value']:.4f} (floor {f['floor']})")
    for s in rec.get("slices") or []:
        lines.append(
            f"- slice {s['column']}={s['value']} ({s['rows']} rows): challenger {s['challenger']:.4f}"
            + (f", champion {s['champion']:.4f}" if "champion" in s else "")
        )
    if load := rec.get("predeployment"):
        lines.append(
            f"- pre-deployment load test in {load['environment']} ({load['users']} callers, "
            f"{load['seconds']:g} s, {load['rows_per_request']} row(s) per request): p50 "
            f"{load['p50_ms']:g} ms, p99 {load['p99_ms']:g} ms, {load['rows_per_second']:g} rows/s, "
            f"error rate {load['error_rate']:g}, peak memory {load['peak_memory_mb']:g} MB, "
            f"artifact {load['artifact_mb']:g} MB"
            + (f"; over budget: {'; '.join(load['over'])}" if load["over"] else "; within budget")
        )
    return "\n".join(lines) + "\n"


def _upload_evidence(client, run_id: str, rec: dict[str, Any]) -> dict[str, Any]:
    """Put the files the decision rests on into its run; the record names them by artifact URI.

    A file named by a URI (the monitor's retrain request is in MLflow already) stays where it is.
    """
    out = dict(rec)
    artifact_uri = client.get_run(run_id).info.artifact_uri.rstrip("/")
    for key, name in (("comparison_uri", "evidence"), ("trigger_evidence", "evidence")):
        local = rec.get(key)
        if not local or "://" in str(local) or str(local).startswith("runs:"):
            continue
        path = Path(str(local))
        if path.is_file():
            client.log_artifact(run_id, str(path), name)
            out[key] = f"{artifact_uri}/{name}/{path.name}"
    return out


def close_record(client, run_id: str, rec: dict[str, Any]) -> Decision:
    """Write the record's tags, figures and artifacts, name the run by its headline, finish it."""
    rec = _upload_evidence(
        client,
        run_id,
        {
            **rec,
            "decided_at": rec.get("decided_at") or datetime.now(UTC).isoformat(),
            "record_run_id": run_id,
        },
    )
    rec["headline"] = headline(rec)
    for key in _TAGS:
        value = rec.get(key)
        client.set_tag(run_id, key, "" if value is None else str(value)[:5000])
    for key in _METRICS:
        if rec.get(key) is not None:
            client.log_metric(run_id, key, float(rec[key]))
    card = model_card(rec)
    client.log_text(run_id, json.dumps(rec, indent=2, default=str), "decision.json")
    client.log_text(run_id, card, "model_card.md")
    client.set_tag(run_id, "mlflow.note.content", card)  # the run's description in MLflow's UI
    client.update_run(run_id, name=rec["headline"][:250])
    client.set_terminated(run_id, "FINISHED")
    return Decision.from_xcom(rec)


def describe_champion(client, settings: Settings, decision: Decision) -> None:
    """Make the new champion's description its model card, with a link to the decision."""
    from ctrain.tracking import MlflowLinks

    run = client.get_run(decision.record_run_id)
    card = run.data.tags["mlflow.note.content"]  # close_record made the card the description
    link = MlflowLinks(settings.mlflow_ui_url).run(run.info.experiment_id, run.info.run_id)
    client.update_model_version(
        decision.model_name,
        decision.champion_after,
        description=f"{card}\nServing since move {decision.move}: [the decision record]({link}).\n",
    )


def record_of(run) -> Decision:
    """The decision an MLflow run of the decisions experiment holds, from its tags and metrics."""
    tags, metrics = run.data.tags, dict(run.data.metrics)
    if "move" in metrics:
        metrics["move"] = int(metrics["move"])
    # Tags hold "" where the record had None (MLflow tags are strings).
    fields = {k: tags.get(k) or None for k in _TAGS}
    return Decision.from_xcom(
        {
            **fields,
            **metrics,
            "decision": tags.get("decision", ""),
            "rule": tags.get("rule", ""),
            "reason": tags.get("reason", ""),
            "model_name": tags.get("model_name", ""),
            "trigger_reason": tags.get("trigger_reason", ""),
            "airflow_dag_id": tags.get("airflow_dag_id", ""),
            "airflow_run_id": tags.get("airflow_run_id", ""),
            "decided_at": tags.get("decided_at")
            or datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(),
            "record_run_id": run.info.run_id,
        }
    )


def _search(client, settings: Settings, where: str, order: str, limit: int) -> list:
    exp = client.get_experiment_by_name(settings.decisions_experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id], filter_string=where, order_by=[order], max_results=limit
    )


def list_decisions(client, settings: Settings, limit: int = 20) -> list[Decision]:
    """Finished decision records, the latest decided first."""
    runs = _search(
        client, settings, "attributes.status = 'FINISHED'", "attributes.end_time DESC", limit
    )
    return [record_of(r) for r in runs]


def history(client, settings: Settings) -> list[Decision]:
    """Every move of ``champion``, in the order the moves happened."""
    where = "attributes.status = 'FINISHED' and metrics.move > 0"
    return [record_of(r) for r in _search(client, settings, where, "metrics.move ASC", 50_000)]


def last_move(client, settings: Settings) -> Decision | None:
    """The latest move of ``champion`` on record, or None."""
    where = "attributes.status = 'FINISHED' and metrics.move > 0"
    runs = _search(client, settings, where, "metrics.move DESC", 1)
    return record_of(runs[0]) if runs else None


def open_records(client, settings: Settings) -> list:
    """Decision runs opened and not closed: what a crashed promoter leaves behind."""
    return _search(
        client, settings, "attributes.status = 'RUNNING'", "attributes.start_time ASC", 1000
    )


def write_intent(client, run_id: str, rec: dict[str, Any]) -> None:
    """Say, before the move, what is about to move: the record to close once it has."""
    client.log_text(run_id, json.dumps(rec, indent=2, default=str), "intent.json")
    client.set_tag(run_id, "intent_from", rec["champion_before"] or "")
    client.set_tag(run_id, "intent_to", rec["champion_after"])


def read_intent(client, run) -> dict[str, Any] | None:
    """The record a run's intent holds, or None when it never got that far."""
    if "intent_to" not in run.data.tags:
        return None
    import mlflow

    text = mlflow.artifacts.load_text(f"{run.info.artifact_uri.rstrip('/')}/intent.json")
    return json.loads(text)


def mark_interrupted(client, run_id: str, reason: str) -> None:
    """Close a record whose move never happened: nothing moved; a retry of its key resumes it."""
    client.set_tag(run_id, "decision", DecisionKind.INTERRUPTED)
    client.set_tag(run_id, "reason", reason[:5000])
    client.set_terminated(run_id, "KILLED")


def serving_history(client, settings: Settings) -> list[dict[str, Any]]:
    """Which version served from when: every move of the champion, oldest first."""
    return [
        {
            "version": d.champion_after,
            "from": d.decided_at,
            "decision": d.decision,
            "move": d.move,
            "record_run_id": d.record_run_id,
        }
        for d in history(client, settings)
    ]
