"""Deadlines: what the loop failed to do in time is told once, from its real records, through
the DAGs' Apprise sender, at a real HTTP receiver on 127.0.0.1. The clock is passed in (``now``)
so a deadline hours away is crossed without waiting for it."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest
from tests_support import REPO, ingest_batches, trained_champion

from ctrain import cli, steps
from ctrain.harness.inbox import Inbox
from ctrain.records import RunContext

sys.path.insert(0, str(REPO / "dags"))
from ctrain_common import send_apprise, training_late  # noqa: E402  (the DAGs' own)


@pytest.fixture
def receiver(monkeypatch):
    with Inbox() as r:
        monkeypatch.setenv("AIRFLOW_CONN_OPS", r.connection("ops"))
        yield r


def _routes(*kinds: str) -> dict:
    return {"routes": {kind: ["ops"] for kind in kinds}}


def _look(state=None, at: datetime | None = None) -> list[dict]:
    """One look of ct_deadlines at ``at``; ``state``: the approval task's state in Airflow."""
    found = steps.watch_deadlines(lambda *_: state, send_apprise, now=at)
    return found["told"]


def test_a_batch_without_predictions_is_told_once_past_its_deadline(make_settings, receiver):
    settings = make_settings(notifications=_routes("predictions_late"))
    ingest_batches(settings, 2)  # accepted, and no ct_batch_inference to score them
    now = datetime.now(UTC)
    assert _look(at=now + timedelta(minutes=14)) == []  # alerts.arrival_to_predictions: 15 min
    told = _look(at=now + timedelta(minutes=16))
    assert sorted(t["title"].split(": ")[1].split()[0] for t in told) == [
        "batch_0000",
        "batch_0001",
    ]
    (first, _) = receiver.messages("ops")
    assert (
        first["type"] == "warning"
        and "has no predictions 16 min after it landed" in (first["title"])
    )
    assert "ct_batch_inference has not written their predictions" in first["message"]
    assert (
        "Airflow ct_batch_inference: http://127.0.0.1:8080/dags/ct_batch_inference"
        in (first["message"])
    )
    # The next looks find the same batches late: nothing more is sent.
    assert _look(at=now + timedelta(minutes=21)) == []
    assert _look(at=now + timedelta(hours=3)) == []
    assert len(receiver.messages()) == 2


def test_a_silent_monitor_is_told_once_per_silence(make_settings, receiver):
    settings = make_settings(notifications=_routes("monitor_silent"))
    trained_champion(settings)
    steps.score("batch_0000", settings=settings)  # scored; ct_drift_monitor never ran
    now = datetime.now(UTC)
    assert _look(at=now + timedelta(hours=5)) == []  # alerts.monitor_silent_hours: 6
    (told,) = _look(at=now + timedelta(hours=7))
    assert told["title"].endswith("the monitor has not checked 1 scored window for 7.0 h")
    # Prometheus' rule CtrainMonitorSilent reads the same wait.
    from ctrain.telemetry import figures
    from ctrain.tracking import configure

    (waited,) = [
        v
        for name, _, v in figures(
            settings, configure(settings), (now + timedelta(hours=7)).timestamp()
        )
        if name == "ctrain_oldest_unchecked_window_seconds"
    ]
    assert 7 * 3600 <= waited < 7 * 3600 + 60  # scored just before ``now``
    (msg,) = receiver.messages("ops")
    assert "batch_0000 was scored at" in msg["message"]
    assert "it has never checked a window" in msg["message"]
    assert _look(at=now + timedelta(hours=9)) == []
    # The monitor runs (the silence ends), then a new window waits unchecked: a new silence.
    steps.check_windows(settings=settings)
    assert _look(at=now + timedelta(hours=9)) == []
    steps.score("batch_0001", settings=settings)
    (again,) = _look(at=now + timedelta(hours=8))
    assert "its last check was at" in receiver.messages("ops")[1]["message"]
    assert again["key"] != told["key"]


