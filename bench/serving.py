"""Online serving: ``ctrain serve`` against ``mlflow models serve``, same model, same rows.

    python bench/serving.py [--seconds 20] [--concurrency 1,8,32] [--repeat 3] [--out FILE.json]

A fresh ``CTRAIN_HOME`` gets a champion trained on three demo batches. Both servers then run as
their own processes on 127.0.0.1: ``ctrain serve`` (with a token, as in production) and
``mlflow models serve -m models:/<name>@champion --env-manager local`` (MLflow's scoring server
on the same model). For each concurrency, Locust (headless, ``FastHttpUser``, no think time)
sends one row per request for ``--seconds``, alternating the servers run by run so drift in
the machine's load falls on both. Per server and concurrency: p50, p99 and requests (= rows)
per second, medians over the runs; the ratios are taken within each run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _wait(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not ready in {timeout}s")


def _free_port() -> int:
    from ctrain.runtime import free_port

    return free_port()


def _champion(home: Path) -> tuple[Any, list[dict]]:
    """Train the champion in ``home``; return the settings and 500 rows as callers send them."""
    os.environ["CTRAIN_HOME"] = str(home)
    from ctrain import steps
    from ctrain.data.demo_source import DemoSource
    from ctrain.records import RunContext
    from ctrain.settings import load_settings
    from ctrain.storage import write_parquet_atomic

    s = load_settings()
    src = DemoSource(**s.demo.model_dump())
    for i in range(3):
        write_parquet_atomic(s.accepted_dir / f"batch_{i:04d}.parquet", src.batch(i))
    steps.run_training(RunContext(trigger_reason="bench"), settings=s)
    df = src.batch(40).head(500).drop(columns=[s.dataset.target])
    df[s.dataset.event_time_column] = df[s.dataset.event_time_column].astype(str)
    df = df.astype(object).where(df.notna(), None)
    return s, df.to_dict(orient="records")


def _locust(url: str, api: str, users: int, seconds: int, env: dict, out: Path) -> dict:
    prefix = out / f"{api}_{users}"
    subprocess.run(
        [
            str(BIN / "locust"),
            "-f",
            str(HERE / "locustfile.py"),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(users),
            "--run-time",
            f"{seconds}s",
            "--host",
            url,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=env | {"CTRAIN_BENCH_API": api},
        check=False,  # Locust exits 1 when any request failed; the figures say how many
        stdout=subprocess.DEVNULL,
        timeout=seconds + 120,
    )
    with open(f"{prefix}_stats.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["Name"] == "one row")
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "p50_ms": float(row["50%"]),
        "p99_ms": float(row["99%"]),
        "rps": float(row["Requests/s"]),
    }


def _precise(url: str, api: str, token: str, rows: list[dict], n: int) -> dict:
    """One connection, one row per request, each timed with ``perf_counter`` (Locust rounds
    times under 100 ms to whole milliseconds, too coarse for a one-row p50)."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    path = "/predict" if api == "ctrain" else "/invocations"
    headers = {"Content-Type": "application/json"}
    if api == "ctrain":
        headers["Authorization"] = f"Bearer {token}"
    bodies = [
        json.dumps({"rows": [r]} if api == "ctrain" else {"dataframe_records": [r]}) for r in rows
    ]
    times = []
    for i in range(n):
        t = time.perf_counter()
        conn.request("POST", path, bodies[i % len(bodies)], headers)
        resp = conn.getresponse()
        resp.read()
        times.append(time.perf_counter() - t)
        if resp.status != 200:
            raise RuntimeError(f"{api}: {resp.status}")
    conn.close()
    times.sort()
    return {
        "p50_ms": 1000 * statistics.median(times),
        "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))],
        "rps": len(times) / sum(times),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=3000, help="per precise one-connection run")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ctrain-bench-serve-"))
    settings, rows = _champion(home)
    work = home / "locust"
    work.mkdir()
    (work / "rows.json").write_text(json.dumps(rows))
    token = secrets.token_urlsafe(24)
    base_env = os.environ | {
        "CTRAIN_HOME": str(home),
        "PYTHONWARNINGS": "ignore",
        # mlflow models serve execs `uvicorn` by name
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    stack = contextlib.ExitStack()
    logs = {n: stack.enter_context(open(home / f"{n}.log", "w")) for n in ("ours", "mlflow")}  # noqa: SIM115 (closed by the stack)
    ours, theirs = _free_port(), _free_port()
    procs = [
        subprocess.Popen(
            [str(BIN / "ctrain"), "serve", "--port", str(ours)],
            env=base_env | {"CTRAIN_SERVE_TOKEN": token},
            stdout=subprocess.DEVNULL,
            stderr=logs["ours"],
        ),
        subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{settings.model_name}@champion",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(theirs),
            ],
            # The baseline is MLflow's own loader, on a model this benchmark just trained.
            env=base_env
            | {
                "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
                "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
            },
            stdout=subprocess.DEVNULL,
            stderr=logs["mlflow"],
        ),
    ]
    urls = {"ctrain": f"http://127.0.0.1:{ours}", "mlflow": f"http://127.0.0.1:{theirs}"}
    try:
        _wait(f"{urls['ctrain']}/ready", procs[0])
        _wait(f"{urls['mlflow']}/ping", procs[1], timeout=300)
        env = base_env | {"CTRAIN_BENCH_ROWS": str(work / "rows.json"), "CTRAIN_BENCH_TOKEN": token}
        runs: list[dict] = []
        precise: list[dict] = []
        for r in range(a.repeat):
            order = ("ctrain", "mlflow") if r % 2 == 0 else ("mlflow", "ctrain")
            got = {api: _precise(urls[api], api, token, rows, a.requests) for api in order}
            precise.append({"run": r} | got)
            print(json.dumps(precise[-1]), flush=True)
        for users in [int(c) for c in a.concurrency.split(",")]:
            for api in ("ctrain", "mlflow"):  # warm both at this concurrency
                _locust(urls[api], api, users, 3, env, work)
            for r in range(a.repeat):
                order = ("ctrain", "mlflow") if r % 2 == 0 else ("mlflow", "ctrain")
                got = {api: _locust(urls[api], api, users, a.seconds, env, work) for api in order}
                runs.append({"users": users, "run": r} | got)
                print(json.dumps(runs[-1]), flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        stack.close()
    out = {
        "seconds": a.seconds,
        "repeat": a.repeat,
        "precise": precise,
        "precise_summary": _precise_summary(precise),
        "runs": runs,
        "summary": _summary(runs),
    }
    text = json.dumps(out, indent=1)
    if a.out:
        a.out.write_text(text)
    print(json.dumps(out["precise_summary"] | {"locust": out["summary"]}, indent=1))


def _precise_summary(runs: list[dict]) -> dict:
    def med(api, key):
        return statistics.median(r[api][key] for r in runs)

    return {
        **{
            f"{api}_{k}": med(api, k)
            for api in ("ctrain", "mlflow")
            for k in ("p50_ms", "p99_ms", "rps")
        },
        "p50_ratio": statistics.median(r["mlflow"]["p50_ms"] / r["ctrain"]["p50_ms"] for r in runs),
        "rps_ratio": statistics.median(r["ctrain"]["rps"] / r["mlflow"]["rps"] for r in runs),
        "runs": len(runs),
    }


def _summary(runs: list[dict]) -> list[dict]:
    out = []
    for users in sorted({r["users"] for r in runs}):
        rs = [r for r in runs if r["users"] == users]

        def med(api, key, rs=rs):
            return statistics.median(r[api][key] for r in rs)

        out.append(
            {
                "users": users,
                "runs": len(rs),
                **{
                    f"{api}_{k}": med(api, k)
                    for api in ("ctrain", "mlflow")
                    for k in ("p50_ms", "p99_ms", "rps")
                },
                "failures": {
                    api: sum(r[api]["failures"] for r in rs) for api in ("ctrain", "mlflow")
                },
                "p50_ratio": statistics.median(
                    r["mlflow"]["p50_ms"] / r["ctrain"]["p50_ms"] for r in rs
                ),
                "rps_ratio": statistics.median(r["ctrain"]["rps"] / r["mlflow"]["rps"] for r in rs),
            }
        )
    return out


if __name__ == "__main__":
    main()
