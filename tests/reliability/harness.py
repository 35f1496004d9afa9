"""``make reliability``: bad inputs, racing promoters and kills; writes ``docs/reliability.md``.

    python tests/reliability/harness.py [--racers 200] [--kills 32] [--out FILE.md] [--quick]

1. **inputs**: the corpus of ``bad_inputs.py`` through real ingest: tried, handled as expected,
   lost (an entry with no outcome, counts that do not add up, bytes not kept).
2. **races**: ``--racers`` promote and rollback calls at once (threads in four processes), on
   the file lock and on the PostgreSQL lock; then the next command reconciles and the records
   are held against the moves the calls report.
3. **kills**: ``kill -9`` at a random moment of a promote or rollback, a training run or an
   ingest, then the next normal command: rows lost or duplicated, partial files visible,
   records against moves.
4. **serving**: ``--requests`` generated requests (``fuzz.py``: malformed JSON, wrong types,
   shapes, sizes, encodings, odd headers, slow senders; a valid one in five) against
   ``ctrain serve`` started as a user starts it: 5xx, hangs, valid requests not answered.

Everything runs on fresh temporary stores (MLflow on SQLite, a uniquely named PostgreSQL
database for the lock, created and dropped). Nothing here is timed: the figures are counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

WEAK = {
    "name": "stump",
    "estimator": "sklearn.tree.DecisionTreeClassifier",
    "params": {"max_depth": 1},
    "grid": {},
}


def home(tmp: Path, **overrides: Any):
    """A fresh CTRAIN_HOME with the demo project plus ``overrides``; its environment is set."""
    import yaml

    from ctrain.settings import default_project_file, load_settings

    data = yaml.safe_load(default_project_file().read_text())
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "project.yaml"
    path.write_text(yaml.safe_dump(data))
    os.environ.update({"CTRAIN_PROJECT": str(path), "CTRAIN_HOME": str(tmp / "home")})
    return load_settings(path)


def history_true(settings, client) -> tuple[bool, str]:
    """Whether records and alias agree: no open record, moves numbered 1..n, each starting where
    the previous ended, none to itself, the last where the alias is."""
    from ctrain.promotion.decisions import history, open_records
    from ctrain.registry import current_champion

    if open_records(client, settings):
        return False, "a record is still open"
    moves = history(client, settings)
    if [m.move for m in moves] != list(range(1, len(moves) + 1)):
        return False, f"moves numbered {[m.move for m in moves]}"
    prev = None
    for m in moves:
        if m.champion_before != prev or m.champion_after == m.champion_before:
            return False, f"move {m.move}: {m.champion_before}->{m.champion_after} after {prev}"
        prev = m.champion_after
    if prev != current_champion(client, settings.model_name):
        return False, "the last move does not end where the alias is"
    return True, f"{len(moves)} moves in one chain"


# 1. Inputs ------------------------------------------------------------------------------------


def inputs(tmp: Path) -> dict[str, Any]:
    import hashlib

    import pandas as pd
    from bad_inputs import CASES, SEVERITY, batch, ingest_corpus

    reference = tmp / "reference.parquet"
    tmp.mkdir(parents=True, exist_ok=True)
    pd.concat([batch(i) for i in range(50)]).to_parquet(reference, index=False)
    settings = home(
        tmp, dataset={"reference_file": str(reference)}, validation={"severity": SEVERITY}
    )
    by_name, deferred = ingest_corpus(settings)
    kept = {
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in settings.processed_dir.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    expected, lost, wrong = 0, [], []
    for case in CASES:
        out = by_name.get(case.name)
        if case.expect == "skipped":
            ok = out is None
        elif out is None:
            lost.append(case.name)
            continue
        else:
            adds_up = out["rows_accepted"] + out["rows_quarantined"] == out["rows_in"]
            bytes_kept = not out["sha256"] or out["sha256"] in kept
            if not (adds_up and bytes_kept):
                lost.append(case.name)
            ok = out["status"] == case.expect
        expected += ok
        if not ok:
            wrong.append(f"{case.name!r}: {out and out['status']} (expected {case.expect})")
    return {
        "tried": len(CASES),
        "as_expected": expected,
        "lost": lost,
        "wrong": wrong,
        "deferred": dict(deferred),
        "cases": {
            expect: [repr(c.name)[1:-1] for c in CASES if c.expect == expect]
            for expect in ("accepted", "partial", "quarantined", "skipped")
        },
    }


# 2. Races -------------------------------------------------------------------------------------

_RACER = """
import json, os, random, sys, threading, time
from ctrain.promotion.lock import LockTimeout
from ctrain.promotion.promote import PromotionRefused, manual_promote, rollback
from ctrain.records import RunContext
from ctrain.settings import load_settings
from ctrain.tracking import configure

