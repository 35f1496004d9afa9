"""Move ``champion``: a compare-and-set under the promotion lock, with exactly one decision record.

Every path that can change the serving model (the pipeline's decision, a manual promote, a
rollback) goes through ``move_champion``. Inside the lock it re-reads ``champion``: if it no longer
points where the comparison saw it, nothing moves and the record says the decision was stale; if
it already points at the new version, nothing moves and the record says so.

The history is true after any crash: a record claims a move only if its own call made it. Before
moving, the record is written ahead with its intent; whoever next takes the lock first
reconciles (``reconcile``): an open record whose intended move shows in the alias is closed as
that move, one whose move never happened is marked interrupted (a retry of its key resumes it),
and an alias moved outside ctrain is recorded as found. Moves are numbered in the order they
happen (the record's ``move``), so the history is theirs, not the order records were opened.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

from ctrain.promotion.decisions import (
    close_record,
    describe_champion,
    find_record,
    last_move,
    mark_interrupted,
    open_record,
    open_records,
    read_intent,
    record_of,
    write_intent,
)
from ctrain.promotion.lock import LockTimeout, promotion_lock
from ctrain.records import (
    MOVES_CHAMPION,
    Comparison,
    DatasetWindow,
    Decision,
    DecisionKind,
    RunContext,
)
from ctrain.registry import (
    CHALLENGER,
    CHAMPION,
    UnsafeModel,
    check_model,
    current_champion,
    registered_version_of,
    training_window,
    version_uri,
)
from ctrain.settings import Settings
from ctrain.storage import read_json

log = logging.getLogger(__name__)


class PromotionRefused(Exception):
    """A manual promote or rollback that the rules do not allow; nothing was changed."""


def settle(settings: Settings, client, wait_s: float = 5.0) -> list[Decision] | None:
    """Reconcile if the promotion lock is free within ``wait_s``: the records a killed move left
    open are closed as what they were. None when a move holds the lock (it is under way)."""
    try:
        with promotion_lock(settings, timeout=wait_s):
            return reconcile(settings, client)
    except LockTimeout:
        return None


def reconcile(settings: Settings, client) -> list[Decision]:
    """Make the records agree with the alias; call it holding the promotion lock.

    Returns the records it closed as moves (a completed interrupted move, an external move).
    """
    name = settings.model_name
    actual = current_champion(client, name)
    closed = []
    for run in open_records(client, settings):
        intent = read_intent(client, run)
        if intent is not None and actual == intent["champion_after"]:
            # Its process moved the alias, then died before closing the record: it was a move.
            closed.append(_close_move(settings, client, run.info.run_id, intent))
        else:
            mark_interrupted(
                client,
                run.info.run_id,
                "its process stopped before moving champion; nothing moved",
            )
    last = last_move(client, settings)
    recorded = last.champion_after if last else None
    if actual != recorded:
        # The alias moved without a ctrain record (by hand, in MLflow): record it as found.
        key = f"external/{recorded or 'none'}->{actual or 'none'}/{(last.move if last else 0) + 1}"
        run_id = open_record(client, settings, key)
        closed.append(
            _close_move(
                settings,
                client,
                run_id,
                {
                    "decision": DecisionKind.EXTERNAL,
                    "rule": "external",
                    "reason": f"champion found at {actual or 'none'}, last recorded at "
                    f"{recorded or 'none'}: moved outside ctrain",
                    "model_name": name,
                    "challenger_version": actual,
                    "champion_before": recorded,
                    "champion_after": actual,
                    "trigger_reason": "found by reconcile",
                    "airflow_dag_id": "",
                    "airflow_run_id": "",
                    "decision_key": key,
                },
            )
        )
    return closed


def _close_move(settings: Settings, client, run_id: str, record: dict[str, Any]) -> Decision:
    """Close a record as the next move of the champion."""
    last = last_move(client, settings)
    decision = close_record(client, run_id, {**record, "move": (last.move if last else 0) + 1})
    if decision.champion_after:
        describe_champion(client, settings, decision)
    return decision


def follow_reference(settings: Settings, client) -> str | None:
    """Make the champion's learned reference the one batches are validated against, and send
    rows only the old one quarantined through ingest again; returns the champion's version."""
    from ctrain.ingest.profile import follow_champion
    from ctrain.ingest.revalidate import requeue_learned_only

    version = current_champion(client, settings.model_name)
    if version is None:
        return None
    folder = training_window(client, settings.model_name, version, settings.datasets_dir)
    if folder is None:
        log.warning(
            "champion %s has no training window in %s: the learned reference stays as it is",
            version,
            settings.datasets_dir,
        )
        return version
    if follow_champion(settings, version, folder):
        log.info("learned reference now that of champion %s (%s)", version, folder.name)
    requeue_learned_only(settings, version)
    return version


