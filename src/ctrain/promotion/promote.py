"""Move ``champion``: a compare-and-set under the promotion lock, with exactly one decision record.

Every path that can change the serving model (the pipeline's decision, a manual promote, a
rollback) goes through ``move_champion``. Inside the lock it re-reads ``champion``: if it no longer
points where the comparison saw it, nothing moves and the record says the decision was stale.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ctrain.promotion.decisions import (
    close_record,
    find_record,
    list_decisions,
    open_record,
    record_of,
)
from ctrain.promotion.lock import promotion_lock
from ctrain.records import MOVES_CHAMPION, Comparison, Decision, DecisionKind, RunContext
from ctrain.registry import CHAMPION, current_champion
from ctrain.settings import Settings


class PromotionRefused(Exception):
    """A manual promote or rollback that the rules do not allow; nothing was changed."""


def move_champion(
    settings: Settings,
    client,
    *,
    key: str,
    action: DecisionKind,
    expected: str | None,
    new_version: str,
    rule: str,
    reason: str,
    ctx: RunContext,
    evidence: dict[str, Any] | None = None,
) -> Decision:
    """Set ``champion`` to ``new_version`` iff it is still ``expected``; record the outcome once.

    ``action`` is the decision to record when the move happens (one of ``MOVES_CHAMPION``), or
    ``rejected`` / ``dry_run`` (nothing moves). Retrying with the same ``key`` returns the
    finished record instead of deciding twice.
    """
    name = settings.model_name
    done = find_record(client, settings, key)
    if done is not None and done.info.status == "FINISHED":
        return dataclasses.replace(record_of(done), replayed=True)

    with promotion_lock(settings):
        run_id = open_record(client, settings, key)
        actual = current_champion(client, name)
        decision = action
        before, after = actual, actual
        moves = action in MOVES_CHAMPION
        if moves and actual == new_version and actual != expected:
            # An earlier attempt of this key moved it, then died before closing the record.
            before = expected
        elif moves and actual != expected:
            decision, rule = DecisionKind.REJECTED, "stale_champion"
            reason = (
                f"champion moved from {expected or 'none'} to {actual or 'none'} after the comparison; "
                f"refusing to overwrite it with {new_version} (was: {reason})"
            )
        elif moves:
            client.set_registered_model_alias(name, CHAMPION, new_version)
            after = new_version
        if decision in MOVES_CHAMPION:
            client.set_model_version_tag(name, new_version, "champion_since_decision", run_id)
        record = {
            **(evidence or {}),
            "decision": decision,
            "rule": rule,
            "reason": reason,
            "model_name": name,
            "challenger_version": new_version,
            "champion_before": before,
            "champion_after": after,
            "trigger_reason": ctx.trigger_reason,
            "trigger_evidence": ctx.evidence_uri or None,
            "airflow_dag_id": ctx.dag_id,
            "airflow_run_id": ctx.run_id,
            "decision_key": key,
        }
        return close_record(client, run_id, record)


def promote(settings: Settings, comparison: Comparison, ctx: RunContext, client) -> Decision:
    """Act on a comparison: promote, reject, or (dry run / ``dry_run`` mode) record what would happen."""
    version = comparison.challenger_version
    dry = ctx.dry_run or settings.promotion.mode == "dry_run"
    reason = comparison.reason
    if dry:
        action = DecisionKind.DRY_RUN
        reason = f"dry run, would {comparison.action}: {reason}"
    elif comparison.action == "promote":
        action = DecisionKind.PROMOTED
    else:
        action = DecisionKind.REJECTED
    return move_champion(
        settings,
        client,
        key=f"{ctx.dag_id}/{ctx.run_id}/v{version}",
        action=action,
        expected=comparison.champion_seen,
        new_version=version,
        rule=comparison.rule,
        reason=reason,
        ctx=ctx,
        evidence=comparison.to_xcom(),
    )


def _require_passed(client, name: str, version: str) -> None:
    mv = client.get_model_version(name, version)
    status = mv.tags.get("validation_status")
    if status != "passed":
        raise PromotionRefused(
            f"{name} version {version} has validation_status={status!r}; only 'passed' can serve"
        )


def manual_promote(settings: Settings, version: str, ctx: RunContext, client) -> Decision:
    """Make ``version`` champion by hand; it must have passed validation."""
    name, version = settings.model_name, str(version)
    _require_passed(client, name, version)
    return move_champion(
        settings,
        client,
        key=f"{ctx.dag_id}/{ctx.run_id}/manual/v{version}",
        action=DecisionKind.MANUAL_PROMOTE,
        expected=current_champion(client, name),
        new_version=version,
        rule="manual",
        reason=f"manual promote of version {version} by {ctx.trigger_reason}",
        ctx=ctx,
    )


def rollback(
    settings: Settings, ctx: RunContext, client, to_version: str | None = None
) -> Decision:
    """Move ``champion`` back: to ``to_version``, or to the version that served before the current one."""
    name = settings.model_name
    current = current_champion(client, name)
    if current is None:
        raise PromotionRefused(f"{name} has no champion to roll back")
    if to_version is None:
        for d in list_decisions(client, settings, limit=1000):
            if d.champion_after == current and d.moved:
                to_version = d.champion_before
                break
        if not to_version:
            raise PromotionRefused(f"no earlier champion of {name} is on record; pass --to VERSION")
    to_version = str(to_version)
    _require_passed(client, name, to_version)
    return move_champion(
        settings,
        client,
        key=f"{ctx.dag_id}/{ctx.run_id}/rollback/v{to_version}",
        action=DecisionKind.ROLLBACK,
        expected=current,
        new_version=to_version,
        rule="rollback",
        reason=f"rollback from {current} to {to_version}: {ctx.trigger_reason}",
        ctx=ctx,
    )
