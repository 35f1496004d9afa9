"""A stream of batches through ctrain's DAGs under a real Airflow, and what came of each.

``stream_services`` starts Airflow's components on the project's embedded stores (no retrain on
new data alone, no daily cron: the stream's retrains come from the monitor); ``run_stream`` lands
one batch at a time with the previous batch's labels, as a labelling system that delivers late
would, waits for the monitor's verdict on it (and for ct_training's decision when the monitor
asked for one), and returns the timeline; ``print_timeline`` shows it. The demo, the end-to-end
tests and the adaptation benchmark all stream through these.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ctrain.dag_ids import TRAINING
from ctrain.data.demo_source import DemoSource, corrupt_rows
from ctrain.runtime import AirflowServices, wait_for
from ctrain.settings import Settings
from ctrain.storage import write_parquet_atomic

# Phase one used batches 0-3 (and a truncated file); the stream goes on from there.
STREAM_START, BROKEN, DRIFT_FROM, STREAM_END = 4, 5, 7, 10


def broken_rows(src: DemoSource, index: int) -> pd.DataFrame:
    """Batch ``index`` with 6% broken rows (unknown region, impossible discount, no event time)."""
    broken = corrupt_rows(src.batch(index), 0.06, seed=index)
    broken.loc[broken["label"].isna(), "event_time"] = None
    return broken.drop(columns=["label"])


def stream_services(settings: Settings, log_dir: Path, approval: bool = False):
    """Airflow's services for ``run_stream`` (a context manager); with ``approval``, ct_training
    waits for a person before each promotion."""
    env = {
        "CTRAIN_TRAIN_ON_NEW_DATA": "false",
        "CTRAIN_DATASET__LABELS": settings.dataset.labels,
        # The stream's retrains come from the monitor; a daily cron would add a run of its own
        # when the stream runs just after it (seen at 03:00 UTC).
        "CTRAIN_SCHEDULES__TRAINING": "none",
    }
    if approval:
        env["CTRAIN_PROMOTION__APPROVAL"] = "required"
    return AirflowServices(settings, log_dir / "airflow", env)


def run_stream(
    settings: Settings,
    af,
    start: int = STREAM_START,
    drift_from: int = DRIFT_FROM,
    stop: int = STREAM_END,
    broken: frozenset[int] | set[int] = frozenset(),
    approve: str | None = None,
    src: DemoSource | None = None,
    on_land=None,
    approve_after: int = 2,
    train_at: int | None = None,
    train_force: bool = False,
) -> list[dict]:
    """Feed batches one at a time through the real scheduler of ``af`` (``stream_services``);
    return the timeline.

    Each batch lands with the previous batch's labels; the landing folders' watchers start
    ``ct_ingest``, and the assets chain it to ``ct_batch_inference`` and ``ct_drift_monitor``, which asks ``ct_training`` to run
    when drift persists. Covariate shift and a changed label rule start at batch ``drift_from``.
    With ``approve`` (``Approve`` or ``Reject``), a promotion waiting for approval is answered
    through Airflow's REST API as the admin user, as a person would in the UI, once the monitor
    has checked ``approve_after`` more batches while it waited (or at the end of the stream):
    their entries say which pending run the monitor's verdict named. ``src`` replaces
    the demo's stream (its drift settings then say where the change is). ``on_land(i, rows)`` is
    told of each batch as it lands (with its clean rows), e.g. to send live traffic like it.
    With ``train_at``, once batch ``train_at`` is judged, ct_training is started as the daily
    schedule would start it (default form: the whole window), e.g. between a change and its
    labels, and its decision waited for; ``train_force`` makes that run win (``force``), so that
    a champion trained before the change serves when the change's labels arrive.
    """
    from ctrain.monitoring.hold import decided as judged
    from ctrain.monitoring.hold import last_verdict
    from ctrain.monitoring.trigger import trigger_log
    from ctrain.promotion.decisions import list_decisions
    from ctrain.records import DecisionKind
    from ctrain.tracking import configure

    src = src or DemoSource(
        **settings.demo.model_dump()
        | {
            "covariate_shift_from": drift_from,
            "concept_drift_from": drift_from,
            "covariate_shift": 1.0,
        }
    )
    client = configure(settings)

    def decisions() -> list:
        # A rollout's changes of the split are records too; the stream follows the promotions.
        found = list_decisions(client, settings, limit=100)
        return [d for d in found if d.decision != DecisionKind.TRAFFIC]

    def decided(n: int) -> bool:
        # A waiting approval request is answered, also when Airflow asks again (its scheduler
        # retries the task if an answer lands while it handles the pause).
        if approve:
            _answer(af, approve)
        return len(decisions()) > n

    timeline: list[dict] = []
    waiting: dict | None = None  # the request whose approval waits: its entry and its run
    for i in range(start, stop):
        t0 = time.monotonic()
        n_decisions = len(decisions())
        n_requests = len(trigger_log(settings))
        landed_at = time.time()
        # The labels first, as a labelling system that delivers with the next batch would.
        src.write_labels(i - 1, settings.labels_landing_dir)
        if on_land:
            on_land(i, src.batch(i))
        if i in broken:
            write_parquet_atomic(
                settings.landing_dir / f"batch_{i:04d}.parquet", broken_rows(src, i)
            )
        else:
            src.write_batch(i, settings.landing_dir, with_labels=False)
        # Nothing is triggered: the landing folders' watchers start ct_ingest on arrival.
        batch_id = f"batch_{i:04d}"
        wait_for(
            f"the monitor's verdict on batch {i}",
            lambda b=batch_id: judged(settings, b),
            600,
            alive=af.alive,
        )
        requests = trigger_log(settings)
        requested = len(requests) > n_requests
        entry = {"batch": i, "drift_from": drift_from, "seconds": 0.0, "requested": requested}
        predictions = settings.predictions_dir / f"{batch_id}.parquet"
        if predictions.exists():
            entry["landing_to_predictions"] = predictions.stat().st_mtime - landed_at
        if waiting is not None:
            verdict = last_verdict(settings)
            entry["checked_while_waiting"] = verdict.pending_run if verdict else ""
            waiting["checked"].append(i)
            print(f"    batch {i} checked while the approval waits: {verdict.suppressed_by}")
        elif requested:
            run = requests[-1].requested_run
            print(
                f"    batch {i}: the monitor asked for retraining (ct_training run {run})",
                flush=True,
            )

            def decided_or_waiting(n=n_decisions) -> bool:
                return len(decisions()) > n or bool(approve and af.pending_approvals(TRAINING))

            wait_for("ct_training's decision", decided_or_waiting, 900, alive=af.alive)
            if len(decisions()) > n_decisions:
                entry["decision"] = decisions()[0]
            else:  # the monitor goes on checking while a person decides
                waiting = {"entry": entry, "run": run, "checked": [], "decisions": n_decisions}
                print(f"    approval requested for run {run}; the stream goes on", flush=True)
        if i == train_at and waiting is None:
            n = len(decisions())
            reason = "as the daily schedule would, after " + batch_id
            af.trigger(TRAINING, {"reason": reason, "force": train_force})
            wait_for("the run's decision", lambda n=n: decided(n), 900, alive=af.alive)
            entry["scheduled"] = decisions()[0]
            print(f"    batch {i}: a run as the schedule would start it: {decisions()[0].headline}")
        entry["seconds"] = time.monotonic() - t0
        timeline.append(entry)
        if waiting is not None and (len(waiting["checked"]) >= approve_after or i == stop - 1):
            wait_for(
                "ct_training's decision",
                lambda n=waiting["decisions"]: decided(n),
                900,
                alive=af.alive,
            )
            waiting["entry"]["decision"] = decisions()[0]
            waiting = None
        scored = entry.get("landing_to_predictions")
        scored_in = f"; predictions {scored:.0f}s after it landed" if scored is not None else ""
        print(f"    batch {i} done in {entry['seconds']:.0f}s{scored_in}", flush=True)
    return timeline


def _answer(af, option: str) -> bool:
    """Answer ct_training's pending approval request, if there is one; True if it did."""
    pending = af.pending_approvals(TRAINING)
    if not pending:
        return False
    print(f"    approval requested: {pending[0]['subject']}", flush=True)
    out = af.answer(pending[0], option, f"{option.lower()}d in the demo (ctrain demo --approval)")
    if out is None:  # answered in the meantime
        return False
    print(
        f"    {option.lower()}d by {out['responded_by']['name']} through the REST API", flush=True
    )
    return True


