"""The training and promotion verbs on a real temporary MLflow store (SQLite) with real data."""

import json

import pytest
from tests_support import WEAK, trained_champion

from ctrain import steps
from ctrain.promotion.decisions import list_decisions, serving_history
from ctrain.promotion.promote import PromotionRefused, manual_promote, rollback
from ctrain.records import RunContext
from ctrain.registry import CHALLENGER, CHAMPION, aliased_version, current_champion
from ctrain.training.assemble import NoTrainingData, assemble_window
from ctrain.training.validate_set import TrainingSetInvalid, validate_training_set

TAGS = (
    "validation_status",
    "data_window",
    "data_content_hash",
    "code_version",
    "airflow_dag_id",
    "airflow_run_id",
    "trigger_reason",
)


def test_first_run_makes_a_tagged_champion_and_one_record(settings, client, ingested):
    ingested(3)
    rec = steps.run_training(
        RunContext(dag_id="test", run_id="r1", trigger_reason="first"), settings=settings
    )
    assert rec["decision"] == "promoted" and rec["rule"] == "first_champion"
    mv = client.get_model_version_by_alias(settings.model_name, CHAMPION)
    assert (
        str(mv.version) == "1"
        and str(client.get_model_version_by_alias(settings.model_name, CHALLENGER).version) == "1"
    )
    for tag in TAGS:
        assert mv.tags[tag], tag
    assert mv.tags["validation_status"] == "passed"
    assert mv.tags["airflow_run_id"] == "r1" and mv.tags["trigger_reason"] == "first"
    run = client.get_run(mv.run_id)
    assert run.data.params["best_candidate"] in ("logistic_regression", "hist_gradient_boosting")
    assert "holdout_roc_auc" in run.data.metrics and "cv_best" in run.data.metrics
    (record,) = list_decisions(client, settings)
    assert record.decision == "promoted" and record.trigger_reason == "first"
    assert record.airflow_run_id == "r1" and record.champion_after == "1"
    arts = {a.path for a in client.list_artifacts(record.record_run_id)}
    # A move is written ahead of itself (intent.json), so a crash mid-move can be completed.
    assert arts == {"decision.json", "model_card.md", "intent.json", "evidence"}
    # MLflow tells the story: the record is named by its headline, described by its model card,
    # and the new champion's description is that card with a link to the record.
    run = client.get_run(record.record_run_id)
    assert run.info.run_name.startswith("v1 promoted none→1 (first_champion): roc_auc 0.")
    assert run.info.run_name == record.headline == rec["headline"]
    card = run.data.tags["mlflow.note.content"]
    assert (
        card.startswith(f"# {settings.model_name}: v1 promoted none→1") and "floor roc_auc" in card
    )
    description = client.get_model_version(settings.model_name, "1").description
    assert description.startswith(card) and record.record_run_id in description
    assert "workflowType=machine_learning" in description
    (evidence,) = client.list_artifacts(record.record_run_id, "evidence")
    assert evidence.path == "evidence/comparison-v1-vs-none.json"
    assert record.comparison_uri.endswith("/evidence/comparison-v1-vs-none.json")
    kind = client.get_experiment_by_name(settings.decisions_experiment).tags
    assert kind["mlflow.experimentKind"] == "custom_model_development"


def test_a_worse_challenger_is_rejected_and_the_champion_stays(make_settings, ingested):
    settings = make_settings()
    trained_champion(settings, "good")
    weak = make_settings(training={"candidates": WEAK}, promotion={"floors": {"roc_auc": 0.5}})
    ingested(1, start=3)
    rec = steps.run_training(RunContext(run_id="weak", trigger_reason="worse"), settings=weak)
    assert rec["decision"] == "rejected" and rec["rule"] == "not_significant"
    from ctrain.tracking import configure

    client = configure(weak)
    assert current_champion(client, weak.model_name) == "1"
    assert str(client.get_model_version_by_alias(weak.model_name, CHALLENGER).version) == "2"
    assert [d.decision for d in list_decisions(client, weak)] == ["rejected", "promoted"]


def test_a_better_challenger_is_promoted(make_settings, ingested):
    weak = make_settings(training={"candidates": WEAK}, promotion={"floors": {"roc_auc": 0.5}})
    ingested(3)
    steps.run_training(RunContext(run_id="weak"), settings=weak)
    good = make_settings(promotion={"floors": {"roc_auc": 0.5}})
    rec = steps.run_training(RunContext(run_id="good", trigger_reason="better"), settings=good)
    assert rec["decision"] == "promoted" and rec["rule"] == "significant_improvement"
    assert rec["champion_before"] == "1" and rec["champion_after"] == "2"


def test_a_model_below_the_floor_never_becomes_the_first_champion(make_settings, client, ingested):
    settings = make_settings(training={"candidates": WEAK}, promotion={"floors": {"roc_auc": 0.95}})
    ingested(3)
    rec = steps.run_training(RunContext(), settings=settings)
    assert rec["decision"] == "rejected" and rec["rule"] == "floor"
    assert current_champion(client, settings.model_name) is None
    # It failed a gate, so it does not stand as the challenger either.
    assert aliased_version(client, settings.model_name, CHALLENGER) is None
    assert rec["headline"].startswith("v1 rejected (floor): roc_auc 0.")


