"""Scoring waits for the monitor when labels just in condemn the champion, and only then."""

from datetime import UTC, datetime, timedelta

from tests_support import bootstrap_champion

from ctrain import steps
from ctrain.data.demo_source import DemoSource
from ctrain.ingest.batches import accepted_path
from ctrain.monitoring.hold import decided, hold_reason, undecided_drops
from ctrain.monitoring.trigger import pending_retrain
from ctrain.records import RunContext
from ctrain.registry import current_champion


def _land(settings, src, i, score=True):
    """Batch ``i`` with the labels of batch ``i - 1`` (labels first), ingested; scored unless
    ``score`` is false (the batch then waits in accepted/, as ct_batch_inference would hold it)."""
    src.write_labels(i - 1, settings.labels_landing_dir)
    src.write_batch(i, settings.landing_dir, with_labels=False)
    steps.ingest_labels(settings)
    for p in steps.list_landed(settings):
        steps.ingest_one(p, settings)
    if score:
        for b in steps.unscored(settings):
            steps.score(b, settings)


def _judge(settings, key):
    steps.check_windows(settings)
    return steps.decide_retrain(key, training_active=False, settings=settings)


def _now():
    return datetime.now(UTC)


def test_labels_that_condemn_the_champion_hold_the_next_batch_until_its_retrain_is_done(
    delayed, client
):
    settings = delayed()
    src = DemoSource(**settings.demo.model_dump() | {"concept_drift_from": 4})
    bootstrap_champion(settings, src)
    _land(settings, src, 3)
    _judge(settings, "t/3")
    _land(settings, src, 4)  # the rule changes: scored by v1 before anyone can know
    _judge(settings, "t/4")
    _land(settings, src, 5, score=False)  # with batch 4's labels, which show the change

    # Before the monitor has looked: the cheap look sees the drop, and the batch waits.
    drops = dict(undecided_drops(settings, client))
    assert list(drops) == ["batch_0004"] and drops["batch_0004"] > 0.3
    reason = hold_reason(settings, client, ["batch_0005"], monitor_busy=True, now=_now())
    assert reason and "batch_0004" in reason and "waiting for the monitor's verdict" in reason
    hold = steps.scoring_hold(["batch_0005"], monitor_busy=True, settings=settings)
    assert hold["wait"] and hold["note"].startswith("held 0s: labels just in show roc_auc")

    # The monitor decides at once (decisive) and asks for a retrain: the batch waits for it.
    verdict = _judge(settings, "t/5")
    assert verdict["trigger"] and "decisive performance drop on batch_0004" in verdict["reason"]
    assert decided(settings, "batch_0004", with_labels=True)
    # `ctrain status` says it too, with the run the request starts.
    from ctrain.status import format_status, status

    shown = format_status(status(settings, client), "roc_auc")
    assert "monitor   : last verdict at " in shown
    assert "(decisions after it are below): retrain requested: decisive performance drop on " in (
        shown
    )
    assert verdict["requested_run"] == "retrain__5"
    assert undecided_drops(settings, client) == []
    reason = hold_reason(settings, client, ["batch_0005"], monitor_busy=True, now=_now())
    assert reason and "asked for a retrain of v1" in reason
    # Once the monitor's run has ended, the ct_training run it started holds the batch while it
    # is queued or training, and not while it waits for a person (that may take hours).
    assert hold_reason(settings, client, ["batch_0005"], monitor_busy=False, now=_now()) is None
    run = verdict["requested_run"]
    runs = {run: ("running", {"train": "running"})}
    reason = hold_reason(
        settings, client, ["batch_0005"], False, _now(), pending_retrain(settings, runs.get)
    )
    assert reason and f"(ct_training run {run}, training)" in reason
    runs[run] = ("running", {"approval": "awaiting_input"})
    waiting = pending_retrain(settings, runs.get)
    assert waiting.stage == "waiting for approval"
    assert hold_reason(settings, client, ["batch_0005"], False, _now(), waiting) is None

    # The retrain replaces the champion: the hold ends, and the batch is scored by the new one.
    steps.run_training(
        RunContext(
            run_id="retrain",
            trigger_reason=verdict["reason"],
            window_batches=verdict["window_batches"],
            since_batch=verdict["change_from"],
        ),
        settings=settings,
    )
    assert current_champion(client, settings.model_name) == "2"
    assert hold_reason(settings, client, ["batch_0005"], monitor_busy=True, now=_now()) is None
    assert steps.score("batch_0005", settings)["model_version"] == "2"
    # The note on the scoring run keeps the first reason it was held for.
    hold = steps.scoring_hold(["batch_0005"], monitor_busy=True, settings=settings)
    assert not hold["wait"] and "labels just in show roc_auc" in hold["note"]


def test_the_hold_is_bounded_and_can_be_turned_off(delayed, client):
    settings = delayed()
    src = DemoSource(**settings.demo.model_dump() | {"concept_drift_from": 4})
    bootstrap_champion(settings, src)
    _land(settings, src, 4)
    _land(settings, src, 5, score=False)
    accepted = datetime.fromtimestamp(accepted_path(settings, "batch_0005").stat().st_mtime, UTC)
    limit = settings.monitoring.hold_scoring_seconds
    assert hold_reason(settings, client, ["batch_0005"], True, accepted + timedelta(seconds=1))
    # A second past the bound: the file's time (nanoseconds) read back as a datetime
    # (microseconds) can fall a hair before it, and the bound itself is held.
    late = accepted + timedelta(seconds=limit + 1)
    assert hold_reason(settings, client, ["batch_0005"], True, late) is None
    off = delayed(hold_scoring_seconds=0)
    assert hold_reason(off, client, ["batch_0005"], True, _now()) is None


def test_labels_within_the_tolerance_do_not_hold_anything(delayed, client):
    settings = delayed()
    src = DemoSource(**settings.demo.model_dump())
    bootstrap_champion(settings, src)
    _land(settings, src, 3)
    _land(settings, src, 4, score=False)  # batch 3's labels arrive; the rule has not changed
    assert undecided_drops(settings, client) == []
    assert hold_reason(settings, client, ["batch_0004"], monitor_busy=True, now=_now()) is None
    assert steps.scoring_hold(["batch_0004"], True, settings) == {"wait": False, "note": None}
