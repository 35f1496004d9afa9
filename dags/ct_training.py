"""
### ct_training: train, compare with the champion, promote

Runs on a schedule (`schedules.training`, default daily 03:00 UTC; `none` for no schedule), when `ct_ingest`
publishes new accepted data (the `ctrain_accepted` asset; off with `CTRAIN_TRAIN_ON_NEW_DATA=false`),
when `ct_drift_monitor` asks for it (with the drift or performance reason and its evidence), and by
hand from the UI (**Trigger DAG w/ config**: window (batches), dry run, force, reason).

assemble window (a window already trained under the same config is recorded as skipped) →
validate training set → train (MLflow run) → evaluate on the held-out slice → register version →
paired comparison with `champion` on the same rows → pre-deployment load test (in the
environments `promotion.predeployment` names, staging and prod by default: a winner served alone
under load with this environment's rows, rejected over budget) → approval gate → approval (with
`promotion.approval: required` and a comparison that would move champion, a person approves or
rejects under **Required Actions**; skipped otherwise) → promote or reject (compare-and-set under
a lock; a version that passed its gates is aliased `challenger`) → one decision record in MLflow
→ hand-over to `ct_rollout` (with `serving.rollout.strategy` shadow, canary or ab, a winner is
rolled out on live traffic, which promotes it or rolls it back; skipped otherwise). The run's
note says what was decided. The graph is the same under every setting: each gate decides when
the run reaches it.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from ctrain_common import (
    ACCEPTED,
    APPROVAL_TASK,
    DEFAULT_ARGS,
    NOTE_KEY,
    ROLLOUT,
    TRAINING,
    ApprovalRequest,
    MlflowRunLink,
    ModelVersionLink,
    Tell,
    settings,
    training_deadline,
    with_links,
)


def _schedule():
    """The cron (``schedules.training``, none to leave it out) or new data, or either."""
    cron = settings().schedules.training
    timetable = CronTriggerTimetable(cron, timezone="UTC") if cron else None
    # With ct_drift_monitor deciding when to retrain, train_on_new_data=false keeps new data
    # alone from starting a run; the schedule and the monitor's requests still do.
    on_data = [ACCEPTED] if settings().train_on_new_data else []
    if timetable and on_data:
        return AssetOrTimeSchedule(timetable=timetable, assets=on_data)
    return timetable or on_data or None


# The trigger form; a run given any other conf key fails (a typo would run a real training).
PARAMS = {
    "window_batches": Param(
        0,
        type="integer",
        minimum=0,
        title="window (batches)",
        description="Most recent accepted batches to train on; 0 = all.",
    ),
    "since_batch": Param(
        "",
        type="string",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,99}(-[0-9a-f]{8})?(-[0-9a-f]{6})?)?$",
        description="Train from this accepted batch on (where a change began; the monitor sets "
        "it), topped up from before it only if too few rows came after; empty = the window.",
    ),
    "dry_run": Param(
        False, type="boolean", description="Compare and record, but never move champion."
    ),
    "force": Param(
        False,
        type="boolean",
        description="Promote if validation and floors pass, even without a significant gain.",
    ),
    "reason": Param(
        "manual trigger",
        type="string",
        description="Why this run: goes into the decision record.",
    ),
}


@dag(
    dag_id=TRAINING,
    schedule=_schedule(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS | {"retry_delay": timedelta(seconds=30)},
    # A run still going past alerts.training_run_minutes is told (Airflow's Deadline Alerts).
    deadline=training_deadline(),
    tags=["ctrain", "training"],
    doc_md=__doc__,
    params=PARAMS,
)
def ct_training():
    @task
    def run_context(params=None, dag_run=None, triggering_asset_events=None, ti=None) -> dict:
        """Who started this run and why: recorded on the model version and the decision."""
        from airflow.sdk.exceptions import AirflowFailException

        from ctrain import steps

        try:
            ctx = steps.run_context(
                dag_id=dag_run.dag_id,
                run_id=dag_run.run_id,
                run_type=str(getattr(dag_run, "run_type", "manual")),
                params=dict(params),
                conf=dag_run.conf,
                declared=set(PARAMS),
                asset_events=sum(len(evs) for evs in (triggering_asset_events or {}).values()),
                user=getattr(dag_run, "triggering_user_name", None),
            )
        except steps.UnknownConf as exc:  # fail at once: a retry cannot fix the trigger
            ti.xcom_push(key=NOTE_KEY, value=f"refused: {exc}")
            raise AirflowFailException(str(exc)) from exc
        # Started by the schedule or new data while the monitor condemns the champion: from the
        # change on, as the monitor's own request would.
        return steps.from_standing_change(ctx)

    @task
    def assemble_window(ctx: dict, ti=None) -> dict:
        """Accepted batches in the window → train/held-out Parquet, addressed by content hash.

        A window already trained under the same config is recorded as skipped (unless forced).
        """
        from airflow.sdk.exceptions import AirflowSkipException

        from ctrain import steps
        from ctrain.training.assemble import NoTrainingData

        try:
            dataset = steps.assemble(ctx)
        except NoTrainingData as exc:
            ti.xcom_push(key=NOTE_KEY, value=f"skipped: {exc}")
            raise AirflowSkipException(str(exc)) from exc
        skipped = steps.skip_if_trained(dataset, ctx)
        if skipped is not None:
            ti.xcom_push(key=NOTE_KEY, value=skipped["headline"])
            raise AirflowSkipException(skipped["headline"])
        return dataset

    @task
    def validate_training_set(dataset: dict) -> dict:
        """Great Expectations on the assembled set; a failure stops the run without retries."""
        from airflow.sdk.exceptions import AirflowFailException

        from ctrain import steps
        from ctrain.training.validate_set import TrainingSetInvalid

        try:
            return steps.validate_set(dataset)
        except TrainingSetInvalid as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def train(dataset: dict, validation: dict, ctx: dict) -> dict:
        """Grid-search the candidates, log the best as one MLflow run."""
        from ctrain import steps

        return steps.train(dataset, ctx)

    @task
    def evaluate(trained: dict, dataset: dict) -> dict:
        """mlflow.models.evaluate on the time-ordered held-out slice."""
        from ctrain import steps

        return steps.evaluate(trained, dataset)

    @task
    def register(
        trained: dict, dataset: dict, validation: dict, evaluation: dict, ctx: dict
    ) -> dict:
        """Register the model version with its tags; alias it challenger."""
        from ctrain import steps

        return steps.register(trained, dataset, validation, evaluation, ctx)

    @task
    def compare(challenger: dict, dataset: dict, ctx: dict) -> dict:
        """Paired bootstrap of challenger vs champion on the same held-out rows."""
        from ctrain import steps

        return steps.compare(challenger, dataset, ctx)

    @task
    def predeploy(comparison: dict, dataset: dict) -> dict:
        """Where promotion.predeployment says (staging, prod), a challenger that won is served
        alone under load with this environment's rows; over budget, it is rejected."""
        from ctrain import steps

        return steps.predeploy(comparison, dataset)

    @task
    def approval_gate(comparison: dict, ctx: dict) -> dict | None:
        """The approval request when a person must answer before promote (approval required and
        the comparison would move champion), else None: the approval task then skips."""
        from ctrain import steps

        return steps.approval_request(comparison, ctx)

    # A failed step upstream stops promote; a skipped approval (nobody asked) does not.
    @task(trigger_rule="none_failed", on_success_callback=Tell("decisions"))
    def promote(
        comparison: dict | None,
        ctx: dict,
        dataset: dict | None,
        request: dict | None,
        answer: dict | None,
        ti=None,
    ) -> dict:
        """Compare-and-set of champion under the lock; writes exactly one decision record.

        After an approval request, the answer decides: a rejection or an expiry is recorded;
        an approval promotes if the challenger still wins against the champion of the moment.
        """
        from airflow.sdk.exceptions import AirflowSkipException

        from ctrain import steps

        if comparison is None:  # the run trained nothing (its note says why)
            raise AirflowSkipException("nothing was compared")
        if request:
            decision = steps.promote_after_approval(comparison, ctx, dataset, answer)
        else:
            decision = steps.promote(comparison, ctx)
        ti.xcom_push(key=NOTE_KEY, value=decision["headline"])
        return decision

    @task.short_circuit
    def handed_to_rollout(decision: dict) -> bool:
        """Whether the decision hands the challenger to ct_rollout (champion stays meanwhile):
        only with a rollout strategy (``serving.rollout.strategy``) and a winning challenger."""
        return decision.get("decision") == "rollout"

    ctx = run_context()
    dataset = assemble_window(ctx)
    validation = validate_training_set(dataset)
    trained = with_links(train(dataset, validation, ctx), MlflowRunLink())
    evaluation = with_links(evaluate(trained, dataset), MlflowRunLink())
    challenger = with_links(
        register(trained, dataset, validation, evaluation, ctx), ModelVersionLink()
    )
    compared = with_links(compare(challenger, dataset, ctx), ModelVersionLink())
    comparison = predeploy(compared, dataset)
    request = approval_gate(comparison, ctx)
    answer = ApprovalRequest(task_id=APPROVAL_TASK, request=request)
    decision = with_links(
        promote(comparison, ctx, dataset, request, answer.output), ModelVersionLink()
    )
    handed_to_rollout(decision) >> TriggerDagRunOperator(
        task_id="start_rollout",
        trigger_dag_id=ROLLOUT,
        conf={
            "version": "{{ ti.xcom_pull(task_ids='promote')['challenger_version'] }}",
            "reason": "{{ ti.xcom_pull(task_ids='promote')['headline'] }}",
            "handed_over_by": "{{ dag_run.run_id }}",
        },
    )


ct_training()
