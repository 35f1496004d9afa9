"""
### ct_ingest: validate landed batches

Every file in the landing folder (`CTRAIN_HOME/landing` or `dataset.landing_dir`) is validated with
Great Expectations. Passing rows go to `accepted/`; failing batches or rows go to
`quarantine/<batch>/` with the GX result and a one-line reason. The input file is moved to
`processed/` only after its outcome is written. When anything was accepted, the task
`publish_accepted` emits the `ctrain_accepted` asset, which starts `ct_batch_inference` (and
`ct_training`, unless `train_on_new_data` is false). Runs every 15 minutes (`schedules.ingest`). Label files arriving later in the labels
landing folder are validated by `ingest_labels`, which emits `ctrain_labels` for the monitor.
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, dag, task
from ctrain_common import ACCEPTED, DEFAULT_ARGS, INGEST, LABELS, NOTE_KEY, settings


@dag(
    dag_id=INGEST,
    schedule=CronTriggerTimetable(settings().schedules.ingest, timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["ctrain", "ingest"],
    doc_md=__doc__,
)
def ct_ingest():
    @task
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
        from airflow.sdk.exceptions import AirflowSkipException

        from ctrain import steps

        outcomes = list(outcomes)
        ti.xcom_push(key=NOTE_KEY, value=steps.describe_ingest(outcomes))
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

    publish_accepted(validate_batch.expand(path=list_new_batches()))
    ingest_labels()


ct_ingest()
