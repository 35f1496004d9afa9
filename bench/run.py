"""``make bench``: measure what the platform costs and write ``docs/benchmarks.md``.

Five sections, each run by its own script in its own process (``bench/*.py --help``):
orchestration overhead of ``ct_training`` under the scheduler, the drift check, batch scoring,
DAG parse time, and the demo's wall time. Every figure is a median of several runs with min and
max; ratios are taken in the same run. Nothing here is a test: tests never depend on speed.

    python bench/run.py [--sections orchestration,drift,scoring,parse,demo] [--quick]

``--quick`` runs every section small and once, to check that the benchmarks work (its figures
are not the document's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _stats import stats

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
SECTIONS = ("orchestration", "drift", "scoring", "parse", "demo")


def fmt(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f}, n={s['n']})"


def machine() -> str:
    def first(path: str, key: str) -> str:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
        return "?"

    mem_gib = int(first("/proc/meminfo", "MemTotal").split()[0]) / 2**20
    return (
        f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs "
        f"({first('/proc/cpuinfo', 'model name')}), {mem_gib:.0f} GiB RAM"
    )


def run_script(name: str, *args: str) -> Any:
    """Run ``bench/<name>.py *args --out tmp.json``; return what it wrote."""
    out = Path(tempfile.mkdtemp(prefix="ctrain-bench-")) / f"{name}.json"
    print(f"\n== {name}: {' '.join(args)}", flush=True)
    subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args, "--out", str(out)], check=True
    )
    return json.loads(out.read_text())


def demo(repeat: int) -> dict[str, Any]:
    """Wall time of ``ctrain demo`` (what ``make demo`` runs) in a fresh CTRAIN_HOME each time."""
    walls, batches = [], []
    for i in range(repeat):
        home = Path(tempfile.mkdtemp(prefix="ctrain-bench-demo-")) / "home"
        print(f"\n== demo run {i + 1}/{repeat} in {home}", flush=True)
        start = time.perf_counter()
        out = subprocess.run(
            [str(Path(sys.executable).with_name("ctrain")), "demo"],
            env=dict(os.environ) | {"CTRAIN_HOME": str(home)},
            capture_output=True,
            text=True,
        )
        walls.append(time.perf_counter() - start)
        if out.returncode != 0:
            raise RuntimeError(f"ctrain demo failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        batches += [float(s) for s in re.findall(r"batch \d+ done in (\d+)s", out.stdout)]
    return {"wall_s": stats(walls), "stream_batch_s": stats(batches) if batches else None}


def collect(sections: list[str], quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": quick,
    }
    if "orchestration" in sections:
        sizes = (2_000,) if quick else (10_000, 1_000_000)
        repeat = "1" if quick else "3"
        results["orchestration"] = [
            run_script("orchestration", "--rows", str(n), "--repeat", repeat) for n in sizes
        ]
    if "drift" in sections:
        sizes = (20_000,) if quick else (100_000, 1_000_000)
        results["drift"] = [
            run_script("drift", "--rows", str(n), "--repeat", "1" if quick else "3") for n in sizes
        ]
    if "scoring" in sections:
        rows = "20000" if quick else "200000,1000000"
        results["scoring"] = run_script(
            "scoring", "--rows", rows, "--repeat", "1" if quick else "5"
        )
    if "parse" in sections:
        results["parse"] = run_script("parse", "--repeat", "2" if quick else "5")
    if "demo" in sections:
        results["demo"] = demo(1 if quick else 3)
    return results


# ---------------------------------------------------------------------------------------------
# The document


def _orchestration(rows: list[dict]) -> tuple[list[str], list[tuple[str, bool, str]]]:
    lines = [
        "## 1. Orchestration overhead: `ct_training` under the scheduler vs one process",
        "",
        "Target: at 1,000,000 training rows, Airflow's run takes at most 1.2x the same steps in one",
        "Python process.",
        "",
        "| training rows | Airflow run, queued to end (s) | one process, start to exit (s) | of which steps (s) | "
        "ratio | ratio to the steps alone | fixed cost per task (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rows']:,} | {fmt(r['airflow_e2e_s'], 1)} | {fmt(r['one_process_wall_s'], 1)} | "
            f"{fmt(r['one_process_compute_s'], 1)} | **{r['ratio_vs_one_process']:.2f}** | "
            f"{r['ratio_vs_compute']:.2f} | {r['fixed_cost_per_task_s']:.2f} |"
        )
    lines += [
        "",
        "The one-process figure is a fresh interpreter running the steps one after another (imports",
        "included, once); the Airflow figure is Airflow's own record of the DAG run, from `queued_at` to",
        "`end_date`, under the scheduler, DAG processor, triggerer and API server (LocalExecutor,",
        "SQLite). The fixed cost per task is (Airflow run - steps) / 8 tasks. Both sides do the same work:",
        "the window is re-assembled before every run, and every run compares with a champion.",
        "Imports paid by the one process (s): "
        + ", ".join(f"{r['rows']:,} rows {fmt(r['one_process_imports_s'], 1)}" for r in rows)
        + ".",
        "",
    ]
    if any(r["ratio_vs_one_process"] < 1 for r in rows):
        lines += [
            "A ratio below 1 is not an error: the one process imports mlflow, scikit-learn and Great",
            "Expectations itself, while Airflow's task processes are forked with them already loaded",
            "(`ctrain.runtime.TASK_PRELOAD`); the ratio to the steps alone is the stricter figure.",
            "",
        ]
    lines += [
        "Per task, medians (s): time inside the task under Airflow, the same step in one process, and the",
        "wait before the task started (scheduling):",
        "",
    ]
    for r in rows:
        lines += [
            f"{r['rows']:,} rows:",
            "",
            "| task | under Airflow | one process | wait before |",
            "|---|---|---|---|",
        ]
        for task, t in r["per_task"].items():
            lines.append(
                f"| `{task}` | {t['airflow_task_s']:.2f} | {t['one_process_step_s']:.2f} | "
                f"{t['wait_before_s']:.2f} |"
            )
        lines.append("")
    big = max(rows, key=lambda r: r["rows"])
    verdict = [
        (
            f"Orchestration ratio at {big['rows']:,} rows <= 1.2",
            big["ratio_vs_one_process"] <= 1.2,
            f"{big['ratio_vs_one_process']:.2f}",
        )
    ]
    return lines, verdict


def _drift(runs: list[dict]) -> tuple[list[str], list[tuple[str, bool, str]]]:
    lines = [
        "## 2. Drift check: ctrain vs Evidently's preset vs a scipy loop",
        "",
        "Target: 1,000,000 rows x 20 columns under 10 s and 1 GB.",
        "",
    ]
    verdict = []
    for d in runs:
        lines += [
            f"### {d['rows_per_side']:,} rows a side x {d['cols']} columns",
            "",
            "| variant | methods | runs | median s | min s | max s | peak RSS MB | check +MB | x ctrain | same columns |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for v in d["variants"]:
            lines.append(
                f"| {v['variant']} | {v['methods']} | {v['repeats']} | {v['median_s']:.2f} | "
                f"{v['min_s']:.2f} | {v['max_s']:.2f} | {v['peak_rss_mb']:.0f} | "
                f"{v['check_increment_mb']:.0f} | {v['vs_ctrain']:.1f} | "
                f"{'yes' if v['same_drifted_as_ctrain'] else 'NO'} |"
            )
        lines.append("")
        if d["rows_per_side"] >= 1_000_000:
            c = next(v for v in d["variants"] if v["variant"] == "ctrain")
            verdict.append(
                (
                    "Drift check, 1,000,000 x 20: under 10 s and 1 GB",
                    c["median_s"] < 10 and c["peak_rss_mb"] < 1000,
                    f"{c['median_s']:.2f} s, {c['peak_rss_mb']:.0f} MB peak",
                )
            )
    lines += [
        "`ctrain` is the decision path; `evidently` is `DataDriftPreset` alone with the same methods;",
        "`scipy-loop` is `ks_2samp` per numeric column plus chi-square per categorical one (compared with",
        "`ctrain-ks`). Peak RSS is the whole process (data generation included); `check +MB` is the",
        "check's own increment.",
        "",
    ]
    return lines, verdict


def _scoring(models: list[dict]) -> tuple[list[str], list[tuple[str, bool, str]]]:
    lines = [
        "## 3. Batch scoring: the `ct_batch_inference` step vs the champion's own `predict`",
        "",
        "Target: the step's rows per second are at least 0.8 of `predict`'s on the same rows.",
        "",
        "| champion | rows | scoring step (s) | rows/s | `predict` in memory (s) | rows/s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    verdict = []
    for m in models:
        for size in m["sizes"]:
            step, own = stats(size["step_s"]), stats(size["predict_s"])
            lines.append(
                f"| {m['estimator']} | {size['rows']:,} | {fmt(step, 3)} | "
                f"{size['rows'] / step['median']:,.0f} | {fmt(own, 3)} | "
                f"{size['rows'] / own['median']:,.0f} | **{size['ratio']:.2f}** |"
            )
            verdict.append(
                (
                    f"Scoring, {m['estimator']}, {size['rows']:,} rows: >= 0.8 of predict",
                    size["ratio"] >= 0.8,
                    f"{size['ratio']:.2f}",
                )
            )
    lines += [
        "",
        "The step resolves `@champion`, loads it, reads the batch's Parquet file, scores, and writes the",
        "predictions file atomically (write, fsync, rename); `predict` runs on the same rows already in",
        "memory as the model's input frame. Each pair is interleaved in one process.",
        "",
    ]
    missed = [(m["estimator"], size) for m in models for size in m["sizes"] if size["ratio"] < 0.8]
    if missed:
        detail = "; ".join(
            f"{est} at {size['rows']:,} rows: predict "
            f"{statistics.median(size['predict_s']):.2f} s, the rest of the step "
            f"{statistics.median(size['step_s']) - statistics.median(size['predict_s']):.2f} s"
            for est, size in missed
        )
        lines += [
            "**Where the target is missed, and why.** " + detail + ". The rest of the step is",
            "reading the batch's features from Parquet into the frame the model takes, and writing the",
            "predictions file; the registry lookup and model load are about 0.02 s. It does not grow with",
            "the model, so the ratio depends on how costly the model's own predict is: a linear model",
            "predicts about as fast as Parquet decodes, gradient boosting several times slower. Reading",
            "ahead and writing behind in threads did not help (measured: 0.36 vs 0.35 for the linear",
            "model), because turning Arrow columns into the pandas objects a scikit-learn pipeline takes",
            "holds the GIL. What would close it: scoring the batch's row groups in parallel processes",
            "(`ct_batch_inference` already maps one task per batch), or models that take Arrow input.",
            "",
        ]
    return lines, verdict


def _parse(files: dict[str, dict]) -> tuple[list[str], list[tuple[str, bool, str]]]:
    lines = [
        "## 4. DAG parse time",
        "",
        "Target: under 0.5 s per DAG file.",
        "",
        "| DAG file | Airflow's DAG processor (s) | the file alone, `airflow.sdk` loaded (s) | "
        "fresh interpreter, `import airflow.sdk` included (s) |",
        "|---|---|---|---|",
    ]
    for name, r in files.items():
        label = f"`{name}.py`" + (" (control: the smallest DAG)" if name == "control" else "")
        lines.append(
            f"| {label} | {fmt(r['dag_processor'], 3)} | {fmt(r['file_only'], 3)} | "
            f"{fmt(r['with_airflow_sdk_import'], 3)} |"
        )
    ours = {n: r for n, r in files.items() if n != "control"}
    worst = max(ours, key=lambda n: ours[n]["dag_processor"]["median"])
    worst_fresh = max(ours, key=lambda n: ours[n]["with_airflow_sdk_import"]["median"])
    fresh_control = files["control"]["with_airflow_sdk_import"]["median"]
    verdict = [
        (
            "DAG parse time < 0.5 s per file, in Airflow's DAG processor",
            ours[worst]["dag_processor"]["median"] < 0.5,
            f"slowest `{worst}.py` {ours[worst]['dag_processor']['median']:.3f} s",
        ),
        (
            "DAG parse time < 0.5 s per file, in a fresh interpreter",
            ours[worst_fresh]["with_airflow_sdk_import"]["median"] < 0.5,
            f"slowest `{worst_fresh}.py` {ours[worst_fresh]['with_airflow_sdk_import']['median']:.2f} s "
            f"(the control DAG: {fresh_control:.2f} s)",
        ),
    ]
    lines += [
        "",
        "The DAG processor's figure is `dag.last_parse_duration`, Airflow's own measure (the one its UI",
        "and `dag_processing.last_duration` metric show), from the real `airflow dag-processor`",
        "re-parsing the folder; it forks each parse from a process that has Airflow loaded, as the",
        "second column does. A fresh interpreter pays `import airflow.sdk` itself, and the control DAG",
        "shows that this alone is over 0.5 s on this machine: no DAG file can meet the target that way.",
        "`ct_drift_monitor.py` is the slowest file on its own because `TriggerDagRunOperator` imports",
        "Airflow's ORM models, which the DAG processor has already loaded.",
        "",
    ]
    return lines, verdict


def _demo(d: dict) -> tuple[list[str], list[tuple[str, bool, str]]]:
    minutes = {k: v / 60 if k != "n" else v for k, v in d["wall_s"].items()}
    lines = [
        "## 5. The demo (`make demo`)",
        "",
        "Wall time of `ctrain demo` (what `make demo` runs once `.venv` exists) in a fresh",
        f"`CTRAIN_HOME`: **{fmt(minutes, 1)} min**.",
    ]
    if d["stream_batch_s"]:
        lines.append(
            f"Each batch of the stream under the scheduler (ingest, inference, monitor, and the retrain "
            f"when it fires): {fmt(d['stream_batch_s'], 0)} s."
        )
    lines.append("")
    return lines, []


def write_doc(results: dict[str, Any], path: Path) -> None:
    body: list[str] = []
    verdicts: list[tuple[str, bool, str]] = []
    for key, render in (
        ("orchestration", _orchestration),
        ("drift", _drift),
        ("scoring", _scoring),
        ("parse", _parse),
        ("demo", _demo),
    ):
        if key in results:
            lines, verdict = render(results[key])
            body += lines
            verdicts += verdict
    head = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {results['when']}. Machine: {results['machine']}.",
        "Figures are medians (min-max, n runs). Ratios are taken in the same run.",
        "",
        "| target | met | measured |",
        "|---|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} | {value} |" for name, ok, value in verdicts],
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head + body) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--quick", action="store_true", help="small and once: check the benchmarks run")
    p.add_argument(
        "--out", default=None, help="default: docs/benchmarks.md (a temp file with --quick)"
    )
    p.add_argument("--json", default=None, help="also keep the raw figures in this JSON file")
    a = p.parse_args()
    sections = [s for s in a.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    results = collect(sections, a.quick)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    default = (
        Path(tempfile.mkdtemp()) / "benchmarks.md" if a.quick else REPO / "docs" / "benchmarks.md"
    )
    out = Path(a.out) if a.out else default
    write_doc(results, out)
    print(out.read_text())
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
