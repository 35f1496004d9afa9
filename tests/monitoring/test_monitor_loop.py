"""The monitor on generated streams, in one process: real scoring, real drift tests, real labels."""

import json

import mlflow
from tests_support import bootstrap_champion

from ctrain import steps
from ctrain.data.demo_source import DemoSource


def _stream(settings, src, start, stop, label_lag=1):
    """Land batches one by one (labels ``label_lag`` batches late); the verdict after each."""
    verdicts = {}
    for i in range(start, stop):
        src.write_batch(i, settings.landing_dir, with_labels=False)
        if i - label_lag >= start - 1:
            src.write_labels(i - label_lag, settings.labels_landing_dir)
        for p in steps.list_landed(settings):
            steps.ingest_one(p, settings)
        steps.ingest_labels(settings)
        for b in steps.unscored(settings):
            steps.score(b, settings)
        steps.check_windows(settings)
        verdicts[i] = steps.decide_retrain(f"t/{i}", training_active=False, settings=settings)
    return verdicts


def test_a_long_stable_stream_never_triggers(delayed):
    settings = delayed()
    src = DemoSource(**settings.demo.model_dump())
    bootstrap_champion(settings, src)
    verdicts = _stream(settings, src, 3, 13)
    assert not any(v["trigger"] for v in verdicts.values()), {
        i: v["reason"] for i, v in verdicts.items()
    }
    summaries = [
        json.loads(p.read_text()) for p in settings.monitor_dir.glob("batch_*/summary.json")
    ]
    assert len(summaries) == 13 and not any(s["flagged"] for s in summaries)
    # Nothing stands against the champion: a scheduled retrain trains on its usual window.
    scheduled = _context("scheduled")
    assert steps.from_standing_change(scheduled, settings) == scheduled


def _context(run_type):
    return steps.run_context(
        "ct_training", f"{run_type}__1", run_type, dict(_PARAMS), declared=set(_PARAMS)
    )


_PARAMS = {"window_batches": 0, "since_batch": "", "dry_run": False, "force": False, "reason": "x"}


def test_covariate_shift_triggers_by_data_drift_and_names_the_columns(delayed):
    # Without the performance estimate (and with severe drift out of reach), drift alone is
    # debounced over windows.
    settings = delayed(estimate_performance=False, severe_drift_importance=1.0)
    src = DemoSource(**settings.demo.model_dump() | {"covariate_shift_from": 5})
    bootstrap_champion(settings, src)
    verdicts = _stream(settings, src, 3, 7)
    assert [i for i, v in verdicts.items() if v["trigger"]] == [6]  # debounce: 2 of the last 3
    v = verdicts[6]
    assert v["flagged_windows"] == ["batch_0005", "batch_0006"]
    assert "data drift in 2 of the last 3 windows" in v["reason"] and "tenure_months" in v["reason"]
    evidence = json.loads(mlflow.artifacts.load_text(v["evidence_uri"]))
    drifted = evidence["evidence"][0]["data_drift"]["drifted_columns"]
    assert "tenure_months" in drifted and "region" in drifted
    assert evidence["evidence"][0]["data_drift"]["dataset_drift"] is True


def test_a_shift_the_estimate_calls_harmless_does_not_retrain_and_the_labels_agree(delayed):
    settings = delayed()
    src = DemoSource(**settings.demo.model_dump() | {"covariate_shift_from": 5})
    bootstrap_champion(settings, src)
    verdicts = _stream(settings, src, 3, 8)
    assert not any(v["trigger"] for v in verdicts.values())
    assert "the estimate calls the shift harmless" in verdicts[7]["reason"]
    s = json.loads((settings.monitor_dir / "batch_0005" / "summary.json").read_text())
    assert s["dataset_drift"] and s["estimate"]["harmless"] and not s["severe_drift"]
    # Once its labels matured, the realised figure is within the tolerance too.
    assert s["performance"]["status"] == "matured" and not s["performance"]["degraded"]
    assert abs(s["performance"]["value"] - s["estimate"]["value"]) < 0.05


def test_a_shift_the_estimate_calls_harmful_retrains_on_its_first_window_before_labels(delayed):
    settings = delayed()
    src = DemoSource(**settings.demo.model_dump() | {"boundary_shift_from": 5})
    bootstrap_champion(settings, src)
    verdicts = _stream(settings, src, 3, 6)
    assert [i for i, v in verdicts.items() if v["trigger"]] == [5]
    assert verdicts[5]["reason"].startswith("estimated performance drop on batch_0005 before")
    assert verdicts[5]["change_from"] == "batch_0005"
    s = json.loads((settings.monitor_dir / "batch_0005" / "summary.json").read_text())
    assert s["performance"]["status"] == "no_labels" and s["estimate"]["harmful"]


