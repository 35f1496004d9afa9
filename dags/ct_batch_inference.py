"""
### ct_batch_inference: score accepted batches with the champion

Starts when `ct_ingest` publishes accepted data (the `ctrain_accepted` asset), or by hand with a
`batch_id` to re-score one batch. Each batch is scored by the model that is `champion` at that
moment. While labels just in show the champion's metric past the tolerance and the monitor has not
decided, or a retrain the monitor asked for is queued or training (not while it waits for
approval), new batches wait for its outcome (for at most `monitoring.hold_scoring_seconds`,
without holding a worker slot). Predictions go to `predictions/<batch>.parquet`, keyed by
(batch id, row id, model version), written atomically, so retries and re-runs leave exactly one prediction per row. Emits the
`ctrain_predictions` asset for `ct_drift_monitor`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from ctrain_common import (
    ACCEPTED,
    BATCH_INFERENCE,
    DEFAULT_ARGS,
    DRIFT_MONITOR,
    NOTE_KEY,
    PREDICTIONS,
    training_run_state,
)


@dag(
    dag_id=BATCH_INFERENCE,
    schedule=[ACCEPTED],
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["ctrain", "inference"],
    doc_md=__doc__,
    params={
        "batch_id": Param(
            "",
            type="string",
            # The form of the ids ingest makes: anything else is refused when the run is triggered.
            pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,99}(-[0-9a-f]{8})?(-[0-9a-f]{6})?)?$",
            description="Re-score this accepted batch (its id, as ingest made it); "
            "empty = every unscored batch.",
        ),
    },
)
def ct_batch_inference():
    @task
    def batches_to_score(params=None) -> list[str]:
        """The batch asked for, or every accepted batch without predictions."""
        from ctrain import steps

        return [params["batch_id"]] if params.get("batch_id") else steps.unscored()

    # Rescheduled between looks: a held batch occupies no worker slot while the retrain runs.
    # The hold's own bound (monitoring.hold_scoring_seconds from the batch's acceptance, read
    # at run time) ends it first; the timeout is only a ceiling above any such bound.
    @task.sensor(poke_interval=5, timeout=7 * 24 * 3600, mode="reschedule")
    def await_verdict(batch_ids: list[str], params=None, ti=None):
        """Wait while labels just in condemn the champion or its retrain runs (bounded)."""
        from airflow.sdk import PokeReturnValue

        from ctrain import steps

        if params.get("batch_id"):  # a re-score asked for by hand uses today's champion
            return PokeReturnValue(is_done=True)
        busy = ti.get_dr_count(dag_id=DRIFT_MONITOR, states=["queued", "running"]) > 0
        hold = steps.scoring_hold(
            list(batch_ids), monitor_busy=busy, run_state=training_run_state(ti)
        )
        if hold["note"]:  # every look clears the task's XComs: each says it again
            print(hold["note"])
            ti.xcom_push(key=NOTE_KEY, value=hold["note"])
        return PokeReturnValue(is_done=not hold["wait"])

    @task(map_index_template="{{ task.op_kwargs['batch_id'] }}")
    def score_batch(batch_id: str) -> dict:
        """Score one batch with the current champion (skipped while there is none)."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from ctrain import steps
        from ctrain.ingest.batches import UnknownBatch
        from ctrain.monitoring.score import NoChampion

        try:
            return steps.score(batch_id)
        except NoChampion as exc:
            raise AirflowSkipException(str(exc)) from exc
        except UnknownBatch as exc:  # a retry cannot make a wrong id right
            raise AirflowFailException(str(exc)) from exc

    @task(outlets=[PREDICTIONS], trigger_rule="none_failed_min_one_success")
    def publish_predictions(scored: list[dict]) -> dict:
        """Emit the predictions asset for the monitor."""
        done = [s for s in scored if s]
        return {"batches": [s["batch_id"] for s in done], "rows": sum(s["rows"] for s in done)}

    batch_ids = batches_to_score()
    scored = score_batch.expand(batch_id=batch_ids)
    await_verdict(batch_ids) >> scored
    publish_predictions(scored)


ct_batch_inference()
