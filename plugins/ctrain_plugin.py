"""Airflow plugin: what ctrain adds to Airflow itself.

- **The loop's figures for Prometheus** at ``/ctrain/metrics`` (a scrape token) and
  ``/ctrain/api/metrics`` (an Airflow login), from ``ctrain.telemetry``.
- **The ctrain view** (nav entry "ctrain"): for the project's registered model, the serving
  version and the challenger, the history of decisions, and every monitored window (drift,
  prediction drift, measured performance, retrain requests) as charts, with pending approvals
  and the retrain the monitor asked for while it has not ended (queued, training, waiting for
  approval, rolling out), with its run and the windows checked since.
  A FastAPI app under ``/ctrain`` serves the page and its JSON; Airflow's UI embeds the page
  (``external_views``). Every route asks Airflow's own authentication (the UI's JWT, as a
  bearer header or its ``_token`` cookie) and the plugins view permission: plugin routes are
  public otherwise. The page uses relative URLs only, so a path prefix (``[api] base_url``) works.
  The data comes from ``ctrain.status.overview`` (MLflow and the monitor's files, read only),
  read once as the API server starts so that the first load does not wait for it.
- **Run notes.** When a run of a ctrain DAG ends, its note (shown on the run in the grid) becomes
  the one line its tasks left under the XCom key ``ctrain_note``: ``v2 promoted 1→2
  (significant_improvement): roc_auc +0.0680 [+0.0597, +0.0760]``, ``v3 rejected (floor) …``,
  ``retrain requested: data drift …``. A note a person wrote is never overwritten. The listener
  runs in the scheduler (and in ``dag.test()``), inside the session that ends the run.

- **Links that are never null.** Airflow 3 makes a task's links on the worker when the task ends
  and keeps them in XCom (``dags/ctrain_common.py`` defines ctrain's; each sits only on its own
  tasks). A task that never runs (skipped behind a skipped step, or waiting) has no such XCom, and
  the API answers ``null`` for its link, which the official client refuses. When a ctrain DAG run
  starts (and again when it ends), every link of its tasks gets a fallback value, the page the
  link would lead to without this run's details (the MLflow experiments, the registered model,
  the triggered DAG); a task that runs replaces it with its own link.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from ctrain.dag_ids import ALL, APPROVAL_TASK, NOTE_KEY, ROLLOUT, TRAINING

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("ctrain_view.html")
# A person reloading the page, or several people, do not each make MLflow search again.
CACHE_SECONDS = 5.0


_loaded: tuple[tuple[str, int], Any] | None = None


def _settings():
    """The project's settings, read again when the project file (``CTRAIN_PROJECT``) changes: a
    person who edits it sees the view follow without restarting Airflow's API server."""
    global _loaded
    from ctrain.settings import load_settings

    path = os.environ.get("CTRAIN_PROJECT", "")
    try:
        stamp = (path, os.stat(path).st_mtime_ns if path else 0)
    except OSError:
        stamp = (path, -1)
    if _loaded is None or _loaded[0] != stamp:
        _loaded = (stamp, load_settings())
    return _loaded[1]


