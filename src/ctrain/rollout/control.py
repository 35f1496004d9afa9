"""Roll a challenger out to live traffic: start, judge each step, then promote or roll back.

``ct_rollout`` calls these in order; so does ``ctrain rollout`` from a shell.

- ``start``: a version that may serve (``promote.refusal``) gets the split of the strategy:
  ``shadow`` (it scores every row, answers none), ``canary`` (the first of
  ``canary_steps``), ``ab`` (``ab_percent``). A rollout left running by a run that died is
  replaced, and the record says so.
- ``advance``: looks at the current step's evidence (``evidence.py``). A failed guardrail
  sends all traffic back to the champion at once (a traffic record with the evidence). A step
  passes once it lasted ``step_seconds``, the challenger scored ``min_rows`` rows and every
  guardrail holds; a canary then moves to its next share. A step without enough rows by
  ``step_timeout_seconds`` rolls back: no evidence, no move.
- ``finish``: one decision record. A rollout that passed moves ``champion`` by compare-and-set
  against the champion it started from (``move_champion``), then the split ends; an A/B
  rollout first applies its decision rule to each arm's labeled outcomes. A rollout that failed
  or was aborted is recorded as rejected with the evidence; champion never moved.

Traffic goes back to the champion before anything is recorded, and a promotion moves champion
before the split ends, so at no moment does a row go to a version that is neither.
"""

from __future__ import annotations

import dataclasses
import zlib
from datetime import UTC, datetime
from typing import Any

from ctrain.promotion.promote import PromotionRefused, move_champion, refusal
from ctrain.records import DecisionKind, Record, RunContext
from ctrain.registry import current_champion
from ctrain.rollout.evidence import Evidence, guardrails, measure, write_look
from ctrain.rollout.split import write_split
from ctrain.serving.traffic import RUNNING, Split, now_iso, read_split
from ctrain.settings import Settings
from ctrain.stats import shift_and_se

WAIT, NEXT, PASSED, FAILED, ENDED = "wait", "next", "passed", "failed", "ended"


@dataclasses.dataclass(frozen=True)
class Progress(Record):
    """Where a rollout stands after one look."""

    rollout_id: str
    state: str  # wait | next | passed | failed | ended
    detail: str
    strategy: str = ""
    percent: float = 0.0
    step: int = 0


def start(
    settings: Settings, client, version: str | None, ctx: RunContext, strategy: str | None = None
) -> Split:
    """Begin rolling ``version`` (default: ``@challenger``) out; returns the split now in force.
    A retry of the same run returns the split it began."""
    from ctrain.registry import CHALLENGER, aliased_version

    cfg, name = settings.serving.rollout, settings.model_name
    strategy = strategy or cfg.strategy
    if strategy not in ("shadow", "canary", "ab"):
        raise PromotionRefused(
            f"serving.rollout.strategy is {strategy!r}: a rollout is shadow, canary or ab "
            "(direct promotes at once, in ct_training)"
        )
    if not version:
        mv = aliased_version(client, name, CHALLENGER)
        if mv is None:
            raise PromotionRefused(f"{name} has no @{CHALLENGER} to roll out; pass a version")
        version = str(mv.version)
    version = str(version)
    rollout_id = f"v{version}-{zlib.crc32(f'{ctx.dag_id}/{ctx.run_id}'.encode()):08x}"
    current = read_split(client, name)
    if current.rollout_id == rollout_id:
        return current  # this run began it already: a retry
    why = refusal(settings, client, version)
    if why:
        raise PromotionRefused(why)
    champion = current_champion(client, name)
    if champion is None:
        raise PromotionRefused(f"{name} has no champion to roll out against")
    if champion == version:
        raise PromotionRefused(f"version {version} is champion already")
    percent = {"shadow": 0.0, "canary": cfg.canary_steps[0], "ab": cfg.ab_percent}[strategy]
    expected, expected_se, expected_from = expected_shift_of(settings, client, version, champion)
    now = now_iso()
    new = Split(
        rollout_id=rollout_id,
        strategy=strategy,
        champion=champion,
        challenger=version,
        percent=percent,
        step=0,
        since=now,
        started=now,
        status=RUNNING,
        expected_shift=expected,
        expected_shift_se=expected_se,
        expected_from=expected_from,
    )
    reason = f"{strategy} of v{version} begins: {_share(new)} (champion {champion})"
    if current.active:
        reason += f"; it replaces {current.rollout_id}, left running by a run that stopped"
    return write_split(
        settings, client, new, expected_revision=current.revision, reason=reason, ctx=ctx
    )


