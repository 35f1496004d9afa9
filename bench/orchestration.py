"""What Airflow costs around ``ct_training``: the DAG under the real scheduler vs one Python process.

    python bench/orchestration.py [--rows 10000] [--repeat 3] [--out FILE.json]

One fresh ``CTRAIN_HOME`` holds ``--rows`` generated, accepted rows in 4 batches and a champion
trained on them (so every measured run does the full paired comparison). Then, on the same data:

- **one process**: a fresh interpreter runs ``steps.run_training``'s steps one after another (what
  ``ctrain train`` does); its wall time from start to exit is the limit, imports included once;
- **Airflow**: the scheduler, DAG processor, triggerer and API server on the embedded default
  (LocalExecutor, SQLite) run ``ct_training``; the figure is Airflow's own record of the run,
  from ``queued_at`` to ``end_date``. One unmeasured run warms the services first.

Before each measured run the assembled window is deleted, so every run reads, hashes, splits,
trains, evaluates, registers, compares and decides: the same work on both sides. The Airflow runs
are triggered with ``force`` (the window is the same each time, and ct_training records a window
it has trained before as skipped instead of training it again). The Airflow
services see a DAG folder that holds only ``ct_training.py``, so no other DAG's schedule competes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _stats import stats

REPO = Path(__file__).resolve().parents[1]
BATCHES = 4
# The tasks of ct_training, in order, and the ctrain step each one calls (run_context calls none).
TASKS = (
    ("run_context", None),
    ("assemble_window", "assemble"),
    ("validate_training_set", "validate_set"),
    ("train", "train"),
    ("evaluate", "evaluate"),
    ("register", "register"),
    ("compare", "compare"),
    ("promote", "promote"),
)


def one_process(reason: str) -> dict[str, Any]:
    """The ct_training steps in this process, each timed; imports timed apart."""
    t0 = time.perf_counter()
    # What the steps import lazily, imported here so the step figures are compute alone.
    import great_expectations  # noqa: F401
    import mlflow  # noqa: F401
    import sklearn.ensemble  # noqa: F401

    from ctrain import steps
    from ctrain.records import RunContext
    from ctrain.settings import load_settings

    imports = time.perf_counter() - t0
    s = load_settings()
    ctx = RunContext(dag_id="bench", run_id=f"bench-{time.time_ns()}", trigger_reason=reason)
    c = ctx.to_xcom()
    timed: dict[str, float] = {}

    def step(name: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        timed[name] = time.perf_counter() - start
        return out

    dataset = step("assemble", steps.assemble, c, s)
    validation = step("validate_set", steps.validate_set, dataset, s)
    trained = step("train", steps.train, dataset, c, s)
    evaluation = step("evaluate", steps.evaluate, trained, dataset, s)
    challenger = step("register", steps.register, trained, dataset, validation, evaluation, c, s)
    comparison = step("compare", steps.compare, challenger, dataset, c, s)
    decision = step("promote", steps.promote, comparison, c, s)
    return {"imports_s": imports, "steps_s": timed, "decision": decision["decision"]}


def _prepare(home: Path, rows: int) -> dict[str, str]:
    """Accepted data and the environment every process of this run shares."""
    dags = home / "dags"
    dags.mkdir(parents=True)
    for name in ("ct_training.py", "ctrain_common.py", ".airflowignore"):
        (dags / name).symlink_to(REPO / "dags" / name)
    env = {
        "CTRAIN_HOME": str(home),
        "CTRAIN_DAGS_FOLDER": str(dags),
        "CTRAIN_TRAIN_ON_NEW_DATA": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PYTHONWARNINGS": "ignore",
    }
    os.environ.update(env)
    os.environ.pop("CTRAIN_PROJECT", None)
    from ctrain.data.demo_source import DemoSource
    from ctrain.settings import load_settings
    from ctrain.storage import write_parquet_atomic

    s = load_settings()
    src = DemoSource(**s.demo.model_dump() | {"batch_rows": rows // BATCHES})
    for i in range(BATCHES):
        write_parquet_atomic(s.accepted_dir / f"batch_{i:04d}.parquet", src.batch(i))
    return env


def _run_one_process(log: Path) -> dict[str, Any]:
    start = time.perf_counter()
    with open(log, "a") as fh:
        out = subprocess.run(
            [sys.executable, __file__, "--one-process"],
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            check=True,
        )
    wall = time.perf_counter() - start
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"wall_s": wall}


def _ts(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else float("nan")


def _airflow_run(db: Path, run_id: str) -> dict[str, Any] | None:
    """Airflow's record of a finished ct_training run, or None while it is not finished."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        row = con.execute(
            "select state, queued_at, start_date, end_date from dag_run "
            "where dag_id = 'ct_training' and run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None or row[0] not in ("success", "failed"):
            return None
        tis = con.execute(
            "select task_id, state, queued_dttm, start_date, end_date, try_number "
            "from task_instance where dag_id = 'ct_training' and run_id = ?",
            (run_id,),
        ).fetchall()
    state, queued, started, ended = row
    if state != "success":
        raise RuntimeError(f"ct_training run {run_id} ended {state}: {tis}")
    tasks = {
        t: {"queued": _ts(q), "start": _ts(s), "end": _ts(e), "try": n} for t, _, q, s, e, n in tis
    }
    end = _ts(ended)
    return {
        "e2e_s": end - _ts(queued),
        "queued_to_start_s": _ts(started) - _ts(queued),
        "tasks": tasks,
    }


