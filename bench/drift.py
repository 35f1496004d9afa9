"""Benchmark ctrain's drift check against Evidently's DataDriftPreset and a plain scipy loop.

    python bench/drift.py [--rows 1000000] [--cols 20] [--repeat 3] [--out FILE.json]

Each variant runs in a fresh subprocess that generates the same frames (seeded; ``--rows`` rows
a side, a fifth of the columns categorical, three columns drifted) and times the check
``--repeat`` times. Memory: the subprocess's whole-life peak RSS as the kernel
counted it (wait4, "peak MB", data generation included), its RSS once the data is built ("base
MB"), and the check's increment (its peak minus that RSS, the peak reset in between: "check
+MB"). Evidently runs once above 100,000 rows unless ``--evidently-repeat`` says otherwise;
``--skip-evidently-above N`` leaves it out above N rows. Timings include no import: each variant
imports its library and runs once on 2,000 rows before the clock starts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import _peak

# Same methods and thresholds for the variants that are compared with each other.
DEFAULT_METHODS = ("wasserstein", 0.1, "jensenshannon", 0.1)
TEST_METHODS = ("ks", 0.05, "chisquare", 0.05)
# variant -> (methods, the ctrain variant it is compared with)
VARIANTS: dict[str, tuple[tuple[str, float, str, float], str]] = {
    "ctrain": (DEFAULT_METHODS, "ctrain"),
    "ctrain-ks": (TEST_METHODS, "ctrain-ks"),
    "evidently": (DEFAULT_METHODS, "ctrain"),
    "scipy-loop": (TEST_METHODS, "ctrain-ks"),
}
DRIFT_SHARE = 0.3
SEED = 20240601
LEVELS = 8


def make_frames(rows: int, cols: int, seed: int = SEED) -> tuple[Any, Any, list[str], list[str]]:
    """Reference and current frames; ``num_0``, ``num_1`` and ``cat_0`` drift."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_cat = max(1, cols // 5)
    numeric = [f"num_{i}" for i in range(cols - n_cat)]
    categorical = [f"cat_{i}" for i in range(n_cat)]
    levels = np.array([f"level_{i}" for i in range(LEVELS)], dtype=object)
    base_p = np.linspace(2, 1, LEVELS) / np.linspace(2, 1, LEVELS).sum()

    def frame(drifted: bool) -> pd.DataFrame:
        data: dict[str, Any] = {}
        for i, name in enumerate(numeric):
            shift = 0.25 if drifted and i == 0 else 0.0
            scale = 1.3 if drifted and i == 1 else 1.0
            kind = i % 4
            if kind == 0:
                data[name] = rng.normal(shift, scale, rows)
            elif kind == 1:
                data[name] = rng.lognormal(shift, 0.5 * scale, rows)
            elif kind == 2:
                data[name] = rng.uniform(shift, shift + scale, rows)
            else:
                data[name] = rng.poisson(4 * scale + shift, rows)
        for i, name in enumerate(categorical):
            p = base_p[::-1] if drifted and i == 0 else base_p
            # Object strings, as read from Parquet or CSV; the 8 str objects are shared.
            data[name] = levels[rng.choice(LEVELS, size=rows, p=p)]
        out = pd.DataFrame(data)
        if len(numeric) > 2:
            out.loc[rng.random(rows) < 0.01, numeric[2]] = np.nan
        return out

    return frame(False), frame(True), numeric, categorical


def _checker(variant: str, numeric: list[str], categorical: list[str]) -> Callable[..., list[str]]:
    """A function (reference, current) -> sorted drifted columns, imports done."""
    num_method, num_threshold, cat_method, cat_threshold = VARIANTS[variant][0]
    if variant.startswith("ctrain"):
        from ctrain.monitoring.drift import detect_drift
        from ctrain.settings import DriftMethod

        num = DriftMethod(method=num_method, threshold=num_threshold)
        cat = DriftMethod(method=cat_method, threshold=cat_threshold)

        def run_ctrain(reference, current) -> list[str]:
            result = detect_drift(reference, current, numeric, categorical, num, cat, DRIFT_SHARE)
            return sorted(result.drifted_columns())

        return run_ctrain

    if variant == "evidently":
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        def run_evidently(reference, current) -> list[str]:
            definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
            preset = DataDriftPreset(
                columns=numeric + categorical,
                drift_share=DRIFT_SHARE,
                num_method=num_method,
                num_threshold=num_threshold,
                cat_method=cat_method,
                cat_threshold=cat_threshold,
            )
            snapshot = Report([preset], include_tests=True).run(
                current_data=Dataset.from_pandas(current, data_definition=definition),
                reference_data=Dataset.from_pandas(reference, data_definition=definition),
            )
            return sorted(
                t["metric_config"]["params"]["column"]
                for t in snapshot.dict()["tests"]
                if t["metric_config"]["params"]["type"] == "evidently:metric_v2:ValueDrift"
                and t["status"] == "FAIL"
            )

        return run_evidently

    from scipy import stats

    def run_scipy(reference, current) -> list[str]:
        drifted = []
        for name in numeric:
            p = stats.ks_2samp(reference[name].dropna(), current[name].dropna()).pvalue
            if p <= num_threshold:
                drifted.append(name)
        for name in categorical:
            ref, cur = reference[name].value_counts(), current[name].value_counts()
            keys = ref.index.union(cur.index)
            ref, cur = ref.reindex(keys, fill_value=0), cur.reindex(keys, fill_value=0)
            p = stats.chisquare(cur, ref * (cur.sum() / ref.sum())).pvalue
            if p < cat_threshold:
                drifted.append(name)
        return sorted(drifted)

    return run_scipy