def print_timeline(settings: Settings, timeline: list[dict]) -> None:
    """One line per stream batch: drift, measured performance, and what the monitor did."""
    from ctrain.monitoring.check import load_summaries

    checks = {
        int(c.batch_id.split("_")[1]): c
        for c in load_summaries(settings)
        if c.batch_id.startswith("batch_")  # the stream's batches; not the inference log's
    }
    print(
        f"\n    {'batch':<7}{'drifted':<9}{'share':<8}{'measured perf (labels)':<34}"
        "trigger / decision"
    )
    for entry in timeline:
        i = entry["batch"]
        check = checks.get(i)
        perf = check.performance if check else None
        measured = (
            f"{perf.metric} {perf.value:.3f} ({perf.labeled_rows} rows)"
            if perf and perf.value is not None
            else f"pending ({perf.labeled_rows if perf else 0} labeled)"
        )
        mark = "drift" if i >= entry["drift_from"] else "stable"
        share = check.share_drifted if check else 0.0
        line = f"    {i:<7}{mark:<9}{share:<8.2f}{measured:<34}"
        if entry.get("decision"):
            d = entry["decision"]
            line += f"retrain requested -> {d.decision} v{d.challenger_version} ({d.rule})"
        elif entry.get("checked_while_waiting"):
            line += f"checked while {entry['checked_while_waiting']} waits for approval"
        elif check and check.flagged:
            line += "flagged (" + ", ".join(check.flags) + ")"
        print(line)
    for entry in timeline:
        if entry.get("decision"):
            print(f"\n    retrain reason: {entry['decision'].trigger_reason}")
            print(f"    decision: {entry['decision'].headline}")
            print(f"      {entry['decision'].reason}")
