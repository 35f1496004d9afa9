"""``ctrain serve``: score JSON rows with ``@champion`` over HTTP (FastAPI on uvicorn).

Routes:

- ``POST /predict`` ``{"rows": [{<id>, <features>...}, ...]}`` → per row: score, predicted
  class, model version, arm, and the request id (also the ``X-Request-ID`` header; a caller's
  own is kept when it is a plain token). A bad row is a 422 naming the row, its id and the
  column; nothing of that request is scored. So is a row that fits the schema but that the
  serving model cannot score alone (a finite number its preprocessing overflows), naming the
  model's error; a model that fails on rows it can each score alone is a 500.
- ``GET /health``: the process lives; what it serves, since when, and what it could not load.
- ``GET /ready``: 200 once a version answers, 503 before.
- ``GET /metrics``: Prometheus text: requests, rows and latency per version, arm and status,
  requests shed, reload failures.

Guards, before any work: a bearer token when one is configured (every route but ``/health``
and ``/ready``), a body-size limit (413), a row limit (422) and a cap on requests in progress
and on the time requests wait before they are handled (503 with ``Retry-After``: past
saturation it sheds, it does not queue without bound). A thread
looks where ``@champion`` points every ``serving.reload_seconds`` and swaps in a moved version
only once it is loaded, checked and warm (``reload.py``); the inference log (``log.py``) lands
every prediction for the monitor. On shutdown, requests in progress finish and the log lands.
"""

# No `from __future__ import annotations`: FastAPI reads the body model from the annotation
# of a function defined inside create_app, which a string annotation would hide.
import asyncio
import hmac
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.background import BackgroundTask

from ctrain.registry import CHALLENGER, CHAMPION, training_window
from ctrain.serving.arms import plan_arms
from ctrain.serving.connections import uvicorn_options
from ctrain.serving.log import SHADOW, InferenceLog
from ctrain.serving.reload import Failure, ModelSlot, Served
from ctrain.serving.rows import explain, request_model, rows_from_frame
from ctrain.serving.traffic import TRAFFIC_TAG, Split
from ctrain.settings import Settings

log = logging.getLogger(__name__)