threads, go, tag, spread = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
settings = load_settings()
client = configure(settings)
results, lock = [], threading.Lock()

def call(i):
    rng = random.Random(f"{tag}-{i}")
    ctx = RunContext(run_id=f"{tag}-{i}", trigger_reason="race")
    while not os.path.exists(go):
        time.sleep(0.01)
    # A third burst at once; the rest spread over the window, still overlapping (the lock is
    # busy most of it), but reading the champion at different moments, so moves really happen.
    if rng.random() > 0.3:
        time.sleep(rng.uniform(0, spread))
    try:
        if rng.random() < 0.6:
            rec = manual_promote(settings, rng.choice(["1", "2", "3"]), ctx, client)
        else:
            rec = rollback(settings, ctx, client)
        out = {"outcome": rec.decision, "rule": rec.rule, "moved": rec.moved,
               "before": rec.champion_before, "after": rec.champion_after,
               "why": rec.reason[:160]}
    except PromotionRefused as exc:
        out = {"outcome": "refused", "moved": False, "why": str(exc)[:200]}
    except LockTimeout as exc:
        out = {"outcome": "lock_timeout", "moved": False, "why": str(exc)[:200]}
    except Exception as exc:
        out = {"outcome": "error", "moved": False, "why": f"{type(exc).__name__}: {exc}"[:300]}
    with lock:
        results.append(out)

ts = [threading.Thread(target=call, args=(i,)) for i in range(threads)]
for t in ts:
    t.start()
print("ready", flush=True)
for t in ts:
    t.join()
