"""The pre-deployment gate's figures for models of different weight, against the packaged budgets.

    python bench/predeploy.py [--repeat 3] [--models lr,hgb,forest300,forest3000] [--out FILE.json]

A fresh ``CTRAIN_HOME`` (embedded store) as environment ``staging`` gets three demo batches;
each model is trained there by ctrain's training (one candidate, nothing load-tested while it
trains), then ``ctrain.promotion.predeploy.load_test`` (the gate's own measurement: a scratch
``ctrain serve --version N`` loaded by Locust with the window's held-out rows) runs
``--repeat`` times on it. Per model: the medians of p50, p99, rows/s, error rate and peak memory,
the files' size, and what the packaged budgets (``promotion.predeployment``) say of the median
figures. The load test's own settings are the packaged ones (4 users, 10 s, 1 row a request).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

MODELS = {
    "lr": ("sklearn.linear_model.LogisticRegression", {"max_iter": 500}),
    "hgb": ("sklearn.ensemble.HistGradientBoostingClassifier", {"random_state": 42}),
    "forest300": (
        "sklearn.ensemble.RandomForestClassifier",
        {"n_estimators": 300, "random_state": 0, "n_jobs": 2},
    ),
    "forest3000": (
        "sklearn.ensemble.RandomForestClassifier",
        {"n_estimators": 3000, "random_state": 0, "n_jobs": 2},
    ),
}
FIGURES = ("p50_ms", "p99_ms", "rows_per_second", "error_rate", "peak_memory_mb", "requests")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    for key in [k for k in os.environ if k.startswith("CTRAIN_")]:
        del os.environ[key]
    home = Path(tempfile.mkdtemp(prefix="ctrain-bench-predeploy-"))
    from ctrain import steps
    from ctrain.data.demo_source import DemoSource
    from ctrain.promotion.predeploy import load_test, over_budget
    from ctrain.records import DatasetWindow, RunContext
    from ctrain.settings import CandidateSpec, load_settings
    from ctrain.tracking import configure

    base = load_settings(
        home=str(home),
        environment="staging",
        environments={"staging": {"tracking_uri": f"sqlite:///{home / 'mlflow.db'}"}},
    )
    configure(base)
    src = DemoSource(**base.demo.model_dump())
    for i in range(3):
        src.write_batch(i, base.landing_dir)
    for path in steps.list_landed(base):
        steps.ingest_one(path, base)

    out = {"budgets": base.promotion.predeployment.model_dump(mode="json"), "models": {}}
    for n, name in enumerate(args.models.split(",")):
        estimator, params = MODELS[name]
        spec = CandidateSpec(name=name, estimator=estimator, params=params, grid={})
        quiet = base.promotion.predeployment.model_copy(update={"environments": ()})
        s = base.model_copy(
            update={
                "training": base.training.model_copy(update={"candidates": [spec]}),
                "promotion": base.promotion.model_copy(update={"predeployment": quiet}),
            }
        )
        started = time.perf_counter()
        c = RunContext(run_id=f"bench-{name}", force=True).to_xcom()
        dataset = steps.assemble(c, s)
        trained = steps.train(dataset, c, s)
        evaluation = steps.evaluate(trained, dataset, s)
        version = steps.register(
            trained, dataset, steps.validate_set(dataset, s), evaluation, c, s
        )["version"]
        trained_s = time.perf_counter() - started
        print(f"{name}: v{version} trained and registered in {trained_s:.1f} s", flush=True)
        runs = []
        for i in range(args.repeat):
            f = load_test(base, str(version), DatasetWindow.from_xcom(dataset))
            print(f"  run {i + 1}: " + json.dumps({k: f[k] for k in FIGURES}), flush=True)
            runs.append(f)
        median = {k: statistics.median(r[k] for r in runs) for k in FIGURES}
        median["artifact_mb"] = runs[0]["artifact_mb"]
        out["models"][name] = {
            "estimator": estimator,
            "params": params,
            "order": n,
            "train_and_register_s": round(trained_s, 1),
            "runs": runs,
            "median": median,
            "over": over_budget(median, base.promotion.predeployment),
        }
    args.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
