"""The approval gate's verbs on a real MLflow store: what the approver reads, and each answer."""

import pytest
from tests_support import WEAK, from_template, ingest_batches

from ctrain import steps
from ctrain.promotion.approval import answer_of, needs_approval
from ctrain.promotion.decisions import list_decisions
from ctrain.promotion.promote import manual_promote
from ctrain.records import Comparison, RunContext
from ctrain.registry import current_champion


@pytest.fixture
def waiting(make_settings, client):
    """A weak champion v1 and a better v2 whose comparison proposes promotion, under
    ``approval: required``: what ct_training holds when it asks a person."""
    weak = make_settings(training={"candidates": WEAK}, promotion={"floors": {"roc_auc": 0.5}})
    settings = make_settings(
        promotion={"floors": {"roc_auc": 0.5}, "approval": "required", "slice_columns": ["region"]}
    )
    ctx = RunContext(run_id="good", trigger_reason="drift seen", started_by="ct_drift_monitor")
    c = ctx.to_xcom()

    def build(home):
        stump, s = (x.model_copy(update={"home": home}) for x in (weak, settings))
        ingest_batches(s, 3)
        steps.run_training(RunContext(run_id="weak"), settings=stump)
        dataset = steps.assemble(c, s)
        validation = steps.validate_set(dataset, s)
        trained = steps.train(dataset, c, s)
        evaluation = steps.evaluate(trained, dataset, s)
        challenger = steps.register(trained, dataset, validation, evaluation, c, s)
        return dataset, steps.compare(challenger, dataset, c, s)

    dataset, comparison = from_template(settings, ("waiting", weak.training.model_dump()), build)
    assert comparison["action"] == "promote" and comparison["champion_seen"] == "1"
    return settings, c, dataset, comparison


def _outcome(option, user="alice", comment=""):
    """A human-in-the-loop task's result, as Airflow 3.3 returns it."""
    by = {"id": user, "name": user} if user else None
    return {
        "chosen_options": [option],
        "params_input": {"comment": comment},
        "responded_at": "2026-11-26T00:00:00+00:00",
        "responded_by_user": by,
    }


def test_approval_is_asked_only_for_a_move_and_only_when_required(waiting, make_settings):
    settings, ctx, _, comparison = waiting
    c, run = Comparison.from_xcom(comparison), RunContext.from_xcom(ctx)
    assert needs_approval(settings, c, run)
    auto = make_settings(promotion={"floors": {"roc_auc": 0.5}})
    assert not needs_approval(auto, c, run)
    rejecting = Comparison.from_xcom(comparison | {"action": "reject"})
    assert not needs_approval(settings, rejecting, run)
    assert not needs_approval(settings, c, RunContext.from_xcom(ctx | {"dry_run": True}))


def test_the_request_shows_the_interval_the_gates_the_slices_and_the_trigger(waiting):
    settings, ctx, _, comparison = waiting
    asked = steps.approval_request(comparison, ctx, settings)
    assert asked["subject"] == (
        f"Promote {settings.model_name} v2 over v1? (significant_improvement)"
    )
    body = asked["body"]
    c = comparison
    assert f"difference {c['diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] at 95%" in body
    assert "floor roc_auc" in body and "slice region=" in body
    assert "trigger: drift seen (started by ct_drift_monitor)" in body
    assert "/#/models/" in body and "/versions/2" in body
    assert "): met" in body and f"on {c['holdout_rows']} held-out rows" in body


def test_the_request_against_a_condemned_champion_shows_both_figures(waiting):
    settings, ctx, _, comparison = waiting
    all_rows = {"diff": 0.0123, "ci_low": -0.004, "ci_high": 0.03, "rows": 750}
    condemned = comparison | {
        "condemned_windows": ["batch_0002"],
        "condemned_rows": 375,
        "all_rows": all_rows,
    }
    body = steps.approval_request(condemned, ctx, settings)["body"]
    assert (
        "on the 375 held-out rows of batch_0002, where v1 failed decisively (on all "
        f"{comparison['holdout_rows']}: +0.0123 [-0.0040, +0.0300])"
    ) in body


