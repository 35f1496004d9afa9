"""Rollouts over real HTTP: shadow, canary steps, guardrails and automatic rollback.

A real champion and a real challenger from ctrain's own training, a real MLflow store, uvicorn on
a free port; the rollout's verbs are called as ``ct_rollout`` calls them (its scheduling is
tested under the real scheduler in ``tests/integration/test_rollout_e2e.py``).
"""

import json
import re
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from tests_support import (
    WEAK,
    ServerThread,
    bootstrap_champion,
    from_template,
    lose_artifacts,
    request_rows,
)

from ctrain import status, steps
from ctrain.data.demo_source import DemoSource
from ctrain.promotion.decisions import list_decisions
from ctrain.records import DecisionKind, RunContext
from ctrain.registry import CHALLENGER, aliased_version, current_champion
from ctrain.rollout import control as rollout
from ctrain.rollout.evidence import Evidence, guardrails, measure, read_look, write_look
from ctrain.runtime import wait_for
from ctrain.serving.app import create_app
from ctrain.serving.traffic import Split, read_split


def _project(make_settings, client, challenger=None, **rollout_cfg):
    """v1 champion, v2 a challenger (of the ``challenger`` candidates, default the project's)
    that was handed to a rollout: champion stays 1."""
    base = make_settings()

    def project(**extra):
        return make_settings(
            dataset={**base.dataset.model_dump(mode="json"), "labels": "delayed"},
            monitoring={"html_reports": False},
            promotion={"floors": {"roc_auc": 0.5}},
            serving={
                "reload_seconds": 0.2,
                "rollout": {
                    "strategy": "canary",
                    "canary_steps": [50, 100],
                    "step_seconds": 0,
                    "min_rows": 40,
                    "min_labeled_rows": 30,
                    **rollout_cfg,
                },
            },
            **extra,
        )

    settings = project()
    src = DemoSource(**settings.demo.model_dump())
    trainer = project(training={"candidates": challenger}) if challenger else settings

    def build(home):
        bootstrap_champion(settings.model_copy(update={"home": home}), src)
        return steps.run_training(
            RunContext(run_id="second", force=True, window_batches=2),
            settings=trainer.model_copy(update={"home": home}),
        )

    out = from_template(settings, ("handed to a rollout", challenger), build)
    assert out["decision"] == DecisionKind.ROLLOUT, out  # handed over, not promoted
    assert current_champion(client, settings.model_name) == "1"
    assert aliased_version(client, settings.model_name, CHALLENGER).version == 2
    return settings, src


def _send(server, rows, per=20):
    """POST ``rows`` in requests of ``per``; every answer, or the failures."""
    answers, failures = [], []
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for i in range(0, len(rows), per):
            r = c.post("/predict", json={"rows": rows[i : i + per]})
            if r.status_code == 200:
                answers += r.json()["predictions"]
            else:
                failures.append(r.text)
    return answers, failures


def _until(what, check, timeout=30):
    return wait_for(what, check, timeout, 0.1)


def _landed(settings, split, rows):
    """Until the windows of ``split`` hold ``rows`` pairs (they land every 2 s during a step)."""
    since = pd.Timestamp(split.since).to_pydatetime()
    return _until(
        f"{rows} pairs landed", lambda: (ev := measure(settings, split, since)).pairs >= rows and ev
    )


def _following(server, split):
    """Until the service follows ``split`` (its challenger loaded, or failed to load); its
    health's rollout part."""

    def look():
        h = httpx.get(f"{server.url}/health").json()["rollout"]
        settled = h["challenger_loaded"] or not split.active or h["challenger_error"]
        return h if h["revision"] == split.revision and settled else None

    return _until(f"the service following revision {split.revision}", look)


def _records(client, settings, kind):
    return [d for d in list_decisions(client, settings, limit=100) if d.decision == kind]