def test_a_decisive_concept_change_retrains_on_its_first_labeled_window(delayed):
    settings = delayed(performance_drop=0.05)
    src = DemoSource(**settings.demo.model_dump() | {"concept_drift_from": 5})
    bootstrap_champion(settings, src)
    verdicts = _stream(settings, src, 3, 9, label_lag=2)
    summaries = {
        p.parent.name: json.loads(p.read_text())
        for p in settings.monitor_dir.glob("batch_*/summary.json")
    }
    assert not any(
        s["data_drift"]["dataset_drift"] for s in summaries.values()
    )  # features did not move
    # Labels of batch i arrive with batch i+2: batch 5, the first changed one, is judged when 7
    # lands. Its drop is decisive on its 1500 labeled rows: no second window is waited for.
    assert not verdicts[5]["trigger"] and not verdicts[6]["trigger"]
    assert verdicts[7]["trigger"], verdicts[7]["reason"]
    assert verdicts[7]["reason"].startswith("decisive performance drop on batch_0005")
    assert summaries["batch_0005"]["performance"]["decisive"]
    assert (
        summaries["batch_0005"]["performance"]["degraded"]
        and summaries["batch_0006"]["performance"]["degraded"]
    )
    assert summaries["batch_0008"]["performance"]["status"] == "no_labels"

    # The schedule (or new data) starting ct_training while that evidence stands: the run trains
    # from the change on, as the monitor's request does, and its reason says why.
    ctx = steps.from_standing_change(_context("scheduled"), settings)
    assert ctx["since_batch"] == "batch_0005" == verdicts[7]["change_from"]
    assert ctx["window_batches"] == settings.monitoring.retrain_window_batches
    assert ctx["trigger_reason"].startswith(
        "scheduled; trains from batch_0005 on, as a drift retrain would: the monitor holds "
        "decisive evidence against v1 (decisive performance drop on batch_000"
    )
    window = steps.assemble(ctx, settings)
    assert window["since_batch"] == "batch_0005" and window["batches"][0] == "batch_0005"
    # Its comparison is made where v1 was condemned: non-inferiority there, both figures kept.
    trained = steps.train(window, ctx, settings)
    challenger = steps.register(
        trained,
        window,
        steps.validate_set(window, settings),
        steps.evaluate(trained, window, settings),
        ctx,
        settings,
    )
    comparison = steps.compare(challenger, window, ctx, settings)
    assert comparison["condemned_windows"] == ["batch_0005", "batch_0006"]
    assert comparison["condemned_rows"] == comparison["holdout_rows"] == window["rows_holdout"]
    assert comparison["rule"] == "significant_improvement" and comparison["ci_low"] > 0
    assert (
        f"where v1 failed decisively; on all {window['rows_holdout']} held-out rows "
        in (comparison["reason"])
    )
    assert comparison["all_rows"]["diff"] == comparison["diff"]  # here the same rows
    # No held-out row comes from the windows named: judged on all of them, as usual.
    from ctrain.promotion.compare import compare
    from ctrain.records import DatasetWindow, RegisteredVersion, RunContext
    from ctrain.tracking import configure

    elsewhere = compare(
        settings,
        RegisteredVersion.from_xcom(challenger),
        DatasetWindow.from_xcom(window),
        RunContext.from_xcom(ctx),
        configure(settings),
        ("1", ("batch_0004",)),
    )
    assert not elsewhere.condemned_windows and elsewhere.all_rows is None
    assert elsewhere.rule == "significant_improvement" and elsewhere.diff == comparison["diff"]
    asset = steps.from_standing_change(_context("asset_triggered"), settings)
    assert asset["since_batch"] == "batch_0005"
    # A person's trigger is theirs to shape (the form has since_batch): left as asked.
    manual = _context("manual")
    assert steps.from_standing_change(manual, settings) == manual


def test_the_evidence_includes_evidently_html_and_an_mlflow_run(delayed, client):
    settings = delayed(html_reports=True)
    src = DemoSource(**settings.demo.model_dump() | {"covariate_shift_from": 3})
    bootstrap_champion(settings, src)
    _stream(settings, src, 3, 4)
    summary = json.loads((settings.monitor_dir / "batch_0003" / "summary.json").read_text())
    html = (settings.monitor_dir / "batch_0003" / "data_drift.html").read_text()
    assert len(html) > 100_000 and "tenure_months" in html
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.metrics["share_drifted"] == summary["data_drift"]["share_drifted"] > 0.3
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "summary.json",
        "data_drift.html",
    }


def test_one_monitor_run_reads_the_champion_once_for_all_its_windows(delayed):
    from mlflow import MlflowClient

    from ctrain.monitoring.check import check_due_windows
    from ctrain.tracking import configure

    settings = delayed()
    src = DemoSource(**settings.demo.model_dump())
    bootstrap_champion(settings, src)
    for i in range(3, 6):
        src.write_batch(i, settings.landing_dir, with_labels=False)
    for p in steps.list_landed(settings):
        steps.ingest_one(p, settings)
    for b in steps.unscored(settings):
        steps.score(b, settings)

    configure(settings)
    uri = settings.resolved_tracking_uri

    class Counting(MlflowClient):  # a real client that counts what the monitor asks of it
        reads = 0

        def get_model_version(self, *args, **kwargs):
            Counting.reads += 1
            return super().get_model_version(*args, **kwargs)

    checks = check_due_windows(settings, Counting(uri, uri))
    assert len(checks) == 6  # the 3 windows of the champion's data and the 3 new ones
    assert Counting.reads == 1  # the champion's version, tags and reference: once per run


