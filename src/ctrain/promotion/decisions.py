"""Decision records: one MLflow run per decision in the decisions experiment, with a model card.

Tags carry what is searched on (decision, versions, trigger, Airflow run, key); metrics carry the
figures; ``decision.json`` and ``model_card.md`` carry the whole evidence.
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
_METRICS = ("challenger_metric", "champion_metric", "diff", "ci_low", "ci_high")


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
    tags = run.data.tags
    # Tags hold "" where the record had None (MLflow tags are strings).
    fields = {k: tags.get(k) or None for k in _TAGS}
    return Decision.from_xcom(
        {
            **fields,
            **run.data.metrics,
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


def list_decisions(client, settings: Settings, limit: int = 20) -> list[Decision]:
    """Finished decision records, newest first."""
    exp = client.get_experiment_by_name(settings.decisions_experiment)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return [record_of(r) for r in runs]


def serving_history(client, settings: Settings) -> list[dict[str, Any]]:
    """Which version served from when: every record that moved the champion, oldest first."""
    moves = [d for d in list_decisions(client, settings, limit=1000) if d.moved]
    return [
        {
            "version": d.champion_after,
            "from": d.decided_at,
            "decision": d.decision,
            "record_run_id": d.record_run_id,
        }
        for d in reversed(moves)
    ]
