"""DAG runs through Airflow (``dag.test()``) on fresh stores: the loop end to end, and a broken batch."""

import json
import os
import subprocess
import sys

import pytest
from tests_support import REPO, load_dagbag

from ctrain.data.demo_source import DemoSource
from ctrain.promotion.decisions import list_decisions
from ctrain.storage import write_parquet_atomic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    return load_dagbag()


def _states(dagrun):
    return {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}


def test_ct_training_end_to_end_makes_a_tagged_champion_with_one_record(dagbag, settings, client):
    src = DemoSource(**settings.demo.model_dump())
    for i in range(3):
        src.write_batch(i, settings.landing_dir)
    ingest_run = dagbag.get_dag("ct_ingest").test()
    assert str(ingest_run.state) == "success", _states(ingest_run)
    assert len(list(settings.accepted_dir.glob("*.parquet"))) == 3

    run = dagbag.get_dag("ct_training").test(run_conf={"reason": "e2e test"})
    states = _states(run)
    assert str(run.state) == "success", states
    assert set(states.values()) == {"success"}

    mv = client.get_model_version_by_alias(settings.model_name, "champion")
    tags = mv.tags
    assert tags["validation_status"] == "passed"
    assert tags["airflow_dag_id"] == "ct_training" and tags["airflow_run_id"] == run.run_id
    assert tags["trigger_reason"] == "e2e test"
    assert tags["data_content_hash"] and tags["data_window"] and tags["code_version"]
    (record,) = list_decisions(client, settings)
    assert record.decision == "promoted" and record.airflow_run_id == run.run_id

    # The plugin's links point at what the tasks produced.
    from airflow.models.taskinstancekey import TaskInstanceKey

    sys.path.insert(0, str(REPO / "plugins"))
    from ctrain_links import MlflowRunLink, ModelVersionLink

    train_key = TaskInstanceKey("ct_training", "train", run.run_id, 1, -1)
    url = MlflowRunLink().get_link(None, ti_key=train_key)
    assert (
        url.endswith(f"/runs/{mv.run_id}") and client.get_run(mv.run_id).info.status == "FINISHED"
    )
    register_key = TaskInstanceKey("ct_training", "register", run.run_id, 1, -1)
    assert (
        ModelVersionLink()
        .get_link(None, ti_key=register_key)
        .endswith(f"/models/{settings.model_name}/versions/{mv.version}")
    )
    assert MlflowRunLink().get_link(None, ti_key=register_key) == ""


def test_a_broken_batch_is_quarantined_and_nothing_is_trained(dagbag, settings, client):
    src = DemoSource(**settings.demo.model_dump())
    write_parquet_atomic(
        settings.landing_dir / "batch_0000.parquet", src.batch(0).drop(columns=["label"])
    )
    ingest_run = dagbag.get_dag("ct_ingest").test()
    states = _states(ingest_run)
    assert states["validate_batch"] == "success" and states["publish_accepted"] == "skipped"
    reason = (settings.quarantine_dir / "batch_0000" / "reason.txt").read_text()
    assert (
        reason.strip()
        == "batch batch_0000: expect_column_to_exist failed on column 'label': the column is missing"
    )

    run = dagbag.get_dag("ct_training").test()
    states = _states(run)
    assert (
        states["assemble_window"] == "skipped"
        and states["train"] == "skipped"
        and states["promote"] == "skipped"
    )
    assert client.search_registered_models() == []
    exp = client.get_experiment_by_name(settings.experiment)
    assert exp is None or client.search_runs([exp.experiment_id]) == []
    assert list_decisions(client, settings) == []


def test_a_misspelt_conf_key_fails_the_training_run_before_it_trains(
    dagbag, settings, client, ingested
):
    ingested(3)
    run = dagbag.get_dag("ct_training").test(run_conf={"dryrun": True})  # meant: dry_run
    states = _states(run)
    assert str(run.state) == "failed", states
    assert states["run_context"] == "failed" and states["train"] != "success", states
    assert client.search_registered_models() == []  # nothing trained, nothing registered
    assert list_decisions(client, settings) == []


def test_airflow_loads_the_plugin_and_its_links():
    out = subprocess.run(
        [str(os.path.join(os.path.dirname(sys.executable), "airflow")), "plugins", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert "ctrain" in plugins
    links = json.dumps(plugins["ctrain"])
    assert "MlflowRunLink" in links and "ModelVersionLink" in links
