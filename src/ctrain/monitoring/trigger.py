"""Decide whether to retrain, with hygiene: debounce, cooldown, one request at a time.

A window is flagged when its data drifted (share of drifted features past ``drift_share``, or of
rows outside the champion's learned reference past ``outside_reference_share``, on at least
``min_rows`` rows) or its matured performance dropped past ``performance_drop``. Drift that the
performance estimate calls harmless (its whole estimated drop within the tolerance) does not
count. Retraining is requested when ``debounce_k`` of the last ``debounce_n`` windows checked
under the current champion are flagged, or at once on one window whose evidence is decisive:
a realised or estimated drop whose whole interval at ``decisive_confidence`` is past the
tolerance, or severe drift (drifted features carrying ``severe_drift_importance`` of the
champion's importance) the estimate does not call harmless. Marginal signals wait, decisive ones
do not. A request is held back until ``cooldown_windows`` windows newer than the last request's
have been checked on the same champion (counted in windows, not minutes, so it means the same at
any cadence; ``cooldown_minutes`` adds a wall-clock floor, off by default), when a request already
covered these windows, ct_training is queued or running (the verdict then names the retrain
asked for and where it is: queued, training, waiting for approval), or earlier requests did not
replace the champion and too few windows were flagged since (``_backing_off``). A decisive drop
significantly worse than the one the last request answered (its interval wholly past that one's)
is new evidence: it asks again through the cooldown and the back-off, and says so. After a
request that did not replace the champion, the next one trains from its own newer evidence on
(``change_from``), not again from where the rejected one began. Every request is
logged with its evidence and the ct_training run it starts; the monitor never waits for that
run, so it goes on checking every window while a person or a rollout decides.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ctrain.dag_ids import APPROVAL_TASK
from ctrain.monitoring.check import load_rescored, load_summaries
from ctrain.records import DatasetWindow, RetrainVerdict, WindowCheck
from ctrain.registry import current_champion, training_window
from ctrain.settings import Settings
from ctrain.storage import read_json, write_json_atomic
from ctrain.tracking import ensure_experiment


def _log_path(settings: Settings) -> Path:
    return settings.monitor_dir / "triggers.json"


def trigger_log(settings: Settings) -> list[RetrainVerdict]:
    """Every retrain request, oldest first."""
    path = _log_path(settings)
    return [RetrainVerdict.from_xcom(e) for e in read_json(path)] if path.exists() else []


# (run state, {task id: state}) of a ct_training run by its id; None where no such run is active.
RunState = Callable[[str], tuple[str, dict[str, str]] | None]


@dataclasses.dataclass(frozen=True)
class PendingRetrain:
    """A retrain the monitor asked for whose ct_training run has not ended, and where it is."""

    request: RetrainVerdict
    stage: str  # queued | training | waiting for approval

    @property
    def run_id(self) -> str:
        return self.request.requested_run

    def describe(self) -> str:
        return (
            f"the retrain asked for at {self.request.decided_at} is {self.stage} (ct_training "
            f"run {self.run_id}); windows checked meanwhile are kept for the decision after it"
        )


def planned_follow_up(settings: Settings, run_id: str) -> RetrainVerdict | None:
    """The monitor's request that started ct_training run ``run_id`` when it is the planned
    follow-up on a grown window (``_grown``), else None."""
    for e in trigger_log(settings):
        if e.requested_run == run_id and e.reason.startswith(GROWN):
            return e
    return None


def requested_run_id(key: str) -> str:
    """The id of the ct_training run a request of monitor run ``key`` starts: chosen before the
    run exists, so the request names it and a retried trigger finds it."""
    return "retrain__" + re.sub(r"[^A-Za-z0-9_.~:+-]", "_", key.rsplit("/", 1)[-1])[:200]


def pending_retrain(settings: Settings, run_state: RunState) -> PendingRetrain | None:
    """The newest request whose ct_training run is queued or running, and its stage."""
    requested = [e for e in trigger_log(settings) if e.requested_run]
    if not requested:
        return None
    last = requested[-1]
    found = run_state(last.requested_run)
    if found is None:
        return None
    state, tasks = found
    if str(tasks.get(APPROVAL_TASK)) in ("awaiting_input", "deferred"):
        stage = "waiting for approval"
    else:
        stage = "queued" if state == "queued" else "training"
    return PendingRetrain(last, stage)


def _harmless(w: WindowCheck) -> bool:
    """Whether the performance estimate says the window's shift costs less than the tolerance."""
    return w.estimate is not None and w.estimate.harmless


