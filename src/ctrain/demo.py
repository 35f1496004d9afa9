"""The demo: several batches (some broken), two ct_training runs, all through real Airflow.

Each DAG run is ``airflow dags test`` (Airflow's own in-process executor of a real DAG run on the
embedded SQLite metadata database); the demo then reads back what the runs left behind: ingest
outcomes, the registry aliases and the decision records.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pandas as pd

from ctrain import dag_ids
from ctrain.data.demo_source import DemoSource, corrupt_rows
from ctrain.ingest.batches import batch_outcomes
from ctrain.runtime import migrate, run_airflow
from ctrain.settings import Settings
from ctrain.storage import write_bytes_atomic, write_parquet_atomic


def _land_round_one(src: DemoSource, settings: Settings) -> None:
    landing = settings.landing_dir
    for i in range(3):
        src.write_batch(i, landing, with_labels=False)
        src.write_labels(i, settings.labels_landing_dir)
    # Broken on purpose: a feature column is missing, so the whole batch is quarantined.
    write_parquet_atomic(
        landing / "batch_0003.parquet", src.batch(3).drop(columns=["plan", "label"])
    )
    # A file cut off mid-transfer: unreadable, quarantined with the reason.
    whole = (src.batch(99).to_csv(index=False)).encode()
    write_bytes_atomic(landing / "batch_0099_truncated.parquet", whole[: len(whole) // 3])


def _broken_rows(src: DemoSource, index: int) -> pd.DataFrame:
    """Batch ``index`` with 6% broken rows (unknown region, impossible discount, no event time)."""
    broken = corrupt_rows(src.batch(index), 0.06, seed=index)
    broken.loc[broken["label"].isna(), "event_time"] = None
    return broken.drop(columns=["label"])


def _dag(settings: Settings, dag_id: str, log: Path, conf: dict | None = None) -> float:
    t0 = time.monotonic()
    args = ["dags", "test", dag_id] + (["--conf", json.dumps(conf)] if conf else [])
    print(f"  $ airflow {' '.join(args)}", flush=True)
    if run_airflow(settings, args, log) != 0:
        raise RuntimeError(f"airflow dags test {dag_id} failed; see {log}")
    return time.monotonic() - t0


def _show_outcomes(settings: Settings, seen: set[str]) -> None:
    online = []
    for o in batch_outcomes(settings):
        if o.batch_id in seen:
            continue
        seen.add(o.batch_id)
        if o.batch_id.startswith("online-"):  # the inference log's windows: one line for all
            online.append(o)
            continue
        print(
            f"    {o.batch_id:<24} {o.status:<12} rows in={o.rows_in:<5} "
            f"accepted={o.rows_accepted:<5} quarantined={o.rows_quarantined}"
        )
        if o.reason:
            print(f"      reason: {o.reason}")
    if online:
        accepted = sum(o.status == "accepted" for o in online)
        print(
            f"    {len(online)} windows of the inference log (online-*): {accepted} accepted, "
            f"{sum(o.rows_accepted for o in online)} rows"
        )


def _show_decision(settings: Settings) -> None:
    from ctrain.promotion.decisions import list_decisions
    from ctrain.tracking import configure

    d = list_decisions(configure(settings), settings, limit=1)[0]
    print(f"    decision: {d.headline}")
    print(f"      {d.reason}")


def run_demo(settings: Settings, approval: bool = False, serve: bool = False) -> int:
    """Run the demo in an empty ``CTRAIN_HOME``; prints what happened and where to look.

    With ``approval``, the stream's promotions wait for a person (``promotion.approval:
    required``); the demo approves through Airflow's REST API as the admin user. With ``serve``,
    ``ctrain serve`` then answers live traffic while a retrain's challenger is canaried
    (``run_online``).
    """
    log = settings.root / "logs" / "demo.log"
    src = DemoSource(**settings.demo.model_dump())
    print(f"ctrain demo in {settings.root} (Airflow output: {log})")
    print("1. Airflow metadata database (SQLite)")
    migrate(settings, log)

    seen: set[str] = set()
    print(
        "2. Round one: 3 good batches (their labels arrive as separate files), 1 with a missing column, 1 truncated file"
    )
    _land_round_one(src, settings)
    _dag(settings, dag_ids.INGEST, log)
    _show_outcomes(settings, seen)
    print("3. ct_training: the first champion")
    _dag(settings, dag_ids.TRAINING, log, {"reason": "demo: first training"})
    _show_decision(settings)

    print(
        f"4. The stream, under the real scheduler: batches {STREAM_START}..{STREAM_END - 1} one at a time, "
        f"each with the previous batch's labels; batch {BROKEN} has 6% broken rows; drift from batch {DRIFT_FROM} on"
    )
    if serve:
        print(
            "   (serving.rollout.strategy: canary: `ctrain serve` answers live traffic like each "
            "batch's rows, and ct_rollout canaries the monitor's retrain on it)"
        )
    if approval:
        print("   (promotion.approval: required: each promotion waits in Required Actions)")
    with stream_services(settings, log.parent, approval) as af:
        online = Online(settings, af) if serve else contextlib.nullcontext()
        with online:
            timeline = run_stream(
                settings,
                af,
                broken={BROKEN},
                approve="Approve" if approval else None,
                on_land=online.follow if serve else None,
            )
            if serve:
                online.settle()
        print_timeline(settings, timeline)
        if serve:
            online.report()
    _show_outcomes(settings, seen)

    from ctrain.status import format_status, status
    from ctrain.tracking import configure

    print("\n5. Summary (`ctrain status`)")
    print(format_status(status(settings, configure(settings), limit=5), settings.promotion.metric))
    print(
        f"""
