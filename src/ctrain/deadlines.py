"""The deadlines the loop is held to, and the moves of champion no one was told of.

``ct_deadlines`` looks every few minutes (``schedules.deadlines``) and ``overdue`` returns the
events of what it finds:

- ``predictions_late``: an accepted batch still has no predictions
  ``alerts.arrival_to_predictions_minutes`` after it landed (one event per batch);
- ``monitor_silent``: scored windows have waited ``alerts.monitor_silent_hours`` for
  ct_drift_monitor to check them (one event per silence: it is keyed by the newest check
  before it, so a monitor that runs again and stops again is told again);
- ``approval_expiring``: a request waiting for a person expires within
  ``alerts.approval_expiry_warning_minutes`` (one event per request);
- ``champion_changed``: a move of champion that no route took (``ctrain promote`` or
  ``rollback`` from the CLI, a move made outside ctrain that reconcile recorded, a move whose
  own message failed), decided since the first look and within the last day, so switching
  routes on does not replay the history.

``ct_training`` running past its bound is not looked for here: it is an Airflow Deadline Alert on
the DAG (the scheduler knows when a run was queued and drops the deadline when the run
succeeds), whose callback builds its event with ``training_late``.

Every event carries the key of what it reports, so ``notify.deliver`` sends it once however
often the look runs. Nothing here imports Airflow: whether an approval still waits is asked of
a collaborator (``approval_state(dag_id, run_id, task_id)``, the task's state or None).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ctrain.dag_ids import BATCH_INFERENCE, DRIFT_MONITOR
from ctrain.notify import WARNING, Event, Links, decision_events
from ctrain.settings import Settings
from ctrain.storage import read_json, write_json_atomic

ApprovalState = Callable[[str, str, str], str | None]

WAITING = ("awaiting_input", "deferred")
# A request whose task reached one of these (or whose run is gone) waits no more.
ENDED = ("success", "failed", "skipped", "upstream_failed", "removed")
CATCH_UP = timedelta(days=1)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def late_batches(settings: Settings, now: datetime) -> list[Event]:
    """Accepted batches with no predictions past ``alerts.arrival_to_predictions_minutes``."""
    from ctrain.ingest.batches import awaiting_predictions

    bound = settings.alerts.arrival_to_predictions_minutes * 60
    links, out = Links(settings), []
    for o, arrived in awaiting_predictions(settings):
        waited = now.timestamp() - arrived
        if waited < bound:
            continue  # the oldest first, but ids are not in arrival order: look at each
        out.append(
            Event(
                "predictions_late",
                f"late:predictions:{o.batch_id}:{o.sha256[:16]}",
                f"{settings.model_name}: {o.batch_id} has no predictions {_age(waited)} after "
                "it landed",
                f"{o.rows_accepted} rows of {o.batch_id} landed at {_iso(arrived)} and were "
                f"accepted; {BATCH_INFERENCE} has not written their predictions within "
                f"alerts.arrival_to_predictions_minutes ({bound / 60:g} min). Is it paused, "
                "failing, or queued behind another run?",
                WARNING,
                (links.dag(BATCH_INFERENCE), links.view()),
            )
        )
    return out


def unchecked_windows(settings: Settings) -> list[tuple[float, str]]:
    """Scored windows the monitor has never checked, as (when scored, batch id), oldest first:
    predictions of batches ingest accepted (an online window waits for ingest first) that have
    no window summary."""
    folder = settings.predictions_dir
    if not folder.is_dir():
        return []
    return sorted(
        (p.stat().st_mtime, p.stem)
        for p in folder.glob("*.parquet")
        if (settings.accepted_dir / p.name).exists()
        and not (settings.monitor_dir / p.stem / "summary.json").exists()
    )


def silent_monitor(settings: Settings, now: datetime) -> Event | None:
    """Scored windows the monitor has not checked for ``alerts.monitor_silent_hours``."""
    unchecked = unchecked_windows(settings)
    bound = settings.alerts.monitor_silent_hours * 3600
    if not unchecked or now.timestamp() - unchecked[0][0] < bound:
        return None
    scored, oldest = unchecked[0]
    summaries = settings.monitor_dir.glob("*/summary.json")
    last = max((p.stat().st_mtime for p in summaries), default=None)
    since = f"its last check was at {_iso(last)}" if last else "it has never checked a window"
    links = Links(settings)
    return Event(
        "monitor_silent",
        f"late:monitor:{_iso(last) if last else 'never'}",
        f"{settings.model_name}: the monitor has not checked {len(unchecked)} scored "
        f"window{'s' if len(unchecked) > 1 else ''} for {_age(now.timestamp() - scored)}",
        f"{oldest} was scored at {_iso(scored)} and {DRIFT_MONITOR} has not checked it within "
        f"alerts.monitor_silent_hours ({bound / 3600:g} h); {since}. Drift and performance "
        "drops go unseen until it runs: is it paused or failing?",
        WARNING,
        (links.dag(DRIFT_MONITOR), links.view()),
    )


def expiring_approvals(
    settings: Settings, now: datetime, approval_state: ApprovalState
) -> list[Event]:
    """Requests still waiting for a person that expire within
    ``alerts.approval_expiry_warning_minutes``; requests that wait no more are forgotten."""
    from ctrain.promotion.approval import forget_waiting, waiting_requests

    warn = timedelta(minutes=settings.alerts.approval_expiry_warning_minutes)
    links, out = Links(settings), []
    for r in waiting_requests(settings):
        dag_id, run_id, task_id = r["dag_id"], r["run_id"], r["task_id"]
        state = approval_state(dag_id, run_id, task_id)
        if state is None or state in ENDED:
            forget_waiting(settings, r)
            continue
        expires = datetime.fromisoformat(r["expires_at"])
        if state not in WAITING or not now < expires <= now + warn:
            continue  # asked again, or not yet near its expiry (or past it: expiry is told)
        left = (expires - now).total_seconds()
        out.append(
            Event(
                "approval_expiring",
                f"expiring:{dag_id}:{run_id}:{task_id}",
                f"{settings.model_name}: an approval expires in {_age(left)}: {r['subject']}",
                f"requested at {r['requested_at']}, no answer yet; it expires at "
                f"{r['expires_at']} and then nothing is promoted (the request's run: {run_id})",
                WARNING,
                (links.answer(dag_id, run_id, task_id), links.run(dag_id, run_id), links.view()),
            )
        )
    return out


def _first_look(settings: Settings, now: datetime) -> datetime:
    path = settings.notifications_dir / "first_look.json"
    if not path.is_file():
        write_json_atomic(path, {"at": now.isoformat()})
    return datetime.fromisoformat(read_json(path)["at"])


def untold_moves(settings: Settings, client, now: datetime) -> list[Event]:
    """The moves of champion decided since the first look (and within a day); ``deliver``
    sends only those no route took yet."""
    from ctrain.promotion.decisions import list_decisions

    since = max(_first_look(settings, now), now - CATCH_UP)
    moves = [
        d
        for d in list_decisions(client, settings, limit=50)
        if d.moved and d.decided_at and datetime.fromisoformat(d.decided_at) >= since
    ]
    return decision_events(settings, reversed(moves))  # in the order they were decided


def overdue(
    settings: Settings, client, now: datetime, approval_state: ApprovalState
) -> list[Event]:
    """Every event a look finds now (``ct_deadlines``), the moves of champion first."""
    silent = silent_monitor(settings, now)
    return [
        *untold_moves(settings, client, now),
        *late_batches(settings, now),
        *([silent] if silent else []),
        *expiring_approvals(settings, now, approval_state),
    ]


def training_late(
    settings: Settings, dag_id: str, run_id: str, queued_at: str | None, deadline_at: str
) -> Event:
    """A ct_training run still going at its deadline (Airflow's Deadline Alert called)."""
    links = Links(settings)
    bound = ""
    if queued_at:
        waited = datetime.fromisoformat(deadline_at) - datetime.fromisoformat(queued_at)
        bound = f", {waited.total_seconds() / 60:g} min after"
    return Event(
        "training_late",
        f"late:training:{dag_id}:{run_id}",
        f"{settings.model_name}: {dag_id} run {run_id} is still running past its deadline",
        f"queued at {queued_at or '?'}; its deadline{bound} (alerts.training_run_minutes, plus "
        "the approval's timeout where a person must answer), passed at "
        f"{deadline_at}. A task stuck, or waiting for a worker or a pool?",
        WARNING,
        (links.run(dag_id, run_id), links.view()),
    )