def test_a_window_is_judged_for_the_model_that_scored_it_and_against_a_champion_trained_before_it(
    delayed, client
):
    """Labels that arrive after a promotion measure the version that served those rows; and
    the new champion, trained before them, answers for them too (its own scores on the same
    rows): it inherits the evidence at once. A champion trained on them is not blamed."""
    from ctrain.promotion.promote import manual_promote
    from ctrain.records import RunContext

    settings = delayed()
    src = DemoSource(**settings.demo.model_dump() | {"concept_drift_from": 3})
    bootstrap_champion(settings, src)
    src.write_batch(3, settings.landing_dir, with_labels=False)
    for p in steps.list_landed(settings):
        steps.ingest_one(p, settings)
    assert steps.score("batch_0003", settings)["model_version"] == "1"
    steps.check_windows(settings)  # no labels yet: measured later

    # A second version becomes champion before batch 3's labels arrive.
    steps.run_training(RunContext(run_id="again", force=True), settings=settings)
    manual_promote(settings, "2", RunContext(run_id="by-hand", trigger_reason="a test"), client)
    src.write_labels(3, settings.labels_landing_dir)
    steps.ingest_labels(settings)
    checks = {c["batch_id"]: c for c in steps.check_windows(settings)}

    late = checks["batch_0003"]
    assert late["champion_version"] == "1"  # the version whose predictions these are
    assert late["performance"]["status"] == "matured" and late["performance"]["degraded"]
    assert late["performance"]["champion_value"] == float(
        client.get_model_version(settings.model_name, "1").tags["holdout_roc_auc"]
    )
    assert "batch_0003" not in {c["batch_id"] for c in steps.check_windows(settings)}
    # v2 learned from batches 0-2 only (batch 3 had no labels then): the change is news to it.
    rescored = json.loads((settings.monitor_dir / "batch_0003" / "rescored-v2.json").read_text())
    assert (rescored["champion_version"], rescored["rescored_from"]) == ("2", "1")
    assert rescored["performance"]["decisive"] and rescored["flags"] == ["performance"]
    assert rescored["performance"]["champion_value"] == float(
        client.get_model_version(settings.model_name, "2").tags["holdout_roc_auc"]
    )
    verdict = steps.decide_retrain("t/after", training_active=False, settings=settings)
    assert verdict["trigger"] and verdict["champion_version"] == "2"
    assert verdict["reason"].startswith(
        "decisive performance drop on batch_0003 (v2's own scores on the rows v1 served)"
    ), verdict["reason"]
    # A champion trained with batch 3 in its data answers for it no more than for its own rows.
    steps.run_training(RunContext(run_id="with-3", force=True), settings=settings)
    manual_promote(settings, "3", RunContext(run_id="by-hand-3", trigger_reason="a test"), client)
    steps.check_windows(settings)
    assert not (settings.monitor_dir / "batch_0003" / "rescored-v3.json").exists()
    after = steps.decide_retrain("t/v3", training_active=False, settings=settings)
    assert after["trigger"] is False and "batch_0003" not in after["windows"]


def test_no_retrain_is_asked_for_while_a_rollout_holds_traffic(delayed, client):
    from ctrain.records import RunContext
    from ctrain.rollout import control as rollout

    settings = delayed(estimate_performance=False, severe_drift_importance=1.0)
    src = DemoSource(**settings.demo.model_dump() | {"covariate_shift_from": 3})
    bootstrap_champion(settings, src)
    # v2 (a dry run: @challenger, champion stays 1) is canaried while the drift builds up.
    steps.run_training(RunContext(run_id="second", force=True, dry_run=True), settings=settings)
    split = rollout.start(settings, client, None, RunContext(run_id="canary"), "canary")
    verdicts = _stream(settings, src, 3, 5)
    # The drift that asks for a retrain without a rollout (the test above) is held back.
    held = verdicts[4]
    assert held["trigger"] is False and held["flagged_windows"] == ["batch_0003", "batch_0004"]
    assert held["suppressed_by"].startswith(f"the rollout of v2 is running ({split.rollout_id})")

    rollout.abort(settings, client, "a test", RunContext(run_id="abort"))
    # Between ct_training's hand-over and ct_rollout's first write, the DAG run says so.
    queued = steps.decide_retrain("t/queued", False, settings=settings, rollout_active=True)
    assert (
        queued["trigger"] is False and queued["suppressed_by"] == "ct_rollout is queued or running"
    )
    after = steps.decide_retrain("t/after-rollout", training_active=False, settings=settings)
    assert after["trigger"] and after["flagged_windows"] == ["batch_0003", "batch_0004"]