def _estimated(w: WindowCheck, settings: Settings) -> str:
    e = w.estimate
    return (
        f"estimated performance drop on {w.batch_id} before its labels ({e.metric} "
        f"~{e.value:.4f} vs champion {w.performance.champion_value:.4f}, drop {e.drop:+.4f} "
        f"[{e.drop_low:+.4f}, {e.drop_high:+.4f}] at "
        f"{settings.monitoring.decisive_confidence:.0%} on {w.rows} rows, past the "
        f"{settings.monitoring.performance_drop} tolerance)"
    )


def _severe(w: WindowCheck) -> str:
    return (
        f"severe drift on {w.batch_id} (features carrying {w.drift_severity:.0%} of the "
        f"champion's importance drifted: {', '.join(w.drifted_columns or w.outside_columns)})"
    )


def _reason(
    drift: list[WindowCheck],
    n: int,
    perf: list[WindowCheck],
    m: int,
    settings: Settings,
    at_once: list[WindowCheck] = (),
) -> str:
    parts = []
    estimated = [w for w in at_once if "estimated_drop" in w.flags]
    if estimated:
        parts.append(_estimated(estimated[0], settings))
    severe = [w for w in at_once if w.severe_drift and w not in estimated]
    if severe:
        parts.append(_severe(severe[0]))
    decisive = [w for w in perf if w.performance.decisive]
    if decisive:
        w = max(decisive, key=lambda w: w.performance.drop or 0.0)
        p = w.performance
        parts.append(
            f"decisive performance drop on {w.batch_id}{_rescored(w)} ({p.metric} {p.value:.4f} "
            f"vs champion {p.champion_value:.4f}, drop {p.drop:+.4f} "
            f"[{p.drop_low:+.4f}, {p.drop_high:+.4f}] at "
            f"{settings.monitoring.decisive_confidence:.0%} on {p.labeled_rows} labeled rows, "
            f"past the {settings.monitoring.performance_drop} tolerance)"
        )
    if drift:
        cols = sorted({c for w in drift for c in w.drifted_columns})
        share = max(w.share_drifted for w in drift)
        out = max(w.outside_reference for w in drift)
        outside = sorted({c for w in drift for c in w.outside_columns})
        parts.append(
            f"data drift in {len(drift)} of the last {n} windows "
            f"(up to {share:.0%} of features; drifted: {', '.join(cols) or 'none'}"
            + (
                f"; up to {out:.0%} of rows outside the champion's learned reference on "
                f"{', '.join(outside)}"
                if out >= settings.monitoring.outside_reference_share
                else ""
            )
            + ")"
        )
    if perf and not decisive:
        worst = max(perf, key=lambda w: w.performance.drop or 0.0).performance
        parts.append(
            f"performance drop in {len(perf)} of the last {m} label-matured windows "
            f"({worst.metric} {worst.value:.4f} vs champion {worst.champion_value:.4f} "
            f"on {worst.labeled_rows} labeled rows)"
        )
    return "; ".join(parts)


def _rescored(w: WindowCheck) -> str:
    """Whose evidence a window is, when the champion was judged on rows another version served."""
    if not w.rescored_from:
        return ""
    return f" (v{w.champion_version}'s own scores on the rows v{w.rescored_from} served)"


def with_rescored(summaries: list[WindowCheck], rescored: list[WindowCheck]) -> list[WindowCheck]:
    """``summaries`` with the champion's own checks in place of other versions' on the same
    windows (``check.rescore_newer_windows``), oldest window first."""
    by_id = {s.batch_id: s for s in summaries} | {s.batch_id: s for s in rescored}
    return sorted(by_id.values(), key=lambda s: (s.window_end, s.batch_id))


def _marginal(perf: list[WindowCheck]) -> str:
    """Why a window that dropped did not act alone: its interval reaches back to the tolerance."""
    if not perf:
        return ""
    p = perf[-1].performance
    if p.drop_low is None:
        return ""
    return (
        f" (the drop on {perf[-1].batch_id}, {p.drop:+.4f} [{p.drop_low:+.4f}, "
        f"{p.drop_high:+.4f}] on {p.labeled_rows} labeled rows, is not decisive)"
    )


