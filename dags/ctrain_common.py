"""What the ctrain DAGs share: their ids, the assets between them, default args and schedules.

Not a DAG file (``.airflowignore`` keeps the DAG processor from parsing it as one). Imported while
DAG files are parsed, so it stays light: Airflow's SDK, the DAG ids, and the project's settings
(``ctrain.settings`` reads one YAML file; no heavy library is imported).
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from airflow.sdk import Asset

from ctrain import dag_ids
from ctrain.settings import Settings, load_settings

INGEST = dag_ids.INGEST
TRAINING = dag_ids.TRAINING
BATCH_INFERENCE = dag_ids.BATCH_INFERENCE
DRIFT_MONITOR = dag_ids.DRIFT_MONITOR

# ct_ingest -> ct_batch_inference (and ct_training, when settings.train_on_new_data)
ACCEPTED = Asset(name="ctrain_accepted", uri="file:///ctrain/accepted")
# ct_ingest -> ct_drift_monitor
LABELS = Asset(name="ctrain_labels", uri="file:///ctrain/labels")
# ct_batch_inference -> ct_drift_monitor
PREDICTIONS = Asset(name="ctrain_predictions", uri="file:///ctrain/predictions")

DEFAULT_ARGS = {"owner": "ctrain", "retries": 2, "retry_delay": timedelta(seconds=20)}


@cache
def settings() -> Settings:
    """The project's settings (``CTRAIN_PROJECT`` and ``CTRAIN_*``), read once per process."""
    return load_settings()
