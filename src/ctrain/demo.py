"""The demo: several batches (some broken), two ct_training runs, all through real Airflow.

Each DAG run is ``airflow dags test`` (Airflow's own in-process executor of a real DAG run on the
embedded SQLite metadata database); the demo then reads back what the runs left behind: ingest
outcomes, the registry aliases and the decision records.
"""

from __future__ import annotations

import contextlib

from ctrain import dag_ids
from ctrain.data.demo_source import DemoSource
from ctrain.harness.callers import Online
from ctrain.harness.stream import (
    BROKEN,
    DRIFT_FROM,
    STREAM_END,
    STREAM_START,
    print_timeline,
    run_stream,
    stream_services,
)
from ctrain.ingest.batches import batch_outcomes
from ctrain.runtime import dag_test, migrate
from ctrain.settings import Settings
from ctrain.storage import write_bytes_atomic, write_parquet_atomic


def _land_round_one(src: DemoSource, settings: Settings) -> None:
    landing = settings.landing_dir
    for i in range(3):
        src.write_batch(i, landing, with_labels=False)
        src.write_labels(i, settings.labels_landing_dir)
    # Broken on purpose: a feature column is missing, so the whole batch is quarantined.
    write_parquet_atomic(
        landing / "batch_0003.parquet", src.batch(3).drop(columns=["plan", "label"])
    )
    # A file cut off mid-transfer: unreadable, quarantined with the reason.
    whole = (src.batch(99).to_csv(index=False)).encode()
    write_bytes_atomic(landing / "batch_0099_truncated.parquet", whole[: len(whole) // 3])


def _show_outcomes(settings: Settings, seen: set[str]) -> None:
    online = []
    for o in batch_outcomes(settings):
        if o.batch_id in seen:
            continue
        seen.add(o.batch_id)
        if o.batch_id.startswith("online-"):  # the inference log's windows: one line for all
            online.append(o)
            continue
        print(
            f"    {o.batch_id:<24} {o.status:<12} rows in={o.rows_in:<5} "
            f"accepted={o.rows_accepted:<5} quarantined={o.rows_quarantined}"
        )
        if o.reason:
            print(f"      reason: {o.reason}")
    if online:
        accepted = sum(o.status == "accepted" for o in online)
        print(
            f"    {len(online)} windows of the inference log (online-*): {accepted} accepted, "
            f"{sum(o.rows_accepted for o in online)} rows"
        )


def _show_decision(settings: Settings) -> None:
    from ctrain.promotion.decisions import list_decisions
    from ctrain.tracking import configure

    d = list_decisions(configure(settings), settings, limit=1)[0]
    print(f"    decision: {d.headline}")
    print(f"      {d.reason}")


# `ctrain demo --serve`: the monitor's retrain is canaried on the live traffic, in steps short
# enough for a demo (the first champion is promoted directly: there is nothing to roll out
# against), and a log window is the size of a stream batch, so about one lands per batch.
SERVE_DEMO = {
    "log_window_rows": 1500,
    "rollout": {
        "strategy": "canary",
        "canary_steps": [25, 100],
        "step_seconds": 15,
        "min_rows": 200,
    },
}


def serve_demo_env() -> dict[str, str]:
    """``SERVE_DEMO`` as the ``CTRAIN_SERVING__*`` variables every process of the demo inherits."""
    import json

    def flat(prefix: str, value) -> dict[str, str]:
        if isinstance(value, dict):
            return {
                k: v for key, sub in value.items() for k, v in flat(f"{prefix}__{key}", sub).items()
            }
        return {prefix.upper(): json.dumps(value) if isinstance(value, list) else str(value)}

    return flat("CTRAIN_SERVING", SERVE_DEMO)


def notify_demo_env(inbox) -> dict[str, str]:
    """Every kind of event routed to ``inbox`` through the Airflow connection ``ctrain_demo``:
    the variables every process of the demo inherits."""
    import json

    from ctrain.settings import EventKind

    return {
        "AIRFLOW_CONN_CTRAIN_DEMO": inbox.connection("demo"),
        "CTRAIN_NOTIFICATIONS__ROUTES": json.dumps(
            {k: ["ctrain_demo"] for k in EventKind.__args__}
        ),
    }


def _show_told(inbox) -> None:
    print(f"\n6. What the operators were told (the inbox on 127.0.0.1:{inbox.port}):")
    for m in inbox.messages():
        first = m["message"].splitlines()[0] if m["message"] else ""
        print(f"  {m['at']:%H:%M:%S}  [{m['type']}] {m['title']}")
        print(f"  {'':8}  {first[:150]}")
    if not inbox.messages():
        print("  (nothing)")


def run_demo(
    settings: Settings, approval: bool = False, serve: bool = False, notify: bool = False
) -> int:
    """Run the demo in an empty ``CTRAIN_HOME``; prints what happened and where to look.

    With ``approval``, the stream's promotions wait for a person (``promotion.approval:
    required``); the demo approves through Airflow's REST API as the admin user. With ``serve``,
    ``ctrain serve`` then answers live traffic while a retrain's challenger is canaried
    (``run_online``). With ``notify``, every kind of notification goes to an inbox in this
    process, and the demo prints what arrived.
    """
    if notify:
        import os

        from ctrain.harness.inbox import Inbox

        with Inbox() as inbox:
            os.environ.update(notify_demo_env(inbox))
            code = run_demo(settings, approval, serve)
            _show_told(inbox)
            return code
    log = settings.root / "logs" / "demo.log"
    src = DemoSource(**settings.demo.model_dump())
    print(f"ctrain demo in {settings.root} (Airflow output: {log})")
    print("1. Airflow metadata database (SQLite)")
    migrate(settings, log)

    seen: set[str] = set()
    print(
        "2. Round one: 3 good batches (their labels arrive as separate files), 1 with a missing column, 1 truncated file"
    )
    _land_round_one(src, settings)
    dag_test(settings, dag_ids.INGEST, log)
    _show_outcomes(settings, seen)
    print("3. ct_training: the first champion")
    dag_test(settings, dag_ids.TRAINING, log, {"reason": "demo: first training"})
    _show_decision(settings)

    print(
        f"4. The stream, under the real scheduler: batches {STREAM_START}..{STREAM_END - 1} one at a time, "
        f"each with the previous batch's labels; batch {BROKEN} has 6% broken rows; drift from batch {DRIFT_FROM} on"
    )
    if serve:
        print(
            "   (serving.rollout.strategy: canary: `ctrain serve` answers live traffic like each "
            "batch's rows, and ct_rollout canaries the monitor's retrain on it)"
        )
    if approval:
        print("   (promotion.approval: required: each promotion waits in Required Actions)")
    # Links in notifications lead to http://127.0.0.1:8080, where `make up` serves Airflow
    # on what the demo did (the stream's own Airflow stops with it).
    with stream_services(settings, log.parent, approval) as af:
        online = Online(settings, af) if serve else contextlib.nullcontext()
        with online:
            timeline = run_stream(
                settings,
                af,
                broken={BROKEN},
                approve="Approve" if approval else None,
                on_land=online.follow if serve else None,
            )
            if serve:
                online.settle()
        print_timeline(settings, timeline)
        if serve:
            online.report()
    _show_outcomes(settings, seen)

    from ctrain.status import format_status, status
    from ctrain.tracking import configure

    print("\n5. Summary (`ctrain status`)")
    print(format_status(status(settings, configure(settings), limit=5), settings.promotion.metric))
    print(
        f"""
Where to look:
  accepted batches   {settings.accepted_dir}
  quarantine         {settings.quarantine_dir}/<batch>/reason.txt, validation.json, rows.parquet
  comparisons        {settings.datasets_dir}/<dataset>/comparison-*.json
  monitoring         {settings.monitor_dir}/<batch>/summary.json, data_drift.html; triggers.json
  MLflow store       {settings.resolved_tracking_uri}
  UIs                make up   (Airflow http://127.0.0.1:8080, MLflow http://127.0.0.1:5000)"""
    )
    return 0
