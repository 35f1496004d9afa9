"""DAG runs through Airflow (``dag.test()``) on fresh stores: the loop end to end, and a broken batch."""

import json
import os
import subprocess
import sys

import pytest
from tests_support import load_dagbag

from ctrain.data.demo_source import DemoSource
from ctrain.promotion.decisions import list_decisions
from ctrain.storage import write_parquet_atomic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    bag = load_dagbag()
    # Airflow 3.3.2's dag.test() fails the successful run of a DAG with a Deadline Alert (its
    # in-memory copy of the DAG holds the alerts where the scheduler holds their ids:
    # apache/airflow#73428). The runs here go without ct_training's deadline; the scheduler's
    # own runs are held to it (test_approval_stream_e2e).
    bag.get_dag("ct_training").deadline = None
    return bag


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
    # No person was asked and nothing was handed to ct_rollout: those gates skipped at run time.
    assert states.pop("approval") == "skipped" and states.pop("start_rollout") == "skipped"
    assert set(states.values()) == {"success"}, states

    mv = client.get_model_version_by_alias(settings.model_name, "champion")
    tags = mv.tags
    assert tags["validation_status"] == "passed"
    assert tags["airflow_dag_id"] == "ct_training" and tags["airflow_run_id"] == run.run_id
    assert tags["trigger_reason"] == "e2e test"
    assert tags["data_content_hash"] and tags["data_window"] and tags["code_version"]
    (record,) = list_decisions(client, settings)
    assert record.decision == "promoted" and record.airflow_run_id == run.run_id

    # The run says what it decided (the plugin's listener), and the promote task logged it.
    assert _note(run) == record.headline and _note(run).startswith("v1 promoted none→1 (")
    # Each task's links, made when it ended, point at what it produced.
    links = _xcoms(run, "_link_MlflowRunLink") | _xcoms(run, "_link_ModelVersionLink")
    assert links[("train", "_link_MlflowRunLink")].endswith(
        f"/runs/{mv.run_id}?workflowType=machine_learning"
    )
    for task in ("register", "compare", "promote"):
        assert links[(task, "_link_ModelVersionLink")].endswith(
            f"/models/{settings.model_name}/versions/{mv.version}"
        )
    assert {t for t, _ in links} == {"train", "evaluate", "register", "compare", "promote"}


def _note(run) -> str | None:
    """The note on ``run``, read from the metadata DB (``dag.test()`` returns a detached run)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.get(DagRun, run.id).note


def _xcoms(run, key) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, key=key, dag_ids=run.dag_id))
        return {(r.task_id, key): XComModel.deserialize_value(r) for r in rows}


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
    # A task that never ran still has a link to follow (never a null in the API).
    links = _xcoms(run, "_link_MlflowRunLink")
    assert links[("train", "_link_MlflowRunLink")].endswith(
        "/#/experiments?workflowType=machine_learning"
    )
    assert _note(run).startswith("skipped: no accepted batches in ")


def test_a_misspelt_conf_key_fails_the_training_run_before_it_trains(
    dagbag, settings, client, ingested
):
    ingested(3)
    run = dagbag.get_dag("ct_training").test(run_conf={"dryrun": True})  # meant: dry_run
    states = _states(run)
    assert str(run.state) == "failed", states
    assert states["run_context"] == "failed" and states["train"] != "success", states
    assert _note(run).startswith("refused: unknown conf keys ['dryrun']; ct_training takes")
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
    ctrain = plugins["ctrain"]
    assert [a["url_prefix"] for a in ctrain["fastapi_apps"]] == ["/ctrain"]
    assert ctrain["external_views"] == [
        {"name": "ctrain", "href": "ctrain/", "destination": "nav", "url_route": "ctrain"}
    ]
    assert "RunNotes" in json.dumps(ctrain["listeners"])
