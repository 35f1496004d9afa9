"""The monitor keeps watching while a person decides, then a canary on live traffic: the
scenarios of ``ctrain demo --approval`` and ``ctrain demo --serve`` in one stream.

``promotion.approval: required`` and the serve demo's canary (``ctrain.demo.SERVE_DEMO``), under
the real scheduler, with ``ctrain serve`` started by its CLI and callers sending rows like each
batch (``harness.callers.Online``, as the demo does). The stream's change makes the monitor ask
for a retrain whose comparison would move champion, so ct_training waits in **Required
Actions**. Two more batches land meanwhile; each is checked by the monitor, whose verdicts name
the retrain waiting for approval, and the ctrain view shows the request as waiting, with its run
and the windows checked since. Then the approval is answered through the REST API (as
``run_stream`` answers it for the demo), ct_training hands the winner to ct_rollout, and the
canary promotes it on the live traffic with no caller seeing a failure.
"""

import json
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from tests_support import SCREENSHOTS, view_in_browser

from ctrain.demo import SERVE_DEMO
from ctrain.harness.callers import Online
from ctrain.harness.stream import run_stream
from ctrain.monitoring.check import load_summaries, scored_by
from ctrain.monitoring.trigger import trigger_log
from ctrain.promotion.decisions import list_decisions
from ctrain.registry import current_champion
from ctrain.runtime import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stream(tmp_path_factory, stack):
    """A champion, then batches 3..7 with a change from 4: the retrain asked for at 5 waits for
    approval while 6 and 7 are checked; it is approved after 7, then canaried. What the view
    showed while it waited (its JSON and the page in a browser, when batch 7 lands) is kept."""
    home = tmp_path_factory.mktemp("approval-stream") / "ctrain"
    seen = {}

    def look_while_waiting(i, rows):
        online.follow(i, rows)
        if i != 7:
            return
        status, body = stack.af.api("GET", f"/ctrain/api/models/{settings.model_name}")
        assert status == 200, body
        seen["view"] = body
        SCREENSHOTS.mkdir(exist_ok=True)
        shot = SCREENSHOTS / "ctrain_view_waiting_for_approval.png"
        seen["page"] = view_in_browser(
            stack.af.base_url, stack.af.admin_password(), shot, ready="version 1"
        )
        seen["shot"] = shot
        # ct_deadlines looks twice while the request waits (it expires within the warning);
        # ct_training's own deadline (two minutes in the stack) passes as it waits.
        seen["looks"] = [stack.run_now("ct_deadlines")["state"] for _ in range(2)]
        seen["late"] = wait_for(
            "the waiting retrain to be told late",
            lambda: stack.told("is still running past its deadline"),
            240,
        )

    with stack.champion_home(
        home,
        dataset={"labels": "delayed"},
        promotion={"approval": "required", "approval_timeout_minutes": 60},
        alerts={"approval_expiry_warning_minutes": 60},
        serving=SERVE_DEMO,
    ) as (settings, client):
        (settings.root / "logs").mkdir(parents=True, exist_ok=True)
        with Online(settings, stack.af) as online:
            timeline = run_stream(
                settings,
                stack.af,
                start=3,
                drift_from=4,
                stop=8,
                approve="Approve",
                approve_after=2,
                on_land=look_while_waiting,
            )

            # Approved and handed over: the view shows the request as rolling out until the
            # canary ends (it lasts two steps of 15 s at least).
            def rolling_out():
                status, body = stack.af.api("GET", f"/ctrain/api/models/{settings.model_name}")
                pending = body.get("pending_request") if status == 200 else None
                return pending if pending and pending["stage"] == "rolling out" else None

            seen["rolling_out"] = wait_for("the view to show the rollout", rolling_out, 120)
            online.settle()
            report = online.report()
        yield SimpleNamespace(
            settings=settings,
            client=client,
            stack=stack,
            timeline=timeline,
            seen=seen,
            report=report,
        )


def test_while_the_approval_waits_two_later_batches_are_checked_and_named_for_it(stream):
    settings, timeline = stream.settings, stream.timeline
    by_batch = {e["batch"]: e for e in timeline}
    (request,) = trigger_log(settings)
    run = request.requested_run
    assert by_batch[5]["requested"] and run.startswith("retrain__")
    assert [e["batch"] for e in timeline if e.get("checked_while_waiting") == run] == [6, 7]
    # Each was checked (its summary written, under the champion that still serves) ...
    checked = {w.batch_id: w for w in load_summaries(settings)}
    for b in ("batch_0006", "batch_0007"):
        assert checked[b].champion_version == "1", b
        assert scored_by(settings, b) == "1", b  # not held for hours: scored at once
    # ... and the monitor's runs said so, naming the run that waits (their notes, read with
    # the official client as a person's tooling would).
    import airflow_client.client as ac

    af, since = stream.stack.af, stream.stack.since
    with ac.ApiClient(ac.Configuration(host=af.base_url, access_token=af.token())) as c:
        runs = ac.DagRunApi(c)

        def mine(dag_id):
            found = runs.get_dag_runs(dag_id, limit=100).dag_runs
            return [r for r in found if r.run_after >= since]

        monitor, training = mine("ct_drift_monitor"), mine("ct_training")
    notes = [r.note or "" for r in monitor]
    naming = [n for n in notes if f"is waiting for approval (ct_training run {run})" in n]
    assert len(naming) >= 2, notes
    # No monitor run waited on the retrain: each ended within a couple of minutes.
    for r in monitor:
        took = r.end_date - r.start_date
        assert took.total_seconds() < 180, (r.dag_run_id, took)
    # The retrain ran under the id its request recorded, and was approved and promoted after.
    assert [r.dag_run_id for r in training] == [run]
    decision = by_batch[5]["decision"]
    assert (decision.decision, decision.challenger_version) == ("rollout", "2"), decision
    assert decision.approver == "admin"