print(json.dumps(results))
"""


def _versions(tmp: Path, **overrides: Any):
    """A home with champion v1 and two more validated versions ctrain trained (v2, v3)."""
    from ctrain import steps
    from ctrain.data.demo_source import DemoSource
    from ctrain.records import RunContext
    from ctrain.tracking import configure

    promotion = {"floors": {"roc_auc": 0.5}, **overrides.pop("promotion", {})}
    settings = home(tmp, promotion=promotion, **overrides)
    src = DemoSource(**settings.demo.model_dump())

    def land(*indexes: int) -> None:
        for i in indexes:
            src.write_batch(i, settings.landing_dir)
        for path in steps.list_landed(settings):
            steps.ingest_one(path, settings)

    land(0, 1, 2)
    steps.run_training(RunContext(run_id="v1"), settings=settings)
    weak = home(tmp, training={"candidates": [WEAK]}, promotion=promotion, **overrides)
    steps.run_training(RunContext(run_id="v2"), settings=weak)  # lost: stays a validated v2
    land(3)
    steps.run_training(RunContext(run_id="v3"), settings=weak)
    settings = home(tmp, promotion=promotion, **overrides)  # the environment children inherit
    return settings, configure(settings)


def serving(tmp: Path, n: int) -> dict[str, Any]:
    """``n`` generated requests against ``ctrain serve`` (the CLI, in its own process)."""
    import fuzz
    import httpx
    import pandas as pd

    from ctrain.data.demo_source import DemoSource
    from ctrain.runtime import free_port, wait_for

    settings, _ = _versions(tmp, serving={"read_timeout_seconds": 1})
    rows = DemoSource(**settings.demo.model_dump()).batch(20).head(20).drop(columns=["label"])
    rows["event_time"] = rows["event_time"].astype(str)
    rows = rows.astype(object).where(pd.notna(rows), None).to_dict(orient="records")
    port = free_port()
    log = open(tmp / "serve.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("ctrain")), "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("ctrain serve to be ready", ready, 120, 0.2, lambda: proc.poll() is None)
        cfg = settings.serving
        t = fuzz.run(port, rows, n, seed=11, max_rows=cfg.max_rows, max_body=cfg.max_body_bytes)
        alive = proc.poll() is None and ready()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    kinds = sorted(t.by_kind)
    return {
        "sent": t.sent,
        "server_errors": t.server_errors[:20],
        "hangs": t.hangs[:20],
        "valid_ok": t.valid_ok,
        "valid_failed": t.valid_failed[:20],
        "alive_after": alive,
        "by_kind": {
            k: {str(s): c for (kk, s), c in sorted(t.kind_status.items(), key=str) if kk == k}
            for k in kinds
        },
    }


def _pg_database() -> tuple[str, Any]:
    import psycopg2

    name = f"ctrain_rel_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return name, admin


def race(tmp: Path, racers: int, lock: str) -> dict[str, Any]:
    from ctrain.promotion.decisions import history
    from ctrain.promotion.lock import promotion_lock
    from ctrain.promotion.promote import reconcile

    db, admin, watching = None, None, None
    overrides: dict[str, Any] = {"promotion": {"lock_timeout_s": 600}}
    if lock == "postgres":
        db, admin = _pg_database()
        overrides["lock_url"] = f"postgresql://postgres@127.0.0.1:5432/{db}"
    try:
        settings, client = _versions(tmp, **overrides)
        before = len(history(client, settings))
        peak = [0]
        if admin is not None:
            watching = threading.Event()

            def watch():
                while not watching.is_set():
                    with admin.cursor() as cur:
                        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname=%s", (db,))
                        peak[0] = max(peak[0], cur.fetchone()[0])
                    time.sleep(0.02)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
        go = tmp / "go"
        procs = 4
        per = [racers // procs + (i < racers % procs) for i in range(procs)]
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _RACER, str(n), str(go), f"p{i}", str(0.3 * racers)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, n in enumerate(per)
        ]
        for c in children:
            assert c.stdout.readline().strip() == "ready"
        go.touch()
        results = []
        for c in children:
            out, err = c.communicate(timeout=3600)
            if c.returncode != 0:
                raise RuntimeError(err[-3000:])
            results += json.loads(out.strip().splitlines()[-1])
        if watching is not None:
            watching.set()
            watcher.join()
        with promotion_lock(settings):  # the next command that takes the lock
            reconcile(settings, client)
        moves = len(history(client, settings)) - before
        ok, why = history_true(settings, client)
        counts: dict[str, int] = {}
        for r in results:
            key = r["outcome"] if r["outcome"] != "rejected" else f"rejected ({r['rule']})"
            counts[key] = counts.get(key, 0) + 1
        return {
            "lock": lock,
            "calls": len(results),
            "outcomes": counts,
            "moved_by_calls": sum(r["moved"] for r in results),
            "moves_recorded": moves,
            "history_true": ok,
            "history": why,
            "errors": [r["why"] for r in results if r["outcome"] == "error"][:5],
            "peak_lock_db_connections": peak[0] if admin is not None else None,
        }
    finally:
        if admin is not None:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            admin.close()


# 3. Kills -------------------------------------------------------------------------------------

_PROMOTER = """
import random, sys
from ctrain.promotion.promote import PromotionRefused, manual_promote, rollback
from ctrain.records import RunContext
from ctrain.settings import load_settings
from ctrain.tracking import configure

settings = load_settings()
client = configure(settings)
rng = random.Random(sys.argv[1])
print("ready", flush=True)
for i in range(1000):
    ctx = RunContext(run_id=f"{sys.argv[1]}-{i}")
    try:
        if rng.random() < 0.6:
            manual_promote(settings, rng.choice(["1", "2", "3"]), ctx, client)
        else:
            rollback(settings, ctx, client)
    except PromotionRefused:
        pass
"""

_TRAINER = """
import sys
from ctrain import steps
from ctrain.records import RunContext
print("ready", flush=True)
steps.run_training(RunContext(run_id=sys.argv[1], trigger_reason="kill test"))
"""

_INGESTER = """
from ctrain import steps
print("ready", flush=True)
for p in steps.list_landed():
    steps.ingest_one(p)
steps.ingest_labels()
"""


def _kill_after(code: str, args: list[str], delay: float) -> str:
    """Run ``code``; once it says ready, SIGKILL it after ``delay`` s. How it ended."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = child.stdout.readline().strip() == "ready"
    time.sleep(delay)
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait()
    if not ready:
        raise RuntimeError(child.stderr.read()[-3000:])
    return "killed" if child.returncode == -9 else f"finished first (exit {child.returncode})"