Where to look:
  accepted batches   {settings.accepted_dir}
  quarantine         {settings.quarantine_dir}/<batch>/reason.txt, validation.json, rows.parquet
  comparisons        {settings.datasets_dir}/<dataset>/comparison-*.json
  monitoring         {settings.monitor_dir}/<batch>/summary.json, data_drift.html; triggers.json
  MLflow store       {settings.resolved_tracking_uri}
  UIs                make up   (Airflow http://127.0.0.1:8080, MLflow http://127.0.0.1:5000)"""
    )
    return 0


# Phase one used batches 0-3 (and a truncated file); the stream goes on from there.
STREAM_START, BROKEN, DRIFT_FROM, STREAM_END = 4, 5, 7, 10


def wait_for(what: str, done, services, timeout: float = 300):
    """Poll ``done`` every 2 s until it returns something true, and return that; raise if one of
    ``services`` (Airflow's) stops or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not (value := done()):
        if not services.alive():
            raise RuntimeError(f"an Airflow service stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting {timeout:.0f}s for {what}")
        time.sleep(2)
    return value


def stream_services(settings: Settings, log_dir: Path, approval: bool = False):
    """Airflow's services for ``run_stream`` (a context manager); with ``approval``, ct_training
    waits for a person before each promotion."""
    from ctrain.runtime import AirflowServices

    env = {
        "CTRAIN_TRAIN_ON_NEW_DATA": "false",
        "CTRAIN_DATASET__LABELS": settings.dataset.labels,
        # The stream's retrains come from the monitor; a daily cron would add a run of its own
        # when the stream runs just after it (seen at 03:00 UTC).
        "CTRAIN_SCHEDULES__TRAINING": "none",
    }
    if approval:
        env["CTRAIN_PROMOTION__APPROVAL"] = "required"
    return AirflowServices(settings, log_dir / "airflow", env)


def run_stream(
    settings: Settings,
    af,
    start: int = STREAM_START,
    drift_from: int = DRIFT_FROM,
    stop: int = STREAM_END,
    broken: frozenset[int] | set[int] = frozenset(),
    approve: str | None = None,
    src: DemoSource | None = None,
    on_land=None,
) -> list[dict]:
    """Feed batches one at a time through the real scheduler of ``af`` (``stream_services``);
    return the timeline.

    Each batch lands with the previous batch's labels; the landing folders' watchers start
    ``ct_ingest``, and the assets chain it to ``ct_batch_inference`` and ``ct_drift_monitor``, which asks ``ct_training`` to run
    when drift persists. Covariate shift and a changed label rule start at batch ``drift_from``.
    With ``approve`` (``Approve`` or ``Reject``), a promotion waiting for approval is answered
    through Airflow's REST API as the admin user, as a person would in the UI. ``src`` replaces
    the demo's stream (its drift settings then say where the change is). ``on_land(i, rows)`` is
    told of each batch as it lands (with its clean rows), e.g. to send live traffic like it.
    """
    from ctrain.monitoring.hold import decided as judged
    from ctrain.monitoring.trigger import trigger_log
    from ctrain.promotion.decisions import list_decisions
    from ctrain.records import DecisionKind
    from ctrain.tracking import configure

    src = src or DemoSource(
        **settings.demo.model_dump()
        | {
            "covariate_shift_from": drift_from,
            "concept_drift_from": drift_from,
            "covariate_shift": 1.0,
        }
    )
    client = configure(settings)

    def decisions() -> list:
        # A rollout's changes of the split are records too; the stream follows the promotions.
        found = list_decisions(client, settings, limit=100)
        return [d for d in found if d.decision != DecisionKind.TRAFFIC]

    timeline = []
    for i in range(start, stop):
        t0 = time.monotonic()
        n_decisions = len(decisions())
        n_requests = len(trigger_log(settings))
        landed_at = time.time()
        # The labels first, as a labelling system that delivers with the next batch would.
        src.write_labels(i - 1, settings.labels_landing_dir)
        if on_land:
            on_land(i, src.batch(i))
        if i in broken:
            write_parquet_atomic(
                settings.landing_dir / f"batch_{i:04d}.parquet", _broken_rows(src, i)
            )
        else:
            src.write_batch(i, settings.landing_dir, with_labels=False)
        # Nothing is triggered: the landing folders' watchers start ct_ingest on arrival.
        batch_id = f"batch_{i:04d}"
        wait_for(
            f"the monitor's verdict on batch {i}", lambda b=batch_id: judged(settings, b), af, 600
        )
        requested = len(trigger_log(settings)) > n_requests
        entry = {"batch": i, "drift_from": drift_from, "seconds": 0.0, "requested": requested}
        predictions = settings.predictions_dir / f"{batch_id}.parquet"
        if predictions.exists():
            entry["landing_to_predictions"] = predictions.stat().st_mtime - landed_at
        if requested:
            print(
                f"    batch {i}: the monitor asked for retraining; waiting for ct_training",
                flush=True,
            )

            def decided(n=n_decisions) -> bool:
                # A waiting approval request is answered, also when Airflow asks again (its
                # scheduler retries the task if an answer lands while it handles the pause).
                if approve:
                    _answer(af, approve)
                return len(decisions()) > n

            wait_for("ct_training's decision", decided, af, 900)
            entry["decision"] = decisions()[0]
        entry["seconds"] = time.monotonic() - t0
        timeline.append(entry)
        scored = entry.get("landing_to_predictions")
        scored_in = f"; predictions {scored:.0f}s after it landed" if scored is not None else ""
        print(f"    batch {i} done in {entry['seconds']:.0f}s{scored_in}", flush=True)
    return timeline


def _answer(af, option: str) -> bool:
    """Answer ct_training's pending approval request, if there is one; True if it did."""
    pending = af.pending_approvals(dag_ids.TRAINING)
    if not pending:
        return False
    print(f"    approval requested: {pending[0]['subject']}", flush=True)
    out = af.answer(pending[0], option, f"{option.lower()}d in the demo (ctrain demo --approval)")
    if out is None:  # answered in the meantime
        return False
    print(
        f"    {option.lower()}d by {out['responded_by']['name']} through the REST API", flush=True
    )
    return True