def _then_follow_reference(move):
    """Whatever ``move`` decided, the learned reference ingest validates against then follows
    the champion (also on a retry after a crash past the move)."""

    @functools.wraps(move)
    def moved(settings: Settings, client, **kwargs) -> Decision:
        decision = move(settings, client, **kwargs)
        follow_reference(settings, client)
        return decision

    return moved


@_then_follow_reference
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
    finished record instead of deciding twice. Whatever was decided, the learned reference ingest
    validates against then follows the champion.
    """
    name = settings.model_name
    done = find_record(client, settings, key)
    if done is not None and done.info.status == "FINISHED":
        return dataclasses.replace(record_of(done), replayed=True)

    with promotion_lock(settings):
        reconcile(settings, client)
        done = find_record(client, settings, key)  # reconcile may have finished our own move
        if done is not None and done.info.status == "FINISHED":
            return dataclasses.replace(record_of(done), replayed=True)
        run_id = open_record(client, settings, key)
        actual = current_champion(client, name)
        decision = action
        if action in MOVES_CHAMPION and actual != expected:
            decision, rule = DecisionKind.REJECTED, "stale_champion"
            reason = (
                f"champion moved from {expected or 'none'} to {actual or 'none'} after the "
                f"comparison; refusing to overwrite it with {new_version} (was: {reason})"
            )
        elif action in MOVES_CHAMPION and actual == new_version:
            decision, rule = DecisionKind.REJECTED, "already_champion"
            reason = f"version {new_version} is champion already: nothing to move (was: {reason})"
        record = {
            **(evidence or {}),
            "decision": decision,
            "rule": rule,
            "reason": reason,
            "model_name": name,
            "challenger_version": new_version,
            "champion_before": actual,
            "champion_after": actual,
            "trigger_reason": ctx.trigger_reason,
            "trigger_evidence": ctx.evidence_uri or None,
            "started_by": ctx.started_by or None,
            "airflow_dag_id": ctx.dag_id,
            "airflow_run_id": ctx.run_id,
            "decision_key": key,
        }
        if decision not in MOVES_CHAMPION:
            return close_record(client, run_id, record)
        record["champion_after"] = new_version
        write_intent(client, run_id, record)  # ahead of the move: a crash after it is resumable
        client.set_registered_model_alias(name, CHAMPION, new_version)
        client.set_model_version_tag(name, new_version, "champion_since_decision", run_id)
        return _close_move(settings, client, run_id, record)


# Rules under which a version may not even stand as challenger: it failed its gates.
GATE_RULES = frozenset({"validation", "floor", "predeployment"})


def comparison_evidence(comparison: Comparison) -> dict[str, Any]:
    """The comparison and what its file adds (floors, slices), for the record and the model card."""
    path = Path(comparison.comparison_uri) if comparison.comparison_uri else None
    extra = read_json(path) if path and path.is_file() else {}
    kept = ("floors", "slices", "predeployment")
    return {**comparison.to_xcom(), **{k: extra[k] for k in kept if k in extra}}


def promote(
    settings: Settings,
    comparison: Comparison,
    ctx: RunContext,
    client,
    extra: dict[str, Any] | None = None,
) -> Decision:
    """Act on a comparison: promote, reject, or (dry run / ``dry_run`` mode) record what would happen.

    With ``serving.rollout.strategy`` shadow, canary or ab, a winning challenger is recorded as
    handed to a rollout (``rollout``) and champion stays: ``ct_rollout`` promotes or rolls back.

    A version that passed validation and the floors is aliased ``challenger`` (the latest
    candidate that may serve); one that failed them never is. ``extra`` goes into the record
    (the approver and their comment, when a person approved).
    """
    version = comparison.challenger_version
    dry = ctx.dry_run or settings.promotion.mode == "dry_run"
    reason = comparison.reason
    if comparison.rule not in GATE_RULES:
        client.set_registered_model_alias(settings.model_name, CHALLENGER, version)
    if dry:
        action = DecisionKind.DRY_RUN
        reason = f"dry run, would {comparison.action}: {reason}"
    elif comparison.action == "promote" and _rolled_out(settings, comparison):
        # The challenger won offline; live traffic decides (ct_rollout), champion stays.
        action = DecisionKind.ROLLOUT
        reason = f"won its comparison ({reason}); {settings.serving.rollout.strategy} on live traffic decides"
    elif comparison.action == "promote":
        action = DecisionKind.PROMOTED
    else:
        action = DecisionKind.REJECTED
    decision = move_champion(
        settings,
        client,
        key=f"{ctx.dag_id}/{ctx.run_id}/v{version}",
        action=action,
        expected=comparison.champion_seen,
        new_version=version,
        rule=comparison.rule,
        reason=reason,
        ctx=ctx,
        evidence=comparison_evidence(comparison) | (extra or {}),
    )
    log.info("decision: %s (%s)", decision.headline, decision.reason)
    return decision


def _rolled_out(settings: Settings, comparison: Comparison) -> bool:
    """Whether a winning challenger goes to a rollout instead of moving champion at once: a
    rollout strategy is set and there is a champion to roll out against."""
    return settings.serving.rollout.strategy != "direct" and bool(comparison.champion_seen)


def record_skip(
    settings: Settings, client, ctx: RunContext, version: str, dataset: DatasetWindow
) -> Decision:
    """Record that this run trains nothing: ``version`` was trained on the same window and config."""
    return move_champion(
        settings,
        client,
        key=f"{ctx.dag_id}/{ctx.run_id}/skipped",
        action=DecisionKind.SKIPPED,
        expected=current_champion(client, settings.model_name),
        new_version=version,
        rule="identical_window",
        reason=(
            f"the window ({dataset.span}; data hash {dataset.content_hash[:12]}) and the "
            f"training config are those of version {version}: no new version (force=true "
            "trains anyway)"
        ),
        ctx=ctx,
    )


def refusal(settings: Settings, client, version: str) -> str | None:
    """Why ``version`` may not serve, in one line, or None when it may.

    It must have passed validation, come from ctrain's own training (a finished training run of
    the training experiment whose logged model is this version's source, and the version that
    run's registration made: the same model registered again by hand is not), and load safely.
    """
    from mlflow.exceptions import MlflowException

    name = settings.model_name
    try:
        mv = client.get_model_version(name, version)
    except MlflowException:
        return f"{name} has no version {version}"
    status = mv.tags.get("validation_status")
    if status != "passed":
        return f"{name} version {version} has validation_status={status!r}; only 'passed' can serve"
    try:
        run = client.get_run(mv.run_id) if mv.run_id else None
    except MlflowException:
        run = None
    training = client.get_experiment_by_name(settings.experiment)
    if (
        run is None
        or training is None
        or run.info.experiment_id != training.experiment_id
        # trained here, or carried in from another environment with its bytes verified
        or run.data.tags.get("ctrain_stage") not in ("trained", "carried")
        or run.data.tags.get("model_uri") != mv.source
    ):
        return f"{name} version {version} was not produced by ctrain's training ({mv.source})"
    ours = registered_version_of(client, name, run)
    if ours != str(version):
        return (
            f"{name} version {version} was registered outside ctrain's training: its training "
            f"run {run.info.run_id} is version {ours}'s"
        )
    try:
        # A carried version's files must still be those verified when it was carried.
        check_model(
            version_uri(name, version),
            settings.resolved_tracking_uri,
            sha256=mv.tags.get("model_sha256"),
        )
    except UnsafeModel as exc:
        return f"{name} version {version} does not load safely: {exc}"
    return None


def _move_by_hand(
    settings: Settings,
    client,
    *,
    action: DecisionKind,
    version: str,
    expected: str | None,
    reason: str,
    ctx: RunContext,
) -> Decision:
    """A person's move (promote or rollback) of ``champion`` to ``version``: refused with a record
    when ``version`` may not serve, else a compare-and-set against ``expected``."""
    key = f"{ctx.dag_id}/{ctx.run_id}/{action}/v{version}"
    why = refusal(settings, client, version)
    if why:
        rec = move_champion(
            settings,
            client,
            key=key,
            action=DecisionKind.REJECTED,
            expected=expected,
            new_version=version,
            rule="refused",
            reason=why,
            ctx=ctx,
        )
        raise PromotionRefused(f"{why} (recorded: {rec.record_run_id})")
    rule = "manual" if action == DecisionKind.MANUAL_PROMOTE else str(action)
    return move_champion(
        settings,
        client,
        key=key,
        action=action,
        expected=expected,
        new_version=version,
        rule=rule,
        reason=reason,
        ctx=ctx,
    )


def manual_promote(settings: Settings, version: str, ctx: RunContext, client) -> Decision:
    """Make ``version`` champion by hand; it must be one that may serve (``refusal``)."""
    version = str(version)
    return _move_by_hand(
        settings,
        client,
        action=DecisionKind.MANUAL_PROMOTE,
        version=version,
        expected=current_champion(client, settings.model_name),
        reason=f"manual promote of version {version} by {ctx.trigger_reason}",
        ctx=ctx,
    )


def _move_text(move: Decision | None) -> str:
    return "none" if move is None else f"{move.champion_before} -> {move.champion_after}"


def rollback(
    settings: Settings, ctx: RunContext, client, to_version: str | None = None
) -> Decision:
    """Move ``champion`` back: to ``to_version``, or to the version that served before the current one.

    Without ``to_version`` the champion and its history are read together, under the promotion
    lock and after reconciling, so the move followed is the one that made the champion the call
    moves from (read before the lock, a move made while the call waited made them disagree).
    """
    name = settings.model_name
    if to_version is None:
        with promotion_lock(settings):
            reconcile(settings, client)  # the history must be true before it is followed
            current, last = current_champion(client, name), last_move(client, settings)
    else:
        current, last = current_champion(client, name), None
    if current is None:
        raise PromotionRefused(f"{name} has no champion to roll back")
    if to_version is None:
        if last is None or last.champion_after != current:
            raise PromotionRefused(
                f"the records of {name} do not say how version {current} became champion "
                f"(last recorded move: {_move_text(last)}); pass --to VERSION"
            )
        if not last.champion_before:
            raise PromotionRefused(
                f"version {current} is the first champion of {name}: there is none before it "
                "to roll back to; pass --to VERSION"
            )
        to_version = last.champion_before
    to_version = str(to_version)
    return _move_by_hand(
        settings,
        client,
        action=DecisionKind.ROLLBACK,
        version=to_version,
        expected=current,
        reason=f"rollback from {current} to {to_version}: {ctx.trigger_reason}",
        ctx=ctx,
    )
