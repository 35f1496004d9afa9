"""
### ct_drift_monitor: watch the champion, ask for retraining with evidence

Runs on a schedule (`schedules.monitoring`, default hourly) and whenever new predictions
(`ctrain_predictions`) or labels (`ctrain_labels`) land.

check each due window against the champion's own training reference (data drift per
feature, prediction drift, performance on windows whose labels matured; Evidently HTML + JSON
summary under `monitor/<batch>/` and in MLflow) → decide with debounce, cooldown and no request while
`ct_training` is queued or running (the verdict names the retrain asked for and where it is:
queued, training, waiting for approval) → trigger `ct_training` with the reason and the evidence,
under the run id the request recorded, and finish: the monitor never waits for the retrain, so
every window is checked while a person or a rollout decides.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task
from ctrain_common import (
    DEFAULT_ARGS,
    DRIFT_MONITOR,
    LABELS,
    NOTE_KEY,
    PREDICTIONS,
    ROLLOUT,
    TRAINING,
    Tell,
    settings,
    training_run_state,
)


@dag(
    dag_id=DRIFT_MONITOR,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(settings().schedules.monitoring, timezone="UTC"),
        assets=(PREDICTIONS | LABELS),
    ),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["ctrain", "monitoring"],
    doc_md=__doc__,
    # The trigger's conf keeps native types (window_batches is an integer Param of ct_training).
    render_template_as_native_obj=True,
)
def ct_drift_monitor():
    @task
    def check_windows(ti=None) -> list[dict]:
        """Drift and performance for every window due under the current champion."""
        from airflow.sdk.exceptions import AirflowSkipException

        from ctrain import steps

        try:
            return steps.check_windows()
        except LookupError as exc:  # no champion yet
            ti.xcom_push(key=NOTE_KEY, value=f"skipped: {exc}")
            raise AirflowSkipException(str(exc)) from exc

    @task.short_circuit(ignore_downstream_trigger_rules=True)
    def decide(checked: list[dict], ti=None, dag_run=None) -> dict | bool:
        """Debounce, cooldown, one request at a time, none during a rollout; continue only to
        trigger."""
        from ctrain import steps

        busy = ["queued", "running"]
        verdict = steps.decide_retrain(
            key=f"{dag_run.dag_id}/{dag_run.run_id}",
            training_active=ti.get_dr_count(dag_id=TRAINING, states=busy) > 0,
            rollout_active=ti.get_dr_count(dag_id=ROLLOUT, states=busy) > 0,
            run_state=training_run_state(ti),
        )
        print(f"retrain verdict: {verdict}")
        ti.xcom_push(key=NOTE_KEY, value=steps.describe_verdict(verdict))
        return verdict if verdict["trigger"] else False

    verdict = decide(check_windows())
    trigger_ct_training = TriggerDagRunOperator(
        task_id="trigger_ct_training",
        trigger_dag_id=TRAINING,
        conf={
            "reason": "{{ ti.xcom_pull(task_ids='decide')['reason'] }}",
            "evidence_uri": "{{ ti.xcom_pull(task_ids='decide')['evidence_uri'] }}",
            "window_batches": "{{ ti.xcom_pull(task_ids='decide')['window_batches'] }}",
            "since_batch": "{{ ti.xcom_pull(task_ids='decide')['change_from'] }}",
        },
        # The run id the request recorded: the verdicts after it name the run, and a retry of
        # this task finds the run it started instead of starting another.
        trigger_run_id="{{ ti.xcom_pull(task_ids='decide')['requested_run'] }}",
        skip_when_already_exists=True,
        # Not waited for: an approval may wait hours, and later windows must still be checked.
        wait_for_completion=False,
        # The request, with its reason and the run it started (notifications.routes).
        on_success_callback=Tell("request"),
    )
    verdict >> trigger_ct_training


ct_drift_monitor()