def _visible_partial_files(root: Path) -> list[str]:
    """Files a reader would take for real that do not read whole (Parquet, JSON)."""
    import pandas as pd

    bad = []
    for p in root.rglob("*"):
        if p.name.startswith(".") or p.is_symlink() or not p.is_file() or "processed" in p.parts:
            continue
        try:
            if p.suffix == ".parquet":
                pd.read_parquet(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
        except Exception:
            bad.append(str(p.relative_to(root)))
    return bad


def kill_promotions(tmp: Path, n: int, rng: random.Random) -> dict[str, Any]:
    from ctrain.promotion.promote import PromotionRefused, manual_promote, rollback
    from ctrain.records import RunContext

    settings, client = _versions(tmp)
    ended, broken = [], []
    for i in range(n):
        ended.append(_kill_after(_PROMOTER, [f"k{i}"], rng.uniform(0.0, 1.5)))
        try:  # the next normal command
            if rng.random() < 0.5:
                manual_promote(
                    settings, rng.choice(["1", "2", "3"]), RunContext(run_id=f"n{i}"), client
                )
            else:
                rollback(settings, RunContext(run_id=f"n{i}"), client)
        except PromotionRefused:
            pass
        ok, why = history_true(settings, client)
        if not ok:
            broken.append(f"kill {i}: {why}")
    return {
        "kills": ended.count("killed"),
        "runs": n,
        "history_broken": broken,
        "history": history_true(settings, client)[1],
    }


def kill_training(tmp: Path, n: int, rng: random.Random) -> dict[str, Any]:
    from ctrain import steps
    from ctrain.records import RunContext

    settings, client = _versions(tmp)
    ended, broken, partial, versions = [], [], [], []
    for i in range(n):
        ended.append(_kill_after(_TRAINER, [f"t{i}"], rng.uniform(0.0, 12.0)))
        steps.run_training(
            RunContext(run_id=f"t{i}", trigger_reason="kill test"), settings=settings
        )
        ok, why = history_true(settings, client)
        if not ok:
            broken.append(f"kill {i}: {why}")
        found = client.search_model_versions(f"name = '{settings.model_name}'")
        mine = [v for v in found if v.tags.get("airflow_run_id") == f"t{i}"]
        versions.append(len(mine))
        partial += _visible_partial_files(settings.root)
    return {
        "kills": ended.count("killed"),
        "runs": n,
        "history_broken": broken,
        "versions_per_run": sorted(set(versions)),
        "visible_partial_files": sorted(set(partial)),
    }


def kill_ingest(tmp: Path, n: int, rng: random.Random) -> dict[str, Any]:
    import pandas as pd
    from bad_inputs import batch

    from ctrain import steps

    ended, lost, duplicated, partial = [], [], [], []
    for i in range(n):
        settings = home(tmp / f"ingest{i}")
        settings.landing_dir.mkdir(parents=True)
        landed = 0
        for j in range(6):
            df = batch(60 + 6 * i + j)
            if j % 3 == 2:
                df.loc[:20, "region"] = "mars"  # some rows for quarantine
            df.to_parquet(settings.landing_dir / f"b{j}.parquet", index=False)
            landed += len(df)
        ended.append(_kill_after(_INGESTER, [], rng.uniform(0.0, 4.0)))
        outs = [steps.ingest_one(p, settings) for p in steps.list_landed(settings)]  # next command
        outcomes = [json.loads(p.read_text()) for p in settings.outcomes_dir.glob("*.json")]
        rows_in = sum(o["rows_in"] for o in outcomes)
        accepted = (
            sum(len(pd.read_parquet(p)) for p in settings.accepted_dir.glob("*.parquet"))
            if settings.accepted_dir.exists()
            else 0
        )
        quarantined = (
            sum(len(pd.read_parquet(p)) for p in settings.quarantine_dir.glob("*/rows.parquet"))
            if settings.quarantine_dir.exists()
            else 0
        )
        if (
            rows_in != landed
            or accepted + quarantined != landed
            or list(settings.landing_dir.iterdir())
        ):
            lost.append(
                f"run {i}: landed {landed}, outcomes {rows_in}, accepted {accepted} + quarantined {quarantined}"
            )
        if len(outcomes) != 6:
            duplicated.append(f"run {i}: {len(outcomes)} outcomes for 6 files")
        partial += _visible_partial_files(settings.root)
        del outs
    return {
        "kills": ended.count("killed"),
        "runs": n,
        "rows_lost_or_unaccounted": lost,
        "duplicated": duplicated,
        "visible_partial_files": sorted(set(partial)),
    }


# The document ---------------------------------------------------------------------------------


RACE_NOTE = [
    "Each call is a manual promote (60%, of version 1, 2 or 3) or a rollback, from threads in four",
    "processes; a third start at once, the rest spread over a minute, so they overlap at the lock.",
    "Outcomes: `manual_promote` and `rollback` moved the champion; `stale_champion`: it moved",
    "between the call's read and its turn at the lock, so nothing moved; `already_champion`: a",
    "promote of the serving version, recorded as no move; `refused`: no such move is allowed (a",
    "rollback of the first champion). After the race the next command reconciles,",
    "then the records are held against the moves the calls report.",
    "",
]


def render(r: dict[str, Any], machine: str) -> str:
    lines = [
        "# Reliability: bad inputs, racing promoters, kills, generated requests",
        "",
        f"Written by `make reliability` on {r['when']} ({machine}). Every figure is a count from",
        "real runs on temporary stores; `tests/reliability/harness.py` says how each is made.",
        "",
        "## 1. Bad inputs",
        "",
        f"The corpus (`tests/reliability/bad_inputs.py`) through real ingest: **{r['inputs']['tried']}**"
        f" entries tried, **{r['inputs']['as_expected']}** handled as expected, **{len(r['inputs']['lost'])}** lost.",
        "Lost means: no outcome, accepted + quarantined rows not equal to the input, or the",
        "original bytes not kept.",
    ]
    for name, looks in sorted(r["inputs"]["deferred"].items()):
        lines.append(
            f"- `{name}` was being written while ingest looked: left there "
            f"{looks} time{'' if looks == 1 else 's'}, then taken once, whole."
        )
    for w in r["inputs"]["wrong"]:
        lines.append(f"- not as expected: {w}")
    lines += ["", "| expected | entries |", "|---|---|"]
    for expect, names in r["inputs"]["cases"].items():
        listed = ", ".join(f"`{n[:40]}`" for n in names)
        lines.append(f"| {expect} ({len(names)}) | {listed} |")
    for w in r["inputs"]["lost"]:
        lines.append(f"- lost: {w}")
    lines += ["", "## 2. Racing promoters", "", *RACE_NOTE]
    lines += [
        "| lock | calls | outcomes | moves the calls report | moves recorded | history true | peak lock DB connections |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["races"]:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(x["outcomes"].items()))
        lines.append(
            f"| {x['lock']} | {x['calls']} | {outcomes} | {x['moved_by_calls']} | {x['moves_recorded']} | "
            f"{'yes' if x['history_true'] else 'NO'}: {x['history']} | {x['peak_lock_db_connections'] or '-'} |"
        )
        for e in x["errors"]:
            lines.append(f"- error: {e}")
    k = r["kills"]
    total = k["promotions"]["kills"] + k["training"]["kills"] + k["ingest"]["kills"]
    lines += [
        "",
        "## 3. Kills",
        "",
        f"`kill -9` at a random moment, then the next normal command: **{total}** processes killed.",
        "",
        "| what was killed | killed / runs | after the next command |",
        "|---|---|---|",
        f"| promote or rollback (random actions) | {k['promotions']['kills']} / {k['promotions']['runs']} | history broken after {len(k['promotions']['history_broken'])} kills; {k['promotions']['history']} |",
        f"| training run (then retried) | {k['training']['kills']} / {k['training']['runs']} | history broken after {len(k['training']['history_broken'])}; model versions per run {k['training']['versions_per_run']}; visible partial files {len(k['training']['visible_partial_files'])} |",
        f"| ingest of 6 files (then ingest again) | {k['ingest']['kills']} / {k['ingest']['runs']} | rows lost or unaccounted in {len(k['ingest']['rows_lost_or_unaccounted'])} runs; duplicated outcomes in {len(k['ingest']['duplicated'])}; visible partial files {len(k['ingest']['visible_partial_files'])} |",
    ]
    for section in k.values():
        for key in (
            "history_broken",
            "rows_lost_or_unaccounted",
            "duplicated",
            "visible_partial_files",
        ):
            for item in section.get(key, []):
                lines.append(f"- {key}: {item}")
    if "serving" in r:
        sv = r["serving"]
        lines += [
            "",
            "## 4. Serving under generated requests",
            "",
            f"`ctrain serve` (started by its CLI) got **{sv['sent']}** generated requests "
            f"(`tests/reliability/fuzz.py`): **{len(sv['server_errors'])}** answered 5xx, "
            f"**{len(sv['hangs'])}** unanswered, valid requests answered 200: "
            f"**{sv['valid_ok']}** of {sv['valid_ok'] + len(sv['valid_failed'])}; serving "
            f"after: {'yes' if sv['alive_after'] else 'no'}.",
            "",
            "| kind | requests by status |",
            "|---|---|",
            *(
                f"| {k} | {', '.join(f'{s}: {c}' for s, c in st.items())} |"
                for k, st in sv["by_kind"].items()
            ),
            "",
            "Status 0: the connection was closed without an answer (a limit cut it off while",
            "it was still sending). A kind whose variants may fit the schema (a random value",
            "that is valid text, a flipped byte that leaves valid JSON) has 200s.",
        ]
    lines += [
        "",
        "## What these tests cannot see",
        "",
        "- MLflow keeps no history of an alias, only its value now. Moves are checked as the",
        "  chain the records claim (each starting where the previous ended, the last where the",
        "  alias is) against the moves the calls report; a move made and undone between two",
        "  records outside ctrain would not show.",
        "- A kill lands at a random moment: the points between two MLflow calls are covered one",
        "  by one in `tests/promotion/test_promotion_history.py` (a client that kills its own process",
        "  after a chosen call); here the moments are whatever the clock gives.",
        "- Kills hit the process, not the machine: a power cut between a rename and the",
        "  directory's own fsync is not tried.",
        "- Concurrency is threads in four processes on one machine; the PostgreSQL lock is the",
        "  same across machines, which is not tried here.",
        "- The generated requests are sent one at a time (with the slow senders held open beside",
        "  them): many bad requests at once is the load test's business (`make bench`, serving).",
        "- A writer that pauses mid-file for longer than ingest takes to look cannot be told from",
        "  a finished file; ingest leaves a file that changes while it is read or judged",
        "  (`tests/ingest/test_ingest.py`, a real writer process), not one that pauses.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--racers", type=int, default=200)
    p.add_argument(
        "--kills",
        type=int,
        default=32,
        help="promote/rollback kills; training and ingest get a quarter each",
    )
    p.add_argument("--requests", type=int, default=10000, help="generated serving requests")
    p.add_argument("--quick", action="store_true", help="small: check the harness runs")
    p.add_argument("--out", default=str(REPO / "docs" / "reliability.md"))
    a = p.parse_args(argv)
    if a.quick:
        a.racers, a.kills, a.requests = 20, 4, 500
    rng = random.Random(1234)
    tmp = Path(tempfile.mkdtemp(prefix="ctrain-reliability-"))
    try:
        r: dict[str, Any] = {"when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
        print("1. bad inputs", flush=True)
        r["inputs"] = inputs(tmp / "inputs")
        print(json.dumps(r["inputs"]), flush=True)
        r["races"] = []
        for lock in ("file", "postgres"):
            print(f"2. {a.racers} racers on the {lock} lock", flush=True)
            r["races"].append(race(tmp / f"race-{lock}", a.racers, lock))
            print(json.dumps(r["races"][-1]), flush=True)
        print("3. kills", flush=True)
        r["kills"] = {
            "promotions": kill_promotions(tmp / "kill-promote", a.kills, rng),
            "training": kill_training(tmp / "kill-train", max(2, a.kills // 4), rng),
            "ingest": kill_ingest(tmp / "kill-ingest", max(2, a.kills // 4), rng),
        }
        print(json.dumps(r["kills"]), flush=True)
        print(f"4. {a.requests} generated requests against ctrain serve", flush=True)
        r["serving"] = serving(tmp / "serving", a.requests)
        print(json.dumps(r["serving"])[:2000], flush=True)
        import platform

        machine = (
            f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
        )
        Path(a.out).write_text(render(r, machine))
        print(f"written: {a.out}")
        sv = r["serving"]
        bad = (
            sv["server_errors"]
            or sv["hangs"]
            or sv["valid_failed"]
            or not sv["alive_after"]
            or r["inputs"]["lost"]
            or r["inputs"]["wrong"]
            or any(
                not x["history_true"] or x["moved_by_calls"] != x["moves_recorded"]
                for x in r["races"]
            )
            or any(
                v.get(key)
                for v in r["kills"].values()
                for key in (
                    "history_broken",
                    "rows_lost_or_unaccounted",
                    "duplicated",
                    "visible_partial_files",
                )
            )
        )
        return 1 if bad else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
