"""
### ct_ingest: validate landed batches

Every file in the landing folder (`CTRAIN_HOME/landing` or `dataset.landing_dir`) is validated with
Great Expectations. Passing rows go to `accepted/`; failing batches or rows go to
`quarantine/<batch>/` with the GX result and a one-line reason. The input file is moved to
`processed/` only after its outcome is written. When anything was accepted, the task
`publish_accepted` emits the `ctrain_accepted` asset, which starts `ct_batch_inference` (and
`ct_training`, unless `train_on_new_data` is false). Label files in the labels landing
folder are validated first, by `ingest_labels`, which emits `ctrain_labels` for the monitor.

Starts within seconds of a file landing in either folder (watchers in Airflow's triggerer,
`schedules.watch_seconds`), and every 15 minutes (`schedules.ingest`) as a safety net. Each run
lists the folders itself and moves every file out once its outcome is written, so a file is
ingested once however many runs see it.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task
from ctrain_common import (
    ACCEPTED,
    DEFAULT_ARGS,
    INGEST,
    LABELS,
    NOTE_KEY,
    Tell,
    landing_assets,
    settings,
)


def _schedule():
    """On arrival (the landing folders' watchers), and on the cron as a safety net."""
    cron = CronTriggerTimetable(settings().schedules.ingest, timezone="UTC")
    watched = landing_assets()
    if not watched:
        return cron
    batches, labels = watched
    return AssetOrTimeSchedule(timetable=cron, assets=batches | labels)


@dag(
    dag_id=INGEST,
    schedule=_schedule(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["ctrain", "ingest"],
    doc_md=__doc__,
)
def ct_ingest():
    # After the labels, whatever became of them: labels that land with a batch are in the store
    # before the batch is published, so ct_batch_inference can wait for the monitor's verdict.
    @task(trigger_rule="all_done")
    def list_new_batches() -> list[str]:
        """Files waiting in the landing folder; learns the reference profile on first use."""
        from ctrain import steps

        return steps.list_landed()

    @task(map_index_template="{{ task.op_kwargs['path'].rsplit('/', 1)[-1] }}")
    def validate_batch(path: str) -> dict:
        """Validate one file and route it to accepted/ or quarantine/."""
        from ctrain import steps

        return steps.ingest_one(path)

    @task(outlets=[ACCEPTED])
    def publish_accepted(outcomes: list[dict], ti=None) -> dict:
        """Emit the accepted-data asset when any rows were accepted."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowSkipException

        from ctrain import steps

        outcomes = list(outcomes)
        ti.xcom_push(key=NOTE_KEY, value=steps.describe_ingest(outcomes))
        # Batches mostly quarantined are announced (notifications.routes.quarantine).
        Tell("quarantine", outcomes=outcomes)(get_current_context())
        accepted = [o["batch_id"] for o in outcomes if o["rows_accepted"]]
        if not accepted:
            raise AirflowSkipException("no rows accepted in this run: nothing to publish")
        return {
            "accepted_batches": accepted,
            "quarantined": [
                o["batch_id"]
                for o in outcomes
                if o["rows_quarantined"] or o["status"] == "quarantined"
            ],
        }

    @task(outlets=[LABELS])
    def ingest_labels() -> dict:
        """Validate waiting label files (delayed labels) into the label store."""
        from airflow.sdk.exceptions import AirflowSkipException

        from ctrain import steps

        out = steps.ingest_labels()
        accepted = sum(o["rows_accepted"] for o in out)
        if not accepted:
            raise AirflowSkipException(
                f"{len(out)} label file(s), no label accepted: nothing to publish"
            )
        return {"files": [o["source_file"] for o in out], "rows_accepted": accepted}

    paths = list_new_batches()
    ingest_labels() >> paths
    publish_accepted(validate_batch.expand(path=paths))


ct_ingest()
