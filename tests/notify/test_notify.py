"""Operators are told: each record is announced once, to the routes of its kind, through
Airflow's Apprise notifier (the one the DAGs use), at a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import sys

import pytest
from tests_support import REPO, bootstrap_champion

from ctrain import steps
from ctrain.data.demo_source import DemoSource
from ctrain.harness.inbox import Inbox
from ctrain.notify import NotDelivered, sent
from ctrain.records import IngestOutcome

sys.path.insert(0, str(REPO / "dags"))
from ctrain_common import send_apprise as _apprise  # noqa: E402  (the DAGs' sender: AppriseHook + Apprise)


@pytest.fixture
def receiver(monkeypatch):
    with Inbox() as r:
        monkeypatch.setenv("AIRFLOW_CONN_OPS", r.connection("ops"))
        monkeypatch.setenv("AIRFLOW_CONN_ONCALL", r.connection("oncall"))
        yield r


def _first_champion(make_settings, **routes):
    settings = make_settings(dataset={"labels": "delayed"}, notifications={"routes": routes})
    bootstrap_champion(settings, DemoSource(**settings.demo.model_dump()))
    return settings


def test_a_new_champion_is_told_once_with_its_links(make_settings, receiver):
    settings = _first_champion(make_settings, champion_changed=["ops"], rollout=["oncall"])
    run = {"dag_id": "cli", "run_id": "bootstrap"}  # where bootstrap_champion trained v1
    told = steps.notify("decisions", run, _apprise, settings=settings)
    assert [(t["kind"], t["route"]) for t in told] == [("champion_changed", "ops")]
    (msg,) = receiver.messages("ops")
    assert msg["title"] == f"{settings.model_name}: v1 is the first champion"
    assert msg["type"] == "success"
    assert "v1 promoted none→1 (first_champion)" in msg["message"]
    assert "ctrain view: http://127.0.0.1:8080/plugin/ctrain" in msg["message"]
    assert f"/#/models/{settings.model_name}/versions/1" in msg["message"]
    assert receiver.messages("oncall") == []  # no rollout happened
    # The callback runs again (a retried task): nothing more is sent.
    assert steps.notify("decisions", run, _apprise, settings=settings) == []
    assert len(receiver.messages()) == 1
    # Another run's records are not this run's.
    assert (
        steps.notify("decisions", {"dag_id": "cli", "run_id": "x"}, _apprise, settings=settings)
        == []
    )


def test_a_route_that_fails_is_tried_again_and_the_ones_that_took_it_are_not(
    make_settings, receiver, monkeypatch
):
    settings = _first_champion(make_settings, champion_changed=["ops", "pager"])
    run = {"dag_id": "cli", "run_id": "bootstrap"}
    # "pager" is a connection to a port nothing listens on.
    from ctrain.runtime import free_port

    monkeypatch.setenv(
        "AIRFLOW_CONN_PAGER",
        receiver.connection("pager").replace(str(receiver.port), str(free_port())),
    )
    with pytest.raises(NotDelivered) as failed:
        steps.notify("decisions", run, _apprise, settings=settings)
    assert "champion_changed to pager" in str(failed.value)
    assert len(receiver.messages("ops")) == 1
    assert list(sent(settings, f"decision:{_record_id(settings)}")["routes"]) == ["ops"]
    monkeypatch.setenv("AIRFLOW_CONN_PAGER", receiver.connection("pager"))  # the pager is back
    told = steps.notify("decisions", run, _apprise, settings=settings)
    assert [t["route"] for t in told] == ["pager"]
    assert len(receiver.messages("ops")) == 1 and len(receiver.messages("pager")) == 1


def _record_id(settings) -> str:
    from ctrain.promotion.decisions import list_decisions
    from ctrain.tracking import configure

    (d,) = list_decisions(configure(settings), settings)
    return d.record_run_id


def test_batches_mostly_quarantined_are_told_and_the_others_are_not(make_settings, receiver):
    settings = make_settings(
        notifications={"routes": {"quarantine": ["ops"]}, "quarantine_share": 0.05}
    )

    def outcome(batch, status, rows_in, quarantined):
        return IngestOutcome(
            batch_id=batch,
            source_file=f"{batch}.csv",
            sha256=batch * 4,
            validated_at="",
            status=status,
            reason=f"{batch}: broken rows",
            rows_in=rows_in,
            rows_accepted=rows_in - quarantined,
            rows_quarantined=quarantined,
            accepted_uri=None,
            quarantine_uri=None,
        ).to_xcom()

    outcomes = [
        outcome("batch_a", "accepted", 1000, 0),
        outcome("batch_b", "partial", 1000, 50),  # 5 %: not above the share
        outcome("batch_c", "partial", 1000, 60),
        outcome("batch_d", "quarantined", 0, 0),  # unreadable: nothing accepted
    ]
    info = {"dag_id": "ct_ingest", "run_id": "r1", "outcomes": outcomes}
    told = steps.notify("quarantine", info, _apprise, settings=settings)
    assert [t["title"].split(": ")[1].split()[0] for t in told] == ["batch_c", "batch_d"]
    titles = [m["title"] for m in receiver.messages("ops")]
    assert titles[0].endswith("batch_c partial: 60 of 1000 rows quarantined")
    assert titles[1].endswith("batch_d quarantined: unreadable, the file kept whole")
    assert [m["type"] for m in receiver.messages("ops")] == ["warning", "failure"]
    assert steps.notify("quarantine", info, _apprise, settings=settings) == []


def test_nothing_is_read_or_sent_without_routes(make_settings, receiver):
    settings = make_settings()
    assert settings.notifications.routes == {}
    info = {"dag_id": "ct_ingest", "run_id": "r1", "task_id": "t", "error": "boom"}
    assert steps.notify("failure", info, _apprise, settings=settings) == []
    assert receiver.messages() == [] and not (settings.root / "notifications").exists()


def test_a_route_to_an_unknown_kind_or_a_bad_connection_id_is_refused_at_load(make_settings):
    with pytest.raises(ValueError, match="notifications"):
        make_settings(notifications={"routes": {"champion_moved": ["ops"]}})
    with pytest.raises(ValueError, match="notifications"):
        make_settings(notifications={"routes": {"task_failed": ["ops; rm -rf"]}})