def test_shadow_scores_every_row_with_both_versions_and_only_the_champion_answers(
    make_settings, client
):
    settings, src = _project(make_settings, client, strategy="shadow")
    ctx = RunContext(dag_id="ct_rollout", run_id="shadow-1", trigger_reason="test")
    with ServerThread(create_app(settings, client, source="test"), settings) as server:
        split = rollout.start(settings, client, None, ctx)
        assert (split.strategy, split.challenger, split.percent) == ("shadow", "2", 0.0)
        _following(server, split)
        rows = request_rows(src, batch=20, n=120)
        answers, failures = _send(server, rows)
        assert failures == []
        assert {(a["arm"], a["model_version"]) for a in answers} == {("champion", "1")}
        # Labels for those rows arrive: the comparison becomes paired on labeled live rows.
        src.write_labels(20, settings.labels_landing_dir)
        steps.ingest_labels(settings)
        ev = _landed(settings, split, 120)
    assert ev.answered == {"champion": 120, "challenger": 0}
    assert (ev.challenger_scored, ev.challenger_errors, ev.pairs) == (120, 0, 120)
    assert 0 < ev.agreement <= 1 and ev.prediction_drift is not None
    assert ev.labeled_pairs == 120 and ev.paired["metric"] == "roc_auc"
    assert ev.paired["ci_low"] <= ev.paired["diff"] <= ev.paired["ci_high"]
    # Both arms are in the log; only the answered rows land for ingest and the monitor.
    shadow = sorted(settings.predictions_dir.glob("online-*-shadow-v2.parquet"))
    assert shadow and not any((settings.landing_dir / f.name).exists() for f in shadow)
    answered = sorted(
        f for f in settings.predictions_dir.glob("online-*.parquet") if f not in shadow
    )
    assert answered and all((settings.landing_dir / f.name).exists() for f in answered)

    progress = rollout.advance(settings, client, split.rollout_id, ctx)
    assert progress.state == rollout.PASSED, progress
    decision = rollout.finish(settings, client, split.rollout_id, ctx, passed=True)
    assert decision.moved and decision.rule == "shadow_passed", decision
    assert (decision.champion_before, decision.champion_after) == ("1", "2")
    assert decision.challenger_metric == ev.paired["challenger"]  # the live paired figures
    assert current_champion(client, settings.model_name) == "2"
    assert read_split(client, settings.model_name).status == "promoted"
    traffic = _records(client, settings, DecisionKind.TRAFFIC)
    assert [t.rule for t in traffic] == ["shadow", "shadow"]  # began, ended: both recorded
    # A retry of finish decides nothing twice.
    again = rollout.finish(settings, client, split.rollout_id, ctx, passed=True)
    assert again.replayed and again.record_run_id == decision.record_run_id


def test_canary_moves_a_sticky_share_in_steps_then_promotes(make_settings, client):
    settings, src = _project(make_settings, client)
    ctx = RunContext(dag_id="ct_rollout", run_id="canary-1", trigger_reason="test")
    with ServerThread(create_app(settings, client, source="test"), settings) as server:
        split = rollout.start(settings, client, "2", ctx)
        assert (split.strategy, split.percent, split.step) == ("canary", 50.0, 0)
        # What the offline comparison's rows say about how differently v2 answers.
        assert re.match(r"\d+ held-out rows of v2's training window: v2 ", split.expected_from)
        assert split.expected_shift is not None and abs(split.expected_shift) < 0.1
        _following(server, split)
        rows = request_rows(src, batch=21, n=200)
        first, failures = _send(server, rows)
        assert failures == []
        arm = {a["row_id"]: (a["arm"], a["model_version"]) for a in first}
        share = sum(v == ("challenger", "2") for v in arm.values()) / len(arm)
        assert 0.35 < share < 0.65, share
        assert {v for v in arm.values()} == {("champion", "1"), ("challenger", "2")}
        # Sticky: the same ids get the same arm again.
        again, _ = _send(server, rows)
        assert {a["row_id"]: (a["arm"], a["model_version"]) for a in again} == arm
        _landed(settings, split, 400)

        progress = rollout.advance(settings, client, split.rollout_id, ctx)
        assert progress.state == rollout.NEXT and progress.percent == 100.0, progress
        # Each look is kept for the ctrain view: every guardrail's figure against its bound.
        look = json.loads((settings.rollouts_dir / f"{split.rollout_id}.json").read_text())
        assert (look["step"], look["percent"]) == (0, 50.0)
        assert look["evidence"]["challenger_scored"] >= settings.serving.rollout.min_rows
        checks = {c["name"]: c for c in look["checks"]}
        assert {"error_rate", "latency", "prediction_drift"} <= set(checks), checks
        cfg = settings.serving.rollout
        assert (checks["error_rate"]["value"], checks["error_rate"]["bound"]) == (
            0.0,
            cfg.max_error_rate,
        )
        assert checks["prediction_drift"]["bound"] == cfg.max_prediction_shift
        for c in checks.values():
            assert c["passed"] == (
                c["value"] <= c["bound"] if c["at_most"] else c["value"] >= c["bound"]
            ), c
        split = read_split(client, settings.model_name)
        # The view shows the split at its new step, and no look until one is taken there.
        shown = status.overview(settings, client)["traffic"]
        assert (shown["active"], shown["step"], shown["steps"]) == (True, 1, [50.0, 100.0])
        assert shown["look"] is None
        _following(server, split)
        last, failures = _send(server, rows[:100])
        assert failures == []
        assert {(a["arm"], a["model_version"]) for a in last} == {("challenger", "2")}
        _landed(settings, split, 100)
        progress = rollout.advance(settings, client, split.rollout_id, ctx)
        assert progress.state == rollout.PASSED, progress
        shown = status.overview(settings, client)["traffic"]
        assert (shown["look"]["step"], shown["look"]["percent"]) == (1, 100.0)
        assert all(c["passed"] for c in shown["look"]["checks"])
        decision = rollout.finish(settings, client, split.rollout_id, ctx, passed=True)
        assert decision.moved and decision.rule == "canary_passed", decision
        _following(server, read_split(client, settings.model_name))  # the split ended
        after, failures = _send(server, rows[:20])
        assert failures == [] and {(a["arm"], a["model_version"]) for a in after} == {
            ("champion", "2")
        }
    traffic = _records(client, settings, DecisionKind.TRAFFIC)
    assert len(traffic) == 3  # began at 50 %, moved to 100 %, ended