def _backing_off(
    log: list[RetrainVerdict], champion_version: str | None, flagged: tuple[str, ...]
) -> str | None:
    """Why no request now, when earlier requests did not replace the champion.

    Each retrain asked for while ``champion_version`` stayed champion is evidence that retraining
    does not help on this data (the challengers lost their comparison). After n of them, the next
    needs 2**(n-1) flagged windows newer than the earlier requests': on data no model does
    better on, a stream of one batch a window costs a few trainings, not one per window.
    """
    mine = [e for e in log if e.champion_version == champion_version]
    if not mine:
        return None
    need = 2 ** (len(mine) - 1)
    new = set(flagged) - {w for e in mine for w in e.flagged_windows}
    if len(new) >= need:
        return None
    return (
        f"backing off: {len(mine)} retrain(s) asked for while v{champion_version} stayed "
        f"champion did not replace it; the next needs {need} newly flagged windows "
        f"({len(new)} so far)"
    )


def _windows_since(mine: list[WindowCheck], last: RetrainVerdict) -> list[WindowCheck]:
    """Windows of ``mine`` newer than every window the request ``last`` judged."""
    ids = [s.batch_id for s in mine]
    seen = [ids.index(b) for b in last.windows if b in ids]
    return mine[max(seen) + 1 :] if seen else mine


def _worse_than_answered(
    decisive: list[WindowCheck], last: RetrainVerdict | None, summaries: list[WindowCheck]
) -> str:
    """Why the newest decisive drop is new evidence after request ``last`` (on this champion):
    its interval lies wholly past the worst decisive drop that request answered, or that
    request answered none. Empty when it is not."""
    if last is None or not decisive:
        return ""
    by_id = {s.batch_id: s for s in summaries}
    answered = [
        by_id[b]
        for b in last.flagged_windows
        if b in by_id and by_id[b].performance.decisive and by_id[b].performance.drop is not None
    ]
    worst = max(decisive, key=lambda w: w.performance.drop or 0.0)
    p = worst.performance
    if not answered:
        return (
            f"the decisive drop on {worst.batch_id} is new evidence: the request at "
            f"{last.decided_at} answered no measured drop"
        )
    before = max(answered, key=lambda w: w.performance.drop or 0.0)
    q = before.performance
    if worst.batch_id == before.batch_id or (p.drop_low or 0.0) <= (q.drop_high or 0.0):
        return ""
    return (
        f"the drop on {worst.batch_id} ({p.drop:+.4f} [{p.drop_low:+.4f}, {p.drop_high:+.4f}]) "
        f"is significantly worse than the one the request at {last.decided_at} answered "
        f"({before.batch_id} {q.drop:+.4f} [{q.drop_low:+.4f}, {q.drop_high:+.4f}])"
    )


def _calls_harmless(harmless: list[WindowCheck]) -> str:
    """Why drifted windows did not count: the estimate says the shift costs little."""
    if not harmless:
        return ""
    w = harmless[-1]
    e = w.estimate
    return (
        f" ({len(harmless)} drifted window(s) not counted: the estimate calls the shift "
        f"harmless, e.g. {w.batch_id} {e.metric} ~{e.value:.4f}, drop {e.drop:+.4f} "
        f"[{e.drop_low:+.4f}, {e.drop_high:+.4f}])"
    )


GROWN = "the window after the change has grown"


def _grown(
    settings: Settings,
    summaries: list[WindowCheck],
    champion_version: str | None,
    learned: tuple[str, int] | None,
) -> tuple[list[WindowCheck], str]:
    """The labeled windows from the change on, and the reason, when the champion was trained at a
    change on fewer than ``settle_batches`` of them and that many have matured since; once per
    champion (a rejected follow-up is not asked for again)."""
    settle = settings.monitoring.settle_batches
    if not learned or not settle or learned[1] >= settle:
        return [], ""
    since, n_learned = learned
    ids = [s.batch_id for s in summaries]
    if since not in ids:
        return [], ""
    after = [s for s in summaries[ids.index(since) :] if s.performance.status == "matured"]
    if len(after) < settle:
        return [], ""
    if any(
        e.champion_version == champion_version and e.reason.startswith(GROWN)
        for e in trigger_log(settings)
    ):
        return [], ""
    learned_what = (
        f"from {n_learned} labeled batch{'' if n_learned == 1 else 'es'} from {since} on"
        if n_learned
        else f"from no labeled batch from {since} on (its window was topped up from before)"
    )
    return after, (
        f"{GROWN}: v{champion_version} learned {learned_what}, {len(after)} have matured since "
        f"(monitoring.settle_batches={settle})"
    )


