"""``make bench``: measure what the platform costs and write ``docs/benchmarks.md``.

Sections measured here: DAG parse time, batch scoring against the model's own predict, and the
drift check (``bench/drift.py``) at 100,000 and 1,000,000 rows. Every figure is a median of
several runs with min and max; ratios are taken in the same run. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem = next(
        (
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        "0",
    )
    return f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs ({cpu}), {int(mem) / 2**20:.0f} GiB RAM"


def parse_times(repeat: int) -> dict[str, dict]:
    """Seconds to import each DAG file in a fresh interpreter (and the file alone, airflow.sdk warm)."""
    code = (
        "import time, importlib.util, sys\n"
        "t0 = time.perf_counter(); import airflow.sdk; t1 = time.perf_counter()\n"
        "spec = importlib.util.spec_from_file_location('d', sys.argv[1])\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec)); t2 = time.perf_counter()\n"
        "print(t2 - t0, t2 - t1)\n"
    )
    out = {}
    for path in sorted((REPO / "dags").glob("*.py")):
        total, alone = [], []
        for _ in range(repeat):
            r = subprocess.run(
                [PY, "-c", code, str(path)], capture_output=True, text=True, check=True
            )
            a, b = map(float, r.stdout.split()[-2:])
            total.append(a)
            alone.append(b)
        out[path.name] = {"with_airflow_sdk_import": stats(total), "file_only": stats(alone)}
    return out


def scoring(rows: int, repeat: int) -> dict:
    """Rows per second of ct_batch_inference's scoring step vs the model's own predict_proba."""
    import pandas as pd

    home = Path(tempfile.mkdtemp(prefix="ctrain-bench-"))
    os.environ["CTRAIN_HOME"] = str(home)
    from ctrain import steps
    from ctrain.context import RunContext
    from ctrain.data.demo_source import DemoSource
    from ctrain.settings import load_settings
    from ctrain.tracking import configure
    from ctrain.training.model import features

    s = load_settings()
    src = DemoSource(**s.demo.model_dump())
    for i in range(3):
        src.write_batch(i, s.landing_dir)
    for p in steps.list_landed(s):
        steps.ingest_one(p, s)
    steps.run_training(RunContext(trigger_reason="bench"), settings=s)
    big = DemoSource(**s.demo.model_dump() | {"batch_rows": rows}).batch(50)
    big.to_parquet(s.accepted_dir / "bench.parquet", index=False)
    import mlflow

    configure(s)
    model = mlflow.sklearn.load_model(f"models:/{s.model_name}/1")
    X = features(pd.read_parquet(s.accepted_dir / "bench.parquet"), s.dataset)
    step, own = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        steps.score("bench", s)
        step.append(time.perf_counter() - t)
        t = time.perf_counter()
        model.predict_proba(X)
        own.append(time.perf_counter() - t)
    step_rps, own_rps = rows / statistics.median(step), rows / statistics.median(own)
    return {
        "rows": rows,
        "step_s": stats(step),
        "predict_s": stats(own),
        "step_rows_per_s": step_rps,
        "predict_rows_per_s": own_rps,
        "ratio": step_rps / own_rps,
    }


def drift(rows: int, repeat: int) -> dict:
    out = Path(tempfile.mkdtemp()) / "drift.json"
    subprocess.run(
        [
            PY,
            str(REPO / "bench" / "drift.py"),
            "--rows",
            str(rows),
            "--repeat",
            str(repeat),
            "--out",
            str(out),
        ],
        check=True,
        cwd=REPO / "bench",
    )
    return json.loads(out.read_text())


def fmt(s: dict) -> str:
    return f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}, n={s['n']})"


def write_doc(results: dict, path: Path) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {results['when']}. Machine: {results['machine']}.",
        "Figures are medians (min-max, n runs). Ratios are taken in the same run.",
        "",
        "## DAG parse time (target: under 0.5 s per file)",
        "",
        "| DAG file | fresh interpreter, incl. `import airflow.sdk` (s) | the file alone (s) |",
        "|---|---|---|",
    ]
    for name, r in results["parse"].items():
        lines.append(f"| `{name}` | {fmt(r['with_airflow_sdk_import'])} | {fmt(r['file_only'])} |")
    lines += [
        "",
        "Most of the first figure is importing `airflow.sdk` itself, which a DAG processor pays once;",
        "the file alone is what each parse costs. No DAG file imports ctrain or its libraries at the top.",
        "",
        "## Batch scoring (target: at least 0.8 of the model's own predict)",
        "",
    ]
    sc = results["scoring"]
    lines += [
        "| rows | scoring step (s) | rows/s | `predict_proba` alone (s) | rows/s | ratio |",
        "|---|---|---|---|---|---|",
        f"| {sc['rows']:,} | {fmt(sc['step_s'])} | {sc['step_rows_per_s']:,.0f} | {fmt(sc['predict_s'])} | "
        f"{sc['predict_rows_per_s']:,.0f} | {sc['ratio']:.2f} |",
        "",
        "The scoring step reads the accepted Parquet file, resolves and loads `@champion`, scores, and",
        "writes the predictions file atomically; `predict_proba` alone is the limit.",
        "",
        "## Drift check (target: 1,000,000 rows x 20 columns under 10 s and 1 GB)",
        "",
    ]
    for key, d in results["drift"].items():
        lines += [
            f"### {key} rows a side x {d['cols']} columns",
            "",
            "| variant | methods | runs | median s | min s | max s | peak RSS MB | check +MB | x ctrain | same columns |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for v in d["variants"]:
            lines.append(
                f"| {v['variant']} | {v['methods']} | {v['repeats']} | {v['median_s']:.2f} | {v['min_s']:.2f} | "
                f"{v['max_s']:.2f} | {v['peak_rss_mb']:.0f} | {v['check_increment_mb']:.0f} | {v['vs_ctrain']:.1f} | "
                f"{'yes' if v['same_drifted_as_ctrain'] else 'NO'} |"
            )
        lines.append("")
    lines += [
        "`ctrain` is the decision path; `evidently` is `DataDriftPreset` alone with the same methods;",
        "`scipy-loop` is `ks_2samp` per numeric column plus chi-square per categorical one (compared with",
        "`ctrain-ks`). Peak RSS includes generating the data; `check +MB` is the check's own increment.",
        "",
    ]
    missed = []
    slow = {
        n: r["file_only"]["median"]
        for n, r in results["parse"].items()
        if r["file_only"]["median"] > 0.5
    }
    if slow:
        missed.append(
            f"- Parse time: {', '.join(f'`{n}` {t:.2f} s' for n, t in slow.items())} for the file alone. "
            "`ct_drift_monitor.py` imports `TriggerDagRunOperator` from the standard provider at the top "
            "(an operator has to exist at parse time); the other files import only `airflow.sdk`. "
            "Closing it: a deferred import through a small `@task` that triggers via the Task SDK."
        )
    if sc["ratio"] < 0.8:
        missed.append(
            f"- Batch scoring: {sc['ratio']:.2f} of `predict_proba`. The step's fixed costs (resolving "
            "`@champion` in the registry, loading the model, reading the batch, writing Parquet with string "
            "ids atomically) dominate at this size; `predict_proba` alone on an in-memory frame is the limit. "
            "Closing it: cache the loaded model per version in the worker, and score larger batches per task."
        )
    if missed:
        lines += ["## Targets missed, and why", "", *missed, ""]
    lines += [
        "## Not measured yet",
        "",
        "- Orchestration overhead of `ct_training` under the scheduler vs the same steps in one process",
        "  (10,000 and 1,000,000 rows).",
        "- Wall time of `make demo`.",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--score-rows", type=int, default=200_000)
    p.add_argument("--drift-rows", default="100000,1000000")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    a = p.parse_args()
    results = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    results["parse"] = parse_times(a.repeat)
    results["scoring"] = scoring(a.score_rows, a.repeat)
    results["drift"] = {f"{int(r):,}": drift(int(r), 3) for r in a.drift_rows.split(",")}
    write_doc(results, Path(a.out))
    print(Path(a.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