def test_a_window_trained_before_is_skipped_unless_forced(settings, client, ingested):
    first = trained_champion(settings, "first")
    again = steps.run_training(RunContext(run_id="again"), settings=settings)
    assert again["decision"] == "skipped" and again["rule"] == "identical_window"
    assert again["challenger_version"] == first["champion_after"] == "1"
    assert "no new version" in again["reason"] and again["headline"].startswith("skipped (")
    assert [str(v.version) for v in client.search_model_versions()] == ["1"]
    forced = steps.run_training(RunContext(run_id="forced", force=True), settings=settings)
    assert forced["challenger_version"] == "2" and forced["rule"] == "forced"
    # New data makes a new window: trained, not skipped.
    ingested(1, start=3)
    fresh = steps.run_training(RunContext(run_id="fresh"), settings=settings)
    assert fresh["decision"] != "skipped" and fresh["challenger_version"] == "3"
    kinds = [d.decision for d in list_decisions(client, settings)]
    assert kinds.count("skipped") == 1


def test_dry_run_records_but_does_not_move(settings, client, ingested):
    ingested(3)
    rec = steps.run_training(RunContext(dry_run=True), settings=settings)
    assert rec["decision"] == "dry_run" and "would promote" in rec["reason"]
    assert current_champion(client, settings.model_name) is None


def test_retrying_promote_writes_no_second_record(settings, client, ingested):
    ingested(3)
    ctx = RunContext(run_id="retry")
    c = ctx.to_xcom()
    dataset = steps.assemble(c, settings)
    trained = steps.train(dataset, c, settings)
    assert (
        steps.train(dataset, c, settings)["mlflow_run_id"] == trained["mlflow_run_id"]
    )  # retry reuses
    evaluation = steps.evaluate(trained, dataset, settings)
    validation = steps.validate_set(dataset, settings)
    chal = steps.register(trained, dataset, validation, evaluation, c, settings)
    again = steps.register(trained, dataset, validation, evaluation, c, settings)
    assert again["version"] == chal["version"]
    comparison = steps.compare(chal, dataset, c, settings)
    first = steps.promote(comparison, c, settings)
    second = steps.promote(comparison, c, settings)
    assert first["record_run_id"] == second["record_run_id"]
    assert len(list_decisions(client, settings)) == 1


def test_manual_promote_and_rollback_are_recorded(two_versions, client):
    settings = two_versions  # v2 lost its comparison: it stays challenger
    rec = manual_promote(settings, "2", RunContext(trigger_reason="on-call says so"), client)
    assert (
        rec.decision == "manual_promote"
        and rec.champion_before == "1"
        and rec.champion_after == "2"
    )
    back = rollback(settings, RunContext(trigger_reason="v2 misbehaves"), client)
    assert back.decision == "rollback" and back.champion_after == "1"
    assert current_champion(client, settings.model_name) == "1"
    assert [h["version"] for h in serving_history(client, settings)] == ["1", "2", "1"]


def test_manual_promote_refuses_a_version_that_failed_validation(settings, client):
    trained_champion(settings)
    client.set_model_version_tag(settings.model_name, "1", "validation_status", "failed")
    with pytest.raises(PromotionRefused, match="validation_status='failed'"):
        manual_promote(settings, "1", RunContext(), client)


def test_no_accepted_data_means_nothing_to_train(settings):
    with pytest.raises(NoTrainingData, match="ingest data first"):
        assemble_window(settings)


def test_training_set_with_one_class_is_invalid(settings, ingested):
    ingested(1)
    import pandas as pd

    path = settings.accepted_dir / "batch_0000.parquet"
    pd.read_parquet(path).assign(label=0.0).to_parquet(path)
    dataset = assemble_window(settings)
    with pytest.raises(TrainingSetInvalid, match="expect_column_distinct_values_to_contain_set"):
        validate_training_set(settings, dataset)


def test_the_monitors_planned_follow_up_needs_only_to_be_non_inferior(two_versions, client):
    from ctrain.monitoring.trigger import GROWN, planned_follow_up, record_request, requested_run_id
    from ctrain.records import RetrainVerdict
    from ctrain.registry import training_window, version_uri

    settings = two_versions  # v2, a weak stump, lost to v1 as significantly worse
    reason = f"{GROWN}: v1 learned from 1 labeled batch from batch_0001 on, 3 have matured since"
    request = RetrainVerdict(
        trigger=True,
        champion_version="1",
        windows=("batch_0002",),
        flagged_windows=("batch_0001", "batch_0002"),
        reason=reason,
        suppressed_by=None,
        decided_at="2026-03-01T00:00:00+00:00",
        requested_run=requested_run_id("monitor/1"),
    )
    record_request(settings, request, "monitor/1", [])
    assert planned_follow_up(settings, "retrain__1").reason == reason
    assert planned_follow_up(settings, "retrain__other") is None
    name = settings.model_name
    folder = training_window(client, name, "2", settings.datasets_dir)
    dataset = json.loads((folder / "meta.json").read_text())
    challenger = {"model_name": name, "version": "2", "model_uri": version_uri(name, "2")}

    def compared(run_id):
        ctx = RunContext(run_id=run_id).to_xcom()
        return steps.compare(challenger, dataset, ctx, settings)

    usual, follow_up = compared("retrain__other"), compared("retrain__1")
    assert usual["rule"] == "not_significant" and "planned follow-up" not in usual["reason"]
    # The same figures; on the follow-up, a stump far worse than v1 is still refused.
    assert follow_up["diff"] == usual["diff"] < -0.02
    assert follow_up["rule"] == "inferior" and follow_up["action"] == "reject"
    assert (
        f"(the planned follow-up: {reason}) may be worse than the champion by more than "
        in (follow_up["reason"])
    )
