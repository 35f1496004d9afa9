"""Decision records: one MLflow run per decision in the decisions experiment, with a model card.

Tags carry what is searched on (decision, versions, trigger, Airflow run, key); metrics carry the
figures; ``decision.json`` and ``model_card.md`` carry the whole evidence. A record that moved
``champion`` carries the metric ``move``: its place in the champion's history (1, 2, ...), so the
history is the moves in that order, whatever order the records were opened in.

A record is written ahead of its move: ``intent.json`` and the ``intent_*`` tags say what is about
to move, so whoever next holds the promotion lock can tell, after a crash, whether the move
happened (see ``promote.reconcile``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ctrain.records import Decision, DecisionKind
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


def model_card(rec: dict[str, Any]) -> str:
    lines = [
        f"# {rec['model_name']}: {rec['decision']}",
        "",
        f"- decided at: {rec['decided_at']}",
        f"- champion: {rec['champion_before'] or 'none'} -> {rec['champion_after'] or 'none'}",
        f"- challenger: {rec.get('challenger_version') or '-'}",
        f"- rule: `{rec['rule']}`: {rec['reason']}",
        f"- trigger: {rec['trigger_reason']}",
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
    for s in rec.get("slices") or []:
        lines.append(
            f"  - slice {s['column']}={s['value']} ({s['rows']} rows): challenger {s['challenger']:.4f}"
            + (f", champion {s['champion']:.4f}" if "champion" in s else "")
        )
    return "\n".join(lines) + "\n"


def close_record(client, run_id: str, rec: dict[str, Any]) -> Decision:
    """Write the record's tags, figures and artifacts and mark it finished."""
    rec = {
        **rec,
        "decided_at": rec.get("decided_at") or datetime.now(UTC).isoformat(),
        "record_run_id": run_id,
    }
    for key in _TAGS:
        value = rec.get(key)
        client.set_tag(run_id, key, "" if value is None else str(value)[:5000])
    for key in _METRICS:
        if rec.get(key) is not None:
            client.log_metric(run_id, key, float(rec[key]))
    client.log_text(run_id, json.dumps(rec, indent=2, default=str), "decision.json")
    client.log_text(run_id, model_card(rec), "model_card.md")
    client.set_terminated(run_id, "FINISHED")
    return Decision.from_xcom(rec)


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
