"""
### ct_training: train, compare with the champion, promote

Runs on a schedule (`CTRAIN_TRAINING_SCHEDULE`, default daily 03:00 UTC), when `ct_ingest`
publishes new accepted data (the `ctrain_accepted` asset; off with `CTRAIN_TRAIN_ON_NEW_DATA=false`),
when `ct_drift_monitor` asks for it (with the drift or performance reason and its evidence), and by
hand from the UI (**Trigger DAG w/ config**: window, dry run, force, reason).

assemble window → validate training set → train (MLflow run) → evaluate on the held-out slice →
register version, alias `challenger` → paired comparison with `champion` on the same rows →
promote or reject (compare-and-set under a lock) → one decision record in MLflow.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

ACCEPTED = Asset(name="ctrain_accepted", uri="file:///ctrain/accepted")
# With ct_drift_monitor deciding when to retrain, set CTRAIN_TRAIN_ON_NEW_DATA=false so new data
# alone does not start a run; the schedule and the monitor's requests still do.
TRAIN_ON_NEW_DATA = os.environ.get("CTRAIN_TRAIN_ON_NEW_DATA", "true").lower() not in (
    "0",
    "false",
    "no",
)
SCHEDULE = os.environ.get("CTRAIN_TRAINING_SCHEDULE", "0 3 * * *")

DEFAULT_ARGS = {"owner": "ctrain", "retries": 2, "retry_delay": timedelta(seconds=30)}


@dag(
    dag_id="ct_training",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(SCHEDULE, timezone="UTC"), assets=[ACCEPTED]
    )
    if TRAIN_ON_NEW_DATA
    else CronTriggerTimetable(SCHEDULE, timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["ctrain", "training"],
    doc_md=__doc__,
    params={
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
    },
)
def ct_training():
    @task
    def run_context(params=None, dag_run=None, triggering_asset_events=None) -> dict:
        """Who started this run and why: recorded on the model version and the decision."""
        run_type = str(getattr(dag_run, "run_type", "manual")).lower()
        if "asset" in run_type:
            events = [e for evs in (triggering_asset_events or {}).values() for e in evs]
            reason = f"new accepted data ({len(events)} asset event(s))"
        elif "scheduled" in run_type:
            reason = "scheduled"
        else:
            reason = params["reason"]
        return {
            "dag_id": dag_run.dag_id,
            "run_id": dag_run.run_id,
            "trigger_reason": (dag_run.conf or {}).get("reason", reason),
            "evidence_uri": (dag_run.conf or {}).get("evidence_uri", ""),
            "dry_run": bool(params["dry_run"]),
            "force": bool(params["force"]),
            "window": int(params["window"]),
        }

    @task
    def assemble_window(ctx: dict) -> dict:
        """Accepted batches in the window → train/held-out Parquet, addressed by content hash."""
        from airflow.sdk.exceptions import AirflowSkipException

        from ctrain import steps
        from ctrain.training.assemble import NoTrainingData

        try:
            return steps.assemble(ctx["window"] or None)
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
