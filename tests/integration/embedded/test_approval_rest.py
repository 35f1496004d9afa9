"""The approval gate under the real scheduler, answered through the REST API as a person would.

``promotion.approval: required``: ct_training stops at Airflow's human-in-the-loop task when its
comparison would move champion. Approve, reject and no answer (expiry) each end in exactly one
decision record that names the approver, and in a run note that says so.
"""

import json
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from tests_support import QUICK, WEAK, bootstrap_champion

from ctrain.data.demo_source import DemoSource
from ctrain.promotion.decisions import list_decisions
from ctrain.registry import current_champion
from ctrain.runtime import wait_for

pytestmark = pytest.mark.integration


def test_approve_reject_and_expire_each_make_one_record_naming_the_approver(
    make_settings, client, stack
):
    delayed = {"labels": "delayed"}  # bootstrap_champion lands the labels apart
    weak = make_settings(
        dataset=delayed, training={"candidates": WEAK}, promotion={"floors": {"roc_auc": 0.5}}
    )
    bootstrap_champion(weak, DemoSource(**weak.demo.model_dump()))  # v1, a weak champion
    required = {"floors": {"roc_auc": 0.5}, "approval": "required"}
    # Long enough to answer on a busy machine; the expiry is shown with a short one below.
    quick = {"candidates": QUICK}  # the gate is the subject here, not the model
    settings = make_settings(
        dataset=delayed, training=quick, promotion=required | {"approval_timeout_minutes": 10}
    )
    stack.use(settings)
    import airflow_client.client as ac

    af = stack.af
    config = ac.Configuration(host=af.base_url, access_token=af.token())
    # The operator starts the runs; the admin answers (the one who started a run may not).
    as_operator = ac.Configuration(host=af.base_url, access_token=af.token("operator"))
    with ac.ApiClient(config) as c, ac.ApiClient(as_operator) as o:
        runs, tis = ac.DagRunApi(c), ac.TaskInstanceApi(c)

        def start(conf):
            body = ac.TriggerDAGRunPostBody(logical_date=None, conf=conf)
            return ac.DagRunApi(o).trigger_dag_run("ct_training", body).dag_run_id

        def pending(run_id):
            details = tis.get_hitl_details("ct_training", run_id).hitl_details
            return [d for d in details if not d.response_received]

        def answer(run_id, option, comment):
            """Answer as a person does, once the request has waited a while, and answer again
            if Airflow asks again, until the run ends.

            Airflow 3.3.2's scheduler fails the approval task (and retries it, which asks again)
            when the answer lands before it has handled the task's pause (seen up to 6 s after
            the request on 2 busy cores, every time at once): so the answer waits 10 s.
            """
            payload = ac.UpdateHITLDetailPayload(
                chosen_options=[option], params_input={"comment": comment}
            )

            def step():
                asked = pending(run_id)
                if asked and datetime.now(UTC) - asked[0].created_at > timedelta(seconds=10):
                    try:
                        tis.update_hitl_detail("ct_training", run_id, "approval", -1, payload)
                    except ac.ApiException as exc:  # answered between the look and the PATCH
                        if exc.status != 409:
                            raise
                return finished(run_id)

            return wait_for(f"{run_id} to end after {option}", step, alive=af.alive)

        def finished(run_id):
            run = runs.get_dag_run("ct_training", run_id)
            return run if str(run.state.value) in ("success", "failed") else None

        # 1. Approve: the better challenger v2 is promoted, with the approver on record.
        run_id = start({"reason": "approve path"})
        (asked,) = wait_for("the approval request", lambda: pending(run_id), alive=af.alive)
        assert asked.subject == (
            f"Promote {settings.model_name} v2 over v1? (significant_improvement)"
        )
        assert "difference +" in asked.body and "trigger: approve path" in asked.body
        # The ctrain view shows the request waiting, with the way to answer it.
        req = urllib.request.Request(
            f"{af.base_url}/ctrain/api/models/{settings.model_name}",
            headers={"Authorization": f"Bearer {config.access_token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            waiting = json.loads(r.read())["pending_approvals"]
        assert [w["run_id"] for w in waiting] == [run_id]
        assert waiting[0]["url"].endswith("/tasks/approval/required_actions")
        run = answer(run_id, "Approve", "checked the slices")
        assert str(run.state.value) == "success"
        assert run.note.startswith("v2 promoted 1→2 (significant_improvement): roc_auc +")
        assert run.note.endswith("; approved by admin")
        assert current_champion(client, settings.model_name) == "2"

        # 2. Reject: a forced retrain (v3) asks again; the answer is no, with a comment.
        run_id = start({"reason": "reject path", "force": True})
        wait_for("the second approval request", lambda: pending(run_id), alive=af.alive)
        run = answer(run_id, "Reject", "not before the audit")
        assert str(run.state.value) == "success"
        assert run.note.startswith("v3 rejected (approval_rejected)")
        assert "; rejected by admin; champion stays 2" in run.note

        # 3. No answer: the request expires after approval_timeout_minutes, read when the
        # approval task runs (here 6 s).
        told_before = stack.told()  # what the first two runs told (``use`` starts a new count)
        stack.use(
            make_settings(
                dataset=delayed,
                training=quick,
                promotion=required | {"approval_timeout_minutes": 0.1},
            )
        )
        run_id = start({"reason": "expire path", "force": True})
        wait_for("the third approval request", lambda: pending(run_id), alive=af.alive)
        run = wait_for("the expired run to end", lambda: finished(run_id), 240, alive=af.alive)
        assert str(run.state.value) == "success"
        assert run.note.startswith("v4 expired (approval_expired)")

    records = {d.airflow_run_id: d for d in list_decisions(client, settings, limit=50)}
    by_reason = {d.trigger_reason: d for d in records.values()}
    approved, rejected, expired = (by_reason[f"{p} path"] for p in ("approve", "reject", "expire"))
    assert approved.decision == "promoted" and approved.approver == "admin"
    assert approved.started_by == "operator"  # Airflow's triggering user, another person
    assert approved.approval_comment == "checked the slices" and approved.champion_after == "2"
    assert rejected.decision == "rejected" and rejected.approver == "admin"
    assert rejected.reason.startswith("rejected by admin: not before the audit")
    assert expired.decision == "expired" and expired.approver is None
    assert "no answer within 0.1 minutes" in expired.reason
    # Exactly one record per run.
    per_run = [d.airflow_run_id for d in list_decisions(client, settings, limit=50)]
    assert len(per_run) == len(set(per_run)) == 4  # bootstrap + the three runs
    assert current_champion(client, settings.model_name) == "2"
    # What the approvers and the operators were told, once each: three requests waiting, the
    # approved one's move of champion, the expiry (a rejection moves nothing and is not told).
    name = settings.model_name
    told = told_before + stack.told()
    waiting = [m for m in told if m["title"].startswith(f"Promote {name} v")]
    assert [m["title"].split(" over ")[0] for m in waiting] == [
        f"Promote {name} v2",
        f"Promote {name} v3",
        f"Promote {name} v4",
    ]
    assert [m["title"] for m in told if ": champion v" in m["title"]] == [
        f"{name}: champion v1 → v2 (promoted)"
    ]
    (gone,) = [m for m in told if "expired" in m["title"]]
    assert gone["title"] == f"{name}: the approval of v4 expired" and gone["type"] == "warning"
    assert expired.headline in gone["message"]