class _Overview:
    """``ctrain.status.overview`` of the model, kept for ``CACHE_SECONDS`` (and while the
    settings stay the same)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._for: Any = None
        self._at = 0.0
        self.warmed_in: float | None = None  # seconds the warm-up took, once it is done

    def get(self) -> dict[str, Any]:
        with self._lock:
            settings = _settings()
            stale = time.monotonic() - self._at > CACHE_SECONDS or settings is not self._for
            if self._value is None or stale:
                from ctrain.status import overview
                from ctrain.tracking import configure

                self._value = overview(settings, configure(settings))
                self._for, self._at = settings, time.monotonic()
            return self._value

    def warm(self) -> threading.Thread:
        """Read everything the view shows once, in the background, as the API server starts.

        A cold read imports MLflow and ctrain and opens the tracking store: about 3 s on an idle
        2-core machine, more than 6 s on a busy one, which the first person to open the page
        would otherwise wait for. The first request that comes while this runs waits for it
        (the lock), never for a second read.
        """
        thread = threading.Thread(target=self._warm, name="ctrain-view-warm-up", daemon=True)
        thread.start()
        return thread

    def _warm(self) -> None:
        began = time.monotonic()
        try:
            self.get()
            pending_approvals()
            pending_request()
        except Exception as exc:  # the view says so at the first request; the server runs on
            log.warning("the ctrain view could not read its records ahead of time: %s", exc)
            return
        self.warmed_in = time.monotonic() - began
        log.info("the ctrain view read its records in %.1f s, ahead of any request", self.warmed_in)


_overview = _Overview()


def pending_approvals() -> list[dict[str, Any]]:
    """ct_training's approval requests that no one has answered yet, from Airflow's database."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(HITLDetail, TaskInstance)
            .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
            .where(TaskInstance.dag_id == TRAINING, HITLDetail.responded_at.is_(None))
            .order_by(HITLDetail.created_at)
        ).all()
        return [
            {
                "subject": detail.subject,
                "dag_id": ti.dag_id,
                "run_id": ti.run_id,
                "task_id": ti.task_id,
                "requested_at": detail.created_at.isoformat(),
                "url": f"../dags/{ti.dag_id}/runs/{quote(ti.run_id, safe='')}/tasks/"
                f"{ti.task_id}/required_actions",
            }
            for detail, ti in rows
        ]