def print_timeline(settings: Settings, timeline: list[dict]) -> None:
    """One line per stream batch: drift, measured performance, and what the monitor did."""
    from ctrain.monitoring.check import load_summaries

    checks = {
        int(c.batch_id.split("_")[1]): c
        for c in load_summaries(settings)
        if c.batch_id.startswith("batch_")  # the stream's batches; not the inference log's
    }
    print(
        f"\n    {'batch':<7}{'drifted':<9}{'share':<8}{'measured perf (labels)':<34}"
        "trigger / decision"
    )
    for entry in timeline:
        i = entry["batch"]
        check = checks.get(i)
        perf = check.performance if check else None
        measured = (
            f"{perf.metric} {perf.value:.3f} ({perf.labeled_rows} rows)"
            if perf and perf.value is not None
            else f"pending ({perf.labeled_rows if perf else 0} labeled)"
        )
        mark = "drift" if i >= entry["drift_from"] else "stable"
        share = check.share_drifted if check else 0.0
        line = f"    {i:<7}{mark:<9}{share:<8.2f}{measured:<34}"
        if entry.get("decision"):
            d = entry["decision"]
            line += f"retrain requested -> {d.decision} v{d.challenger_version} ({d.rule})"
        elif check and check.flagged:
            line += "flagged (" + ", ".join(check.flags) + ")"
        print(line)
    for entry in timeline:
        if entry.get("decision"):
            print(f"\n    retrain reason: {entry['decision'].trigger_reason}")
            print(f"    decision: {entry['decision'].headline}")
            print(f"      {entry['decision'].reason}")