def expected_shift_of(
    settings: Settings, client, version: str, champion: str
) -> tuple[float | None, float, str]:
    """How much more often ``version`` predicts positive than ``champion`` on ``version``'s
    held-out rows (the newest of its training window, the rows its comparison used), its
    standard error, and where that comes from; ``(None, 0, why)`` when they cannot be scored.

    A retrain after a change is meant to answer differently from the champion: the prediction
    drift guardrail holds the live shift to this one, not to zero.
    """
    import numpy as np
    import pandas as pd

    from ctrain.model_io import features, positive_scores
    from ctrain.registry import load_model, training_window, version_uri

    spec = settings.dataset
    try:
        folder = training_window(client, settings.model_name, version, settings.datasets_dir)
        if folder is None:
            return None, 0.0, f"no expectation: v{version} names no training window here"
        holdout = pd.read_parquet(folder / "holdout.parquet")
        X = features(holdout, spec)

        def positive(v: str) -> np.ndarray:  # predicted positive, as the service answers
            model = load_model(version_uri(settings.model_name, v))
            return positive_scores(model, X, spec.positive_class) >= 0.5

        new, old = positive(version), positive(champion)
    except Exception as exc:  # said in the split; the guardrails still judge
        why = f"no expectation: v{version}'s held-out rows could not be scored: {exc}"
        return None, 0.0, why
    source = (
        f"{len(holdout)} held-out rows of v{version}'s training window: v{version} "
        f"{new.mean():.1%}, v{champion} {old.mean():.1%}"
    )
    return *shift_and_se(new, old), source


def _share(split: Split) -> str:
    if split.strategy == "shadow":
        return f"v{split.challenger} scores every row in the shadow, the champion answers"
    return f"v{split.challenger} answers {split.percent:g} % of rows (sticky by id)"


