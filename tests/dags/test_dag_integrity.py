"""Every DAG imports cleanly, wires only, and carries retries, tags and docs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import DAG_FILES, DAGS, load_dagbag

from ctrain import dag_ids

DAG_IDS = [
    "ct_ingest",
    "ct_training",
    "ct_batch_inference",
    "ct_drift_monitor",
    "ct_rollout",
    "ct_deadlines",
    "ct_env_promotion",
]
HEAVY = ("mlflow", "great_expectations", "evidently", "sklearn", "pandas")
# What of ctrain a DAG file may import while it is parsed: the settings (for schedules) and the
# DAG ids, through dags/ctrain_common.py. Nothing that imports a heavy library.
PARSE_TIME_CTRAIN = {"ctrain", "ctrain.settings", "ctrain.dag_ids"}


@pytest.fixture(scope="module")
def dagbag():
    return load_dagbag()


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(DAG_IDS) == set(dag_ids.ALL)
    assert {p.stem for p in DAG_FILES} == set(DAG_IDS)


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
    assert {"window_batches", "dry_run", "force", "reason"} <= set(params.keys())
    assert params["dry_run"] is False and params["force"] is False


def test_ct_training_runs_on_schedule_and_on_accepted_data(dagbag):
    dag = dagbag.dags["ct_training"]
    timetable = dag.timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert [a.name for a in timetable.asset_condition.objects] == ["ctrain_accepted"]
    assert timetable.timetable.expression == "0 3 * * *"
    producer = dagbag.dags["ct_ingest"].get_task("publish_accepted")
    assert [o.name for o in producer.outlets] == ["ctrain_accepted"]


def test_ct_training_has_its_deadline_and_ct_deadlines_looks_every_five_minutes(dagbag):
    """ct_training's bound is an Airflow Deadline Alert from the queued time, whose callback
    is importable where the executor runs it; the other deadlines are ct_deadlines' look."""
    (alert,) = dagbag.dags["ct_training"].deadline
    assert type(alert.reference).__name__ == "DagRunQueuedAtDeadline"
    assert alert.interval.total_seconds() == 120 * 60  # alerts.training_run_minutes
    assert alert.callback.path == "ctrain_common.training_late"
    assert dagbag.dags["ct_deadlines"].timetable.expression == "*/5 * * * *"