def _run_airflow(af, db: Path, run_id: str, timeout: float = 3600) -> dict[str, Any]:
    from ctrain.runtime import wait_for

    af.trigger("ct_training", {"reason": "bench", "force": True}, run_id=run_id)
    return wait_for(
        f"ct_training run {run_id}", lambda: _airflow_run(db, run_id), timeout, 1, af.alive
    )


def measure(rows: int, repeat: int, keep: bool = False) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="ctrain-bench-orch-"))
    env = _prepare(home, rows)
    from ctrain.runtime import AirflowServices, migrate
    from ctrain.settings import load_settings

    s = load_settings()
    logs = home / "logs"
    logs.mkdir()
    print(f"{rows:,} rows: champion (unmeasured) ...", file=sys.stderr, flush=True)
    _run_one_process(logs / "one_process.log")
    migrate(s, logs / "migrate.log")

    one = []
    for i in range(repeat):
        shutil.rmtree(s.datasets_dir)
        one.append(_run_one_process(logs / "one_process.log"))
        print(f"  one process #{i + 1}: {one[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)

    flow = []
    with AirflowServices(s, logs / "airflow", env) as af:
        _run_airflow(af, s.airflow_home / "airflow.db", "bench-warmup")
        for i in range(repeat):
            shutil.rmtree(s.datasets_dir)
            flow.append(_run_airflow(af, s.airflow_home / "airflow.db", f"bench-{i}"))
            print(f"  Airflow #{i + 1}: {flow[-1]['e2e_s']:.1f} s", file=sys.stderr, flush=True)
    if not keep:
        shutil.rmtree(home, ignore_errors=True)
    return summarize(rows, one, flow)


def summarize(rows: int, one: list[dict], flow: list[dict]) -> dict[str, Any]:
    """Medians, the ratios and the fixed cost per task, from paired figures of the same run."""
    compute = [sum(r["steps_s"].values()) for r in one]
    per_task = {}
    for task, step in TASKS:
        in_airflow = [f["tasks"][task]["end"] - f["tasks"][task]["start"] for f in flow]
        # The gap before a task: from the end of its upstream (or the run's queueing) to its start.
        waits = []
        for f in flow:
            prev = [
                f["tasks"][t]["end"]
                for t, _ in TASKS
                if t != task and f["tasks"][t]["end"] <= f["tasks"][task]["start"]
            ]
            waits.append(f["tasks"][task]["start"] - max(prev) if prev else f["queued_to_start_s"])
        alone = [r["steps_s"][step] for r in one] if step else [0.0]
        per_task[task] = {
            "airflow_task_s": statistics.median(in_airflow),
            "one_process_step_s": statistics.median(alone),
            "wait_before_s": statistics.median(waits),
        }
    e2e = [f["e2e_s"] for f in flow]
    walls = [r["wall_s"] for r in one]
    fixed = (statistics.median(e2e) - statistics.median(compute)) / len(TASKS)
    return {
        "rows": rows,
        "tasks": len(TASKS),
        "airflow_e2e_s": stats(e2e),
        "one_process_wall_s": stats(walls),
        "one_process_compute_s": stats(compute),
        "one_process_imports_s": stats([r["imports_s"] for r in one]),
        "ratio_vs_one_process": statistics.median(e2e) / statistics.median(walls),
        "ratio_vs_compute": statistics.median(e2e) / statistics.median(compute),
        "fixed_cost_per_task_s": fixed,
        "per_task": per_task,
        "decisions": sorted({r["decision"] for r in one}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary CTRAIN_HOME")
    parser.add_argument("--one-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_process:
        print(json.dumps(one_process("bench")))
        return 0
    result = measure(args.rows, args.repeat, args.keep)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
