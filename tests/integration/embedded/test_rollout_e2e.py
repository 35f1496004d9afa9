"""Canary rollouts under the real scheduler, with live traffic through ``ctrain serve``.

``serving.rollout.strategy: canary``. A retrain whose challenger passes (forced past significance: both versions are trained on the
same regime) is handed by ct_training to
ct_rollout, which moves the challenger through 50 % and 100 % of the traffic while callers keep
calling, judges each step on the inference log, and promotes it (compare-and-set, one record).
A second challenger whose files the artifact store then loses cannot load in the service: it
never answers, ct_rollout sees its failures and rolls back on its own, and the service,
restarted meanwhile, finds the split where it was. No caller sees a failed request.
"""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests_support import (
    QUICK,
    SCREENSHOTS,
    ServerThread,
    bootstrap_champion,
    lose_artifacts,
    request_rows,
    view_in_browser,
)

from ctrain.data.demo_source import DemoSource
from ctrain.harness.callers import LiveTraffic
from ctrain.promotion.decisions import list_decisions
from ctrain.records import DecisionKind
from ctrain.registry import current_champion
from ctrain.runtime import wait_for
from ctrain.serving.app import create_app
from ctrain.serving.traffic import read_split

pytestmark = pytest.mark.integration


def test_a_canary_promotes_under_traffic_and_a_broken_one_rolls_back_by_itself(
    make_settings, client, stack
):
    delayed = {"labels": "delayed"}
    settings = make_settings(
        dataset=delayed,
        training={"candidates": QUICK},  # the rollout is the subject here, not the model
        promotion={"floors": {"roc_auc": 0.5}},
        serving={
            "reload_seconds": 0.3,
            "rollout": {
                "strategy": "canary",
                "canary_steps": [50, 100],
                "step_seconds": 2,
                "min_rows": 40,
                "step_timeout_seconds": 120,
            },
        },
    )
    src = DemoSource(**settings.demo.model_dump())
    bootstrap_champion(settings, src)  # v1
    # The service's inference log lands in this home's landing folder, which no watcher of the
    # stack looks at: only ct_training and ct_rollout run here.
    stack.use(settings)
    import airflow_client.client as ac

    traffic = LiveTraffic(None, request_rows(src, batch=24, n=200))
    server = ServerThread(create_app(settings, client, source="e2e"), settings).__enter__()
    traffic.url = server.url
    traffic.__enter__()
    try:
        af = stack.af
        config = ac.Configuration(host=af.base_url, access_token=af.token())
        with ac.ApiClient(config) as c:
            runs, tis = ac.DagRunApi(c), ac.TaskInstanceApi(c)

            def trigger(dag_id, conf):
                body = ac.TriggerDAGRunPostBody(logical_date=None, conf=conf)
                return runs.trigger_dag_run(dag_id, body).dag_run_id

            def ended(dag_id, run_id):
                run = runs.get_dag_run(dag_id, run_id)
                return run if str(run.state.value) in ("success", "failed") else None

            def rollout_runs():
                return [r["dag_run_id"] for r in stack.runs("ct_rollout")]

            # 1. A retrain passes; ct_training hands it over; the canary promotes it.
            run_id = trigger("ct_training", {"reason": "canary path", "force": True})
            run = wait_for(
                "ct_training to end", lambda: ended("ct_training", run_id), alive=af.alive
            )
            assert str(run.state.value) == "success", run
            assert run.note.startswith("v2 won (forced)"), run.note
            assert current_champion(client, settings.model_name) == "1"
            (handed,) = wait_for("ct_rollout to start", rollout_runs, alive=af.alive)
            run = wait_for("the canary to end", lambda: ended("ct_rollout", handed), alive=af.alive)
            assert str(run.state.value) == "success", run
            assert run.note.startswith("v2 promoted 1→2 (canary_passed)"), run.note
            assert current_champion(client, settings.model_name) == "2"
            assert traffic.answered[("challenger", "2")] and traffic.answered[("champion", "1")]

            # 2. v3 is handed over, then the artifact store loses its files while the
            # service restarts: the restarted service finds the split, cannot load v3, and
            # answers with the champion; ct_rollout rolls back on the failures it logs.
            # In its own process, as a person's `ctrain train` would be (in this one it
            # would hold the service's interpreter).
            out = subprocess.run(
                [
                    str(Path(sys.executable).with_name("ctrain")),
                    "train",
                    "--force",
                    "--reason",
                    "forced",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert out.returncode == 0, out.stderr[-2000:]
            assert json.loads(out.stdout)["decision"] == DecisionKind.ROLLOUT, out.stdout
            traffic.url = None
            server.__exit__(None, None, None)
            run_id = trigger("ct_rollout", {"version": "3", "reason": "broken path"})

            def began():
                state = tis.get_task_instance("ct_rollout", run_id, "start").state
                assert state is None or state.value not in ("failed", "upstream_failed")
                return state is not None and state.value == "success"

            wait_for("the split of v3", began, alive=af.alive)
            split = read_split(client, settings.model_name)
            assert (split.challenger, split.percent, split.active) == ("3", 50.0, True)
            # The ctrain view draws the rollout while it waits for rows (no service runs now):
            # the arms, the canary's steps, and the error-rate guardrail against its bound.
            SCREENSHOTS.mkdir(exist_ok=True)
            shot = SCREENSHOTS / "ctrain_view_rollout.png"
            seen = view_in_browser(af.base_url, af.admin_password(), shot, rollout=True)
            assert "Rollout: canary of v3 against v2, step 1 of 2" in seen["rollout"], seen
            assert "champion v2: 50%" in seen["rollout"] and "v3: 50%" in seen["rollout"]
            assert "error rate" in seen["rollout"] and "≤ 0.0100" in seen["rollout"]
            assert f"0 of {settings.serving.rollout.min_rows} rows scored by v3" in seen["rollout"]
            print(f"screenshot: {shot}")
            lose_artifacts(client, settings.model_name, "3")
            server = ServerThread(
                create_app(settings, client, source="e2e-2"), settings
            ).__enter__()
            traffic.url = server.url
            run = wait_for("the rollback", lambda: ended("ct_rollout", run_id), alive=af.alive)
            assert str(run.state.value) == "success", run
            assert run.note.startswith("v3 rejected (canary_rolled_back)"), run.note
            health = httpx.get(f"{server.url}/health").json()
            assert health["rollout"]["challenger"] is None  # traffic is all the champion's
    finally:
        traffic.__exit__(None, None, None)
        server.__exit__(None, None, None)
    assert traffic.failures == [], traffic.failures[:5]
    assert ("challenger", "3") not in traffic.answered  # v3 never answered
    assert current_champion(client, settings.model_name) == "2"
    decisions = list_decisions(client, settings, limit=100)
    ends = [d for d in decisions if d.airflow_dag_id == "ct_rollout" and d.decision != "traffic"]
    assert sorted((d.challenger_version, d.decision, d.rule) for d in ends) == [
        ("2", "promoted", "canary_passed"),
        ("3", "rejected", "canary_rolled_back"),
    ]
    assert "error_rate" in next(d for d in ends if d.challenger_version == "3").reason
    traffic_records = [d for d in decisions if d.decision == DecisionKind.TRAFFIC]
    # v2: began at 50 %, moved to 100 %, ended; v3: began at 50 %, rolled back.
    assert len(traffic_records) == 5, [d.headline for d in traffic_records]
    # What the operators were told, once each: v2's canary began and moved on, then v2 became
    # champion (its end is that move); v3's began, then its traffic went back to the champion.
    name = settings.model_name
    assert [m["title"] for m in stack.told(": rollout of v")] == [
        f"{name}: rollout of v2: traffic changed",
        f"{name}: rollout of v2: traffic changed",
        f"{name}: rollout of v3: traffic changed",
        f"{name}: rollout of v3: traffic back to the champion",
    ]
    (back,) = stack.told("traffic back to the champion")
    assert back["type"] == "warning" and "error_rate" in back["message"]
    assert [m["title"] for m in stack.told(": champion v")] == [
        f"{name}: champion v1 → v2 (promoted)"
    ]
