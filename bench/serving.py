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
    from ctrain.runtime import wait_for

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(url, ready, timeout)


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
    # A second version for the hot reloads (trained on one batch more; champion stays v1).
    write_parquet_atomic(s.accepted_dir / "batch_0003.parquet", src.batch(3))
    steps.run_training(RunContext(trigger_reason="bench: second version", force=True), settings=s)
    from ctrain.tracking import configure

    configure(s).set_registered_model_alias(s.model_name, "champion", "1")
    df = src.batch(40).head(500).drop(columns=[s.dataset.target])
    df[s.dataset.event_time_column] = df[s.dataset.event_time_column].astype(str)
    df = df.astype(object).where(df.notna(), None)
    return s, df.to_dict(orient="records")


def _locust(url: str, api: str, users: int, seconds: int, env: dict, out: Path) -> dict:
    from ctrain.promotion.predeploy import locust

    return locust(url, users, seconds, env, out / f"{api}_{users}", api)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _under_load(url: str, env: dict, work: Path, a) -> dict:
    """ctrain serve alone: the rate it holds at p99 <= 50 ms, past saturation, a hot reload
    every 2 s under load, and a soak with its memory sampled."""
    import threading

    from mlflow import MlflowClient

    out: dict[str, Any] = {"sweep": []}
    for users in (1, 2, 4, 8, 16, 32, 64):
        r = _locust(url, "ctrain", users, a.sweep_seconds, env, work)
        out["sweep"].append({"users": users} | r)
        print(json.dumps(out["sweep"][-1]), flush=True)
    held = [r for r in out["sweep"] if r["p99_ms"] <= 50 and not r["failures"] and not r["shed"]]
    out["held_rps"] = max((r["rps"] for r in held), default=0.0)
    shed_env = env | {"CTRAIN_LOAD_SHED": str(work / "shed.json")}
    out["saturation"] = {"users": a.saturation_users} | _locust(
        url, "ctrain", a.saturation_users, a.sweep_seconds, shed_env, work
    )
    print(json.dumps(out["saturation"]), flush=True)

    # Hot reload under load: the alias moves between two versions every 2 s, as promotions and
    # rollbacks move it.
    client, name = MlflowClient(env["MLFLOW_TRACKING_URI"]), env["CTRAIN_BENCH_MODEL"]
    stop, moves = threading.Event(), []

    def flip() -> None:
        versions = ["2", "1"]
        while not stop.wait(2.0):
            v = versions[len(moves) % 2]
            client.set_registered_model_alias(name, "champion", v)
            moves.append(v)

    mover = threading.Thread(target=flip, daemon=True)
    mover.start()
    try:
        reload = _locust(url, "ctrain", 8, a.reload_seconds, env, work)
    finally:
        stop.set()
        mover.join()
    out["reload"] = reload | {"alias_moves": len(moves)}
    print(json.dumps(out["reload"]), flush=True)

    # Soak: a steady load, the server's resident memory every 10 s.
    pid = int(env["CTRAIN_BENCH_PID"])
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not done.is_set():
            samples.append((time.monotonic() - t0, _rss_mb(pid)))
            done.wait(10)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        soak = _locust(url, "ctrain", 8, a.soak_seconds, env, work)
    finally:
        done.set()
        sampler.join()
    minute = [m for t, m in samples if t <= 60] or [samples[0][1]]
    last = [m for t, m in samples if t >= samples[-1][0] - 60] or [samples[-1][1]]
    out["soak"] = soak | {
        "seconds": a.soak_seconds,
        "rss_first_minute_mb": statistics.median(minute),
        "rss_last_minute_mb": statistics.median(last),
        "rss_samples": samples,
    }
    print(json.dumps({k: v for k, v in out["soak"].items() if k != "rss_samples"}), flush=True)
    return out


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
    ap.add_argument("--sweep-seconds", type=int, default=10, help="per step of the rate sweep")
    ap.add_argument("--saturation-users", type=int, default=256)
    ap.add_argument("--reload-seconds", type=int, default=20, help="load while the alias moves")
    ap.add_argument("--soak-seconds", type=int, default=600)
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
    from ctrain.runtime import free_ports

    ours, theirs = free_ports(2)
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
        env = base_env | {"CTRAIN_LOAD_ROWS": str(work / "rows.json"), "CTRAIN_LOAD_TOKEN": token}
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
        # MLflow's server is done: ctrain serve alone for the rest.
        procs[1].terminate()
        procs[1].wait(timeout=60)
        load_env = env | {
            "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
            "CTRAIN_BENCH_MODEL": settings.model_name,
            "CTRAIN_BENCH_PID": str(procs[0].pid),
        }
        under_load = _under_load(urls["ctrain"], load_env, work, a)
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
        "under_load": under_load,
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
