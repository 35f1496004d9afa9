"""What the ctrain DAGs share: their ids, the assets between them, default args and schedules.

Not a DAG file (``.airflowignore`` keeps the DAG processor from parsing it as one). Imported while
DAG files are parsed, so it stays light: Airflow's SDK, the DAG ids, and the project's settings
(``ctrain.settings`` reads one YAML file; no heavy library is imported).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import cache

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import (
    Asset,
    BaseNotifier,
    BaseOperatorLink,
    DeadlineAlert,
    DeadlineReference,
    Param,
    SyncCallback,
)

from ctrain import dag_ids
from ctrain.settings import Settings, load_settings

INGEST = dag_ids.INGEST
TRAINING = dag_ids.TRAINING
BATCH_INFERENCE = dag_ids.BATCH_INFERENCE
DRIFT_MONITOR = dag_ids.DRIFT_MONITOR
ROLLOUT = dag_ids.ROLLOUT
DEADLINES = dag_ids.DEADLINES
ENV_PROMOTION = dag_ids.ENV_PROMOTION
APPROVAL_TASK = dag_ids.APPROVAL_TASK

# ct_ingest -> ct_batch_inference (and ct_training, when settings.train_on_new_data)
ACCEPTED = Asset(name="ctrain_accepted", uri="file:///ctrain/accepted")
# ct_ingest -> ct_drift_monitor
LABELS = Asset(name="ctrain_labels", uri="file:///ctrain/labels")
# ct_batch_inference -> ct_drift_monitor
PREDICTIONS = Asset(name="ctrain_predictions", uri="file:///ctrain/predictions")


def landing_assets():
    """The landing folders as assets that a watcher in the triggerer updates when something lands
    there (``plugins/ctrain_watch.py``); None when ``schedules.watch_seconds`` is 0."""
    every = settings().schedules.watch_seconds
    if not every:
        return None
    from airflow.sdk import AssetWatcher
    from ctrain_watch import LandedFilesTrigger

    s = settings()
    folders = {"ctrain_landing": s.landing_dir, "ctrain_labels_landing": s.labels_landing_dir}
    return [
        Asset(
            name=name,
            uri=f"file:///ctrain/{name.removeprefix('ctrain_')}",
            watchers=[
                AssetWatcher(
                    name=f"{name}_watcher",
                    trigger=LandedFilesTrigger(directory=str(folder), poll_seconds=every),
                )
            ],
        )
        for name, folder in folders.items()
    ]


class Tell(BaseNotifier):
    """Airflow notifier: tell the operators what a ctrain task did (``steps.notify``: which
    record, to which routes, once per record) through the Apprise connections that
    ``notifications.routes`` names. As a callback (``on_success_callback``,
    ``on_failure_callback``), among an operator's ``notifiers``, or called with a task's context.
    ``what``: decisions | request | quarantine | approval | failure."""

    def __init__(self, what: str, **info):
        super().__init__()
        self.what, self.info = what, info

    def notify(self, context) -> None:
        from ctrain import steps

        ti = context["ti"]
        info = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, **self.info}
        if self.what == "failure":
            info["error"] = f"{type(context.get('exception')).__name__}: {context.get('exception')}"
        elif self.what == "request":
            info["verdict"] = ti.xcom_pull(task_ids="decide")
        elif self.what == "approval":
            task = context["task"]
            info["subject"], info["body"] = task.subject, task.body or ""
        for told in steps.notify(self.what, info, send=send_apprise):
            self.log.info("told %s (%s): %s", told["route"], told["kind"], told["title"])


def send_apprise(route: str, event) -> bool:
    """Send ``event`` through the Apprise connection ``route``; whether every service took it
    (the provider's hook only logs a failure: Apprise's own answer is read here)."""
    import apprise
    from airflow.providers.apprise.hooks.apprise import AppriseHook

    hook = AppriseHook(apprise_conn_id=route)
    services = apprise.Apprise()
    hook.set_config_from_conn(conn=hook.get_connection(route), apprise_obj=services)
    return bool(
        services.notify(
            title=event.title, body=event.text(), notify_type=apprise.NotifyType(event.severity)
        )
    )


# A task that fails after its retries says so (to the routes of task_failed, when there are any).
DEFAULT_ARGS = {
    "owner": "ctrain",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "on_failure_callback": Tell("failure"),
}


def training_deadline() -> DeadlineAlert | None:
    """ct_training's deadline (Airflow's Deadline Alerts): ``alerts.training_run_minutes``
    after a run is queued, plus the approval's timeout where a person must answer; a run still
    going then is told (``training_late``). Read when the DAG is parsed; None when unset."""
    s = settings()
    minutes = s.alerts.training_run_minutes
    if minutes is None:
        return None
    if s.promotion.approval == "required":
        minutes += s.promotion.approval_timeout_minutes
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=SyncCallback(training_late),
        name="ctrain_training_run",
    )


def training_late(context: dict) -> None:
    """The Deadline Alert's callback, run by the executor: tell that a ct_training run is
    still going past its deadline (``notifications.routes.training_late``), once per run."""
    from ctrain import steps

    run = context["dag_run"]
    if run["state"] not in ("queued", "running"):
        # Airflow drops a run's deadline when the run succeeds, not when it fails.
        logging.getLogger(__name__).info("%s ended %s: not late", run["dag_run_id"], run["state"])
        return
    info = {
        "dag_id": run["dag_id"],
        "run_id": run["dag_run_id"],
        "queued_at": run.get("queued_at"),
        "deadline_at": str(context["deadline"]["deadline_time"]),
    }
    steps.notify("training_late", info, send=send_apprise)


# A task leaves its DAG run's one-line outcome under this XCom key; the plugin writes it on the run.
NOTE_KEY = dag_ids.NOTE_KEY
# ct_training's approval task: what a person may answer.
APPROVE, REJECT = dag_ids.APPROVE, dag_ids.REJECT


def training_run_state(ti):
    """``run_state`` for ctrain's steps: (state, {task id: state}) of a ct_training run while it
    is queued or running, else None; read through the task's own Airflow API (no database)."""

    def state(run_id: str) -> tuple[str, dict[str, str]] | None:
        for active in ("queued", "running"):
            if ti.get_dr_count(dag_id=TRAINING, run_ids=[run_id], states=[active]):
                tasks = ti.get_task_states(
                    dag_id=TRAINING, run_ids=[run_id], task_ids=[dag_ids.APPROVAL_TASK]
                )
                return active, {k: str(v) for k, v in tasks.get(run_id, {}).items()}
        return None

    return state


