"""
### ct_training: train, compare with the champion, promote

Runs on a schedule (`schedules.training`, default daily 03:00 UTC), when `ct_ingest`
publishes new accepted data (the `ctrain_accepted` asset; off with `CTRAIN_TRAIN_ON_NEW_DATA=false`),
when `ct_drift_monitor` asks for it (with the drift or performance reason and its evidence), and by
hand from the UI (**Trigger DAG w/ config**: window, dry run, force, reason).

assemble window → validate training set → train (MLflow run) → evaluate on the held-out slice →
register version, alias `challenger` → paired comparison with `champion` on the same rows →
promote or reject (compare-and-set under a lock) → one decision record in MLflow.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from ctrain_common import ACCEPTED, DEFAULT_ARGS, TRAINING, settings

CRON = CronTriggerTimetable(settings().schedules.training, timezone="UTC")

# The trigger form; a run given any other conf key fails (a typo would run a real training).
PARAMS = {
    "window": Param(
        0,
        type="integer",
        minimum=0,
        description="Most recent accepted batches to train on; 0 = all.",
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
    # With ct_drift_monitor deciding when to retrain, train_on_new_data=false keeps new data alone
    # from starting a run; the schedule and the monitor's requests still do.
    schedule=AssetOrTimeSchedule(timetable=CRON, assets=[ACCEPTED])
    if settings().train_on_new_data
    else CRON,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS | {"retry_delay": timedelta(seconds=30)},
    tags=["ctrain", "training"],
    doc_md=__doc__,
    params=PARAMS,
)
def ct_training():
    @task
    def run_context(params=None, dag_run=None, triggering_asset_events=None) -> dict:
        """Who started this run and why: recorded on the model version and the decision."""
        from airflow.sdk.exceptions import AirflowFailException

        from ctrain import steps

        try:
            return steps.run_context(
                dag_id=dag_run.dag_id,
                run_id=dag_run.run_id,
                run_type=str(getattr(dag_run, "run_type", "manual")),
                params=dict(params),
                conf=dag_run.conf,
                declared=set(PARAMS),
                asset_events=sum(len(evs) for evs in (triggering_asset_events or {}).values()),
            )
        except steps.UnknownConf as exc:  # fail at once: a retry cannot fix the trigger
            raise AirflowFailException(str(exc)) from exc

    @task
    def assemble_window(ctx: dict) -> dict:
        """Accepted batches in the window → train/held-out Parquet, addressed by content hash."""
        from airflow.sdk.exceptions import AirflowSkipException

        from ctrain import steps
        from ctrain.training.assemble import NoTrainingData

        try:
            return steps.assemble(ctx)
        except NoTrainingData as exc:
            raise AirflowSkipException(str(exc)) from exc

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
    def promote(comparison: dict, ctx: dict) -> dict:
        """Compare-and-set of champion under the lock; writes exactly one decision record."""
        from ctrain import steps

        return steps.promote(comparison, ctx)

    ctx = run_context()
    dataset = assemble_window(ctx)
    validation = validate_training_set(dataset)
    trained = train(dataset, validation, ctx)
    evaluation = evaluate(trained, dataset)
    challenger = register(trained, dataset, validation, evaluation, ctx)
    promote(compare(challenger, dataset, ctx), ctx)


ct_training()