def _since(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _evidence(ev: Evidence, checks) -> dict[str, Any]:
    out: dict[str, Any] = {
        "evidence": ev.to_dict(),
        "checks": [dataclasses.asdict(c) for c in checks],
    }
    if ev.paired is not None:  # the live paired comparison goes into the record's figures
        p = ev.paired
        out |= {
            "metric": p["metric"],
            "challenger_metric": p["challenger"],
            "champion_metric": p["champion"],
            "diff": p["diff"],
            "ci_low": p["ci_low"],
            "ci_high": p["ci_high"],
        }
    return out


def _end(
    settings: Settings, client, split: Split, status: str, note: str, ctx: RunContext, **ev
) -> Split:
    """All traffic back to the champion, recorded."""
    ended = dataclasses.replace(split, status=status, note=note, percent=0.0, since="")
    return write_split(
        settings,
        client,
        ended,
        expected_revision=split.revision,
        reason=f"{split.strategy} {split.rollout_id} {status.replace('_', ' ')}: {note}",
        ctx=ctx,
        evidence=ev,
    )


def advance(
    settings: Settings, client, rollout_id: str, ctx: RunContext, now: datetime | None = None
) -> Progress:
    """Judge the current step of ``rollout_id`` and act on it (see the module's docstring)."""
    cfg = settings.serving.rollout
    split = read_split(client, settings.model_name)
    if split.rollout_id != rollout_id:
        return Progress(rollout_id, ENDED, f"the split now belongs to {split.rollout_id or 'none'}")
    if not split.active:
        state = PASSED if split.status == "promoted" else FAILED
        return Progress(rollout_id, state, split.note or split.status, split.strategy)
    now = now or datetime.now(UTC)
    since = _since(split.since)
    elapsed = (now - since).total_seconds()
    ev = measure(settings, split, since)
    checks = guardrails(settings, split, ev)
    write_look(settings, split, ev, checks)
    failed = [c for c in checks if not c.passed]
    enough = ev.challenger_scored >= cfg.min_rows
    # More failures than a whole step may have: the step cannot pass, whatever comes next.
    doomed = ev.challenger_errors > cfg.max_error_rate * cfg.min_rows
    here = f"step {split.step} ({_share(split)})"

    def result(state: str, detail: str, s: Split = split) -> Progress:
        return Progress(rollout_id, state, detail, s.strategy, s.percent, s.step)

    if failed and (enough or doomed):
        note = f"{here}: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        _end(settings, client, split, "rolled_back", note, ctx, **_evidence(ev, checks))
        return result(FAILED, note)
    undecided = split.strategy == "ab" and (ev.per_arm or {}).get("test") is None
    if not enough or elapsed < cfg.step_seconds or undecided:
        if elapsed >= cfg.step_timeout_seconds:
            if not enough:
                note = (
                    f"{here}: only {ev.challenger_scored} rows scored by v{split.challenger} in "
                    f"{elapsed:.0f} s (min_rows {cfg.min_rows}): no evidence, no move"
                )
                _end(settings, client, split, "rolled_back", note, ctx, **_evidence(ev, checks))
                return result(FAILED, note)
            # ab without enough labels by the timeout: the decision rule says inconclusive.
            return result(PASSED, f"{here}: timed out waiting for labels on both arms")
        return result(
            WAIT,
            f"{here}: {ev.challenger_scored}/{cfg.min_rows} rows, {elapsed:.0f}/"
            f"{cfg.step_seconds:.0f} s"
            + (", waiting for labels on both arms" if undecided else ""),
        )
    detail = f"{here} passed: " + "; ".join(c.detail for c in checks)
    if split.strategy == "canary" and split.step + 1 < len(cfg.canary_steps):
        nxt = dataclasses.replace(
            split, step=split.step + 1, percent=cfg.canary_steps[split.step + 1], since=""
        )
        nxt = write_split(
            settings,
            client,
            nxt,
            expected_revision=split.revision,
            reason=f"canary {rollout_id} step {nxt.step}: {_share(nxt)}; step {split.step} "
            f"passed ({'; '.join(c.name for c in checks)})",
            ctx=ctx,
            evidence=_evidence(ev, checks),
        )
        return result(NEXT, detail, nxt)
    return result(PASSED, detail)


def finish(settings: Settings, client, rollout_id: str, ctx: RunContext, passed: bool):
    """Record how ``rollout_id`` ended, in one decision record; promote it if it ``passed``
    (as ``advance`` last said) and, for A/B, its decision rule agrees. Safe to retry."""
    split = read_split(client, settings.model_name)
    if split.rollout_id != rollout_id:
        raise PromotionRefused(
            f"rollout {rollout_id} is no longer the one on record ({split.rollout_id or 'none'})"
        )
    key = f"{ctx.dag_id}/{ctx.run_id}/rollout/{rollout_id}"
    started = _since(split.started)
    ev = measure(settings, split, started)
    evidence = _evidence(ev, guardrails(settings, split, ev))
    action, rule, reason = DecisionKind.REJECTED, f"{split.strategy}_{split.status}", split.note
    if split.status == "promoted":
        action, rule, reason = DecisionKind.PROMOTED, f"{split.strategy}_passed", split.note
    elif split.active and not passed:
        reason = "the rollout stopped before its steps were done (its watch failed or timed out)"
        split = _end(settings, client, split, "rolled_back", reason, ctx, **evidence)
        rule = f"{split.strategy}_rolled_back"
    elif split.active:
        action, rule, reason = _decide(settings, split, ev)
        if action != DecisionKind.PROMOTED:  # traffic back before the record
            split = _end(settings, client, split, "rejected", reason, ctx, **evidence)
    decision = move_champion(
        settings,
        client,
        key=key,
        action=action,
        expected=split.champion,
        new_version=str(split.challenger),
        rule=rule,
        reason=reason,
        ctx=ctx,
        evidence=evidence,
    )
    if split.active:  # promoted (or refused as stale): the split ends after champion moved
        status = "promoted" if decision.moved else "rejected"
        _end(settings, client, split, status, decision.headline, ctx)
    return decision


def _decide(settings: Settings, split: Split, ev: Evidence) -> tuple[DecisionKind, str, str]:
    """The end of a rollout that passed its guardrails: promote, or (A/B) what its rule says."""
    steps = f"{split.step + 1} step(s)" if split.strategy == "canary" else "its step"
    if split.strategy != "ab":
        live = ""
        if ev.paired is not None:
            p = ev.paired
            live = (
                f"; on {ev.labeled_pairs} labeled live rows {p['metric']} "
                f"{p['diff']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]"
            )
        return (
            DecisionKind.PROMOTED,
            f"{split.strategy}_passed",
            f"{split.strategy} of v{split.challenger} passed {steps} of guardrails on "
            f"{ev.challenger_scored} live rows (agreement "
            f"{(ev.agreement or 0):.1%}){live}",
        )
    arms = ev.per_arm or {}
    test = arms.get("test")
    if test is None:
        return (
            DecisionKind.REJECTED,
            "ab_inconclusive",
            f"too few labeled rows on an arm (champion {arms.get('champion_labeled', 0)}, "
            f"challenger {arms.get('challenger_labeled', 0)}; min_labeled_rows "
            f"{settings.serving.rollout.min_labeled_rows}): champion stays",
        )
    interval = f"{test['diff']:+.4f} [{test['ci_low']:+.4f}, {test['ci_high']:+.4f}]"
    if test["ci_low"] > 0:
        return (
            DecisionKind.PROMOTED,
            "ab_better",
            f"{arms['metric']} of the challenger's arm minus the champion's {interval} excludes 0",
        )
    return (
        DecisionKind.REJECTED,
        "ab_not_better",
        f"{arms['metric']} of the challenger's arm minus the champion's {interval} does not "
        "exclude 0: champion stays",
    )


def abort(settings: Settings, client, reason: str, ctx: RunContext) -> Split:
    """Send all traffic back to the champion now; ``ct_rollout`` then records the rejection."""
    split = read_split(client, settings.model_name)
    if not split.active:
        raise PromotionRefused(f"no rollout is running ({split.describe()})")
    return _end(settings, client, split, "aborted", reason, ctx)