class LiveTraffic:
    """Callers of ``ctrain serve``: requests of ``per`` rows, one after another, in a thread,
    until stopped. A 503 with ``Retry-After`` (shed under load) is sent again after the wait, as
    a well-behaved client does; anything else that is not a 200 is a failure. ``url`` may be set
    to None while the service restarts; ``follow`` changes the rows sent (none: wait). With
    ``id_column``, a row sent again after the list ran out gets an id of its own (``-r1``, ...):
    a log window must not hold one id twice."""

    def __init__(
        self,
        url: str | None,
        rows: list[dict],
        per: int = 10,
        pause: float = 0.02,
        id_column: str | None = None,
    ):
        import threading
        from collections import Counter

        self.url, self.rows, self.per, self.pause = url, rows, per, pause
        self.id_column = id_column
        self.answered: Counter[tuple[str, str]] = Counter()  # rows per (arm, version)
        self.requests, self.shed = 0, 0
        self.failures: list[str] = []
        self._next = 0  # the index in ``rows`` of the next row to send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-traffic", daemon=True)

    def __enter__(self) -> LiveTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def follow(self, rows: list[dict]) -> None:
        """Send ``rows`` from now on, from the first."""
        self.rows, self._next = rows, 0

    def _row(self, rows: list[dict], j: int) -> dict:
        row, again = rows[j % len(rows)], j // len(rows)
        if again and self.id_column:
            row = {**row, self.id_column: f"{row[self.id_column]}-r{again}"}
        return row

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set():
                rows, i = self.rows, self._next
                if self.url is None or not rows:
                    time.sleep(0.05)
                    continue
                chunk = [self._row(rows, i + k) for k in range(self.per)]
                try:
                    r = c.post(f"{self.url}/predict", json={"rows": chunk})
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.requests += 1
                if r.status_code == 200:
                    for p in r.json()["predictions"]:
                        self.answered[(p["arm"], p["model_version"])] += 1
                elif r.status_code == 503 and "retry-after" in r.headers:
                    self.shed += 1
                    time.sleep(float(r.headers["retry-after"]))
                    continue
                else:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
                if self.rows is rows:  # not followed elsewhere meanwhile
                    self._next = i + self.per
                time.sleep(self.pause)


def live_rows(settings: Settings, frame: pd.DataFrame, prefix: str = "live") -> list[dict]:
    """``frame``'s rows as a caller sends them: JSON types, no label, ids of their own."""
    spec = settings.dataset
    rows = frame.drop(columns=[spec.target], errors="ignore").copy()
    rows[spec.id_column] = [f"{prefix}-{k}" for k in range(len(rows))]
    rows[spec.event_time_column] = rows[spec.event_time_column].astype(str)
    rows = rows.astype(object).where(rows.notna(), None)  # a missing value is JSON's null
    return rows.to_dict(orient="records")


