"""Tell operators what the loop did: one message per event, to the routes the settings name.

An event is built from a record the loop already wrote (a decision record, the monitor's retrain
request, a batch outcome, an approval request, a failed task) and carries the key of that
record: the same record is announced once, however often the task that wrote it is retried or
its callback runs. The key is kept in ``notifications/`` of the data home once every route of
the event took it; a route that failed is tried again the next time the event comes up (a task
retried), and a message sent just before its process died may be sent twice: at least once,
never lost silently.

Which routes: ``notifications.routes`` maps an event kind to Airflow connections; the sending
itself is a collaborator (``send(route, event) -> bool``) that the caller passes in: in the
DAGs, Airflow's Apprise notifier (``dags/ctrain_common.py``). Nothing here imports Airflow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ctrain.records import Decision, DecisionKind, IngestOutcome, Record, RetrainVerdict
from ctrain.settings import Settings
from ctrain.storage import read_json, write_json_atomic
from ctrain.tracking import MlflowLinks

INFO, SUCCESS, WARNING, FAILURE = "info", "success", "warning", "failure"


@dataclass(frozen=True)
class Event(Record):
    """One thing an operator is told, with the key of the record it reports."""

    kind: str  # a settings.EventKind
    key: str
    title: str
    body: str
    severity: str = INFO
    links: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (label, URL)

    def text(self) -> str:
        """The message: the body, then one line per link."""
        return "\n".join([self.body, "", *(f"{label}: {url}" for label, url in self.links)])


class Links:
    """Where a person looks next: the ctrain view, an Airflow run, MLflow."""

    def __init__(self, settings: Settings):
        self.airflow = settings.notifications.airflow_url.rstrip("/")
        self.mlflow = MlflowLinks(settings.mlflow_ui_url)
        self.model_name = settings.model_name

    def view(self) -> tuple[str, str]:
        return ("ctrain view", f"{self.airflow}/plugin/ctrain")

    def run(self, dag_id: str, run_id: str) -> tuple[str, str]:
        return (
            f"Airflow run {dag_id}",
            f"{self.airflow}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}",
        )

    def dag(self, dag_id: str) -> tuple[str, str]:
        return (f"Airflow {dag_id}", f"{self.airflow}/dags/{quote(dag_id, safe='')}")

    def answer(self, dag_id: str, run_id: str, task_id: str) -> tuple[str, str]:
        """Where a person answers a human-in-the-loop task."""
        return (
            "answer it in Airflow",
            f"{self.airflow}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/"
            f"{quote(task_id, safe='')}/required_actions",
        )

    def version(self, version: str) -> tuple[str, str]:
        return (f"MLflow v{version}", self.mlflow.model_version(self.model_name, version))


def decision_events(settings: Settings, decisions: Iterable[Decision]) -> list[Event]:
    """The events of decision records: a move of champion (promotion, rollback, a move found
    made outside ctrain), a rollout's step or its end, an approval that expired."""
    links, out = Links(settings), []
    for d in decisions:
        where = [links.view()]
        if d.airflow_dag_id and d.airflow_run_id and d.airflow_dag_id != "cli":
            where.append(links.run(d.airflow_dag_id, d.airflow_run_id))
        if d.moved:
            where.append(links.version(str(d.champion_after)))
            kind, severity = (
                "champion_changed",
                (
                    WARNING
                    if d.decision in (DecisionKind.ROLLBACK, DecisionKind.EXTERNAL)
                    else SUCCESS
                ),
            )
            title = (
                f"{d.model_name}: champion v{d.champion_before} → v{d.champion_after} "
                f"({d.decision.replace('_', ' ')})"
                if d.champion_before
                else f"{d.model_name}: v{d.champion_after} is the first champion"
            )
        elif d.decision == DecisionKind.TRAFFIC:
            # The split's records say each change of the traffic: a rollout began, moved a
            # step, was rolled back or aborted. The one that ends a promotion is left to the
            # move of champion, which says it.
            if " promoted: " in d.reason:
                continue
            ended = any(w in d.reason for w in (" rolled back: ", " aborted: ", " rejected: "))
            kind, severity = "rollout", WARNING if ended else INFO
            title = f"{d.model_name}: rollout of v{d.challenger_version}: " + (
                "traffic back to the champion" if ended else "traffic changed"
            )
        elif d.decision == DecisionKind.EXPIRED:
            kind, severity = "approval_expired", WARNING
            title = f"{d.model_name}: the approval of v{d.challenger_version} expired"
        else:
            continue
        body = f"{d.headline}\nrule {d.rule}: {d.reason}"
        if d.trigger_reason:
            body += f"\ntrigger: {d.trigger_reason}"
        if d.approver:
            body += f"\napprover: {d.approver}"
        out.append(Event(kind, f"decision:{d.record_run_id}", title, body, severity, tuple(where)))
    return out


