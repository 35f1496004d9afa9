"""Airflow plugin: links from ct_training tasks to their evidence in MLflow.

On the task-instance page of ``ct_training`` tasks, "MLflow run" opens the training run (params,
metrics, evaluation plots, model) and "Model version" opens the registered version with its tags
and aliases. The links are read from the task's own XCom (run id, experiment id, version), so they
point at exactly what that task produced. The MLflow UI address is the setting ``mlflow_ui_url``
(``CTRAIN_MLFLOW_UI_URL``).

The DAG id comes from ``ctrain.dag_ids`` rather than from ``dags/ctrain_common.py``: Airflow's
API server, where plugins run, does not have the DAGs folder on its import path.
"""

from __future__ import annotations

from functools import cache
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from ctrain.dag_ids import TRAINING

# ct_training's tasks whose XCom names an MLflow run, and those that name a model version.
RUN_TASKS = ("train", "evaluate")
VERSION_TASKS = ("register", "compare", "promote")


@cache
def _mlflow_ui() -> str:
    from ctrain.settings import load_settings

    return load_settings().mlflow_ui_url.rstrip("/")


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
        if ti_key.dag_id != TRAINING or ti_key.task_id not in RUN_TASKS:
            return ""
        value = _task_return_value(ti_key)
        return mlflow_run_url(value) if value and "mlflow_run_id" in value else ""


class ModelVersionLink(BaseOperatorLink):
    """The registered model version a ct_training task worked on."""

    name = "Model version"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.dag_id != TRAINING or ti_key.task_id not in VERSION_TASKS:
            return ""
        value = _task_return_value(ti_key)
        if not value or not value.get("model_name"):
            return ""
        return model_version_url(value)


class CtrainPlugin(AirflowPlugin):
    name = "ctrain"
    global_operator_extra_links = [MlflowRunLink(), ModelVersionLink()]