def decide_retrain(
    settings: Settings,
    summaries: list[WindowCheck],
    champion_version: str | None,
    now: datetime,
    training_active: bool,
    learned: tuple[str, int] | None = None,
    rollout: str = "",
    pending: PendingRetrain | None = None,
) -> RetrainVerdict:
    """The verdict on the recent windows: ``trigger`` true with a reason, or why not.

    Each signal is debounced over its own windows: data drift over the last ``debounce_n``
    windows, performance over the last ``debounce_n`` windows whose labels have matured (labels
    arrive late, so those are older windows). ``learned`` is where the champion's training window
    started at a change, and how many labeled batches it had from there (``_grown``).
    ``rollout`` says which rollout holds traffic, when one does: no request is made then.
    ``pending`` is the retrain asked for earlier whose run has not ended (no request then; the
    verdict names it, whether or not the windows call for one).
    """
    cfg = settings.monitoring
    k, n = cfg.debounce_k, cfg.debounce_n
    mine = [s for s in summaries if s.champion_version == champion_version]
    recent = mine[-n:]
    matured = [s for s in mine if s.performance.status == "matured"][-n:]
    # Drift the performance estimate calls harmless is logged, and does not count.
    drift = [s for s in recent if "data_drift" in s.flags and not _harmless(s)]
    harmless = [s for s in recent if "data_drift" in s.flags and _harmless(s)]
    perf = [s for s in matured if s.performance.degraded]
    # Evidence one window is enough for: an estimated drop wholly past the tolerance, or severe
    # drift on the features the champion leans on (both before labels).
    at_once = [s for s in recent if "estimated_drop" in s.flags or s.severe_drift]
    verdict = RetrainVerdict(
        trigger=False,
        champion_version=champion_version,
        windows=tuple(s.batch_id for s in recent),
        flagged_windows=tuple(sorted({s.batch_id for s in [*drift, *perf, *at_once]})),
        reason="",
        suppressed_by=None,
        decided_at=now.isoformat(),
        window_batches=cfg.retrain_window_batches,
    )
    decisive = [s for s in perf if s.performance.decisive]
    drift_fires, perf_fires = len(drift) >= k, len(perf) >= k or bool(decisive)
    fires = drift_fires or perf_fires or bool(at_once)
    grown, grown_reason = _grown(settings, summaries, champion_version, learned)
    # A planned follow-up: no new evidence against the champion, which learned the new regime
    # from too little. It is the retrain's own plan, not a reaction (no cooldown holds it).
    follow_up = bool(grown) and not fires
    if follow_up:
        # Trained on all of them: the window of a request after drift is capped, this one not.
        verdict = dataclasses.replace(
            verdict, flagged_windows=tuple(s.batch_id for s in grown), window_batches=0
        )
    elif not fires:
        return dataclasses.replace(
            verdict,
            suppressed_by=pending.describe() if pending else None,
            pending_run=pending.run_id if pending else "",
            reason=(
                f"data drift in {len(drift)} of the last {len(recent)} windows, performance drop "
                f"in {len(perf)} of the last {len(matured)} label-matured windows; {k} needed"
                + _marginal(perf)
                + _calls_harmless(harmless)
            ),
        )
    # Every signal that fired is named, also one short of its own debounce: a person reading
    # why the model was retrained on drift wants to know its performance fell as well.
    reason = (
        grown_reason
        if follow_up
        else _reason(drift, len(recent), perf, len(matured), settings, at_once)
    )
    if harmless:
        reason += "; " + _calls_harmless(harmless).strip(" ()")
    log = trigger_log(settings)
    last = log[-1] if log else None
    # The last request on this champion: it did not replace it (rejected, or still pending).
    mine_last = last if last and last.champion_version == champion_version else None
    worse = _worse_than_answered(decisive, mine_last, summaries)
    if worse:
        reason = f"{reason}; {worse}"
    since = _windows_since(mine, mine_last) if mine_last else []
    suppressed_by = None
    if pending:
        suppressed_by = pending.describe()
    elif training_active:
        suppressed_by = "ct_training is queued or running"
    elif rollout:
        # A retrain would be compared with a champion the rollout may be about to replace, and
        # its own rollout would queue behind this one: the rollout's outcome comes first.
        suppressed_by = rollout
    elif worse:
        pass  # new evidence, worse than what the last request answered: asked for at once
    elif follow_up:
        pass  # the retrain's own plan: no cooldown holds it
    elif last and now - datetime.fromisoformat(last.decided_at) < timedelta(
        minutes=cfg.cooldown_minutes
    ):
        suppressed_by = (
            f"cooldown: last request at {last.decided_at} (cooldown {cfg.cooldown_minutes:g} min)"
        )
    elif mine_last and len(since) < cfg.cooldown_windows:
        suppressed_by = (
            f"cooldown: {len(since)} of {cfg.cooldown_windows} window(s) checked since the "
            f"request at {mine_last.decided_at}"
        )
    elif mine_last and set(verdict.flagged_windows) <= set(mine_last.flagged_windows):
        suppressed_by = "already requested for these windows"
    else:
        flagged_since = tuple(s.batch_id for s in mine if s.flags or s.severe_drift)
        suppressed_by = _backing_off(log, champion_version, flagged_since)
    # The change began at the first flagged window: the retrain trains from there on. After a
    # request that did not replace the champion, from the evidence that came after it: the
    # rejected retrain's window began too early (the new regime was still a minority there).
    flagged = set(verdict.flagged_windows)
    newer = flagged - set(mine_last.flagged_windows) if mine_last else set()
    change_from = next(s.batch_id for s in summaries if s.batch_id in (newer or flagged))
    return dataclasses.replace(
        verdict,
        trigger=suppressed_by is None,
        reason=reason,
        suppressed_by=suppressed_by,
        change_from=change_from,
        pending_run=pending.run_id if pending else "",
    )