def worker(variant: str, rows: int, cols: int, repeat: int) -> dict[str, Any]:
    """Generate the frames, warm up, time the check; what the parent prints."""
    reference, current, numeric, categorical = make_frames(rows, cols)
    check = _checker(variant, numeric, categorical)
    check(reference.iloc[:2000], current.iloc[:2000])
    gc.collect()
    _peak.release_free_memory()
    before = _peak.rss_mb()
    _peak.reset_peak()
    seconds, drifted = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        drifted = check(reference, current)
        seconds.append(time.perf_counter() - start)
    return {
        "seconds": seconds,
        "check_increment_mb": _peak.peak_mb() - before,
        "rss_before_check_mb": before,
        "drifted": drifted,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("numpy", "pandas", "scipy", "evidently")} | {
        "python": platform.python_version()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per side")
    parser.add_argument("--cols", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--evidently-repeat", type=int, default=None)
    parser.add_argument("--skip-evidently-above", type=int, default=None, metavar="N")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker, args.rows, args.cols, args.repeat)))
        return 0

    for name in ("MLFLOW_DISABLE_TELEMETRY", "GX_ANALYTICS_ENABLED", "DO_NOT_TRACK"):
        os.environ.setdefault(name, {"GX_ANALYTICS_ENABLED": "false"}.get(name, "true"))
    os.environ["DO_NOT_TRACK"] = "1"
    evidently_repeat = args.evidently_repeat or (args.repeat if args.rows <= 100_000 else 1)
    results: dict[str, dict[str, Any]] = {}
    for variant in args.variants.split(","):
        if variant == "evidently" and args.rows > (args.skip_evidently_above or float("inf")):
            continue
        repeat = evidently_repeat if variant == "evidently" else args.repeat
        print(f"running {variant} ({repeat}x) ...", file=sys.stderr, flush=True)
        worker_args = [__file__, "--worker", variant, "--rows", str(args.rows)]
        out, peak = _peak.run_measured(
            [*worker_args, "--cols", str(args.cols), "--repeat", str(repeat)]
        )
        results[variant] = json.loads(out.strip().splitlines()[-1]) | {"peak_rss_mb": peak}

    rows = []
    for variant, r in results.items():
        methods, baseline = VARIANTS[variant]
        base = results.get(baseline)
        median = statistics.median(r["seconds"])
        rows.append(
            {
                "variant": variant,
                "methods": f"{methods[0]}+{methods[2]}",
                "repeats": len(r["seconds"]),
                "median_s": median,
                "min_s": min(r["seconds"]),
                "max_s": max(r["seconds"]),
                "peak_rss_mb": r["peak_rss_mb"],
                "rss_before_check_mb": r["rss_before_check_mb"],
                "check_increment_mb": r["check_increment_mb"],
                "vs_ctrain": median / statistics.median(base["seconds"]) if base else None,
                "same_drifted_as_ctrain": r["drifted"] == base["drifted"] if base else None,
                "drifted": r["drifted"],
            }
        )
    _print_table(args.rows, args.cols, rows)
    if args.out:
        report = {"rows_per_side": args.rows, "cols": args.cols, "drift_share": DRIFT_SHARE}
        report |= {"cpus": os.cpu_count(), "versions": _versions(), "variants": rows}
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


def _print_table(n_rows: int, cols: int, rows: list[dict[str, Any]]) -> None:
    print(f"\n{n_rows:,} rows a side x {cols} columns, {os.cpu_count()} CPUs")
    header = (
        f"{'variant':<11} {'methods':<26} {'n':>2} {'median s':>9} {'min s':>8} {'max s':>8} "
        f"{'peak MB':>8} {'base MB':>8} {'check +MB':>9} {'x ctrain':>8}  same set  drifted"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = f"{r['vs_ctrain']:.1f}" if r["vs_ctrain"] is not None else "-"
        same = {True: "yes", False: "NO", None: "-"}[r["same_drifted_as_ctrain"]]
        print(
            f"{r['variant']:<11} {r['methods']:<26} {r['repeats']:>2} {r['median_s']:>9.2f} "
            f"{r['min_s']:>8.2f} {r['max_s']:>8.2f} {r['peak_rss_mb']:>8.0f} "
            f"{r['rss_before_check_mb']:>8.0f} {r['check_increment_mb']:>9.0f} {ratio:>8}  "
            f"{same:<8}  {','.join(r['drifted'])}"
        )


if __name__ == "__main__":
    sys.exit(main())
