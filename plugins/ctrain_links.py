"""Airflow plugin: links from ct_training tasks to their evidence in MLflow.

On the task-instance page of ``ct_training`` tasks, "MLflow run" opens the training run (params,
metrics, evaluation plots, model) and "Model version" opens the registered version with its tags
and aliases. The links are read from the task's own XCom (run id, experiment id, version), so they
point at exactly what that task produced. The MLflow UI address comes from ``CTRAIN_MLFLOW_UI_URL``.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

DAG_ID = "ct_training"
RUN_TASKS = ("train", "evaluate")
VERSION_TASKS = ("register", "compare", "promote")


def _mlflow_ui() -> str:
    return os.environ.get("CTRAIN_MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")


def _task_return_value(ti_key) -> dict | None:
    """The return value a finished task instance pushed to XCom, read from the metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=ti_key.run_id,
            key="return_value",
            dag_ids=ti_key.dag_id,
            task_ids=ti_key.task_id,
            map_indexes=ti_key.map_index,
        )
        row = session.scalars(query.limit(1)).first()
        value = XComModel.deserialize_value(row) if row is not None else None
    return value if isinstance(value, dict) else None


def mlflow_run_url(value: dict) -> str:
    return f"{_mlflow_ui()}/#/experiments/{value['experiment_id']}/runs/{value['mlflow_run_id']}"


def model_version_url(value: dict) -> str:
    name = value.get("model_name")
    version = value.get("version") or value.get("challenger_version")
    return f"{_mlflow_ui()}/#/models/{quote(name, safe='')}/versions/{version}"


class MlflowRunLink(BaseOperatorLink):
    """The MLflow training run behind a ct_training task."""

    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.dag_id != DAG_ID or ti_key.task_id not in RUN_TASKS:
            return ""
        value = _task_return_value(ti_key)
        return mlflow_run_url(value) if value and "mlflow_run_id" in value else ""


class ModelVersionLink(BaseOperatorLink):
    """The registered model version a ct_training task worked on."""

    name = "Model version"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.dag_id != DAG_ID or ti_key.task_id not in VERSION_TASKS:
            return ""
        value = _task_return_value(ti_key)
        if not value or not value.get("model_name"):
            return ""
        return model_version_url(value)


class CtrainPlugin(AirflowPlugin):
    name = "ctrain"
    global_operator_extra_links = [MlflowRunLink(), ModelVersionLink()]