def request_event(settings: Settings, verdict: RetrainVerdict, dag_id: str, run_id: str) -> Event:
    """The monitor asked for a retrain: with its reason and the run it started."""
    links = Links(settings)
    where = [links.view(), links.run(dag_id, run_id)]
    if verdict.requested_run:
        where.append(links.run("ct_training", verdict.requested_run))
    return Event(
        "retrain_requested",
        f"request:{verdict.decided_at}:{verdict.requested_run}",
        f"{settings.model_name}: retrain requested on v{verdict.champion_version}",
        f"{verdict.reason}\nwindows: {', '.join(verdict.flagged_windows) or '–'}",
        WARNING,
        tuple(where),
    )


def quarantine_events(
    settings: Settings, outcomes: Iterable[IngestOutcome], dag_id: str, run_id: str
) -> list[Event]:
    """Batches with more than ``notifications.quarantine_share`` of their rows quarantined (a
    file that could not be read at all among them)."""
    links, share, out = Links(settings), settings.notifications.quarantine_share, []
    for o in outcomes:
        quarantined = o.rows_quarantined / o.rows_in if o.rows_in else 1.0
        if o.status not in ("quarantined", "partial") or quarantined <= share:
            continue
        out.append(
            Event(
                "quarantine",
                f"batch:{o.batch_id}:{o.sha256[:16]}",
                f"{settings.model_name}: {o.batch_id} {o.status}: "
                + (
                    f"{o.rows_quarantined} of {o.rows_in} rows quarantined"
                    if o.rows_in
                    else "unreadable, the file kept whole"
                ),
                f"{o.reason or 'see its validation report'}\nkept with the reason in "
                f"{o.quarantine_uri or settings.quarantine_dir / o.batch_id}; "
                f"{o.rows_accepted} rows accepted",
                FAILURE if o.status == "quarantined" else WARNING,
                (links.view(), links.run(dag_id, run_id)),
            )
        )
    return out


def approval_event(
    settings: Settings, dag_id: str, run_id: str, task_id: str, subject: str, body: str
) -> Event:
    """A promotion waits for a person's answer."""
    links = Links(settings)
    return Event(
        "approval_waiting",
        f"approval:{dag_id}:{run_id}:{task_id}",
        subject if settings.model_name in subject else f"{settings.model_name}: {subject}",
        body,
        INFO,
        (links.answer(dag_id, run_id, task_id), links.view()),
    )


def failure_event(settings: Settings, dag_id: str, run_id: str, task_id: str, error: str) -> Event:
    """A task failed after its retries."""
    links = Links(settings)
    return Event(
        "task_failed",
        f"failed:{dag_id}:{run_id}:{task_id}",
        f"{dag_id}.{task_id} failed after its retries",
        f"run {run_id}: {error[:1500]}",
        FAILURE,
        (links.run(dag_id, run_id), links.view()),
    )


def _ledger(settings: Settings, key: str) -> Path:
    # Keys hold run ids and batch ids from outside: only their hash becomes a file name.
    return settings.notifications_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def sent(settings: Settings, key: str) -> dict[str, Any] | None:
    """What was sent for ``key``, or None."""
    path = _ledger(settings, key)
    return read_json(path) if path.is_file() else None


def deliver(
    settings: Settings, events: Iterable[Event], send: Callable[[str, Event], bool]
) -> list[dict[str, Any]]:
    """Send each event to every route of its kind that has not taken it yet; returns what was
    sent now (one entry per event and route).

    An event whose kind has no route is not sent. Each route that takes it is kept under the
    event's key at once, so a retry sends only to the routes that did not: a route whose
    ``send`` failed (False or an exception) is tried again by the next call that builds the
    event. Raises ``NotDelivered`` after trying them all, if any failed.
    """
    out, failures = [], []
    for event in events:
        routes = settings.notifications.routes.get(event.kind, ())  # type: ignore[call-overload]
        if not routes:
            continue
        kept = sent(settings, event.key) or {
            "key": event.key,
            "kind": event.kind,
            "title": event.title,
            "routes": {},
        }
        for route in routes:
            if route in kept["routes"]:
                continue
            try:
                ok = send(route, event)
            except Exception as exc:  # one broken route does not silence the others
                failures.append(f"{event.kind} to {route}: {type(exc).__name__}: {exc}")
                continue
            if not ok:
                failures.append(f"{event.kind} to {route}: the notifier did not deliver it")
                continue
            kept["routes"][route] = datetime.now(UTC).isoformat(timespec="seconds")
            write_json_atomic(_ledger(settings, event.key), kept)
            out.append({"key": event.key, "kind": event.kind, "route": route, "title": event.title})
    if failures:
        raise NotDelivered(failures)
    return out


class NotDelivered(Exception):
    """Routes that did not take an event; the others did, and are kept."""

    def __init__(self, failures: list[str]):
        super().__init__("not delivered: " + "; ".join(failures))
        self.failures = failures