def test_a_failed_guardrail_sends_traffic_back_and_records_the_evidence(
    make_settings, client, tmp_path
):
    # A challenger much worse than the champion: the labeled live rows show it.
    settings, src = _project(make_settings, client, challenger=WEAK)
    ctx = RunContext(dag_id="ct_rollout", run_id="canary-2", trigger_reason="test")
    with ServerThread(create_app(settings, client, source="test"), settings) as server:
        split = rollout.start(settings, client, "2", ctx)
        _following(server, split)
        rows = request_rows(src, batch=22, n=300)
        _send(server, rows)
        src.write_labels(22, settings.labels_landing_dir)
        steps.ingest_labels(settings)
        _landed(settings, split, 300)
        progress = rollout.advance(settings, client, split.rollout_id, ctx)
        assert progress.state == rollout.FAILED and "labeled_performance" in progress.detail
        ended = read_split(client, settings.model_name)
        assert (ended.status, ended.percent, ended.active) == ("rolled_back", 0.0, False)
        _following(server, ended)
        after, failures = _send(server, rows)
        assert failures == [] and {(a["arm"], a["model_version"]) for a in after} == {
            ("champion", "1")
        }
    decision = rollout.finish(settings, client, split.rollout_id, ctx, passed=False)
    assert decision.decision == DecisionKind.REJECTED and decision.rule == "canary_rolled_back"
    assert "labeled_performance" in decision.reason
    assert current_champion(client, settings.model_name) == "1"
    # The record carries the evidence: each check, with the figures it judged.
    saved = json.loads(
        Path(
            client.download_artifacts(decision.record_run_id, "decision.json", str(tmp_path))
        ).read_text()
    )
    failed = [c for c in saved["checks"] if not c["passed"]]
    assert "labeled_performance" in [c["name"] for c in failed], saved["checks"]
    assert saved["evidence"]["labeled_pairs"] >= 300
    assert saved["evidence"]["paired"]["ci_high"] < 0  # the interval, all of it below 0


