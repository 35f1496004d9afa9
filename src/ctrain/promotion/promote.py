"""Move ``champion``: a compare-and-set under the promotion lock, with exactly one decision record.

Every path that can change the serving model (the pipeline's decision, a manual promote, a
rollback) goes through ``move_champion``. Inside the lock it re-reads ``champion``: if it no longer
points where the comparison saw it, nothing moves and the record says the decision was stale.
"""

from __future__ import annotations

from typing import Any

from ctrain.context import RunContext
from ctrain.promotion import CHAMPION
from ctrain.promotion.decisions import close_record, find_record, list_decisions, open_record
from ctrain.promotion.lock import promotion_lock
from ctrain.settings import Settings


class PromotionRefused(Exception):
    """A manual promote or rollback that the rules do not allow; nothing was changed."""


def current_champion(client, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def move_champion(
    settings: Settings,
    client,
    *,
    key: str,
    action: str,
    expected: str | None,
    new_version: str | None,
    evidence: dict[str, Any],
    ctx: RunContext,
) -> dict[str, Any]:
    """Set ``champion`` to ``new_version`` iff it is still ``expected``; record the outcome once.

    ``action`` is the decision to record when the move happens (``promoted``, ``manual_promote``,
    ``rollback``), or ``rejected`` / ``dry_run`` (nothing moves). Retrying with the same ``key``
    returns the finished record instead of deciding twice.
    """
    name = settings.model_name
    done = find_record(client, settings, key)
    if done is not None and done.info.status == "FINISHED":
        return {**done.data.tags, "record_run_id": done.info.run_id, "replayed": True}

    with promotion_lock(settings):
        run_id = open_record(client, settings, key)
        actual = current_champion(client, name)
        decision, rule, reason = action, evidence.get("rule", action), evidence.get("reason", "")
        before, after = actual, actual
        moves = action in ("promoted", "manual_promote", "rollback")
        if moves and actual == new_version and actual != expected:
            # An earlier attempt of this key moved it, then died before closing the record.
            before = expected
        elif moves and actual != expected:
            decision, rule = "rejected", "stale_champion"
            reason = (
                f"champion moved from {expected or 'none'} to {actual or 'none'} after the comparison; "
                f"refusing to overwrite it with {new_version} (was: {reason})"
            )
        elif moves:
            client.set_registered_model_alias(name, CHAMPION, new_version)
            after = new_version
        if decision in ("promoted", "manual_promote", "rollback"):
            client.set_model_version_tag(name, new_version, "champion_since_decision", run_id)
        record = {
            **evidence,
            "decision": decision,
            "rule": rule,
            "reason": reason,
            "model_name": name,
            "challenger_version": evidence.get("challenger_version", new_version),
            "champion_before": before,
            "champion_after": after,
            "trigger_reason": ctx.trigger_reason,
            "trigger_evidence": ctx.evidence_uri or None,
            "airflow_dag_id": ctx.dag_id,
            "airflow_run_id": ctx.run_id,
            "decision_key": key,
        }
        return close_record(client, run_id, record)


def promote(
    settings: Settings, comparison: dict[str, Any], ctx: RunContext, client
) -> dict[str, Any]:
    """Act on a comparison: promote, reject, or (dry run / ``dry_run`` mode) record what would happen."""
    version = comparison["challenger_version"]
    dry = ctx.dry_run or settings.promotion.mode == "dry_run"
    if comparison["action"] == "promote" and not dry:
        action = "promoted"
    elif dry:
        action = "dry_run"
        comparison = {
            **comparison,
            "reason": f"dry run, would {comparison['action']}: {comparison['reason']}",
        }
    else:
        action = "rejected"
    return move_champion(
        settings,
        client,
        key=f"{ctx.dag_id}/{ctx.run_id}/v{version}",
        action=action,
        expected=comparison["champion_seen"],
        new_version=version,
        evidence=comparison,
        ctx=ctx,
    )


def manual_promote(settings: Settings, version: str, ctx: RunContext, client) -> dict[str, Any]:
    """Make ``version`` champion by hand; it must have passed validation."""
    name = settings.model_name
    mv = client.get_model_version(name, str(version))
    if mv.tags.get("validation_status") != "passed":
        raise PromotionRefused(
            f"{name} version {version} has validation_status={mv.tags.get('validation_status')!r}; only 'passed' can serve"
        )
    expected = current_champion(client, name)
    return move_champion(
        settings,
        client,
        key=f"{ctx.dag_id}/{ctx.run_id}/manual/v{version}",
        action="manual_promote",
        expected=expected,
        new_version=str(version),
        evidence={
            "rule": "manual",
            "reason": f"manual promote of version {version} by {ctx.trigger_reason}",
        },
        ctx=ctx,
    )


def rollback(
    settings: Settings, ctx: RunContext, client, to_version: str | None = None
) -> dict[str, Any]:
    """Move ``champion`` back: to ``to_version``, or to the version that served before the current one."""
    name = settings.model_name
    current = current_champion(client, name)
    if current is None:
        raise PromotionRefused(f"{name} has no champion to roll back")
    if to_version is None:
        for d in list_decisions(client, settings, limit=1000):
            if d["champion_after"] == current and d["decision"] in (
                "promoted",
                "manual_promote",
                "rollback",
            ):
                to_version = d["champion_before"] or None
                break
        if not to_version:
            raise PromotionRefused(f"no earlier champion of {name} is on record; pass --to VERSION")
    mv = client.get_model_version(name, str(to_version))
    if mv.tags.get("validation_status") != "passed":
        raise PromotionRefused(f"version {to_version} has not passed validation")
    return move_champion(
        settings,
        client,
        key=f"{ctx.dag_id}/{ctx.run_id}/rollback/v{to_version}",
        action="rollback",
        expected=current,
        new_version=str(to_version),
        evidence={
            "rule": "rollback",
            "reason": f"rollback from {current} to {to_version}: {ctx.trigger_reason}",
        },
        ctx=ctx,
    )