def _evidence_of(check: WindowCheck) -> dict[str, Any]:
    """A window's full evidence: its summary document (per-column statistics included)."""
    path = Path(check.summary_uri) if check.summary_uri else None
    return read_json(path) if path and path.exists() else check.to_xcom()


def record_request(
    settings: Settings,
    verdict: RetrainVerdict,
    key: str,
    summaries: list[WindowCheck],
    client=None,
) -> RetrainVerdict:
    """Log a retrain request once per ``key`` (a retry returns the first), with its evidence.

    The evidence (every flagged window's summary) is written under ``monitor/requests/`` and,
    given a ``client``, uploaded into an MLflow run of the monitoring experiment: the request
    then names it by artifact URI, which any worker or reader can open.
    """
    log = trigger_log(settings)
    for entry in log:
        if entry.key == key:
            return entry
    evidence = [_evidence_of(s) for s in summaries if s.batch_id in verdict.flagged_windows]
    safe_key = key.replace("/", "_").replace(":", "_")
    path = settings.monitor_dir / "requests" / f"{safe_key}.json"
    entry = dataclasses.replace(verdict, key=key, evidence_uri=str(path))
    write_json_atomic(path, entry.to_xcom() | {"evidence": evidence})
    if client is not None:
        entry = _upload_request(settings, client, entry, path)
        write_json_atomic(path, entry.to_xcom() | {"evidence": evidence})
    write_json_atomic(_log_path(settings), [e.to_xcom() for e in [*log, entry]])
    return entry


def _upload_request(
    settings: Settings, client, entry: RetrainVerdict, path: Path
) -> RetrainVerdict:
    exp_id = ensure_experiment(client, settings.monitoring_experiment, settings)
    run = client.create_run(
        exp_id,
        run_name=f"retrain request on v{entry.champion_version}: {entry.reason}"[:250],
        tags={
            "ctrain_stage": "retrain_request",
            "request_key": entry.key,
            "champion_version": entry.champion_version or "",
            "flagged_windows": ",".join(entry.flagged_windows),
            "mlflow.note.content": entry.reason,
        },
    )
    rid = run.info.run_id
    client.log_artifact(rid, str(path))
    client.set_terminated(rid, "FINISHED")
    uri = f"{run.info.artifact_uri.rstrip('/')}/{path.name}"
    return dataclasses.replace(entry, evidence_uri=uri, evidence_run_id=rid)