def test_a_challenger_that_cannot_load_never_answers_and_is_rolled_back(make_settings, client):
    settings, src = _project(make_settings, client)
    ctx = RunContext(dag_id="ct_rollout", run_id="canary-3", trigger_reason="test")
    split = rollout.start(settings, client, "2", ctx)
    lose_artifacts(client, settings.model_name, "2")  # the artifact store lost its files
    # A rollout begun now would have no expectation of v2's answers (the guardrails judge it).
    expected, _, why = rollout.expected_shift_of(settings, client, "2", "1")
    assert expected is None and why.startswith("no expectation: v2's held-out rows could not")
    # The service starts after the split was set: it finds the split where it was.
    with ServerThread(create_app(settings, client, source="test"), settings) as server:
        health = _following(server, split)
        assert health["challenger_loaded"] is False and health["challenger_error"]
        rows = request_rows(src, batch=23, n=120)
        since = pd.Timestamp(split.since).to_pydatetime()
        answers, failures = _send(server, rows[:60])
        # During a rollout windows land early, but never smaller than ingest accepts a batch
        # (validation.min_rows, 100): 60 rows wait past the early landing (2 s here).
        time.sleep(3)
        assert measure(settings, split, since).challenger_scored == 0
        more, more_failures = _send(server, rows[60:])
        answers, failures = answers + more, failures + more_failures
        assert failures == []
        assert {(a["arm"], a["model_version"]) for a in answers} == {("champion", "1")}
        ev = _until(
            "the failures landed",
            lambda: (e := measure(settings, split, since)).challenger_errors >= 120 and e,
        )
        assert ev.error_rate == 1.0 and ev.pairs == 0
        progress = rollout.advance(settings, client, split.rollout_id, ctx)
        assert progress.state == rollout.FAILED and "error_rate" in progress.detail
    decision = rollout.finish(settings, client, split.rollout_id, ctx, passed=False)
    assert decision.rule == "canary_rolled_back" and "120 of 120 rows failed" in decision.reason
    assert current_champion(client, settings.model_name) == "1"


def test_one_writer_a_stale_split_write_is_refused(make_settings, client):
    from ctrain.rollout.split import SplitConflict, write_split

    settings, _ = _project(make_settings, client)
    ctx = RunContext(dag_id="ct_rollout", run_id="canary-4", trigger_reason="test")
    # A version whose training window is not here (registered elsewhere) starts without an
    # expectation of how differently it answers.
    client.set_model_version_tag(settings.model_name, "2", "data_content_hash", "elsewhere")
    split = rollout.start(settings, client, "2", ctx)
    assert (split.expected_shift, split.expected_shift_se) == (None, 0.0)
    assert split.expected_from == "no expectation: v2 names no training window here"
    rollout.abort(settings, client, "test: stop it", RunContext(trigger_reason="a person"))
    with pytest.raises(SplitConflict, match="not 1"):
        write_split(settings, client, split, expected_revision=1, reason="stale", ctx=ctx)
    progress = rollout.advance(settings, client, split.rollout_id, ctx)
    assert progress.state == rollout.FAILED and "stop it" in progress.detail
    decision = rollout.finish(settings, client, split.rollout_id, ctx, passed=False)
    assert (
        decision.rule == "canary_aborted" and current_champion(client, settings.model_name) == "1"
    )


def test_ab_decides_on_each_arms_own_labeled_outcomes(make_settings, client):
    settings, src = _project(make_settings, client, strategy="ab", ab_percent=50)
    ctx = RunContext(dag_id="ct_rollout", run_id="ab-1", trigger_reason="test")
    with ServerThread(create_app(settings, client, source="test"), settings) as server:
        split = rollout.start(settings, client, "2", ctx)
        assert (split.strategy, split.percent) == ("ab", 50.0)
        _following(server, split)
        rows = request_rows(src, batch=25, n=400)
        answers, failures = _send(server, rows)
        assert failures == []
        _landed(settings, split, 400)
        # No labels yet: the rule has nothing to decide on, and the step waits for them.
        waiting = rollout.advance(settings, client, split.rollout_id, ctx)
        assert waiting.state == rollout.WAIT and "labels" in waiting.detail
        src.write_labels(25, settings.labels_landing_dir)
        steps.ingest_labels(settings)
        progress = rollout.advance(settings, client, split.rollout_id, ctx)
        assert progress.state == rollout.PASSED, progress
    ev = measure(settings, split, pd.Timestamp(split.since).to_pydatetime())
    arms = ev.per_arm
    by_arm = {arm: sum(a["arm"] == arm for a in answers) for arm in ("champion", "challenger")}
    assert arms["champion_labeled"] == by_arm["champion"]  # each arm, on the rows it answered
    assert arms["challenger_labeled"] == by_arm["challenger"]
    decision = rollout.finish(settings, client, split.rollout_id, ctx, passed=True)
    test = arms["test"]
    if test["ci_low"] > 0:
        assert decision.moved and decision.rule == "ab_better"
    else:
        assert decision.rule == "ab_not_better" and not decision.moved
        assert current_champion(client, settings.model_name) == "1"
        assert read_split(client, settings.model_name).status == "rejected"