def test_after_the_approval_the_canary_promotes_it_on_live_traffic(stream):
    settings, report = stream.settings, stream.report
    assert current_champion(stream.client, settings.model_name) == "2"
    (done,) = [
        d
        for d in list_decisions(stream.client, settings, limit=100)
        if d.airflow_dag_id == "ct_rollout" and d.decision != "traffic"
    ]
    assert (done.decision, done.rule, done.challenger_version) == ("promoted", "canary_passed", "2")
    assert report["failures"] == [] and report["requests"] > 0
    assert report["answered"].get(("challenger", "2"), 0) > 0
    assert report["rollouts"] and report["rollouts"][0].startswith("v2 promoted 1→2"), report
    # While it ran, the view named the rollout as the pending request's stage, with its run.
    rolling = stream.seen["rolling_out"]
    assert (rolling["dag_id"], rolling["training_run_id"]) == (
        "ct_rollout",
        trigger_log(settings)[0].requested_run,
    )
    assert rolling["url"].startswith("../dags/ct_rollout/runs/")


def test_the_view_showed_the_request_waiting_with_its_run_and_the_windows_since(stream):
    view, page = stream.seen["view"], stream.seen["page"]
    run = trigger_log(stream.settings)[0].requested_run
    pending = view["pending_request"]
    assert (pending["stage"], pending["dag_id"], pending["run_id"]) == (
        "waiting for approval",
        "ct_training",
        run,
    )
    assert pending["url"] == f"../dags/ct_training/runs/{quote(run, safe='')}"
    assert [a["run_id"] for a in view["pending_approvals"]] == [run]
    # In the page a person sees: the request, its stage, the window checked since, the run.
    assert "Retrain requested at" in page["pending"] and "waiting for approval" in page["pending"]
    assert "window(s) checked since: " in page["pending"] and "batch_0006" in page["pending"]
    assert f"ct_training run {run}" in page["pending"]
    assert "Waiting for approval:" in page["pending"]
    assert page["error"] == "" and stream.seen["shot"].stat().st_size > 20_000
    print(f"screenshot: {stream.seen['shot']}")
    print(json.dumps(pending, indent=1))


def test_the_approvers_were_told_once_and_the_rollout_said_each_step(stream):
    """The approval waiting was told once (the approval task may run again: Airflow 3.3.2
    retries it when an answer lands during its pause), with the page to answer it; the canary
    that followed told each change of the traffic, then the new champion, once each."""
    settings, stack = stream.settings, stream.stack
    run = trigger_log(settings)[0].requested_run
    asked = f"Promote {settings.model_name} v2 over v1?"
    (waiting,) = [m for m in stack.told(asked) if m["title"].startswith(asked)]
    assert (
        f"/dags/ct_training/runs/{quote(run, safe='')}/tasks/approval/required_actions"
        in waiting["message"]
    )
    traffic = [
        d
        for d in reversed(list_decisions(stream.client, settings, limit=200))
        if d.decision == "traffic" and " promoted: " not in d.reason
    ]
    rollout = stack.told(": rollout of v2")
    assert len(rollout) == len(traffic) >= 2, [m["title"] for m in rollout]  # began, stepped
    assert all(d.headline in m["message"] for d, m in zip(traffic, rollout, strict=True))
    (changed,) = stack.told(": champion v")
    assert changed["title"] == f"{settings.model_name}: champion v1 → v2 (promoted)"
    assert "canary_passed" in changed["message"]


def test_while_it_waited_the_approval_and_the_run_were_told_near_and_past_their_deadlines(
    stream,
):
    """ct_deadlines warned once that the request nears its expiry (looking twice); Airflow's
    Deadline Alert on ct_training told once that the run waiting for it passed its deadline."""
    settings, stack = stream.settings, stream.stack
    run = trigger_log(settings)[0].requested_run
    assert stream.seen["looks"] == ["success", "success"]
    (expiring,) = stack.told("an approval expires in")
    assert expiring["title"].endswith(
        f"Promote {settings.model_name} v2 over v1? (" + (expiring["title"].rsplit("(", 1)[1])
    )
    assert (
        f"/dags/ct_training/runs/{quote(run, safe='')}/tasks/approval/required_actions"
        in (expiring["message"])
    )
    (late,) = stack.told("is still running past its deadline")
    assert late["title"] == f"{settings.model_name}: ct_training run {run} is still running " + (
        "past its deadline"
    )
    assert "its deadline, 2 min after (alerts.training_run_minutes" in late["message"]
    assert stream.seen["late"] == [late]
