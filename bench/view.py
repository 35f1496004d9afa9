"""Benchmark the first load of the ctrain view in Airflow's UI, in a real headless Chromium.

    python bench/view.py --home DIR [--runs 5] [--settle 10] [--plugins DIR ...] [--out FILE]

``--home`` is a CTRAIN_HOME with records in it (``ctrain demo`` leaves one). For each plugins
folder (default: this checkout's ``plugins/``; pass another checkout's to compare), each run
starts Airflow's API server alone on that home, waits until it answers its health check and
then ``--settle`` seconds more (a person opens the page some time after the server came up;
``--settle 0`` is the person who opens it at once), logs in as admin, opens the view and times
it from the start of the page's navigation until the records are drawn (polled every 20 ms from
outside, the same for any version of the page; the page's own ``window.ctrainFirstLoadMs`` is
kept beside it where the page has one). Each run is a new API server process, so each load is that process's first. The figures
are medians of the runs; the ratio between two folders is taken in the same invocation, with
the runs interleaved so that a change in the machine's load falls on both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _stats import stats

REPO = Path(__file__).resolve().parents[1]


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def first_load(home: Path, plugins: Path, settle: float, log: Path) -> dict[str, float]:
    """One API server on ``home`` with ``plugins``; the first load of the view, in ms."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from ctrain.harness.browser import chromium, log_in
    from ctrain.runtime import (
        Services,
        airflow_bin,
        airflow_env,
        api_server_env,
        free_port,
        wait_for,
    )
    from ctrain.settings import load_settings

    os.environ["CTRAIN_HOME"] = str(home)
    settings = load_settings()
    port = free_port()
    env = (
        airflow_env(settings)
        | api_server_env(port)
        | {"AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins)}
    )
    base = f"http://127.0.0.1:{port}"
    password = json.loads(
        (settings.airflow_home / "simple_auth_manager_passwords.json.generated").read_text()
    )["admin"]
    with Services(env) as server:
        started = time.perf_counter()
        server.start([airflow_bin(), "api-server"], log)
        wait_for("the API server", lambda: _health(f"{base}/api/v2/monitor/health"), 180, 0.2)
        healthy_after = time.perf_counter() - started
        time.sleep(settle)
        with chromium() as driver:
            log_in(driver, base, password, timeout=120)
            # The view's own page, as the UI's iframe loads it.
            driver.get(f"{base}/ctrain/")
            WebDriverWait(driver, 120, poll_frequency=0.02).until(
                ec.text_to_be_present_in_element((By.ID, "card-champion"), "version")
            )
            # The page's own figure where it keeps one (this checkout's); an older page's is
            # read from outside, polling every 20 ms, the same way for both.
            polled = driver.execute_script("return performance.now()")
            own = driver.execute_script("return window.ctrainFirstLoadMs")
    return {
        "first_load_ms": float(polled),
        "page_says_ms": None if own is None else float(own),
        "healthy_after_s": healthy_after,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--plugins", type=Path, nargs="*", default=[REPO / "plugins"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="ctrain-bench-view-"))
    runs: dict[str, list[dict[str, float]]] = {str(p): [] for p in args.plugins}
    for i in range(args.runs):
        for p in args.plugins:
            one = first_load(args.home, p, args.settle, logs / f"api-server-{i}.log")
            runs[str(p)].append(one)
            print(
                f"run {i + 1}/{args.runs} {p}: first load {one['first_load_ms']:.0f} ms", flush=True
            )
    out = {
        "settle_s": args.settle,
        "runs": args.runs,
        "folders": {
            p: {
                "first_load_ms": stats([r["first_load_ms"] for r in rs]),
                "healthy_after_s": stats([r["healthy_after_s"] for r in rs]),
                "page_says_ms": stats([r["page_says_ms"] for r in rs])
                if all(r["page_says_ms"] is not None for r in rs)
                else None,
            }
            for p, rs in runs.items()
        },
    }
    if len(args.plugins) == 2:
        a, b = (runs[str(p)] for p in args.plugins)
        out["ratio_first_to_second"] = stats(
            [x["first_load_ms"] / y["first_load_ms"] for x, y in zip(a, b, strict=True)]
        )
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
