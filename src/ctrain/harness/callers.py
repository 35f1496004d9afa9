"""Live traffic for ``ctrain serve``: callers, the rows they send, and the demo's online half.

``LiveTraffic`` sends requests from a thread and counts what answered them; ``live_rows`` turns
a batch into what a caller sends; ``Online`` runs ``ctrain serve`` in its own process with such
callers following the stream, and watches the traffic split as a rollout moves it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ctrain import dag_ids
from ctrain.runtime import free_port, wait_for
from ctrain.settings import Settings


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

            wait_for("ctrain serve to be ready", ready, 120, alive=self.af.alive)
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

    def _rollouts(self, dag_id: str = dag_ids.ROLLOUT) -> list[dict]:
        status, body = self.af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns")
        return body.get("dag_runs", []) if status == 200 and isinstance(body, dict) else []

    def settle(self) -> None:
        """Wait until no rollout runs, then a little longer: the callers see the final state.

        A ct_training run still going may be about to hand a winner over (its last task starts
        the ct_rollout run): it is waited for too."""
        from ctrain.serving.traffic import read_split
        from ctrain.tracking import configure

        client = configure(self.settings)

        def quiet() -> bool:
            running = [
                r
                for dag_id in (dag_ids.TRAINING, dag_ids.ROLLOUT)
                for r in self._rollouts(dag_id)
                if r["state"] in ("queued", "running")
            ]
            return not running and not read_split(client, self.settings.model_name).active

        wait_for("the rollouts to end", quiet, 900, alive=self.af.alive)
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