def approval_state(ti):
    """``approval_state`` for ``ctrain.deadlines``: the state of a run's approval task, None
    once the run is gone; read through the task's own Airflow API (no database)."""

    def state(dag_id: str, run_id: str, task_id: str) -> str | None:
        found = ti.get_task_states(dag_id=dag_id, run_ids=[run_id], task_ids=[task_id])
        value = found.get(run_id, {}).get(task_id)
        return str(value) if value is not None else None

    return state


@cache
def settings() -> Settings:
    """The project's settings (``CTRAIN_PROJECT`` and ``CTRAIN_*``), read once per process."""
    return load_settings()


class ApprovalRequest(HITLOperator):
    """A promotion's approval (ct_training, ct_env_promotion): a person approves or rejects it
    in **Required Actions**, when the gate made a ``request`` (``promotion.approval: required``
    and the comparison would move champion); skipped otherwise. Subject, body and the time to answer
    (``promotion.approval_timeout_minutes``) are read when the task runs, not when the DAG is
    parsed; unanswered in time, the default answer comes from no person and is recorded as
    expired."""

    template_fields = (*HITLOperator.template_fields, "request")

    def __init__(self, *, request, params=None, **kwargs):
        # ``params`` holds the DAG's own, which Airflow merges in again below; the form of the
        # request is the comment alone.
        super().__init__(
            subject="Promote the challenger?",
            options=[APPROVE, REJECT],
            defaults=[REJECT],
            params={
                "comment": Param(
                    "", type="string", description="Why: goes into the decision record."
                )
            },
            # The approvers are told a request waits (notifications.routes.approval_waiting).
            notifiers=[Tell("approval")],
            **kwargs,
        )
        self.request = request

    def execute(self, context):
        if not self.request:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException("no approval needed for this comparison")
        from ctrain import steps

        self.subject, self.body = self.request["subject"], self.request["body"]
        minutes = settings().promotion.approval_timeout_minutes
        self.response_timeout = timedelta(minutes=minutes)
        ti = context["ti"]
        # Kept so ct_deadlines can warn before the request expires.
        steps.keep_waiting(
            {
                "dag_id": ti.dag_id,
                "run_id": ti.run_id,
                "task_id": ti.task_id,
                "subject": self.subject,
                "timeout_minutes": minutes,
            }
        )
        return super().execute(context)


def _returned(ti) -> dict:
    """What a task instance returned, read while its links are made (when it finishes)."""
    value = ti.xcom_pull(task_ids=ti.task_id, map_indexes=ti.map_index)
    return value if isinstance(value, dict) else {}


def _links():
    from ctrain.tracking import MlflowLinks

    return MlflowLinks(settings().mlflow_ui_url)


class MlflowRunLink(BaseOperatorLink):
    """The MLflow run a task produced (``train``, ``evaluate``); the experiment if it made none.

    Airflow 3 makes a task's links when the task ends, on the worker, and keeps them in XCom; a
    link is attached only to the tasks it belongs to (``with_links``), and it is never empty.
    """

    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        value = _returned(ti_key)
        if value.get("experiment_id") and value.get("mlflow_run_id"):
            return _links().run(value["experiment_id"], value["mlflow_run_id"])
        return _links().experiments()


class ModelVersionLink(BaseOperatorLink):
    """The model version a task worked on (``register``, ``compare``, ``promote``); the model
    if it has none."""

    name = "Model version"

    def get_link(self, operator, *, ti_key) -> str:
        value = _returned(ti_key)
        name = value.get("model_name") or settings().model_name
        version = value.get("version") or value.get("challenger_version")
        if version:
            return _links().model_version(name, str(version))
        return _links().model(name)


def with_links(output, *links: BaseOperatorLink):
    """Attach ``links`` to the task behind a TaskFlow call's ``output``; returns ``output``."""
    output.operator.operator_extra_links = list(links)
    return output
