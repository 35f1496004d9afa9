"""The retrain decision's hygiene: debounce, cooldown, de-duplication, one request at a time."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from ctrain.monitoring.trigger import (
    decide_retrain,
    describe,
    pending_retrain,
    record_request,
    requested_run_id,
    trigger_log,
)
from ctrain.records import Performance, WindowCheck

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def window(i, flags=(), version="1", cols=("tenure_months",), low=0.05):
    return WindowCheck(
        batch_id=f"b{i:02d}",
        checked_at=f"2026-03-{i + 1:02d}",
        window_end=f"2026-03-{i + 1:02d}",
        champion_version=version,
        rows=1500,
        share_drifted=0.5 if "data_drift" in flags else 0.0,
        dataset_drift="data_drift" in flags,
        drifted_columns=tuple(cols) if "data_drift" in flags else (),
        prediction_drift=0.0,
        performance=Performance(
            metric="roc_auc",
            rows=1500,
            labeled_rows=1400,
            labeled_share=1400 / 1500,
            champion_value=0.87,
            required_share=0.8,
            status="matured" if "performance" in flags else "immature",
            value=0.7,
            drop=0.17,
            degraded="performance" in flags,
            drop_low=low,
            drop_high=0.29,
            decisive=low > 0.05,
        ),
        flags=tuple(flags),
    )


@pytest.fixture
def cfg(make_settings):
    return make_settings(monitoring={"debounce_k": 2, "debounce_n": 3})


def test_a_stable_stream_never_triggers(cfg):
    stream = [window(i) for i in range(30)]
    for n in range(1, 31):
        assert decide_retrain(cfg, stream[:n], "1", T0, False).trigger is False


def test_one_flagged_window_is_debounced(cfg):
    stream = [window(0), window(1, ["data_drift"]), window(2), window(3), window(4, ["data_drift"])]
    assert decide_retrain(cfg, stream[:3], "1", T0, False).trigger is False
    assert decide_retrain(cfg, stream, "1", T0, False).trigger is False  # 1 of the last 3


def test_k_of_n_flagged_triggers_with_a_reason_naming_the_columns(cfg):
    stream = [
        window(0),
        window(1, ["data_drift"], cols=("tenure_months", "region")),
        window(2, ["data_drift"]),
    ]
    v = decide_retrain(cfg, stream, "1", T0, False)
    assert v.trigger is True and v.flagged_windows == ("b01", "b02")
    assert (
        "data drift in 2 of the last 3 windows" in v.reason and "region, tenure_months" in v.reason
    )


def test_performance_reason_says_how_many_rows(cfg):
    v = decide_retrain(
        cfg, [window(0, ["performance"]), window(1, ["performance"])], "1", T0, False
    )
    assert v.trigger and "roc_auc 0.7000 vs champion 0.8700 on 1400 labeled rows" in v.reason


def test_performance_is_debounced_over_label_matured_windows(cfg):
    # Labels lag: the two degraded windows are older than the last three windows seen.
    stream = [
        window(0, ["performance"]),
        window(1, ["performance"]),
        window(2),
        window(3),
        window(4),
    ]
    v = decide_retrain(cfg, stream, "1", T0, False)
    assert v.trigger and v.flagged_windows == ("b00", "b01")
    assert "performance drop in 2 of the last 2 label-matured windows" in v.reason


def test_no_request_while_training_is_queued_or_running(cfg):
    v = decide_retrain(cfg, [window(0, ["data_drift"]), window(1, ["data_drift"])], "1", T0, True)
    assert v.trigger is False and "queued or running" in v.suppressed_by


def test_a_request_names_its_run_and_later_verdicts_name_it_while_it_has_not_ended(cfg):
    """The monitor does not wait for the retrain it asked for: the verdicts after it say where
    that run is (queued, training, waiting for approval), whether or not their windows would
    call for another, and stop naming it once it has ended."""

    stream = [window(0, ["data_drift"]), window(1, ["data_drift"])]
    key = "ct_drift_monitor/asset_triggered__2026-03-02T10:00:00+00:00_Ab3"
    first = decide_retrain(cfg, stream, "1", T0, False)
    first = dataclasses.replace(first, requested_run=requested_run_id(key))
    logged = record_request(cfg, first, key, stream)
    run = "retrain__asset_triggered__2026-03-02T10:00:00+00:00_Ab3"
    assert logged.requested_run == run == trigger_log(cfg)[-1].requested_run

    # What Airflow says of ct_training's runs: a real lookup over a table, as the DAG's is.
    runs: dict[str, tuple[str, dict[str, str]]] = {}
    assert pending_retrain(cfg, runs.get) is None  # not started yet, or ended
    stages = {
        ("queued", ()): "queued",
        ("running", ("train", "running")): "training",
        ("running", ("approval", "awaiting_input")): "waiting for approval",
        ("running", ("approval", "deferred")): "waiting for approval",
    }
    for (state, task), stage in stages.items():
        runs[run] = (state, dict([task]) if task else {})
        pending = pending_retrain(cfg, runs.get)
        assert (pending.run_id, pending.stage) == (run, stage)

    later = T0 + timedelta(hours=3)  # a new window: only the pending run holds it back
    stream.append(window(2, ["data_drift"]))
    held = decide_retrain(cfg, stream, "1", later, True, pending=pending)
    assert held.trigger is False and held.pending_run == run
    assert held.suppressed_by == (
        f"the retrain asked for at {T0.isoformat()} is waiting for approval (ct_training run "
        f"{run}); windows checked meanwhile are kept for the decision after it"
    )
    assert describe(held).startswith("no retrain (the retrain asked for at ")
    calm = decide_retrain(cfg, [window(3), window(4), window(5)], "1", later, True, pending=pending)
    assert calm.trigger is False and calm.pending_run == run and "waiting for" in calm.suppressed_by
    del runs[run]  # the run ended
    assert pending_retrain(cfg, runs.get) is None


def test_cooldown_and_deduplication(cfg):
    stream = [window(0, ["data_drift"]), window(1, ["data_drift"])]
    first = decide_retrain(cfg, stream, "1", T0, False)
    record_request(cfg, first, "monitor/run1", stream)
    assert (
        record_request(cfg, first, "monitor/run1", stream).key == "monitor/run1"
    )  # retry: logged once
    assert len(trigger_log(cfg)) == 1
    # The same windows again, minutes or days later: held back (counted in windows, not time).
    for later in (timedelta(minutes=10), timedelta(days=3)):
        again = decide_retrain(cfg, stream, "1", T0 + later, False)
        assert again.trigger is False
        assert again.suppressed_by.startswith("cooldown: 0 of 1 window(s) checked since")
    # One newer window: the cooldown is over, at whatever cadence it came.
    stream.append(window(2, ["data_drift"]))
    for later in (timedelta(seconds=30), timedelta(days=1)):
        assert decide_retrain(cfg, stream, "1", T0 + later, False).trigger is True
    # A wall-clock floor, when a project sets one, holds on top of it.
    floor = cfg.model_copy(
        update={"monitoring": cfg.monitoring.model_copy(update={"cooldown_minutes": 60})}
    )
    held = decide_retrain(floor, stream, "1", T0 + timedelta(minutes=10), False)
    assert held.suppressed_by == f"cooldown: last request at {T0.isoformat()} (cooldown 60 min)"
    assert decide_retrain(floor, stream, "1", T0 + timedelta(hours=2), False).trigger is True


def test_the_cooldown_means_the_same_at_any_cadence(make_settings):
    """One stream, its windows a minute apart and a day apart: the same requests at the same
    windows (the packaged defaults: no wall-clock cooldown)."""
    cfg = make_settings()
    assert cfg.monitoring.cooldown_minutes == 0 and cfg.monitoring.cooldown_windows == 1
    flags = [[], [], ["data_drift"], ["data_drift"], ["data_drift"], ["data_drift"], []]
    asked = {}
    for step in (timedelta(minutes=1), timedelta(days=1)):
        log = cfg.monitor_dir / "triggers.json"
        log.unlink(missing_ok=True)
        stream, asked[step] = [], []
        for i, f in enumerate(flags):
            stream.append(window(i, f))
            v = decide_retrain(cfg, stream, "1", T0 + i * step, False)
            if v.trigger:
                record_request(cfg, v, f"t/{step}/{i}", stream)
                asked[step].append(i)
    assert asked[timedelta(minutes=1)] == asked[timedelta(days=1)] == [3, 4]


def test_worse_decisive_evidence_asks_again_and_a_retry_trains_from_the_newer_evidence(cfg):
    """After a request the champion survived (its retrain lost), a decisive drop whose interval
    lies wholly past the one that request answered asks again, through the cooldown and the
    back-off, says so, and trains from that newer evidence on."""
    mild = dict(low=0.06)  # decisive: drop 0.17 [0.06, 0.29]
    stream = [window(0), window(1, ["performance"], **mild)]
    first = decide_retrain(cfg, stream, "1", T0, False)
    assert first.trigger and first.change_from == "b01"
    record_request(cfg, first, "t/1", stream)  # its retrain is rejected: v1 stays champion
    # The same drop again on a new window: not worse, and only 1 newer window: backed off.
    stream.append(window(2, ["performance"], **mild))
    same = decide_retrain(cfg, stream, "1", T0 + timedelta(minutes=1), False)
    assert same.trigger is True  # past the 1-window cooldown, the back-off's first step
    record_request(cfg, same, "t/2", stream)
    assert same.change_from == "b02"  # not b01 again: the rejected retrain began there
    stream.append(window(3, ["performance"], **mild))
    held = decide_retrain(cfg, stream, "1", T0 + timedelta(minutes=2), False)
    assert held.trigger is False and held.suppressed_by.startswith("backing off")
    # Worse: drop 0.60 [0.45, 0.75], wholly past 0.17 [0.06, 0.29].
    w = window(4, ["performance"], low=0.45)
    p = dataclasses.replace(w.performance, value=0.27, drop=0.60, drop_high=0.75)
    stream.append(dataclasses.replace(w, performance=p))
    v = decide_retrain(cfg, stream, "1", T0 + timedelta(minutes=3), False)
    assert v.trigger is True and v.suppressed_by is None
    assert "the drop on b04 (+0.6000 [+0.4500, +0.7500]) is significantly worse than the one " in (
        v.reason
    )
    assert v.change_from == "b03"  # the evidence newer than the last request's


def test_windows_of_an_earlier_champion_do_not_count(cfg):
    stream = [
        window(0, ["data_drift"], version="1"),
        window(1, ["data_drift"], version="1"),
        window(2, version="2"),
    ]
    assert decide_retrain(cfg, stream, "2", T0, False).trigger is False


def test_the_reason_names_every_signal_that_fired_not_only_the_one_that_decided(cfg):
    # Drift in 2 of 3 windows decides; one window also lost performance (1 of 3, short of its
    # own debounce): a person reading why the model was retrained must see both.
    stream = [window(0), window(1, ["data_drift"]), window(2, ["data_drift", "performance"])]
    verdict = decide_retrain(cfg, stream, "1", T0, False)
    assert verdict.trigger
    assert verdict.reason.startswith("data drift in 2 of the last 3 windows")
    assert "; performance drop in 1 of the last 1 label-matured windows (roc_auc 0.7000 vs " in (
        verdict.reason
    )


def test_one_window_with_a_decisive_drop_retrains_on_that_window(cfg):
    # roc_auc 0.70 against 0.87, the drop's whole interval past the tolerance: no second window.
    stream = [window(0), window(1, ["performance"], low=0.12)]
    verdict = decide_retrain(cfg, stream, "1", T0, False)
    assert verdict.trigger is True and verdict.flagged_windows == ("b01",)
    assert verdict.reason.startswith("decisive performance drop on b01 (roc_auc 0.7000 vs ")
    assert "[+0.1200, +0.2900] at 99% on 1400 labeled rows, past the 0.05 tolerance" in (
        verdict.reason
    )


def test_a_marginal_drop_waits_for_the_debounce_and_says_why(cfg):
    # The same point estimate, but an interval that reaches back to the tolerance.
    stream = [window(0), window(1, ["performance"], low=0.01)]
    verdict = decide_retrain(cfg, stream, "1", T0, False)
    assert verdict.trigger is False
    assert "performance drop in 1 of the last 1 label-matured windows; 2 needed" in verdict.reason
    assert "+0.1700 [+0.0100, +0.2900] on 1400 labeled rows, is not decisive" in verdict.reason
    stream.append(window(2, ["performance"], low=0.01))
    assert decide_retrain(cfg, stream, "1", T0, False).trigger is True  # 2 of 3: debounced


def test_a_decisive_drop_of_an_earlier_champion_does_not_retrain_the_new_one(cfg):
    stream = [window(0, ["performance"], version="1", low=0.2), window(1, version="2")]
    assert decide_retrain(cfg, stream, "2", T0, False).trigger is False


def test_the_retrain_starts_where_the_change_began(cfg):
    stream = [window(0), window(1), window(2, ["data_drift"]), window(3, ["data_drift"])]
    verdict = decide_retrain(cfg, stream, "1", T0, False)
    assert verdict.trigger and verdict.change_from == "b02"


def _estimated(w, drop, low, high, tolerance=0.05):
    """``w`` with a performance estimate whose drop is ``drop`` [``low``, ``high``]."""
    from dataclasses import replace

    from ctrain.records import Estimate

    est = Estimate(
        metric="roc_auc",
        value=0.87 - drop,
        low=0.87 - high,
        high=0.87 - low,
        drop=drop,
        drop_low=low,
        drop_high=high,
        harmful=low > tolerance,
        harmless=high <= tolerance,
    )
    flags = (*w.flags, "estimated_drop") if est.harmful else w.flags
    return replace(w, estimate=est, flags=flags)


def test_an_estimated_drop_past_the_tolerance_retrains_before_any_label(cfg):
    stream = [window(0), _estimated(window(1, ["data_drift"]), 0.15, 0.11, 0.19)]
    v = decide_retrain(cfg, stream, "1", T0, False)
    assert v.trigger and v.change_from == "b01"
    assert v.reason.startswith(
        "estimated performance drop on b01 before its labels (roc_auc ~0.7200 vs champion 0.8700,"
        " drop +0.1500 [+0.1100, +0.1900] at 99% on 1500 rows"
    )


def test_drift_the_estimate_calls_harmless_does_not_count(cfg):
    stream = [
        window(0),
        _estimated(window(1, ["data_drift"]), 0.0, -0.02, 0.02),
        _estimated(window(2, ["data_drift"]), 0.01, -0.01, 0.03),
    ]
    v = decide_retrain(cfg, stream, "1", T0, False)
    assert v.trigger is False
    assert "data drift in 0 of the last 3 windows" in v.reason
    assert "2 drifted window(s) not counted: the estimate calls the shift harmless" in v.reason
    # An estimate that cannot rule the harm out leaves the drift counted.
    unsure = [window(0), *(_estimated(w, 0.04, 0.0, 0.08) for w in stream[1:])]
    assert decide_retrain(cfg, unsure, "1", T0, False).trigger is True


def test_severe_drift_retrains_on_its_window_unless_the_estimate_calls_it_harmless(cfg):
    from dataclasses import replace

    severe = replace(window(1, ["data_drift"]), drift_severity=0.8, severe_drift=True)
    v = decide_retrain(cfg, [window(0), severe], "1", T0, False)
    assert v.trigger and v.change_from == "b01"
    assert "severe drift on b01 (features carrying 80% of the champion's importance" in v.reason
    # check_window marks nothing severe that the estimate calls harmless; a mild drift waits.
    mild = replace(window(1, ["data_drift"]), drift_severity=0.1)
    assert decide_retrain(cfg, [window(0), mild], "1", T0, False).trigger is False


def test_a_retrain_reason_says_which_drift_the_estimate_called_harmless(cfg):
    stream = [
        window(0, ["performance"], low=0.2),
        _estimated(window(1, ["data_drift"]), 0.0, -0.02, 0.02),
    ]
    v = decide_retrain(cfg, stream, "1", T0, False)
    assert v.trigger and v.reason.startswith("decisive performance drop on b00")
    assert v.reason.endswith(
        "; 1 drifted window(s) not counted: the estimate calls the shift harmless, e.g. b01 "
        "roc_auc ~0.8700, drop +0.0000 [-0.0200, +0.0200]"
    )


def _matured(i, version):
    from dataclasses import replace

    w = window(i, version=version)
    return replace(w, performance=replace(w.performance, status="matured", degraded=False))


def test_a_champion_trained_on_one_batch_after_a_change_is_retrained_once_more_data_matured(cfg):
    # v2 was trained on b05 alone (the change began there); b05, b06 were scored by v1.
    stream = [_matured(i, "1") for i in range(5)] + [_matured(5, "1"), _matured(6, "1")]
    learned = ("b05", 1)
    assert decide_retrain(cfg, stream, "2", T0, False, learned).trigger is False  # 2 of 3
    stream.append(_matured(7, "2"))
    # The follow-up is the retrain's own plan, not a reaction: a wall-clock cooldown set after
    # the request that made v2 does not hold it.
    made_v2 = dataclasses.replace(
        decide_retrain(cfg, stream[:7], "1", T0, False), trigger=True, decided_at=T0.isoformat()
    )
    record_request(cfg, made_v2, "t/0", stream[:7])
    floor = cfg.model_copy(
        update={"monitoring": cfg.monitoring.model_copy(update={"cooldown_minutes": 600})}
    )
    assert decide_retrain(floor, stream, "2", T0 + timedelta(minutes=5), False, learned).trigger
    v = decide_retrain(cfg, stream, "2", T0, False, learned)
    assert v.trigger and v.change_from == "b05" and v.flagged_windows == ("b05", "b06", "b07")
    assert v.reason == (
        "the window after the change has grown: v2 learned from 1 labeled batch from b05 on, "
        "3 have matured since (monitoring.settle_batches=3)"
    )
    # Asked once per champion: a rejected follow-up is not asked for again and again.
    record_request(cfg, v, "t/1", stream)
    stream.append(_matured(8, "2"))
    assert decide_retrain(cfg, stream, "2", T0 + timedelta(days=1), False, learned).trigger is False
    # A champion that learned from enough batches, or not at a change, is left alone.
    assert not decide_retrain(cfg, stream, "3", T0, False, ("b05", 3)).trigger
    assert not decide_retrain(cfg, stream, "3", T0, False, None).trigger
    # One trained before any label of the change came (its window topped up from before).
    v = decide_retrain(cfg, stream, "4", T0, False, ("b05", 0))
    assert v.trigger and "v4 learned from no labeled batch from b05 on (its window was topped" in (
        v.reason
    )


def test_retrains_that_do_not_replace_the_champion_back_off(cfg):
    # Every window is flagged decisively, and no retrain beats the champion (v1 stays).
    stream, asked = [], []
    for i in range(12):
        stream.append(window(i, ["performance"], low=0.2))
        v = decide_retrain(cfg, stream, "1", T0 + timedelta(minutes=i), False)
        if v.trigger:
            asked.append(i)
            record_request(cfg, v, f"t/{i}", stream)
    # Asked at the first window, then after 1, 2 and 4 more newly flagged windows.
    assert asked == [0, 1, 3, 7]
    v = decide_retrain(cfg, stream, "1", T0 + timedelta(hours=1), False)
    assert v.suppressed_by == (
        "backing off: 4 retrain(s) asked for while v1 stayed champion did not replace it; the "
        "next needs 8 newly flagged windows (5 so far)"
    )
    # A new champion starts afresh.
    assert decide_retrain(
        cfg,
        [*stream, window(12, ["performance"], version="2", low=0.2)],
        "2",
        T0 + timedelta(hours=2),
        False,
    ).trigger


def test_no_request_while_a_rollout_holds_traffic(cfg):
    drifted = [window(0, ["data_drift"]), window(1, ["data_drift"])]
    v = decide_retrain(cfg, drifted, "1", T0, False, rollout="the rollout of v2 is running")
    assert v.trigger is False and v.suppressed_by == "the rollout of v2 is running"
    assert decide_retrain(cfg, drifted, "1", T0, False).trigger