def test_an_approval_is_warned_of_before_it_expires_once_and_forgotten_once_answered(
    make_settings, receiver
):
    settings = make_settings(notifications=_routes("approval_expiring"))
    request = {
        "dag_id": "ct_training",
        "run_id": "manual__2026-12-03T10:00:00+00:00",
        "task_id": "approval",
        "subject": "Promote ctrain-demo v2 over v1? (significant_improvement)",
        "timeout_minutes": 60,
    }
    steps.keep_waiting(request, settings=settings)
    now = datetime.now(UTC)
    # alerts.approval_expiry_warning_minutes: 30 before the expiry, while it still waits.
    assert _look("awaiting_input", now + timedelta(minutes=25)) == []
    assert _look("up_for_retry", now + timedelta(minutes=40)) == []  # Airflow asks again
    (told,) = _look("awaiting_input", now + timedelta(minutes=40))
    assert told["title"] == (
        f"{settings.model_name}: an approval expires in 20 min: {request['subject']}"
    )
    (msg,) = receiver.messages("ops")
    assert (
        "answer it in Airflow: http://127.0.0.1:8080/dags/ct_training/runs/"
        "manual__2026-12-03T10%3A00%3A00%2B00%3A00/tasks/approval/required_actions"
    ) in msg["message"]
    assert _look("awaiting_input", now + timedelta(minutes=50)) == []  # once
    assert _look("awaiting_input", now + timedelta(minutes=61)) == []  # expired: told as such
    # Answered: the request is forgotten, and nothing is said of it again.
    assert _look("success", now + timedelta(minutes=45)) == []
    assert not list((settings.notifications_dir / "approvals").glob("*.json"))
    assert len(receiver.messages()) == 1


def test_a_move_made_from_the_cli_is_told_by_the_next_look(make_settings, receiver):
    """What no DAG callback tells (``ctrain rollback``, and a move whose own message failed)
    is told by the look, once; the moves before the first look are not replayed."""
    settings = make_settings(notifications=_routes("champion_changed"))
    trained_champion(settings)  # v1, decided before ctrain_deadlines first looked
    assert _look() == []
    ingest_batches(settings, 1, start=3)
    steps.run_training(RunContext(run_id="again", force=True), settings=settings)  # v2
    assert cli.main(["rollback", "--reason", "v2 answers slowly"]) == 0  # back to v1
    told = _look()
    name = settings.model_name
    assert [t["title"] for t in told] == [
        f"{name}: champion v1 → v2 (promoted)",
        f"{name}: champion v2 → v1 (rollback)",
    ]
    rollback = receiver.messages("ops")[1]
    assert rollback["type"] == "warning" and "v2 answers slowly" in rollback["message"]
    assert _look() == []


def test_a_training_run_past_its_deadline_is_told_once_and_an_ended_one_not(
    make_settings, receiver
):
    """The Deadline Alert's callback, as the executor calls it: with the run Airflow read."""
    settings = make_settings(notifications=_routes("training_late"))

    def context(state):
        run = {"dag_id": "ct_training", "dag_run_id": "scheduled__x", "state": state}
        deadline = {"id": "d1", "deadline_time": "2026-12-03T12:00:00+00:00"}
        return {"dag_run": run | {"queued_at": "2026-12-03T10:00:00+00:00"}, "deadline": deadline}

    training_late(context("failed"))  # Airflow keeps a failed run's deadline: not late
    assert receiver.messages() == []
    training_late(context("running"))
    training_late(context("running"))  # the callback run again
    (msg,) = receiver.messages("ops")
    assert msg["title"] == f"{settings.model_name}: ct_training run scheduled__x is still " + (
        "running past its deadline"
    )
    assert "its deadline, 120 min after (alerts.training_run_minutes" in msg["message"]
    assert "passed at 2026-12-03T12:00:00+00:00" in msg["message"]
