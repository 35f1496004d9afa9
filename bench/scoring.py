"""Batch scoring: ct_batch_inference's scoring step against the champion's own ``predict``.

    python bench/scoring.py [--rows 200000,1000000] [--repeat 5] [--out FILE.json]

For each candidate of the demo project (a linear model and gradient boosting), a fresh
``CTRAIN_HOME`` gets a project file with only that candidate, a champion trained on three demo
batches, and one accepted batch of ``--rows`` rows. Then, in the same process and on the same
rows, alternately: ``steps.score`` (what the task calls: resolve ``@champion``, load it, read the
batch, score, write the predictions file atomically) and ``predict`` of the loaded model on the
batch already in memory (the limit). Each is run once before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def measure(candidate: str, rows: list[int], repeat: int) -> dict[str, Any]:
    """One candidate as champion; step and predict timings at each batch size."""
    home = Path(tempfile.mkdtemp(prefix="ctrain-bench-score-"))
    from ctrain.settings import default_project_file

    project = yaml.safe_load(default_project_file().read_text())
    project["training"]["candidates"] = [
        c for c in project["training"]["candidates"] if c["name"] == candidate
    ]
    (home / "project.yaml").write_text(yaml.safe_dump(project))
    os.environ.update({"CTRAIN_HOME": str(home), "CTRAIN_PROJECT": str(home / "project.yaml")})

    import pandas as pd

    from ctrain import steps
    from ctrain.data.demo_source import DemoSource
    from ctrain.model_io import features
    from ctrain.records import RunContext
    from ctrain.registry import load_model
    from ctrain.settings import load_settings
    from ctrain.storage import write_parquet_atomic
    from ctrain.tracking import configure

    s = load_settings()
    src = DemoSource(**s.demo.model_dump())
    for i in range(3):
        write_parquet_atomic(s.accepted_dir / f"batch_{i:04d}.parquet", src.batch(i))
    decision = steps.run_training(RunContext(trigger_reason="bench"), settings=s)
    configure(s)
    model = load_model(f"models:/{s.model_name}@champion")
    out: dict[str, Any] = {
        "candidate": candidate,
        "estimator": type(model.named_steps["model"]).__name__,
        "champion": decision["champion_after"],
        "sizes": [],
    }
    for n in rows:
        batch_id = f"bench_{n}"
        big = DemoSource(**s.demo.model_dump() | {"batch_rows": n}).batch(50)
        write_parquet_atomic(s.accepted_dir / f"{batch_id}.parquet", big)
        X = features(pd.read_parquet(s.accepted_dir / f"{batch_id}.parquet"), s.dataset)
        steps.score(batch_id, s)
        model.predict(X)
        step, own = [], []
        for _ in range(repeat):
            t = time.perf_counter()
            steps.score(batch_id, s)
            step.append(time.perf_counter() - t)
            t = time.perf_counter()
            model.predict(X)
            own.append(time.perf_counter() - t)
        out["sizes"].append(
            {
                "rows": n,
                "step_s": step,
                "predict_s": own,
                "ratio": statistics.median(own) / statistics.median(step),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="200000,1000000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--candidates", default="logistic_regression,hist_gradient_boosting")
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = [int(r) for r in args.rows.split(",")]
    if args.worker:
        print(json.dumps(measure(args.worker, rows, args.repeat)))
        return 0
    results = []
    for candidate in args.candidates.split(","):
        print(f"scoring with a {candidate} champion ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", candidate, "--rows", args.rows]
            + ["--repeat", str(args.repeat)],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for r in results:
        for size in r["sizes"]:
            print(
                f"{r['estimator']:<32} {size['rows']:>9,} rows  step {statistics.median(size['step_s']):.3f} s"
                f"  predict {statistics.median(size['predict_s']):.3f} s  ratio {size['ratio']:.2f}"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