def pending_request() -> dict[str, Any] | None:
    """The monitor's newest retrain request while it has not ended, from Airflow's database:
    its ct_training run queued, training or waiting for approval, or the ct_rollout run it
    handed its winner to still running. None once it is over (or before any request)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from ctrain.monitoring.trigger import pending_retrain, trigger_log

    settings = _settings()
    asked = [r for r in trigger_log(settings) if r.requested_run]
    if not asked:
        return None
    last = asked[-1]
    with create_session() as session:

        def run_state(run_id: str) -> tuple[str, dict[str, str]] | None:
            state = session.scalar(
                select(DagRun.state).where(DagRun.dag_id == TRAINING, DagRun.run_id == run_id)
            )
            if str(state) not in ("queued", "running"):
                return None
            approval = session.scalar(
                select(TaskInstance.state).where(
                    TaskInstance.dag_id == TRAINING,
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id == APPROVAL_TASK,
                )
            )
            return str(state), ({APPROVAL_TASK: str(approval)} if approval else {})

        pending = pending_retrain(settings, run_state)
        dag_id, run_id = TRAINING, last.requested_run
        if pending is not None:
            stage = pending.stage
        else:  # a winner handed to ct_rollout: the request ends with the rollout
            rollouts = session.scalars(
                select(DagRun).where(
                    DagRun.dag_id == ROLLOUT, DagRun.state.in_(("queued", "running"))
                )
            ).all()
            handed = [r for r in rollouts if (r.conf or {}).get("handed_over_by") == run_id]
            if not handed:
                return None
            dag_id, run_id, stage = ROLLOUT, handed[0].run_id, "rolling out"
    return {
        "requested_at": last.decided_at,
        "reason": last.reason,
        "stage": stage,
        "dag_id": dag_id,
        "run_id": run_id,
        "training_run_id": last.requested_run,
        "url": f"../dags/{dag_id}/runs/{quote(run_id, safe='')}",
    }


def build_app():
    """The view's FastAPI app: the page and its JSON, every route behind Airflow's login.

    Airflow's API server runs the lifespan of the FastAPI apps it mounts: this one starts
    reading the records there (``_Overview.warm``), so the page's first load finds them read.
    """
    from contextlib import asynccontextmanager

    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view
    from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException
    from fastapi.responses import HTMLResponse, Response

    @asynccontextmanager
    async def lifespan(app):
        _overview.warm()
        yield

    app = FastAPI(
        title="ctrain",
        lifespan=lifespan,
        description="The serving model, its history and the monitored windows, from ctrain's "
        "records; the loop's figures for Prometheus.",
    )
    view = APIRouter(dependencies=[Depends(requires_access_view(AccessView.PLUGINS))])

    @view.get("/", response_class=HTMLResponse)
    def page() -> str:
        """The view: one HTML page that reads ``api/...`` relative to itself."""
        return PAGE.read_text()

    @view.get("/api/models")
    def models() -> list[dict[str, str]]:
        """The registered models this deployment of ctrain manages (one per project)."""
        return [{"name": _settings().model_name}]

    def unreadable(exc: Exception) -> HTTPException:
        # MLflow down or refusing: say so, do not answer a bare 500.
        log.exception("ctrain could not read its records")
        return HTTPException(
            503,
            "could not read ctrain's records from MLflow at "
            f"{_settings().resolved_tracking_uri}: {type(exc).__name__}: {str(exc)[:300]}",
        )

    @view.get("/api/models/{name}")
    def model(name: str) -> dict[str, Any]:
        """Champion, challenger, decision history, monitored windows and pending approvals."""
        if name != _settings().model_name:
            raise HTTPException(404, f"ctrain manages no model named {name!r}")
        try:
            records = _overview.get()
        except Exception as exc:
            raise unreadable(exc) from exc
        return records | {
            "pending_approvals": pending_approvals(),
            "pending_request": pending_request(),
            "warmed_in": _overview.warmed_in,
        }

    @view.get("/api/environments")
    def environments() -> list[dict[str, Any]]:
        """Each environment of the project's ``environments`` (none: []), read from its own
        MLflow: champion, its files' sha256, where it came from, restricted training's
        configuration, rollout, moves under way; one not reachable says so in ``error``."""
        from ctrain.status import environments as read

        return read(_settings())

    def metrics_text():
        from prometheus_client import CONTENT_TYPE_LATEST

        from ctrain.telemetry import exposition
        from ctrain.tracking import configure

        settings = _settings()
        try:
            body = exposition(settings, configure(settings))
        except Exception as exc:
            raise unreadable(exc) from exc
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    # No annotations naming FastAPI's classes: this module's annotations are strings, and
    # FastAPI could not resolve names imported in this function (a parameter typed `Request`
    # became a required query parameter: 422).
    @view.get("/api/metrics", response_class=Response)
    def metrics_for_a_person():
        """The loop's figures in Prometheus' text format, for anyone who may see the view."""
        return metrics_text()

    app.include_router(view)

    @app.get("/metrics", response_class=Response)
    def metrics(authorization: str | None = Header(default=None)):
        """The same figures for Prometheus, behind the scrape token (``CTRAIN_METRICS_TOKEN`` or
        ``CTRAIN_METRICS_TOKEN_FILE``) as a bearer token: an Airflow login expires, a scrape
        job's credentials file does not."""
        from ctrain.telemetry import scrape_token_matches

        if not scrape_token_matches(authorization):
            raise HTTPException(
                401,
                "a scrape token is needed: Authorization: Bearer <CTRAIN_METRICS_TOKEN> "
                "(or use /ctrain/api/metrics with an Airflow login)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return metrics_text()

    return app


@functools.cache
def view_app():
    """The one app of this process (the API server mounts it once)."""
    return build_app()


def _in_session(dag_run):
    """``dag_run`` and the session of the code that is ending it, to write in its transaction.

    The scheduler hands over a run bound to its session; ``dag.test()`` a detached one, whose
    caller holds the thread's scoped session (Airflow's ``settings.Session``), the same one.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is not None:
        return dag_run, session
    session = settings.Session()
    return session.get(DagRun, dag_run.id), session


def write_note(dag_run) -> str | None:
    """Set ``dag_run``'s note to the newest ``ctrain_note`` its tasks left; returns it, or None."""
    from airflow.models.xcom import XComModel

    if dag_run.dag_id not in ALL:
        return None
    dag_run, session = _in_session(dag_run)
    if dag_run is None:
        return None
    current = dag_run.dag_run_note
    if current is not None and current.user_id is not None:  # a person's note stays
        return None
    query = XComModel.get_many(run_id=dag_run.run_id, key=NOTE_KEY, dag_ids=dag_run.dag_id)
    row = session.scalars(query.order_by(XComModel.timestamp.desc()).limit(1)).first()
    if row is None:
        return None
    note = str(XComModel.deserialize_value(row))[:1000]
    dag_run.note = note
    return note


def _fallback_link(name: str, task: dict[str, Any]) -> str:
    from airflow.configuration import conf

    from ctrain.tracking import MlflowLinks

    settings = _settings()
    mlflow = MlflowLinks(settings.mlflow_ui_url)
    if name == "Model version":
        return mlflow.model(settings.model_name)
    if name == "Triggered DAG":
        base = conf.get("api", "base_url", fallback="/").rstrip("/")
        return f"{base}/dags/{task.get('trigger_dag_id', '')}"
    return mlflow.experiments()


def _declared_links(dag_id: str, session) -> list[tuple[dict[str, Any], str, str]]:
    """``(task, link name, XCom key)`` for every link a DAG's tasks declare, read from the
    serialized DAG (the scheduler deserializes DAGs without their links)."""
    from airflow.models.serialized_dag import SerializedDagModel

    sdm = SerializedDagModel.get(dag_id, session=session)
    if sdm is None:
        return []
    out = []
    for entry in sdm.data["dag"]["tasks"]:
        task = entry.get("__var", entry)
        if task.get("_is_mapped"):
            continue
        for name, key in (task.get("_operator_extra_links") or {}).items():
            out.append((task, name, key))
    return out


def fill_links(dag_run) -> int:
    """Give every link of ``dag_run``'s tasks a value where it has none yet; returns how many."""
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    if dag_run.dag_id not in ALL:
        return 0
    dag_run, session = _in_session(dag_run)
    if dag_run is None:
        return 0
    have = set(
        session.execute(
            select(XComModel.task_id, XComModel.key).where(
                XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id
            )
        ).all()
    )
    filled = 0
    for task, name, key in _declared_links(dag_run.dag_id, session):
        if (task["task_id"], key) in have:
            continue
        XComModel.set(
            key,
            _fallback_link(name, task),
            dag_id=dag_run.dag_id,
            task_id=task["task_id"],
            run_id=dag_run.run_id,
            session=session,
        )
        filled += 1
    return filled


class RunNotes:
    """Listener: each ctrain DAG run says what it did, on the run itself; its links are never
    null."""

    @hookimpl
    def on_dag_run_running(self, dag_run, msg: str) -> None:
        fill_links(dag_run)

    @hookimpl
    def on_dag_run_success(self, dag_run, msg: str) -> None:
        write_note(dag_run)
        fill_links(dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run, msg: str) -> None:
        write_note(dag_run)
        fill_links(dag_run)


class CtrainPlugin(AirflowPlugin):
    name = "ctrain"
    listeners = [RunNotes()]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:
        # Read by the API server only (and ``airflow plugins``): the app, FastAPI and Airflow's
        # API security cost a task process about 0.7 s, and Airflow imports this plugin in every
        # one of them for its listeners.
        return [{"name": "ctrain", "app": view_app(), "url_prefix": "/ctrain"}]

    # href is relative to the UI's <base href>, so it follows [api] base_url's path prefix; the
    # trailing slash makes the page's own relative URLs resolve under /ctrain/.
    external_views = [
        {"name": "ctrain", "href": "ctrain/", "destination": "nav", "url_route": "ctrain"}
    ]