class Online:
    """The demo's online half: ``ctrain serve`` in its own process, callers that send rows like
    each stream batch's as it lands (``follow``), and a watch on the traffic split that prints
    each change as the service follows it. The monitor's retrain is handed to ``ct_rollout``
    (``serving.rollout.strategy: canary``), which canaries it on this traffic."""

    def __init__(self, settings: Settings, af):
        self.settings, self.af = settings, af
        self.traffic = LiveTraffic(None, [], per=5, pause=0.1, id_column=settings.dataset.id_column)
        self._proc = None
        self._out = None
        self._watching = None
        self._stop = None

    def __enter__(self) -> Online:
        import subprocess
        import sys
        import threading

        import httpx

        from ctrain.runtime import free_port

        url = f"http://127.0.0.1:{free_port()}"
        self._out = open(self.settings.root / "logs" / "serve.log", "ab")  # noqa: SIM115
        ctrain = str(Path(sys.executable).with_name("ctrain"))
        self._proc = proc = subprocess.Popen(
            [ctrain, "serve", "--port", url.rsplit(":", 1)[1]],
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"ctrain serve stopped (rc {proc.returncode}): see {self._out.name}"
                    )
                try:
                    return httpx.get(f"{url}/ready", timeout=5).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for("ctrain serve to be ready", ready, self.af, 120)
        except BaseException:
            self.__exit__()
            raise
        serving = httpx.get(f"{url}/health").json()["serving_version"]
        print(
            f"    ctrain serve on {url} answers with v{serving}; its callers send rows like each "
            "batch's as it lands (ids live-<batch>-<n>)",
            flush=True,
        )
        self.traffic.url = url
        self.traffic.__enter__()
        self._stop = threading.Event()
        self._watching = threading.Thread(target=self._watch, name="split-watch", daemon=True)
        self._watching.start()
        return self

    def follow(self, i: int, rows: pd.DataFrame) -> None:
        """From now on the callers send batch ``i``'s rows, under ids of their own."""
        self.traffic.follow(live_rows(self.settings, rows, prefix=f"live-{i}"))

    def _watch(self) -> None:
        from ctrain.serving.traffic import read_split
        from ctrain.tracking import configure

        client, seen = configure(self.settings), 0
        while not self._stop.wait(1.0):
            try:
                split = read_split(client, self.settings.model_name)
            except Exception as exc:  # a watch that prints; the demo goes on
                print(f"    (split not read: {exc})", flush=True)
                continue
            if split.revision != seen:
                seen = split.revision
                print(f"    split r{split.revision}: {split.describe()}", flush=True)

    def _rollouts(self) -> list[dict]:
        status, body = self.af.api("GET", f"/api/v2/dags/{dag_ids.ROLLOUT}/dagRuns")
        return body.get("dag_runs", []) if status == 200 and isinstance(body, dict) else []

    def settle(self) -> None:
        """Wait until no rollout runs, then a little longer: the callers see the final state."""
        from ctrain.serving.traffic import read_split
        from ctrain.tracking import configure

        client = configure(self.settings)

        def quiet() -> bool:
            running = [r for r in self._rollouts() if r["state"] in ("queued", "running")]
            return not running and not read_split(client, self.settings.model_name).active

        wait_for("the rollouts to end", quiet, self.af, 900)
        time.sleep(2 * self.settings.serving.reload_seconds)
        self.traffic.__exit__()

    def report(self) -> dict:
        """What ct_rollout decided and what the callers saw; printed, and returned."""
        notes = [r.get("note") or r["state"] for r in self._rollouts()]
        for note in notes:
            print(f"    ct_rollout: {note}")
        if not notes:
            print("    ct_rollout: no rollout ran (no retrain's challenger won)")
        t = self.traffic
        answered = ", ".join(f"{n} by {arm} v{v}" for (arm, v), n in sorted(t.answered.items()))
        print(
            f"    callers: {t.requests} requests, {len(t.failures)} failed, "
            f"{t.shed} shed and sent again; rows answered {answered}"
        )
        for failure in t.failures[:5]:
            print(f"      failed: {failure}")
        return {
            "requests": t.requests,
            "failures": t.failures,
            "shed": t.shed,
            "answered": dict(t.answered),
            "rollouts": notes,
        }

    def __exit__(self, *exc) -> None:
        import subprocess

        if self._stop is not None:
            self._stop.set()
            self._watching.join(timeout=10)
        self.traffic.__exit__()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._out is not None:
            self._out.close()
