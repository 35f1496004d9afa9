"""``ctrain serve``: score JSON rows with ``@champion`` over HTTP (FastAPI on uvicorn).

Routes:

- ``POST /predict`` ``{"rows": [{<id>, <features>...}, ...]}`` → per row: score, predicted
  class, model version, arm, and the request id (also the ``X-Request-ID`` header; a caller's
  own is kept when it is a plain token). A bad row is a 422 naming the row, its id and the
  column; nothing of that request is scored.
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

from ctrain.registry import CHAMPION, training_window
from ctrain.serving.log import InferenceLog
from ctrain.serving.reload import ModelSlot, Served
from ctrain.serving.rows import explain, request_model, rows_from_frame
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
    does)."""

    TICK = 0.005

    def __init__(self) -> None:
        self.seconds = 0.0

    async def watch(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.TICK)
            late = loop.time() - start - self.TICK
            # Up at once, down gently: one quiet tick does not end an overload.
            self.seconds = late if late > self.seconds else 0.8 * self.seconds + 0.2 * late


class _Guard:
    """Pure ASGI middleware: token, body size, the event loop's lag and requests in progress,
    checked before any parsing (cheaper than a Starlette ``BaseHTTPMiddleware``)."""

    # While a version loads, its load holds the interpreter for a moment: requests wait that
    # out (up to this many times the usual lag) rather than being refused for it.
    RELOAD_LAG_FACTOR = 10

    def __init__(
        self,
        app,
        token: str | None,
        max_body: int,
        max_in_flight: int,
        max_lag: float,
        lag,
        reloading,
        metrics,
    ):
        self.app, self.token, self.max_body = app, token, max_body
        self.max_in_flight, self.max_lag, self.lag = max_in_flight, max_lag, lag
        self.reloading, self.metrics = reloading, metrics
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
        busy = None
        if self.in_flight >= self.max_in_flight:
            busy = f"{self.in_flight} requests in progress"
        elif path == "/predict" and self.lag.seconds > self.max_lag * (
            self.RELOAD_LAG_FACTOR if self.reloading() else 1
        ):
            busy = f"requests wait {1000 * self.lag.seconds:.0f} ms before they are handled"
        if busy:
            self.metrics.refused.labels("overloaded").inc()
            return await _send(
                send, 503, {"error": f"{busy}: try again shortly"}, [(b"retry-after", b"1")]
            )
        self.in_flight += 1
        try:
            return await self.app(scope, _capped(receive, self.max_body), send)
        finally:
            self.in_flight -= 1


class BodyTooLarge(Exception):
    pass


def _capped(receive, limit: int):
    """``receive`` that stops a body sent without a length once it passes ``limit`` bytes."""
    seen = 0

    async def inner():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(f"the request body is over {limit} bytes")
        return message

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
    """Rows to warm a new version with: the last rows served, else its held-out rows."""

    def rows(version: str) -> list:
        if recent:
            return recent[-1]
        folder = training_window(client, settings.model_name, version, settings.datasets_dir)
        if folder is None or not (folder / "holdout.parquet").exists():
            return []
        holdout = pd.read_parquet(folder / "holdout.parquet").head(WARM_ROWS)
        return rows_from_frame(holdout, settings.dataset)

    return rows


def create_app(
    settings: Settings,
    client,
    token: str | None = None,
    source: str | None = None,
    reload_in_background: bool = True,
) -> FastAPI:
    """The service. ``token``: the bearer token callers must send (None: no auth, loopback
    only, as ``ctrain serve`` enforces); ``source`` names this process in the inference log."""
    cfg, spec = settings.serving, settings.dataset
    metrics = _Metrics()
    recent: list[list] = []
    inference_log = InferenceLog(settings, source or f"{socket.gethostname()}-{os.getpid()}")

    def before_swap(old: Served | None, new: Served) -> None:
        if old is not None:  # a window holds one version's answers
            inference_log.flush(version=old.version)

    slot = ModelSlot(settings, client, CHAMPION, _warm_rows(settings, client, recent), before_swap)
    stop = threading.Event()

    def watch() -> None:
        next_look = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_look:
                _refresh(slot, metrics)
                next_look = time.monotonic() + cfg.reload_seconds
            try:
                inference_log.flush(due_only=True)
            except Exception:  # a full disk must not stop reloads; the rows stay in memory
                log.exception("the inference log could not land a window")
            # Woken early when a window is full; otherwise at the next look at the alias.
            inference_log.full.wait(max(0.0, next_look - time.monotonic()))

    lag = _Lag()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import asyncio

        _refresh(slot, metrics)
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
    app.state.slot, app.state.log, app.state.metrics = slot, inference_log, metrics
    Body = request_model(spec, cfg.max_rows)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        metrics.refused.labels("invalid").inc()
        body = exc.body if isinstance(exc.body, dict) else None
        return JSONResponse(
            status_code=422,
            content={
                "error": "the request does not fit the project's schema; nothing was scored",
                "errors": explain(list(exc.errors()), body, spec)[:100],
            },
        )

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge):
        metrics.refused.labels("too_large").inc()
        return JSONResponse(status_code=413, content={"error": str(exc)})

    @app.post("/predict")
    async def predict(body: Body, request: Request) -> JSONResponse:  # type: ignore[valid-type]
        started = time.perf_counter()
        served = slot.current
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
        scores = served.score(rows)
        negative = next(c for c in spec.classes if c != spec.positive_class)
        out = [
            {
                spec.id_column: str(getattr(r, spec.id_column)),
                "score": float(s),
                "prediction": spec.positive_class if s >= 0.5 else negative,
                "model_version": served.version,
                "arm": "champion",
            }
            for r, s in zip(rows, scores, strict=True)
        ]
        latency = time.perf_counter() - started
        inference_log.add(rows, scores, served.version, "champion", rid, latency * 1000)
        recent[:] = [rows[:WARM_ROWS]]  # what the next version warms up on
        metrics.requests.labels(served.version, "champion", "200").inc()
        metrics.rows.labels(served.version, "champion").inc(len(out))
        metrics.latency.labels(served.version, "champion").observe(latency)
        return JSONResponse(
            {"request_id": rid, "model_version": served.version, "predictions": out},
            headers={"X-Request-ID": rid},
        )

    @app.get("/health")
    async def health() -> dict:
        served, failure = slot.current, slot.failure
        return {
            "status": "ok" if served and not failure else ("degraded" if served else "starting"),
            "model": settings.model_name,
            "alias": CHAMPION,
            "serving_version": served.version if served else None,
            "loaded_at": served.loaded_at if served else None,
            "warmed_rows": served.warmed_rows if served else 0,
            "fast_path": served.fast if served else None,
            "not_serving": failure.__dict__ if failure else None,
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
        slot.reloading,
        metrics,
    )


def _refresh(slot: ModelSlot, metrics: _Metrics) -> None:
    failed_before = slot.failure
    slot.refresh()
    if slot.failure and slot.failure is not failed_before and slot.failure.version:
        metrics.reload_failures.inc()
    if slot.current:
        metrics.serving.set(float(slot.current.version))


def _not_ready(slot: ModelSlot) -> str:
    why = slot.failure.error if slot.failure else "no version loaded yet"
    return f"not serving yet: {why}"


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class Refused(Exception):
    """A configuration the service will not start with; the message says what to change."""


def run(settings: Settings, client, host: str | None = None, port: int | None = None) -> int:
    """Serve until SIGTERM or Ctrl-C; requests in progress finish, then the log lands."""
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
    app = create_app(settings, client, token=token)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,  # every prediction is in the inference log already
        timeout_graceful_shutdown=30,
    )
    return 0