def test_a_rollout_whose_watch_stopped_is_rolled_back_by_finish(make_settings, client):
    settings, _ = _project(make_settings, client)
    ctx = RunContext(dag_id="ct_rollout", run_id="canary-5", trigger_reason="test")
    split = rollout.start(settings, client, "2", ctx)
    # ct_rollout's watch failed or timed out: finish runs anyway (trigger rule all_done).
    decision = rollout.finish(settings, client, split.rollout_id, ctx, passed=False)
    assert decision.decision == DecisionKind.REJECTED and decision.rule == "canary_rolled_back"
    assert "stopped before its steps were done" in decision.reason
    ended = read_split(client, settings.model_name)
    assert (ended.status, ended.active) == ("rolled_back", False)
    assert current_champion(client, settings.model_name) == "1"


def _evidence(**figures) -> Evidence:
    """A step's evidence with no traffic at all, but for ``figures``."""
    none = dict.fromkeys(
        ["champion_p99_ms", "challenger_p99_ms", "agreement", "mean_abs_diff", "positive_rate"]
        + ["prediction_shift", "prediction_shift_se", "prediction_drift", "paired", "per_arm"]
    )
    return Evidence(
        **dict.fromkeys(["rollout_id", "since", "champion", "challenger"], "x"),
        **none
        | {"answered": {}, "challenger_scored": 0, "challenger_errors": 0, "error_rate": 0.0}
        | {"pairs": 0, "labeled_pairs": 0}
        | figures,
    )


def test_prediction_drift_is_held_to_the_shift_the_comparison_showed(make_settings):
    # A retrain after a change answers differently from the champion, by design: its live
    # shift is judged against the shift on its held-out rows, not against zero.
    settings = make_settings()
    ev = _evidence(
        answered={"champion": 800, "challenger": 200},
        challenger_scored=1000,
        pairs=1000,
        agreement=0.6,
        mean_abs_diff=0.3,
        positive_rate={"champion": 0.37, "challenger": 0.18},
        prediction_shift=-0.19,
        prediction_shift_se=0.01,
        prediction_drift=0.2,
    )

    def check(split):
        (c,) = [c for c in guardrails(settings, split, ev) if c.name == "prediction_drift"]
        return c

    expected = Split(status="running", expected_shift=-0.17, expected_from="375 held-out rows")
    assert check(expected).passed
    assert "a shift of -19.0% against -17.0% expected (375 held-out rows): off by 2.0% ± 2.0% " in (
        check(expected).detail
    )
    assert not check(Split(status="running", expected_from="no expectation: none")).passed
    assert not check(Split(status="running", expected_shift=0.05)).passed  # the other way
    # Off by 13 points: past 10 on these samples, not when the held-out rows were few.
    assert not check(Split(status="running", expected_shift=-0.06)).passed
    assert check(Split(status="running", expected_shift=-0.06, expected_shift_se=0.03)).passed


def test_a_rollout_id_from_the_registry_becomes_a_file_name_only_in_ctrains_form(make_settings):
    """The split is a registry tag a person with EDIT can write: an id that is not of the form
    ``control.start`` gives is never made a path, read or written."""
    settings = make_settings()
    ev = _evidence()
    outside = settings.root / "outside.json"
    for rollout_id in ("../outside", "v2-0000000/../../outside", "/tmp/x", "v2-deadbeef.json"):
        split = Split(rollout_id=rollout_id, challenger="2", status="running")
        write_look(settings, split, ev, guardrails(settings, split, ev))
        assert read_look(settings, split) is None
    assert not outside.exists() and not settings.rollouts_dir.exists()
    good = Split(rollout_id="v2-deadbeef", challenger="2", status="running")
    write_look(settings, good, ev, guardrails(settings, good, ev))
    assert read_look(settings, good)["checks"][0]["name"] == "error_rate"
    assert [p.name for p in settings.rollouts_dir.iterdir()] == ["v2-deadbeef.json"]
