"""The human approval gate: what the approver is shown, and what an answer means.

With ``promotion.approval: required``, a challenger that won its comparison waits for a person
(Airflow's human-in-the-loop task) before ``promote``. ``request`` writes what the person reads;
``answer_of`` reads the task's outcome; ``act_on_answer`` records a rejection or an expiry, or
promotes, still as a compare-and-set: if ``champion`` moved while the request waited, the
challenger is compared again with the new champion instead of being forced in.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ctrain.dag_ids import APPROVE
from ctrain.metrics import greater_is_better
from ctrain.promotion.compare import compare
from ctrain.promotion.promote import comparison_evidence, move_champion, promote
from ctrain.records import (
    ApprovalAnswer,
    Comparison,
    DatasetWindow,
    Decision,
    DecisionKind,
    RegisteredVersion,
    RunContext,
)
from ctrain.registry import current_champion, version_uri
from ctrain.settings import Settings
from ctrain.storage import read_json, write_json_atomic
from ctrain.tracking import MlflowLinks


def needs_approval(settings: Settings, comparison: Comparison, ctx: RunContext) -> bool:
    """Whether a person must answer before ``promote``: approval is required and the
    comparison would move ``champion`` (a rejection or a dry run needs no one's consent)."""
    dry = ctx.dry_run or settings.promotion.mode == "dry_run"
    return settings.promotion.approval == "required" and comparison.action == "promote" and not dry


def request(settings: Settings, comparison: Comparison, ctx: RunContext, client) -> dict[str, str]:
    """The approval request: a one-line ``subject`` and a Markdown ``body`` with the evidence."""
    c = comparison
    name = c.model_name
    figure = f"{c.metric} {c.challenger_metric:.4f}"
    if c.diff is not None:
        figure = (
            f"{c.metric} {c.challenger_metric:.4f} vs {c.champion_metric:.4f}: difference "
            f"{c.diff:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] at {c.confidence:.0%} "
            + (
                f"on the {c.condemned_rows} held-out rows of {', '.join(c.condemned_windows)}, "
                f"where v{c.champion_seen} failed decisively (on all {c.holdout_rows}: "
                f"{c.all_rows['diff']:+.4f} [{c.all_rows['ci_low']:+.4f}, "
                f"{c.all_rows['ci_high']:+.4f}])"
                if c.all_rows
                else f"on {c.holdout_rows} held-out rows"
            )
        )
    subject = (
        f"Promote {name} v{c.challenger_version} over "
        f"{'v' + c.champion_seen if c.champion_seen else 'no champion'}? ({c.rule})"
    )
    evidence = comparison_evidence(c)
    links = MlflowLinks(settings.mlflow_ui_url)
    mv = client.get_model_version(name, c.challenger_version)
    lines = [
        f"### {name} v{c.challenger_version} against champion {c.champion_seen or '(none)'}",
        "",
        f"- **{figure}**",
        f"- rule `{c.rule}`: {c.reason}",
    ]
    for metric, f in (evidence.get("floors") or {}).items():
        met = f["value"] >= f["floor"] if greater_is_better(metric) else f["value"] <= f["floor"]
        # Missed only where the condemned champion misses it by more (the reason says so).
        said = "met" if met else "missed, as the condemned champion does by more"
        lines.append(f"- floor {metric}: {f['value']:.4f} (floor {f['floor']}): {said}")
    for s in evidence.get("slices") or []:
        champ = f", champion {s['champion']:.4f}" if "champion" in s else ""
        lines.append(
            f"- slice {s['column']}={s['value']} ({s['rows']} rows): "
            f"challenger {s['challenger']:.4f}{champ}"
        )
    lines += [
        f"- trained on: {mv.tags.get('data_window', '-')} (data hash "
        f"{mv.tags.get('data_content_hash', '-')[:12]}), code {mv.tags.get('code_version', '-')}",
        f"- trigger: {ctx.trigger_reason} (started by {ctx.started_by or ctx.dag_id})",
        f"- [model version in MLflow]({links.model_version(name, c.challenger_version)})",
        "",
        f"**Approve** promotes v{c.challenger_version} if the champion is still "
        f"{c.champion_seen or 'unset'}; if it moved meanwhile, v{c.challenger_version} is "
        "compared again with the new champion and promoted only if it still wins. **Reject** "
        "records the rejection with your name and comment. Unanswered, the request expires "
        f"after {settings.promotion.approval_timeout_minutes:g} minutes and nothing is promoted.",
    ]
    return {"subject": subject[:250], "body": "\n".join(lines)}


def answer_of(outcome: dict[str, Any] | None) -> ApprovalAnswer:
    """The answer in a human-in-the-loop task's result (``chosen_options``, ``params_input``,
    ``responded_by_user``). No person (the timeout's default answer) means expired."""
    if not outcome:
        return ApprovalAnswer(outcome="expired", approver=None)
    by = outcome.get("responded_by_user") or None
    chosen = list(outcome.get("chosen_options") or [])
    comment = str((outcome.get("params_input") or {}).get("comment") or "").strip()
    at = outcome.get("responded_at")
    if by is None:
        return ApprovalAnswer(outcome="expired", approver=None, answered_at=str(at or "") or None)
    who = str(by.get("name") or by.get("id"))
    verdict = "approved" if chosen == [APPROVE] else "rejected"
    return ApprovalAnswer(outcome=verdict, approver=who, comment=comment, answered_at=str(at))


def act_on_answer(
    settings: Settings,
    comparison: Comparison,
    dataset: DatasetWindow,
    ctx: RunContext,
    answer: ApprovalAnswer,
    client,
    monitor_says: Callable[[], dict[str, Any]] | None = None,
) -> Decision:
    """Record a rejection or an expiry, or promote the approved challenger (compare-and-set).

    When the champion moved while the request waited, the challenger is compared again, with
    what ``monitor_says`` (``compare``'s ``condemned`` and ``follow_up``) at that moment."""
    version = comparison.challenger_version
    key = f"{ctx.dag_id}/{ctx.run_id}/v{version}"
    approval = {"approver": answer.approver, "approval_comment": answer.comment or None}
    if answer.outcome != "approved":
        expired = answer.outcome == "expired"
        reason = (
            f"no answer within {settings.promotion.approval_timeout_minutes:g} minutes"
            if expired
            else f"rejected by {answer.approver}"
            + (f": {answer.comment}" if answer.comment else "")
        )
        return move_champion(
            settings,
            client,
            key=key,
            action=DecisionKind.EXPIRED if expired else DecisionKind.REJECTED,
            expected=comparison.champion_seen,
            new_version=version,
            rule="approval_expired" if expired else "approval_rejected",
            reason=f"{reason} (the comparison proposed: {comparison.reason})",
            ctx=ctx,
            evidence=comparison.to_xcom() | approval,
        )
    if ctx.requested_by and answer.approver == ctx.requested_by:
        # Four eyes: whoever asked for the run may not also be the one who lets it through.
        return move_champion(
            settings,
            client,
            key=key,
            action=DecisionKind.REJECTED,
            expected=comparison.champion_seen,
            new_version=version,
            rule="self_approval",
            reason=f"approved by {answer.approver}, who started this run: an approval must "
            f"come from another person (the comparison proposed: {comparison.reason})",
            ctx=ctx,
            evidence=comparison.to_xcom() | approval,
        )
    seen = comparison.champion_seen
    actual = current_champion(client, settings.model_name)
    if actual != seen:
        # The champion moved while the request waited: what was approved was a comparison with
        # a model that no longer serves. Compare again; promote only if it still wins.
        name = comparison.model_name
        again = compare(
            settings,
            RegisteredVersion(name, version, version_uri(name, version)),
            dataset,
            ctx,
            client,
            **(monitor_says() if monitor_says else {}),
        )
        comparison = dataclasses.replace(
            again,
            reason=f"approved by {answer.approver} against v{seen}, but the champion moved to "
            f"v{actual} meanwhile; compared again: {again.reason}",
        )
    return promote(settings, comparison, ctx, client, extra=approval)


def _waiting_path(settings: Settings, dag_id: str, run_id: str, task_id: str) -> Path:
    # Run ids come from outside (a trigger's form): only their hash becomes a file name.
    key = hashlib.sha256(f"{dag_id}\n{run_id}\n{task_id}".encode()).hexdigest()
    return settings.notifications_dir / "approvals" / f"{key}.json"


def record_waiting(
    settings: Settings,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    subject: str,
    requested_at: datetime,
    expires_at: datetime,
) -> Path:
    """Keep that a request waits, and until when (``ctrain.deadlines`` warns before it
    expires); a request asked again (the task retried) replaces its entry."""
    return write_json_atomic(
        _waiting_path(settings, dag_id, run_id, task_id),
        {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "subject": subject,
            "requested_at": requested_at.isoformat(timespec="seconds"),
            "expires_at": expires_at.isoformat(timespec="seconds"),
        },
    )


def waiting_requests(settings: Settings) -> list[dict[str, str]]:
    """The requests ``record_waiting`` kept, soonest to expire first (answered ones among them
    until ``forget_waiting``)."""
    folder = settings.notifications_dir / "approvals"
    found = [read_json(p) for p in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(found, key=lambda r: r["expires_at"])


def forget_waiting(settings: Settings, request: dict[str, str]) -> None:
    """Drop a kept request that no longer waits (answered, expired, its run gone)."""
    _waiting_path(settings, request["dag_id"], request["run_id"], request["task_id"]).unlink(
        missing_ok=True
    )
