"""The loop's steps with their default collaborators, in XCom values in and out.

Each DAG task calls one of these; the CLI and the benchmarks call them in one process. This is
the one place that converts between XCom values (small JSON-able dicts) and the typed records of
``ctrain.records``: a step rebuilds its inputs with ``from_xcom``, builds the settings and the
MLflow client, hands them to one verb module, and returns the verb's record ``to_xcom()``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ctrain.records import (
    Comparison,
    DatasetWindow,
    Decision,
    Evaluation,
    IngestOutcome,
    RegisteredVersion,
    RetrainVerdict,
    RunContext,
    TrainedRun,
    ValidatedSet,
)
from ctrain.settings import Settings, load_settings

XCom = dict[str, Any]
log = logging.getLogger(__name__)


def _settings(settings: Settings | None) -> Settings:
    return settings or load_settings()


def _client(settings: Settings):
    from ctrain.tracking import configure

    return configure(settings)


class UnknownConf(ValueError):
    """A run was triggered with conf keys it does not know (a typo would run a real training)."""


def run_context(
    dag_id: str,
    run_id: str,
    run_type: str,
    params: dict[str, Any],
    conf: dict[str, Any] | None = None,
    asset_events: int = 0,
    *,
    declared: set[str],
    user: str | None = None,
) -> XCom:
    """Who started a ct_training run and why, from what Airflow knows of the run.

    ``declared`` are the params the DAG declares (its form). Not the run's ``params``: Airflow
    merges every conf key into those, a misspelt one included. ``user`` is the Airflow user who
    triggered the run, when a person did.

    Raises:
        UnknownConf: ``conf`` holds a key that is neither a declared param nor the monitor's
            ``evidence_uri``; the message lists the valid ones.
    """
    valid = {*declared, "evidence_uri"}
    unknown = sorted(set(conf or {}) - valid)
    if unknown:
        raise UnknownConf(f"unknown conf keys {unknown}; ct_training takes {sorted(valid)}")
    kind = run_type.lower()
    conf = conf or {}
    if "asset" in kind:
        reason, started_by = f"new accepted data ({asset_events} asset event(s))", "ct_ingest"
    elif "scheduled" in kind:
        reason, started_by = "scheduled", "schedule"
    else:
        reason, started_by = params["reason"], "a trigger"
    if conf.get("evidence_uri"):
        started_by = "ct_drift_monitor"
    if user:
        started_by = user if started_by == "a trigger" else f"{started_by} (via {user})"
    return RunContext(
        dag_id=dag_id,
        run_id=run_id,
        trigger_reason=conf.get("reason", reason),
        evidence_uri=conf.get("evidence_uri", ""),
        dry_run=bool(params["dry_run"]),
        force=bool(params["force"]),
        window_batches=int(params["window_batches"]) or None,
        since_batch=str(params.get("since_batch") or ""),
        started_by=started_by,
        requested_by=user or "",
    ).to_xcom()


def from_standing_change(ctx: XCom, settings: Settings | None = None) -> XCom:
    """A run the schedule or new data started, while the monitor holds decisive evidence against
    the champion, trains from the change on (``monitoring.retrain_window_batches`` batches, as
    the monitor's own request would), and its reason says so; any other run is returned as is.

    Without this, a scheduled retrain between a change and its retrain trains on the whole
    window, old regime and new mixed, and is compared on the same mix."""
    import dataclasses

    from ctrain.monitoring.trigger import standing_change

    run = RunContext.from_xcom(ctx)
    if run.since_batch or run.started_by not in ("schedule", "ct_ingest"):
        return ctx
    s = _settings(settings)
    change = standing_change(s, _client(s))
    if change is None:
        return ctx
    return dataclasses.replace(
        run,
        since_batch=change.since_batch,
        window_batches=s.monitoring.retrain_window_batches or None,
        trigger_reason=f"{run.trigger_reason}; {change.describe()}",
    ).to_xcom()


def list_landed(settings: Settings | None = None) -> list[str]:
    """Files waiting in the landing folder; learns the reference profile on first use."""
    from ctrain.ingest.batches import pending_files
    from ctrain.ingest.profile import ensure_profile
    from ctrain.storage import clean_temp_files, stale_hidden

    s = _settings(settings)
    for folder in (s.accepted_dir, s.quarantine_dir, s.outcomes_dir, s.labels_dir, s.processed_dir):
        clean_temp_files(folder)
    for folder in (s.landing_dir, s.labels_landing_dir):
        for path, age in stale_hidden(folder):
            log.warning(
                "%s has been in %s for %.1f h: hidden names are taken for uploads in flight and "
                "skipped; rename it to have it ingested, or remove it",
                path.name,
                folder,
                age / 3600,
            )
    files = pending_files(s)
    ensure_profile(s, files)
    return [str(p) for p in files]


def ingest_one(path: str, settings: Settings | None = None) -> XCom:
    from ctrain.ingest.batches import ingest_file
    from ctrain.ingest.profile import load_profile

    s = _settings(settings)
    return ingest_file(Path(path), s, load_profile(s.profile_path)).to_xcom()


def describe_ingest(outcomes: list[XCom]) -> str:
    """The one line a ct_ingest run leaves as its note."""
    from ctrain.ingest.batches import describe
    from ctrain.records import IngestOutcome

    return describe([IngestOutcome.from_xcom(o) for o in outcomes])


def ingest_labels(settings: Settings | None = None) -> list[XCom]:
    """Validate every waiting label file; returns one outcome per file."""
    from ctrain.ingest.labels import ingest_label_file, pending_label_files

    s = _settings(settings)
    return [ingest_label_file(p, s).to_xcom() for p in pending_label_files(s)]


def assemble(ctx: XCom, settings: Settings | None = None) -> XCom:
    from ctrain.storage import clean_temp_files
    from ctrain.training.assemble import assemble_window

    s = _settings(settings)
    clean_temp_files(s.datasets_dir)
    run = RunContext.from_xcom(ctx)
    return assemble_window(s, run.window_batches, since_batch=run.since_batch or None).to_xcom()


def skip_if_trained(dataset: XCom, ctx: XCom, settings: Settings | None = None) -> XCom | None:
    """When a version was trained on this very window and config (and the run is not forced),
    record the run as skipped and return that decision; else None (go on and train)."""
    from ctrain.promotion.promote import record_skip
    from ctrain.training.assemble import trained_before
    from ctrain.training.restricted import in_force

    s = _settings(settings)
    run, window = RunContext.from_xcom(ctx), DatasetWindow.from_xcom(dataset)
    if run.force:
        return None
    client = _client(s)
    s = in_force(s, client)
    version = trained_before(s, client, window)
    if version is None:
        return None
    return record_skip(s, client, run, version, window).to_xcom()


def validate_set(dataset: XCom, settings: Settings | None = None) -> XCom:
    from ctrain.training.validate_set import validate_training_set

    s = _settings(settings)
    return validate_training_set(s, DatasetWindow.from_xcom(dataset)).to_xcom()


def train(dataset: XCom, ctx: XCom, settings: Settings | None = None) -> XCom:
    from ctrain.training.restricted import in_force
    from ctrain.training.train import train as _train

    s = _settings(settings)
    window, run = DatasetWindow.from_xcom(dataset), RunContext.from_xcom(ctx)
    client = _client(s)
    return _train(in_force(s, client), window, run, client).to_xcom()


def evaluate(trained: XCom, dataset: XCom, settings: Settings | None = None) -> XCom:
    from ctrain.training.evaluate import evaluate as _evaluate

    s = _settings(settings)
    _client(s)  # points MLflow's fluent API at the store
    run, window = TrainedRun.from_xcom(trained), DatasetWindow.from_xcom(dataset)
    return _evaluate(s, run, window).to_xcom()


def register(
    trained: XCom,
    dataset: XCom,
    validation: XCom,
    evaluation: XCom,
    ctx: XCom,
    settings: Settings | None = None,
) -> XCom:
    from ctrain.promotion.register import register as _register

    s = _settings(settings)
    return _register(
        s,
        TrainedRun.from_xcom(trained),
        DatasetWindow.from_xcom(dataset),
        ValidatedSet.from_xcom(validation),
        Evaluation.from_xcom(evaluation),
        RunContext.from_xcom(ctx),
        _client(s),
    ).to_xcom()


def _monitor_says(s: Settings, client, run_id: str) -> dict[str, Any]:
    """What the monitor says that changes a comparison's rule (``promotion.compare.compare``):
    where it condemned the champion, if it did, and whether run ``run_id`` is its planned
    follow-up (non-inferiority then suffices)."""
    from ctrain.monitoring.trigger import planned_follow_up, standing_change

    change = standing_change(s, client)
    follow_up = planned_follow_up(s, run_id)
    return {
        "condemned": (change.champion_version, change.windows) if change else None,
        "follow_up": (follow_up.champion_version or "", follow_up.reason) if follow_up else None,
    }


def compare(challenger: XCom, dataset: XCom, ctx: XCom, settings: Settings | None = None) -> XCom:
    from ctrain.promotion.compare import compare as _compare

    s = _settings(settings)
    client = _client(s)
    run = RunContext.from_xcom(ctx)
    return _compare(
        s,
        RegisteredVersion.from_xcom(challenger),
        DatasetWindow.from_xcom(dataset),
        run,
        client,
        **_monitor_says(s, client, run.run_id),
    ).to_xcom()


def predeploy(comparison: XCom, dataset: XCom, settings: Settings | None = None) -> XCom:
    """The comparison, turned into a rejection when the challenger that won it is over its
    pre-deployment budget here (``promotion.predeployment``; staging and prod by default)."""
    from ctrain.promotion.predeploy import gate

    s = _settings(settings)
    return gate(s, Comparison.from_xcom(comparison), DatasetWindow.from_xcom(dataset)).to_xcom()


def promote(comparison: XCom, ctx: XCom, settings: Settings | None = None) -> XCom:
    from ctrain.promotion.promote import promote as _promote

    s = _settings(settings)
    decision = _promote(s, Comparison.from_xcom(comparison), RunContext.from_xcom(ctx), _client(s))
    return decision.to_xcom()


def approval_request(comparison: XCom, ctx: XCom, settings: Settings | None = None) -> XCom | None:
    """The approval request (subject, Markdown body) when a person must approve, else None."""
    from ctrain.promotion.approval import needs_approval, request

    s = _settings(settings)
    c, run = Comparison.from_xcom(comparison), RunContext.from_xcom(ctx)
    return request(s, c, run, _client(s)) if needs_approval(s, c, run) else None


def promote_after_approval(
    comparison: XCom,
    ctx: XCom,
    dataset: XCom,
    outcome: XCom | None,
    settings: Settings | None = None,
) -> XCom:
    """Act on a person's answer (the human-in-the-loop task's result; None or no person: expired)."""
    from ctrain.promotion.approval import act_on_answer, answer_of

    s = _settings(settings)
    client = _client(s)
    run = RunContext.from_xcom(ctx)
    return act_on_answer(
        s,
        Comparison.from_xcom(comparison),
        DatasetWindow.from_xcom(dataset),
        run,
        answer_of(outcome),
        client,
        # Should the champion have moved meanwhile, the comparison is made again by the same rules.
        lambda: _monitor_says(s, client, run.run_id),
    ).to_xcom()


def run_training(ctx: RunContext, settings: Settings | None = None, decide: bool = True) -> XCom:
    """The whole ct_training pipeline in this process, through the same steps as the DAG.
    With ``decide`` false it stops before the decision and returns the comparison (what the
    approval gate is asked about), unless the window was trained before (the skip's record)."""
    s = _settings(settings)
    c = ctx.to_xcom()
    dataset = assemble(c, s)
    skipped = skip_if_trained(dataset, c, s)
    if skipped is not None:
        return skipped
    validation = validate_set(dataset, s)
    trained = train(dataset, c, s)
    evaluation = evaluate(trained, dataset, s)
    challenger = register(trained, dataset, validation, evaluation, c, s)
    comparison = predeploy(compare(challenger, dataset, c, s), dataset, s)
    return promote(comparison, c, s) if decide else comparison


def unscored(settings: Settings | None = None) -> list[str]:
    from ctrain.monitoring.score import unscored_batches
    from ctrain.storage import clean_temp_files

    s = _settings(settings)
    clean_temp_files(s.predictions_dir)
    return unscored_batches(s)


def scoring_hold(
    batch_ids: list[str], monitor_busy: bool, settings: Settings | None = None, run_state=None
) -> XCom:
    """Whether scoring ``batch_ids`` waits for the monitor (``monitoring.hold``), and a note on
    the hold so far (kept across looks: the first reason and since when), or None.
    ``run_state`` tells where the retrain the monitor last asked for is (``pending_retrain``)."""
    from ctrain.monitoring.hold import describe_hold, hold_reason, record_hold
    from ctrain.monitoring.trigger import now_utc, pending_retrain

    s = _settings(settings)
    now = now_utc()
    pending = pending_retrain(s, run_state) if run_state else None
    reason = hold_reason(s, _client(s), batch_ids, monitor_busy, now, pending)
    if reason:
        record_hold(s, batch_ids, reason, now)
    return {"wait": reason is not None, "note": describe_hold(s, batch_ids, now)}


def score(batch_id: str, settings: Settings | None = None) -> XCom:
    from ctrain.monitoring.score import score_batch

    s = _settings(settings)
    return score_batch(s, batch_id, _client(s)).to_xcom()


def check_windows(settings: Settings | None = None) -> list[XCom]:
    """Check every window due under the current champion; one verdict per window."""
    from ctrain.monitoring.check import check_due_windows
    from ctrain.storage import clean_temp_files

    s = _settings(settings)
    clean_temp_files(s.monitor_dir)
    return [w.to_xcom() for w in check_due_windows(s, _client(s))]


def describe_verdict(verdict: XCom) -> str:
    """The one line a ct_drift_monitor run leaves as its note."""
    from ctrain.monitoring.trigger import describe
    from ctrain.records import RetrainVerdict

    return describe(RetrainVerdict.from_xcom(verdict))


def decide_retrain(
    key: str,
    training_active: bool,
    settings: Settings | None = None,
    rollout_active: bool = False,
    run_state=None,
) -> XCom:
    """The retrain verdict on the recent windows; a positive one is logged once per ``key``
    with the id of the ct_training run to start (``requested_run``).

    No request is made while ct_training is queued or running (``run_state(run_id)`` tells
    where the last request's run is: the verdict then names it), nor while a rollout holds
    traffic (the split says so) or ct_rollout is queued or running (``rollout_active``: between
    ct_training's hand-over and the rollout's first write of the split).
    """
    from ctrain.monitoring.trigger import decide
    from ctrain.serving.traffic import read_split

    s = _settings(settings)
    client = _client(s)
    split = read_split(client, s.model_name)
    rollout = "ct_rollout is queued or running" if rollout_active else ""
    if split.active:
        rollout = (
            f"the rollout of v{split.challenger} is running ({split.rollout_id}): its outcome "
            "decides the champion first"
        )
    return decide(s, client, key, training_active, rollout, run_state).to_xcom()


def rollout_context(
    dag_id: str, run_id: str, reason: str, user: str | None = None, conf: dict | None = None
) -> XCom:
    """Who started a ct_rollout run and why (ct_training hands a winner over with its reason)."""
    started_by = user or ("ct_training" if (conf or {}).get("handed_over_by") else "a trigger")
    return RunContext(
        dag_id=dag_id, run_id=run_id, trigger_reason=reason, started_by=started_by
    ).to_xcom()


def start_rollout(version: str, strategy: str, ctx: XCom, settings: Settings | None = None) -> XCom:
    """Begin the rollout of ``version`` (empty: @challenger); its split, as the service reads it."""
    import dataclasses

    from ctrain.rollout.control import start

    s = _settings(settings)
    split = start(s, _client(s), version or None, RunContext.from_xcom(ctx), strategy or None)
    return dataclasses.asdict(split) | {
        "describe": split.describe(),
        "watch_until": time.time() + rollout_watch_seconds(s),
    }


def rollout_watch_seconds(settings: Settings) -> float:
    """How long ct_rollout watches at most: every step ends on its own by its timeout (and is
    rolled back); this only backs that up. Read when the rollout starts, from its settings."""
    cfg = settings.serving.rollout
    return len(cfg.canary_steps) * (cfg.step_timeout_seconds + cfg.step_seconds) + 600


def advance_rollout(rollout_id: str, ctx: XCom, settings: Settings | None = None) -> XCom:
    """One look at the rollout's current step: wait, next step, passed, failed or ended."""
    from ctrain.rollout.control import advance

    s = _settings(settings)
    return advance(s, _client(s), rollout_id, RunContext.from_xcom(ctx)).to_xcom()


def finish_rollout(
    rollout_id: str, ctx: XCom, passed: bool, settings: Settings | None = None
) -> XCom:
    """Promote (compare-and-set) or roll back, in one decision record."""
    from ctrain.rollout.control import finish

    s = _settings(settings)
    return finish(s, _client(s), rollout_id, RunContext.from_xcom(ctx), passed).to_xcom()


def notify(
    what: str, info: XCom, send: Callable[[str, Any], bool], settings: Settings | None = None
) -> list[XCom]:
    """Tell the operators what a task did (``ctrain.notify``), through ``send(route, event)``;
    returns what was sent now. ``what`` names the record the events come from:

    - ``decisions``: the decision records of the run ``info`` names (dag_id, run_id);
    - ``request``: the monitor's verdict (``info["verdict"]``) when it asked for a retrain;
    - ``quarantine``: the batch outcomes of an ingest run (``info["outcomes"]``);
    - ``approval``: an approval request waiting (``info["subject"]``, ``info["body"]``);
    - ``failure``: a task failed after its retries (``info["error"]``);
    - ``training_late``: a ct_training run past its deadline (``info["queued_at"]``,
      ``info["deadline_at"]``; Airflow's Deadline Alert).
    """
    from ctrain import notify as n

    s = _settings(settings)
    if not s.notifications.routes:
        return []  # nobody is to be told anything: read no record
    dag_id, run_id = info["dag_id"], info["run_id"]
    if what == "decisions":
        from ctrain.promotion.decisions import list_decisions

        mine = [
            d
            for d in list_decisions(_client(s), s, limit=200)
            if (d.airflow_dag_id, d.airflow_run_id) == (dag_id, run_id)
        ]
        events = n.decision_events(s, reversed(mine))  # in the order they were decided
    elif what == "request":
        verdict = RetrainVerdict.from_xcom(info["verdict"]) if info.get("verdict") else None
        events = [n.request_event(s, verdict, dag_id, run_id)] if verdict else []
    elif what == "quarantine":
        outcomes = [IngestOutcome.from_xcom(o) for o in info["outcomes"]]
        events = n.quarantine_events(s, outcomes, dag_id, run_id)
    elif what == "approval":
        events = [
            n.approval_event(s, dag_id, run_id, info["task_id"], info["subject"], info["body"])
        ]
    elif what == "failure":
        events = [n.failure_event(s, dag_id, run_id, info["task_id"], info["error"])]
    elif what == "training_late":
        from ctrain.deadlines import training_late

        events = [training_late(s, dag_id, run_id, info.get("queued_at"), info["deadline_at"])]
    else:
        raise ValueError(f"nothing to notify about {what!r}")
    return n.deliver(s, events, send)


def watch_deadlines(
    approval_state: Callable[[str, str, str], str | None],
    send: Callable[[str, Any], bool],
    settings: Settings | None = None,
    now: datetime | None = None,
) -> XCom:
    """Look for missed deadlines and untold moves of champion (``ctrain.deadlines``) and tell
    them, each once; returns what was found and what was sent now."""
    from ctrain import notify as n
    from ctrain.deadlines import overdue

    s = _settings(settings)
    if not s.notifications.routes:
        return {"found": [], "told": []}  # nobody is to be told anything: read no record
    events = overdue(s, _client(s), now or datetime.now(UTC), approval_state)
    return {"found": [e.title for e in events], "told": n.deliver(s, events, send)}


def keep_waiting(info: XCom, settings: Settings | None = None) -> None:
    """Keep that an approval request waits (``info``: dag_id, run_id, task_id, subject,
    timeout_minutes), so a look can warn before it expires."""
    from ctrain.promotion.approval import record_waiting

    now = datetime.now(UTC)
    record_waiting(
        _settings(settings),
        dag_id=info["dag_id"],
        run_id=info["run_id"],
        task_id=info["task_id"],
        subject=info["subject"],
        requested_at=now,
        expires_at=now + timedelta(minutes=info["timeout_minutes"]),
    )


def pull(source: str, version: str, ctx: XCom, settings: Settings | None = None) -> XCom:
    """Carry ``version`` of ``source`` here and judge it (comparison, pre-deployment gate);
    nothing moves: ``{"comparison": ..., "dataset": ...}`` for the approval and the move.

    Raises:
        ValueError: this project names no environment, or ``source`` is this one or unknown.
        CarryRefused: the version was not carried (the message says why).
    """
    from ctrain.promotion.across import pull as carry_and_judge

    s = _settings(settings)
    comparison, dataset = carry_and_judge(
        s, source, str(version), RunContext.from_xcom(ctx), _client(s)
    )
    return {"comparison": comparison.to_xcom(), "dataset": dataset.to_xcom()}


def record_proposal(
    source: str, version: str, decision: XCom, ctx: XCom, settings: Settings | None = None
) -> XCom:
    """The source's record that ``version`` was proposed here, and what was decided."""
    from ctrain.promotion.across import record_proposal as record

    s = _settings(settings)
    return record(
        s, source, str(version), Decision.from_xcom(decision), RunContext.from_xcom(ctx)
    ).to_xcom()