def test_approved_promotes_with_the_approver_on_record(waiting, client):
    settings, ctx, dataset, comparison = waiting
    out = steps.promote_after_approval(
        comparison, ctx, dataset, _outcome("Approve", "alice", "looks right"), settings
    )
    assert out["decision"] == "promoted" and out["champion_after"] == "2"
    assert out["approver"] == "alice" and out["approval_comment"] == "looks right"
    assert out["headline"].endswith("; approved by alice")
    (record,) = [d for d in list_decisions(client, settings) if d.airflow_run_id == "good"]
    assert record.approver == "alice" and record.record_run_id == out["record_run_id"]
    assert current_champion(client, settings.model_name) == "2"


def test_the_person_who_started_the_run_cannot_approve_it(waiting, client):
    settings, ctx, dataset, comparison = waiting
    # dave triggered the run from the UI (Airflow's triggering user), then approves it himself.
    mine = ctx | {"started_by": "dave", "requested_by": "dave"}
    out = steps.promote_after_approval(
        comparison, mine, dataset, _outcome("Approve", "dave", "mine, fine"), settings
    )
    assert out["decision"] == "rejected" and out["rule"] == "self_approval"
    assert out["reason"].startswith("approved by dave, who started this run")
    assert out["approver"] == "dave" and current_champion(client, settings.model_name) == "1"
    (record,) = [d for d in list_decisions(client, settings) if d.airflow_run_id == "good"]
    assert record.rule == "self_approval" and not record.moved


def test_rejected_is_recorded_with_the_name_and_the_comment(waiting, client):
    settings, ctx, dataset, comparison = waiting
    out = steps.promote_after_approval(
        comparison, ctx, dataset, _outcome("Reject", "bob", "not before the audit"), settings
    )
    assert out["decision"] == "rejected" and out["rule"] == "approval_rejected"
    assert out["reason"].startswith("rejected by bob: not before the audit")
    assert out["approver"] == "bob" and current_champion(client, settings.model_name) == "1"
    assert len([d for d in list_decisions(client, settings) if d.airflow_run_id == "good"]) == 1


@pytest.mark.parametrize("outcome", [None, _outcome("Reject", user=None)])
def test_no_answer_in_time_is_recorded_as_expired(waiting, client, outcome):
    settings, ctx, dataset, comparison = waiting
    out = steps.promote_after_approval(comparison, ctx, dataset, outcome, settings)
    assert out["decision"] == "expired" and out["rule"] == "approval_expired"
    assert out["approver"] is None and "no answer within 1440 minutes" in out["reason"]
    assert current_champion(client, settings.model_name) == "1"


def test_approved_after_the_champion_moved_is_compared_again_not_forced(waiting, client):
    settings, ctx, dataset, comparison = waiting
    # While the request waited, someone made v2 itself champion by hand: v2 is then compared
    # with the champion of the moment (itself), and nothing is forced over a moved champion.
    manual_promote(settings, "2", RunContext(started_by="carol"), client)
    assert answer_of(_outcome("Approve")).outcome == "approved"
    out = steps.promote_after_approval(comparison, ctx, dataset, _outcome("Approve"), settings)
    assert out["decision"] == "rejected" and out["champion_before"] == "2"
    assert "the champion moved to v2 meanwhile; compared again" in out["reason"]
    assert out["approver"] == "alice"


def test_with_a_rollout_strategy_approval_comes_first_then_the_rollout(
    waiting, make_settings, client
):
    settings, ctx, dataset, comparison = waiting
    canary = make_settings(
        promotion={"floors": {"roc_auc": 0.5}, "approval": "required"},
        serving={"rollout": {"strategy": "canary"}},
    )
    # A rejection ends it there: nothing is handed to a rollout.
    no = steps.promote_after_approval(
        comparison, ctx, dataset, _outcome("Reject", comment="not yet"), canary
    )
    assert no["decision"] == "rejected" and no["rule"] == "approval_rejected"
    # An approval hands the challenger to ct_rollout, with the approver; champion stays.
    again = ctx | {"run_id": "good-2"}
    yes = steps.promote_after_approval(comparison, again, dataset, _outcome("Approve"), canary)
    assert yes["decision"] == "rollout" and yes["approver"] == "alice"
    assert yes["headline"].startswith("v2 won (significant_improvement)")
    assert current_champion(client, canary.model_name) == "1"