OPEN_ROUTES = frozenset({"/health", "/ready"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
WARM_ROWS = 8


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ctrain_serve_requests", "Requests answered", ["version", "arm", "code"], registry=r
        )
        self.rows = Counter("ctrain_serve_rows", "Rows scored", ["version", "arm"], registry=r)
        self.latency = Histogram(
            "ctrain_serve_request_seconds",
            "Time to answer a scored request",
            ["version", "arm"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.refused = Counter(
            "ctrain_serve_refused", "Requests refused before scoring", ["reason"], registry=r
        )
        self.reload_failures = Counter(
            "ctrain_serve_reload_failures", "Versions that failed to load", registry=r
        )
        self.serving = Gauge(
            "ctrain_serve_model_version", "The version that answers (its number)", registry=r
        )


class _Lag:
    """How far behind the event loop runs: the time a request that arrives now waits before it
    is handled. Scoring runs on the loop, so under overload requests queue there, unseen by any
    count of requests in progress; an oversleeping timer sees that queue (as Node's toobusy
    does).

    The figure is the median lateness of the last ``WINDOW`` ticks: under overload most ticks
    are late, while one stall of the interpreter (a window of the inference log written, a
    version loaded, a garbage collection) makes one tick late and the next on time. Shedding
    then answers a queue, not a pause."""

    TICK = 0.005
    WINDOW = 5

    def __init__(self) -> None:
        self.seconds = 0.0

    async def watch(self) -> None:
        import asyncio
        from collections import deque

        loop = asyncio.get_running_loop()
        recent: deque[float] = deque(maxlen=self.WINDOW)
        while True:
            start = loop.time()
            await asyncio.sleep(self.TICK)
            recent.append(loop.time() - start - self.TICK)
            self.seconds = sorted(recent)[len(recent) // 2]


class _Guard:
    """Pure ASGI middleware: token, body size, the event loop's lag and requests in progress,
    checked before any parsing (cheaper than a Starlette ``BaseHTTPMiddleware``)."""

    # While a version loads (several ticks in a row may be late), requests wait it out (up to
    # this many times the usual lag) rather than being refused for it.
    SETTLING_LAG_FACTOR = 10

    def __init__(
        self,
        app,
        token: str | None,
        max_body: int,
        max_in_flight: int,
        max_lag: float,
        lag,
        settling,
        metrics,
        body_timeout: float,
    ):
        self.app, self.token, self.max_body = app, token, max_body
        self.body_timeout = body_timeout
        self.max_in_flight, self.max_lag, self.lag = max_in_flight, max_lag, lag
        self.settling, self.metrics = settling, metrics
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path not in OPEN_ROUTES and self.token is not None:
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            given = auth[7:] if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                self.metrics.refused.labels("auth").inc()
                return await _send(send, 401, {"error": "a bearer token is required"})
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            self.metrics.refused.labels("too_large").inc()
            return await _send(
                send, 413, {"error": f"the request body is over {self.max_body} bytes"}
            )
        # The body is read whole, against a deadline, before the request counts as in progress:
        # a caller that sends headers and then stalls holds its own connection and nothing else.
        if scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                # asyncio.timeout, not wait_for: no task per request on the hot path.
                async with asyncio.timeout(self.body_timeout):
                    body = await _read_body(receive, self.max_body)
            except TimeoutError:
                self.metrics.refused.labels("slow_body").inc()
                return await _send(
                    send,
                    408,
                    {"error": f"the request body did not arrive within {self.body_timeout:g} s"},
                    [(b"connection", b"close")],
                )
            except BodyTooLarge as exc:
                self.metrics.refused.labels("too_large").inc()
                return await _send(send, 413, {"error": str(exc)}, [(b"connection", b"close")])
            except _Disconnected:
                return None
            receive = _replay(body, receive)
        busy = None
        if self.in_flight >= self.max_in_flight:
            busy = f"{self.in_flight} requests in progress"
        elif path == "/predict" and self.lag.seconds > self.max_lag * (
            self.SETTLING_LAG_FACTOR if self.settling() else 1
        ):
            busy = f"requests wait {1000 * self.lag.seconds:.0f} ms before they are handled"
        if busy:
            self.metrics.refused.labels("overloaded").inc()
            return await _send(
                send, 503, {"error": f"{busy}: try again shortly"}, [(b"retry-after", b"1")]
            )
        self.in_flight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class BodyTooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def _read_body(receive, limit: int) -> bytes:
    """The whole request body, stopping once it passes ``limit`` bytes (a body sent in chunks,
    without a length, is held to the same limit)."""
    parts, seen = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge(f"the request body is over {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive):
    """``receive`` that hands the app the body read already, then what the connection says."""
    sent = False

    async def inner():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return inner


async def _send(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _warm_rows(settings: Settings, client, recent: list[list]):
    """Rows to warm a new version with: the last rows served, else its held-out rows, else the
    held-out rows of the newest window here. Without any, it is served by the slow path only:
    a version carried from another environment has no window of its own here, and once served
    slow it stayed slow (p50 8-14 ms against 0.8 ms for the same model, measured)."""

    def rows(version: str) -> list:
        if recent:
            return recent[-1]
        folder = training_window(client, settings.model_name, version, settings.datasets_dir)
        holdout = folder / "holdout.parquet" if folder is not None else None
        if holdout is None or not holdout.exists():
            windows = settings.datasets_dir.glob("*/holdout.parquet")
            holdout = max(windows, key=lambda p: p.stat().st_mtime, default=None)
        if holdout is None:
            return []
        return rows_from_frame(pd.read_parquet(holdout).head(WARM_ROWS), settings.dataset)

    return rows


class _Routes:
    """What answers: the champion's slot, the challenger's (during a rollout) and the split, as
    last read from the registry, in one call, by the reload thread."""

    def __init__(
        self, settings: Settings, client, warm, before_swap, metrics, pinned: str | None = None
    ) -> None:
        self.settings, self.client, self.metrics = settings, client, metrics
        self.pinned = pinned  # a version served whatever the aliases say (a scratch service)
        self.champion = ModelSlot(settings, client, CHAMPION, warm, before_swap)
        self.challenger = ModelSlot(settings, client, CHALLENGER, warm, before_swap)
        self.split = Split()

    def look(self) -> None:
        """Read the aliases and the split; load what they name. Never raises."""
        from mlflow.exceptions import MlflowException

        name = self.settings.model_name
        try:
            model = self.client.get_registered_model(name)
            aliases, tags = model.aliases, model.tags
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                self._unreachable(exc)
                return
            aliases, tags = {}, {}
        except Exception as exc:  # the registry is down: keep answering with what we have
            self._unreachable(exc)
            return
        champion = self.pinned or aliases.get(CHAMPION)
        failed_before = self.champion.failure
        self.champion.serve(None if champion is None else str(champion))
        failure = self.champion.failure
        if failure and failure is not failed_before and failure.version:
            self.metrics.reload_failures.inc()
        split = Split() if self.pinned else Split.from_json(tags.get(TRAFFIC_TAG))
        if split.active:
            self.challenger.serve(split.challenger)  # loaded before the split is followed
        else:
            self.challenger.clear()
        self.split = split
        if self.champion.current:
            self.metrics.serving.set(float(self.champion.current.version))

    def _unreachable(self, exc: Exception) -> None:
        now = pd.Timestamp.now(tz="UTC").isoformat()
        self.champion.failure = Failure(None, f"registry unreachable: {exc}"[:500], now)

    def challenger_ready(self, split: Split) -> Served | None:
        """The challenger when it is loaded as the split names it, else None."""
        current = self.challenger.current
        return current if split.active and current and current.version == split.challenger else None

    def reloading(self) -> bool:
        return self.champion.reloading() or self.challenger.reloading()


def create_app(
    settings: Settings,
    client,
    token: str | None = None,
    source: str | None = None,
    reload_in_background: bool = True,
    version: str | None = None,
) -> FastAPI:
    """The service. ``token``: the bearer token callers must send (None: no auth, loopback
    only, as ``ctrain serve`` enforces); ``source`` names this process in the inference log.
    ``version``: a scratch service of that version alone (a pre-deployment load test): the
    aliases and a rollout's split are not followed and no row goes to the inference log."""
    cfg, spec = settings.serving, settings.dataset
    metrics = _Metrics()
    recent: list[list] = []
    inference_log = InferenceLog(
        settings, source or f"{socket.gethostname()}-{os.getpid()}", keep=version is None
    )

    def before_swap(old: Served | None, new: Served) -> None:
        if old is not None:  # a window holds one version's answers
            inference_log.flush(version=old.version)

    routes = _Routes(
        settings, client, _warm_rows(settings, client, recent), before_swap, metrics, version
    )
    slot = routes.champion
    stop = threading.Event()

    def watch() -> None:
        next_look = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_look:
                routes.look()
                next_look = time.monotonic() + cfg.reload_seconds
            # During a rollout, windows land often enough for ct_rollout to judge each step.
            step = cfg.rollout.step_seconds
            max_age = max(2.0, step / 5) if routes.split.active else None
            try:
                inference_log.flush(due_only=True, max_age=max_age)
            except Exception:  # a full disk must not stop reloads; the rows stay in memory
                log.exception("the inference log could not land a window")
            # Woken early when a window is full; otherwise at the next look at the alias.
            wait = next_look - time.monotonic()
            inference_log.full.wait(max(0.0, min(wait, max_age or wait)))

    lag = _Lag()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import asyncio

        routes.look()
        watcher = threading.Thread(target=watch, name="ctrain-reload", daemon=True)
        if reload_in_background:
            watcher.start()
        lag_watch = asyncio.create_task(lag.watch())
        yield
        lag_watch.cancel()
        stop.set()
        inference_log.full.set()  # wake the thread to see the stop
        if watcher.is_alive():
            watcher.join(timeout=cfg.reload_seconds + 30)
        inference_log.flush()

    app = FastAPI(title="ctrain serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.slot, app.state.routes, app.state.log = slot, routes, inference_log
    app.state.metrics = metrics
    Body = request_model(spec, cfg.max_rows)
    negative = next(c for c in spec.classes if c != spec.positive_class)

    def scored(served: Served, rows: list) -> tuple[np.ndarray, float, str]:
        """Scores of ``rows`` by ``served``, the time it took, and the error (NaN scores) if it
        failed on them."""
        started = time.perf_counter()
        try:
            scores = np.asarray(served.score(rows), dtype=float)
            error = ""
        except Exception as exc:  # a version that fails is evidence, not a failed request
            scores, error = np.full(len(rows), np.nan), f"{type(exc).__name__}: {exc}"[:300]
        return scores, 1000 * (time.perf_counter() - started), error

    def shadow(split: Split, parts: list[tuple[Served | None, list, str]], rid: str) -> None:
        """After the answer: score each part of the rows by the version that did not answer it,
        or log why it could not (the challenger failed to load)."""
        for other, rows, why in parts:
            if other is None:
                version = split.challenger or ""
                nan = np.full(len(rows), np.nan)
                inference_log.add(rows, nan, version, SHADOW, rid, 0.0, split.rollout_id, 0, why)
                continue
            scores, ms, error = scored(other, rows)
            inference_log.add(
                rows, scores, other.version, SHADOW, rid, ms, split.rollout_id, ms, error
            )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        metrics.refused.labels("invalid").inc()
        body = exc.body if isinstance(exc.body, dict) else None
        content = {
            "error": "the request does not fit the project's schema; nothing was scored",
            "errors": explain(list(exc.errors()), body, spec)[:100],
        }
        # json.dumps escapes what UTF-8 cannot hold (a lone surrogate the caller sent, echoed
        # in a key or an id), where JSONResponse's encoding would fail with a 500.
        return Response(json.dumps(content), status_code=422, media_type="application/json")

    @app.post("/predict")
    async def predict(body: Body, request: Request) -> JSONResponse:  # type: ignore[valid-type]
        started = time.perf_counter()
        served, split = slot.current, routes.split
        rid = request.headers.get("x-request-id", "")
        rid = rid if _REQUEST_ID.fullmatch(rid) else uuid.uuid4().hex
        if served is None:
            metrics.refused.labels("not_ready").inc()
            return JSONResponse(
                status_code=503,
                content={"error": _not_ready(slot), "request_id": rid},
                headers={"Retry-After": str(int(cfg.reload_seconds) + 1)},
            )
        rows = body.rows
        challenger = routes.challenger_ready(split)
        ids = [str(getattr(r, spec.id_column)) for r in rows]
        plan = plan_arms(ids, split, challenger is not None)
        answers = np.empty(len(rows))
        logged = []  # (rows, scores, version, arm, ms, error), landed in the inference log
        if plan.challenger:
            part = [rows[i] for i in plan.challenger]
            scores, ms, error = scored(challenger, part)
            if error:  # the champion answers; the failure is the challenger's evidence
                logged.append(
                    (part, np.full(len(part), np.nan), challenger.version, SHADOW, ms, error)
                )
                plan = plan.challenger_failed()
            else:
                answers[list(plan.challenger)] = scores
                logged.append((part, scores, challenger.version, CHALLENGER, ms, ""))
        if plan.champion:
            part = [rows[i] for i in plan.champion]
            scores, ms, error = scored(served, part)
            if error:
                alone = {i: scored(served, [rows[i]])[2] for i in plan.champion}
                unscorable = [
                    {
                        "row": i,
                        "row_id": ids[i],
                        "message": f"the serving model cannot score this row: {why}",
                    }
                    for i, why in alone.items()
                    if why
                ]
                # The rows are at fault only where the model scores other rows: its warm-up
                # rows when it was loaded, or the other rows of this request one by one.
                works = served.warmed_rows > 0 or len(unscorable) < len(alone)
                if not (unscorable and works):  # the champion itself fails: a server error
                    raise RuntimeError(error)
                metrics.refused.labels("unscorable").inc()
                content = {
                    "error": "rows fit the schema but the serving model cannot score them; "
                    "nothing was scored",
                    "errors": unscorable[:100],
                    "request_id": rid,
                }
                return Response(json.dumps(content), status_code=422, media_type="application/json")
            answers[list(plan.champion)] = scores
            logged.insert(0, (part, scores, served.version, CHAMPION, ms, ""))
        after = []  # (version or None, rows, why): scored after the answer is sent
        if plan.champion_shadow():
            after.append((served, [rows[i] for i in plan.champion_shadow()], ""))
        if plan.challenger_shadow():
            part = [rows[i] for i in plan.challenger_shadow()]
            failed = routes.challenger.failed(split.challenger or "")
            if challenger is not None:
                after.append((challenger, part, ""))
            elif failed is not None:
                after.append((None, part, f"not loaded: {failed.error}"))
        latency = time.perf_counter() - started
        for part, scores, version, arm, ms, error in logged:
            inference_log.add(
                part, scores, version, arm, rid, latency * 1000, split.rollout_id, ms, error
            )
            if arm != SHADOW:
                metrics.requests.labels(version, arm, "200").inc()
                metrics.rows.labels(version, arm).inc(len(part))
                metrics.latency.labels(version, arm).observe(latency)
        recent[:] = [rows[:WARM_ROWS]]  # what the next version warms up on
        by_challenger = set(plan.challenger)
        out = []
        for k, (i, s) in enumerate(zip(ids, answers, strict=True)):
            arm, version = (CHALLENGER, challenger) if k in by_challenger else (CHAMPION, served)
            prediction = spec.positive_class if s >= 0.5 else negative
            out.append(
                {
                    spec.id_column: i,
                    "score": float(s),
                    "prediction": prediction,
                    "model_version": version.version,
                    "arm": arm,
                }
            )
        return JSONResponse(
            {"request_id": rid, "model_version": served.version, "predictions": out},
            headers={"X-Request-ID": rid},
            background=BackgroundTask(shadow, split, after, rid) if after else None,
        )

    @app.get("/health")
    async def health() -> dict:
        served, failure = slot.current, slot.failure
        split = routes.split
        challenger = routes.challenger_ready(split)
        rollout_failure = routes.challenger.failed(split.challenger or "")
        return {
            "status": "ok" if served and not failure else ("degraded" if served else "starting"),
            "model": settings.model_name,
            "alias": CHAMPION,
            "serving_version": served.version if served else None,
            "loaded_at": served.loaded_at if served else None,
            "warmed_rows": served.warmed_rows if served else 0,
            "fast_path": served.fast if served else None,
            "not_serving": failure.__dict__ if failure else None,
            "rollout": {
                "split": split.describe(),
                "rollout_id": split.rollout_id or None,
                "strategy": split.strategy if split.active else "direct",
                "challenger": split.challenger if split.active else None,
                "percent": split.percent if split.active else 0.0,
                "revision": split.revision,
                "challenger_loaded": challenger is not None,
                "challenger_error": rollout_failure.error if rollout_failure else None,
            },
            "inference_log": {
                "open_rows": inference_log.open_rows(),
                "landed_windows": len(inference_log.landed),
                "last_window": inference_log.landed[-1] if inference_log.landed else None,
            },
        }

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if slot.current is None:
            return JSONResponse(status_code=503, content={"ready": False, "why": _not_ready(slot)})
        return JSONResponse({"ready": True, "serving_version": slot.current.version})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    token = token or None
    return _Guard(  # type: ignore[return-value]
        app,
        token,
        cfg.max_body_bytes,
        cfg.max_in_flight,
        cfg.max_queue_ms / 1000,
        lag,
        # A load holds the interpreter for a while: requests wait it out.
        routes.reloading,
        metrics,
        cfg.read_timeout_seconds,
    )


def _not_ready(slot: ModelSlot) -> str:
    why = slot.failure.error if slot.failure else "no version loaded yet"
    return f"not serving yet: {why}"


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class Refused(Exception):
    """A configuration the service will not start with; the message says what to change."""


def run(
    settings: Settings,
    client,
    host: str | None = None,
    port: int | None = None,
    version: str | None = None,
) -> int:
    """Serve until SIGTERM or Ctrl-C; requests in progress finish, then the log lands.
    ``version``: that version alone, logging nothing (``create_app``)."""
    import uvicorn

    cfg = settings.serving
    host, port = host or cfg.host, port or cfg.port
    token = os.environ.get(cfg.token_env) or None
    if token is None and host not in LOOPBACK:
        raise Refused(
            f"binding {host} without a token: set {cfg.token_env} (callers send it as "
            "'Authorization: Bearer ...'), or bind 127.0.0.1"
        )
    if token is not None and len(token) < 16:
        raise Refused(f"{cfg.token_env} is shorter than 16 characters")
    app = create_app(settings, client, token=token, version=version)
    uvicorn.run(
        app,
        host=host,
        port=port,
        **uvicorn_options(cfg),
        log_level="info",
        access_log=False,  # every prediction is in the inference log already
        timeout_graceful_shutdown=30,
    )
    return 0
