"""The demo: several batches (some broken), two ct_training runs, all through real Airflow.

Each DAG run is ``airflow dags test`` (Airflow's own in-process executor of a real DAG run on the
embedded SQLite metadata database); the demo then reads back what the runs left behind: ingest
outcomes, the registry aliases and the decision records.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ctrain.data.demo_source import DemoSource, corrupt_rows
from ctrain.ingest.ingest import outcomes
from ctrain.runtime import migrate, run_airflow
from ctrain.settings import Settings
from ctrain.storage import write_bytes_atomic, write_parquet_atomic


def _land_round_one(src: DemoSource, landing: Path) -> None:
    for i in range(3):
        src.write_batch(i, landing)
    # Broken on purpose: a feature column is missing, so the whole batch is quarantined.
    write_parquet_atomic(landing / "batch_0003.parquet", src.batch(3).drop(columns=["plan"]))
    # A file cut off mid-transfer: unreadable, quarantined with the reason.
    whole = (src.batch(99).to_csv(index=False)).encode()
    write_bytes_atomic(landing / "batch_0099_truncated.parquet", whole[: len(whole) // 3])


def _land_round_two(src: DemoSource, landing: Path) -> None:
    src.write_batch(4, landing)
    # 6% of rows broken (unknown region, impossible discount, missing label): split off.
    write_parquet_atomic(landing / "batch_0005.parquet", corrupt_rows(src.batch(5), 0.06, seed=5))
    src.write_batch(6, landing, fmt="csv")
    src.write_batch(7, landing)


def _dag(settings: Settings, dag_id: str, log: Path, conf: dict | None = None) -> float:
    t0 = time.monotonic()
    args = ["dags", "test", dag_id] + (["--conf", json.dumps(conf)] if conf else [])
    print(f"  $ airflow {' '.join(args)}", flush=True)
    if run_airflow(settings, args, log) != 0:
        raise RuntimeError(f"airflow dags test {dag_id} failed; see {log}")
    return time.monotonic() - t0


def _show_outcomes(settings: Settings, seen: set[str]) -> None:
    for o in outcomes(settings):
        if o["batch_id"] in seen:
            continue
        seen.add(o["batch_id"])
        line = f"    {o['batch_id']:<24} {o['status']:<12} rows in={o['rows_in']:<5} accepted={o['rows_accepted']:<5} quarantined={o['rows_quarantined']}"
        print(line)
        if o["reason"]:
            print(f"      reason: {o['reason']}")


def _show_decision(settings: Settings) -> None:
    from ctrain.promotion.decisions import list_decisions
    from ctrain.tracking import configure

    d = list_decisions(configure(settings), settings, limit=1)[0]
    print(
        f"    decision: {d['decision']} (rule {d['rule']}): champion {d['champion_before'] or 'none'} -> {d['champion_after']}"
    )
    print(f"      {d['reason']}")
    if d.get("challenger_metric") is not None:
        champ = (
            f", champion {d['champion_metric']:.4f}" if d.get("champion_metric") is not None else ""
        )
        print(
            f"      {d['metric']}: challenger v{d['challenger_version']} {d['challenger_metric']:.4f}{champ}"
        )


def run_demo(settings: Settings) -> int:
    """Run the demo in an empty ``CTRAIN_HOME``; prints what happened and where to look."""
    log = settings.root / "logs" / "demo.log"
    src = DemoSource(**settings.demo.model_dump())
    print(f"ctrain demo in {settings.root} (Airflow output: {log})")
    print("1. Airflow metadata database (SQLite)")
    migrate(settings, log)

    seen: set[str] = set()
    print("2. Round one: 3 good batches, 1 with a missing column, 1 truncated file")
    _land_round_one(src, settings.landing_dir)
    _dag(settings, "ct_ingest", log)
    _show_outcomes(settings, seen)
    print("3. ct_training: the first champion")
    _dag(settings, "ct_training", log, {"reason": "demo: first training"})
    _show_decision(settings)

    print("4. Round two: 4 more batches, one with 6% broken rows")
    _land_round_two(src, settings.landing_dir)
    _dag(settings, "ct_ingest", log)
    _show_outcomes(settings, seen)
    print("5. ct_training on the larger window: challenger vs champion on the same held-out rows")
    _dag(settings, "ct_training", log, {"reason": "demo: retrain on more data"})
    _show_decision(settings)

    from ctrain.cli import main as cli_main

    print("\n6. Summary (`ctrain status`)")
    cli_main(["status", "--limit", "5"])
    print(
        f"""
Where to look:
  accepted batches   {settings.accepted_dir}
  quarantine         {settings.quarantine_dir}/<batch>/reason.txt, validation.json, rows.parquet
  comparisons        {settings.datasets_dir}/<dataset>/comparison-*.json
  MLflow store       {settings.resolved_tracking_uri}
  UIs                make up   (Airflow http://127.0.0.1:8080, MLflow http://127.0.0.1:5000)"""
    )
    return 0