def decide(
    settings: Settings,
    client,
    key: str,
    training_active: bool,
    rollout: str = "",
    run_state: RunState | None = None,
) -> RetrainVerdict:
    """The monitor run ``key``'s verdict on the current champion's windows; a positive one is
    logged once per key, with the ct_training run it starts. The latest verdict is kept in
    ``monitor/last_verdict.json``. ``rollout`` names a rollout that holds traffic (no request
    then); ``run_state`` tells where an earlier request's run is (``pending_retrain``)."""
    version, summaries = champion_windows(settings, client)
    pending = pending_retrain(settings, run_state) if run_state else None
    verdict = decide_retrain(
        settings,
        summaries,
        version,
        now_utc(),
        training_active,
        _learned(settings, client, version),
        rollout,
        pending,
    )
    verdict = dataclasses.replace(verdict, key=key)
    if verdict.trigger:
        verdict = dataclasses.replace(verdict, requested_run=requested_run_id(key))
    if verdict.trigger:
        verdict = record_request(settings, verdict, key, summaries, client)
    write_json_atomic(settings.monitor_dir / "last_verdict.json", verdict.to_xcom())
    return verdict


def champion_windows(settings: Settings, client) -> tuple[str | None, list[WindowCheck]]:
    """The champion's version and every window's check, the champion's own in place of another
    version's where it was judged on a window newer than its training data."""
    version = current_champion(client, settings.model_name)
    summaries = load_summaries(settings)
    if version is not None:
        summaries = with_rescored(summaries, load_rescored(settings, version))
    return version, summaries


def _decisive(w: WindowCheck) -> bool:
    """Evidence one window is enough for: a decisive measured or estimated drop, severe drift."""
    p = w.performance
    return (
        (p.status == "matured" and p.degraded and p.decisive)
        or "estimated_drop" in w.flags
        or w.severe_drift  # set only where the estimate does not call the shift harmless
    )


@dataclasses.dataclass(frozen=True)
class StandingChange:
    """Decisive evidence the monitor holds against the champion, and where the change began."""

    champion_version: str
    since_batch: str
    evidence: str
    windows: tuple[str, ...]  # the windows with decisive evidence

    def describe(self) -> str:
        return (
            f"trains from {self.since_batch} on, as a drift retrain would: the monitor holds "
            f"decisive evidence against v{self.champion_version} ({self.evidence})"
        )


def standing_change(settings: Settings, client) -> StandingChange | None:
    """The change a retrain started by the schedule or new data must train from, when the
    monitor's recent windows hold decisive evidence against the champion: the same windows,
    evidence and starting batch the monitor's own request would name (``decide_retrain``),
    whether or not a cooldown or a pending request holds that request back. None otherwise."""
    version, summaries = champion_windows(settings, client)
    if version is None:
        return None
    verdict = decide_retrain(settings, summaries, version, now_utc(), training_active=False)
    by_id = {s.batch_id: s for s in summaries}
    flagged = [by_id[b] for b in verdict.flagged_windows if b in by_id]
    decisive = tuple(w.batch_id for w in flagged if _decisive(w))
    if not verdict.change_from or not decisive:
        return None
    return StandingChange(version, verdict.change_from, verdict.reason, decisive)


def _learned(settings: Settings, client, version: str | None) -> tuple[str, int] | None:
    """Where champion ``version``'s training window started at a change, and how many labeled
    batches from there on it learned from; None when it did not start at a change."""
    if version is None:
        return None
    folder = training_window(client, settings.model_name, version, settings.datasets_dir)
    if folder is None:
        return None
    window = DatasetWindow.from_xcom(read_json(folder / "meta.json"))
    if not window.since_batch:
        return None
    return window.since_batch, len(window.batches) - len(window.topped_up)


def describe(verdict: RetrainVerdict) -> str:
    """A verdict in one line: asked for, held back (and by what), or not needed."""
    if verdict.trigger:
        return f"retrain requested: {verdict.reason}"
    if verdict.suppressed_by:
        return f"no retrain ({verdict.suppressed_by}): {verdict.reason}"
    return f"no retrain: {verdict.reason}"


def now_utc() -> datetime:
    return datetime.now(UTC)
