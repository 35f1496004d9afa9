"""Every DAG imports cleanly, wires only, and carries retries, tags and docs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import REPO

DAG_FILES = sorted((REPO / "dags").glob("*.py"))
DAG_IDS = ["ct_ingest", "ct_training", "ct_batch_inference", "ct_drift_monitor"]
HEAVY = ("mlflow", "great_expectations", "evidently", "sklearn", "pandas", "ctrain")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(DAG_IDS)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_policy(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert "ctrain" in dag.tags
    assert dag.doc_md and len(dag.doc_md) > 100
    assert dag.max_active_runs == 1
    assert not dag.catchup
    for task in dag.tasks:
        assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
        assert task.doc_md or task.doc or task.task_id, task


def test_ct_training_has_the_manual_trigger_form(dagbag):
    params = dagbag.dags["ct_training"].params
    assert {"window", "dry_run", "force", "reason"} <= set(params.keys())
    assert params["dry_run"] is False and params["force"] is False


def test_ct_training_runs_on_schedule_and_on_accepted_data(dagbag):
    dag = dagbag.dags["ct_training"]
    timetable = dag.timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert [a.name for a in timetable.asset_condition.objects] == ["ctrain_accepted"]
    assert timetable.timetable.expression == "0 3 * * *"
    producer = dagbag.dags["ct_ingest"].get_task("publish_accepted")
    assert [o.name for o in producer.outlets] == ["ctrain_accepted"]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parsing_a_dag_file_imports_nothing_heavy(path):
    """Fast parsing, checked without timing: the heavy libraries stay out of the module top level."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_dag_files_only_wire(tmp_path):
    for path in DAG_FILES:
        text = Path(path).read_text()
        top = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
        assert all("ctrain" not in line for line in top), (
            f"{path.name} imports ctrain at the top level"
        )


def test_the_monitor_triggers_training_deferrably_with_the_reason(dagbag):
    dag = dagbag.dags["ct_drift_monitor"]
    trigger = dag.get_task("trigger_ct_training")
    assert trigger.trigger_dag_id == "ct_training"
    assert trigger.deferrable and trigger.wait_for_completion
    assert "reason" in trigger.conf and "evidence_uri" in trigger.conf
    assert {a.name for a in dag.timetable.asset_condition.objects} == {
        "ctrain_predictions",
        "ctrain_labels",
    }


def test_inference_runs_on_accepted_data(dagbag):
    dag = dagbag.dags["ct_batch_inference"]
    assert {a.name for a in dag.timetable.asset_condition.objects} == {"ctrain_accepted"}
    assert [o.name for o in dag.get_task("publish_predictions").outlets] == ["ctrain_predictions"]