def test_parsing_the_dag_files_imports_nothing_heavy():
    """Fast parsing, checked without timing: the heavy libraries stay out of the module top level.
    One fresh interpreter parses the files one after another and looks after each."""
    code = (
        "import importlib.util, json, sys\n"
        f"sys.path.append({str(DAGS)!r})\n"
        "seen = {}\n"
        "for path in sys.argv[1:]:\n"
        "    spec = importlib.util.spec_from_file_location('d', path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"    heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "    ours = sorted(m for m in sys.modules if m == 'ctrain' or m.startswith('ctrain.'))\n"
        "    seen[path.rsplit('/', 1)[-1]] = [heavy, ours]\n"
        "print(json.dumps(seen))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, DAG_FILES)],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(seen) == sorted(p.name for p in DAG_FILES)
    for name, (heavy, ours) in seen.items():
        assert heavy == [], name
        assert set(ours) <= PARSE_TIME_CTRAIN, (name, ours)


def test_dag_files_only_wire(tmp_path):
    for path in DAG_FILES:
        text = Path(path).read_text()
        top = [
            line.split()[1] for line in text.splitlines() if line.startswith(("import ", "from "))
        ]
        # The library comes in inside task bodies; ctrain_common (dags/) is the DAGs' own module.
        assert all(m != "ctrain" and not m.startswith("ctrain.") for m in top), (
            f"{path.name} imports ctrain at the top level"
        )


def test_the_monitor_triggers_training_with_the_reason_under_the_recorded_run_id(dagbag):
    dag = dagbag.dags["ct_drift_monitor"]
    trigger = dag.get_task("trigger_ct_training")
    assert trigger.trigger_dag_id == "ct_training"
    # It does not wait for the run: an approval may take hours, and windows go on arriving.
    assert not trigger.wait_for_completion
    assert "requested_run" in trigger.trigger_run_id and trigger.skip_when_already_exists
    assert "reason" in trigger.conf and "evidence_uri" in trigger.conf
    assert {a.name for a in dag.timetable.asset_condition.objects} == {
        "ctrain_predictions",
        "ctrain_labels",
    }


def test_inference_runs_on_accepted_data(dagbag):
    dag = dagbag.dags["ct_batch_inference"]
    assert {a.name for a in dag.timetable.asset_condition.objects} == {"ctrain_accepted"}
    assert [o.name for o in dag.get_task("publish_predictions").outlets] == ["ctrain_predictions"]


@pytest.fixture
def parse_under(monkeypatch):
    """The DAGs as the DAG processor parses them under ``CTRAIN_*`` variables: ctrain_common
    reads the settings once per process, so its cache is emptied before and after."""
    monkeypatch.syspath_prepend(str(DAGS))
    import ctrain_common

    def parse(**env):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        ctrain_common.settings.cache_clear()
        bag = load_dagbag()
        assert bag.import_errors == {}
        return bag

    yield parse
    monkeypatch.undo()
    ctrain_common.settings.cache_clear()


def test_schedules_and_the_new_data_trigger_come_from_the_settings(parse_under):
    bag = parse_under(
        CTRAIN_SCHEDULES__TRAINING="0 5 * * 1",
        CTRAIN_SCHEDULES__INGEST="*/5 * * * *",
        CTRAIN_SCHEDULES__MONITORING="30 * * * *",
        CTRAIN_TRAIN_ON_NEW_DATA="false",
    )
    tt = {d: bag.dags[d].timetable for d in ("ct_ingest", "ct_training", "ct_drift_monitor")}
    assert [type(tt["ct_training"]).__name__, tt["ct_training"].expression] == [
        "CronTriggerTimetable",
        "0 5 * * 1",
    ]
    assert tt["ct_ingest"].timetable.expression == "*/5 * * * *"
    assert tt["ct_drift_monitor"].timetable.expression == "30 * * * *"


@pytest.mark.parametrize(
    ("on_data", "expected"),
    [
        ("true", ("AssetTriggeredTimetable", ["ctrain_accepted"])),
        ("false", ("NullTimetable", None)),
    ],
)
def test_training_without_a_cron_runs_only_on_new_data_or_when_asked(
    parse_under, on_data, expected
):
    # schedules.training: none leaves the daily cron out (the demo and the tests drive it).
    bag = parse_under(CTRAIN_SCHEDULES__TRAINING="none", CTRAIN_TRAIN_ON_NEW_DATA=on_data)
    t = bag.dags["ct_training"].timetable
    condition = getattr(t, "asset_condition", None)
    assets = sorted(a.name for a in condition.objects) if condition else None
    assert (type(t).__name__, assets) == expected


def _graph(dag) -> dict:
    """What a person sees of a DAG in the UI: its tasks, their kinds, edges and trigger rules."""
    return {
        t.task_id: (type(t).__name__, sorted(t.upstream_task_ids), str(t.trigger_rule))
        for t in dag.tasks
    }


def test_every_dag_has_the_same_graph_under_every_setting(parse_under):
    """Gates decide when a run reaches them (skip, short-circuit), never when the file is parsed:
    the approval task and the hand-over to ct_rollout are always there."""
    default = {d: _graph(dag) for d, dag in parse_under().dags.items()}
    training = default["ct_training"]
    assert {"approval_gate", "approval", "promote", "handed_to_rollout", "start_rollout"} <= set(
        training
    )
    assert training["approval"][0] == "ApprovalRequest"
    assert training["promote"][1] == [
        "approval",
        "approval_gate",
        "assemble_window",
        "predeploy",
        "run_context",
    ]
    assert training["predeploy"][1] == ["assemble_window", "compare"]
    assert training["start_rollout"][1] == ["handed_to_rollout"]
    variants = [
        {"CTRAIN_PROMOTION__APPROVAL": "required"},
        {"CTRAIN_SERVING__ROLLOUT__STRATEGY": "canary"},
        {
            "CTRAIN_PROMOTION__APPROVAL": "required",
            "CTRAIN_PROMOTION__APPROVAL_TIMEOUT_MINUTES": "5",
            "CTRAIN_SERVING__ROLLOUT__STRATEGY": "ab",
            "CTRAIN_SCHEDULES__WATCH_SECONDS": "0",
            "CTRAIN_TRAIN_ON_NEW_DATA": "false",
            "CTRAIN_DATASET__LABELS": "delayed",
        },
    ]
    for env in variants:
        assert {d: _graph(dag) for d, dag in parse_under(**env).dags.items()} == default, env


def test_links_sit_only_on_the_tasks_they_belong_to(dagbag):
    links = {
        (dag_id, t.task_id): sorted(link.name for link in t.operator_extra_links)
        for dag_id, dag in dagbag.dags.items()
        for t in dag.tasks
        if t.operator_extra_links
    }
    assert links == {
        ("ct_training", "train"): ["MLflow run"],
        ("ct_training", "evaluate"): ["MLflow run"],
        ("ct_training", "register"): ["Model version"],
        ("ct_training", "compare"): ["Model version"],
        ("ct_training", "promote"): ["Model version"],
        ("ct_training", "start_rollout"): ["Triggered DAG"],  # Airflow's own
        ("ct_drift_monitor", "trigger_ct_training"): ["Triggered DAG"],  # Airflow's own
    }


@pytest.mark.parametrize("bad", ["../accepted/batch_0002", "/etc/passwd", "a/b", ".hidden"])
def test_the_rescore_form_refuses_a_batch_id_that_ingest_would_not_make(dagbag, bad):
    from airflow.sdk.exceptions import ParamValidationError

    param = dagbag.dags["ct_batch_inference"].params.get_param("batch_id")
    with pytest.raises(ParamValidationError):
        param.resolve(bad)
    assert param.resolve("batch_0002") == "batch_0002"
    assert param.resolve("export_2024-01-1a2b3c4d") == "export_2024-01-1a2b3c4d"
    assert param.resolve("") == ""
