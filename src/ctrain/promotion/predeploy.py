"""Pre-deployment gate: before a version may become champion in staging or prod, it serves the
environment's own rows under load, and every figure is held to its budget.

The version runs alone in a scratch ``ctrain serve --version N`` (loopback, its own token, no
inference log: load-test rows are not traffic), Locust sends the held-out rows of the window
it was compared on, and the gate reads p50/p99 latency, rows per second at fixed concurrency,
the error rate, the service's peak resident memory and the size of the model's files. Over
any budget, the comparison becomes a rejection (rule ``predeployment``) that names each figure
against its bound; the figures go into the comparison's file, so the decision record and the
model card carry them either way. A retry of the same comparison reuses the figures measured.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ctrain.records import Comparison, DatasetWindow
from ctrain.registry import DOWNLOAD_NOTE, download_model, version_uri
from ctrain.settings import PredeploymentConfig, Settings
from ctrain.storage import read_json, write_json_atomic

RULE = "predeployment"


def applies(settings: Settings) -> bool:
    """Whether this environment load-tests a version before it may become champion."""
    return bool(settings.environment) and (
        settings.environment in settings.promotion.predeployment.environments
    )


def gate(settings: Settings, comparison: Comparison, dataset: DatasetWindow) -> Comparison:
    """``comparison``, or, for a challenger that won here and is over its budget, the same
    comparison turned into a rejection that says why. Figures kept in its file."""
    if comparison.action != "promote" or not applies(settings):
        return comparison
    path = Path(comparison.comparison_uri)
    evidence = read_json(path) if path.is_file() else {}
    figures = evidence.get(RULE)
    if not figures or figures.get("version") != comparison.challenger_version:
        figures = load_test(settings, comparison.challenger_version, dataset)
        write_json_atomic(path, evidence | {RULE: figures})
    if not figures["over"]:
        return comparison
    return dataclasses.replace(
        comparison,
        action="reject",
        rule=RULE,
        reason=f"won its comparison ({comparison.reason}) but is over its pre-deployment "
        f"budget in {settings.environment}: {'; '.join(figures['over'])}",
    )


def load_test(settings: Settings, version: str, dataset: DatasetWindow) -> dict[str, Any]:
    """Serve ``version`` alone and load it with ``dataset``'s held-out rows; the figures and
    every budget they break (``over``)."""
    cfg = settings.promotion.predeployment
    with tempfile.TemporaryDirectory(prefix="ctrain-predeploy-") as tmp:
        work = Path(tmp)
        folder = download_model(
            version_uri(settings.model_name, version), settings.resolved_tracking_uri, work / "m"
        )
        artifact_mb = (
            sum(
                p.stat().st_size
                for p in folder.rglob("*")
                if p.is_file() and p.name != DOWNLOAD_NOTE
            )
            / 1e6
        )
        rows = work / "rows.json"
        rows.write_text(json.dumps(_rows(settings, dataset)))
        token = secrets.token_urlsafe(24)
        with _scratch_service(settings, version, token, work) as (url, proc):
            load = locust(
                url,
                cfg.users,
                cfg.seconds,
                _base_env()
                | {
                    "CTRAIN_LOAD_ROWS": str(rows),
                    "CTRAIN_LOAD_TOKEN": token,
                    "CTRAIN_LOAD_BATCH": str(cfg.rows_per_request),
                },
                work / "locust" / "load",
            )
            peak_mb = _peak_mb(proc.pid)
    requests = max(1, load["requests"])
    answered = load["requests"] - load["failures"] - load["shed"]
    figures = {
        "version": version,
        "environment": settings.environment,
        "users": cfg.users,
        "seconds": cfg.seconds,
        "rows_per_request": cfg.rows_per_request,
        "requests": load["requests"],
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        # Rows answered: a request shed (503) or failed scored nothing. Latencies are of
        # every request (Locust's), so under shedding they are the fast refusals' too.
        "rows_per_second": round(load["rps"] * answered / requests * cfg.rows_per_request, 1),
        "error_rate": round((load["failures"] + load["shed"]) / requests, 4),
        "errors": load["errors"],
        "peak_memory_mb": round(peak_mb, 1),
        "artifact_mb": round(artifact_mb, 2),
    }
    return figures | {"over": over_budget(figures, cfg)}


def over_budget(figures: dict[str, Any], cfg: PredeploymentConfig) -> list[str]:
    """Each figure past its bound, as ``p99 312 ms > 150 ms``; [] when all hold."""
    checks = [
        ("p50", figures["p50_ms"], cfg.max_p50_ms, "ms", True),
        ("p99", figures["p99_ms"], cfg.max_p99_ms, "ms", True),
        ("rows/s", figures["rows_per_second"], cfg.min_rows_per_second, "", False),
        ("error rate", figures["error_rate"], cfg.max_error_rate, "", True),
        ("peak memory", figures["peak_memory_mb"], cfg.max_peak_memory_mb, "MB", True),
        ("artifact", figures["artifact_mb"], cfg.max_artifact_mb, "MB", True),
    ]
    out = []
    for name, value, bound, unit, at_most in checks:
        if (value > bound) if at_most else (value < bound):
            sign = ">" if at_most else "<"
            out.append(f"{name} {value:g}{' ' + unit if unit else ''} {sign} {bound:g}")
    if not figures["requests"]:
        out.append("no request was answered")
    return out


# Not a module of the package (its folder has no __init__): Locust imports it, and importing
# Locust patches the process (gevent).
LOCUSTFILE = Path(__file__).with_name("loadtest") / "locustfile.py"


def locust(
    url: str, users: int, seconds: float, env: dict[str, str], prefix: Path, api: str = "ctrain"
) -> dict[str, Any]:
    """Run Locust against ``url`` for ``seconds`` with ``users`` callers (``env``: the
    ``CTRAIN_LOAD_*`` variables of ``locustfile.py`` and what the process needs); its CSV
    files start with ``prefix``. Returns requests, failures (errors: shed requests apart),
    shed, p50/p99/max latency (ms) and requests per second.

    Raises:
        RuntimeError: Locust wrote no figures (it did not start); its output is in the message.
    """
    prefix.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("locust")),
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(users),
            "--run-time",
            f"{max(1, round(seconds))}s",
            "--host",
            url,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=env | {"CTRAIN_LOAD_API": api},
        check=False,  # Locust exits 1 when any request failed; the figures say how many
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        raise RuntimeError(
            f"Locust wrote no figures (exit {done.returncode}): {done.stderr[-500:]}"
        )
    with stats.open() as fh:
        row = next(r for r in csv.DictReader(fh) if r["Name"] == "rows")
    with open(f"{prefix}_failures.csv") as fh:
        errors = {r["Error"]: int(r["Occurrences"]) for r in csv.DictReader(fh)}
    shed = sum(n for e, n in errors.items() if "shed:" in e)
    shed_file = Path(env["CTRAIN_LOAD_SHED"]) if "CTRAIN_LOAD_SHED" in env else None
    told = json.loads(shed_file.read_text()) if shed_file and shed_file.exists() else {}
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]) - shed,  # errors; shed requests are apart
        "shed": shed,
        "shed_without_retry_after": told.get("without_retry_after", 0),
        "errors": {e: n for e, n in errors.items() if "shed:" not in e},
        "p50_ms": float(row["50%"]),
        "p99_ms": float(row["99%"]),
        "max_ms": float(row["Max Response Time"]),
        "rps": float(row["Requests/s"]),
    }


def _rows(settings: Settings, dataset: DatasetWindow, limit: int = 500) -> list[dict]:
    """Held-out rows as callers send them: the features, the id and the event time."""
    spec = settings.dataset
    df = pd.read_parquet(dataset.holdout_uri).head(limit)
    keep = [c for c in (spec.id_column, spec.event_time_column, *spec.feature_names) if c in df]
    df = df[keep].copy()
    if spec.event_time_column in df:
        df[spec.event_time_column] = df[spec.event_time_column].astype(str)
    df = df.astype(object).where(df.notna(), None)
    return df.to_dict(orient="records")


def _base_env() -> dict[str, str]:
    """The environment of a child: this one without ctrain's settings variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CTRAIN_")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _scratch_service(settings: Settings, version: str, token: str, work: Path):
    """``ctrain serve --version`` on a free loopback port with these settings (written whole
    to a project file only this user reads); yields its URL and process, stops it after."""
    import urllib.request

    import yaml

    project = work / "project.yaml"
    data = settings.model_dump(mode="json") | {"tracking_uri": settings.resolved_tracking_uri}
    project.touch(mode=0o600)
    project.write_text(yaml.safe_dump(data))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctrain.cli", "serve", "--version", version, "--port", str(port)],
        env=_base_env() | {"CTRAIN_PROJECT": str(project), settings.serving.token_env: token},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path.cwd(),
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the scratch service of v{version} exited ({proc.returncode}): "
                f"{(work / 'serve.log').read_text()[-1000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        deadline = time.monotonic() + settings.promotion.predeployment.start_timeout_seconds
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the scratch service of v{version} was not ready within "
                    f"{settings.promotion.predeployment.start_timeout_seconds:g} s: "
                    f"{(work / 'serve.log').read_text()[-1500:]}"
                )
            time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _peak_mb(pid: int) -> float:
    """The process's peak resident memory (Linux: VmHWM), else its resident memory now."""
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import psutil

    return psutil.Process(pid).memory_info().rss / 1e6
