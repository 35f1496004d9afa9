"""The records between steps: what they give XCom, and back."""

import json

import pytest


def test_records_give_xcom_plain_json_values():
    from ctrain.records import Decision, DecisionKind

    rec = Decision(
        decision=DecisionKind.PROMOTED,
        rule="r",
        reason="x",
        model_name="m",
        challenger_version="2",
        champion_before="1",
        champion_after="2",
        record_run_id="abc",
    )
    out = rec.to_xcom()
    assert type(out["decision"]) is str and out["decision"] == "promoted"
    assert json.loads(json.dumps(out)) == out and Decision.from_xcom(out).moved


@pytest.mark.parametrize(
    ("rec", "line"),
    [
        (
            {
                "decision": "promoted",
                "rule": "significant_improvement",
                "challenger_version": "2",
                "champion_before": "1",
                "champion_after": "2",
                "metric": "roc_auc",
                "challenger_metric": 0.9,
                "diff": 0.0712,
                "ci_low": 0.05,
                "ci_high": 0.09,
            },
            "v2 promoted 1→2 (significant_improvement): roc_auc +0.0712 [+0.0500, +0.0900]",
        ),
        (
            {
                "decision": "rejected",
                "rule": "floor",
                "challenger_version": "3",
                "champion_before": "2",
                "champion_after": "2",
                "metric": "roc_auc",
                "challenger_metric": 0.55,
            },
            "v3 rejected (floor): roc_auc 0.5500; champion stays 2",
        ),
        (
            {
                "decision": "dry_run",
                "action": "promote",
                "rule": "first_champion",
                "challenger_version": "1",
                "champion_before": None,
                "champion_after": None,
            },
            "v1 dry run: would promote (first_champion); champion stays none",
        ),
        (
            {
                "decision": "rejected",
                "rule": "approval_rejected",
                "challenger_version": "4",
                "champion_before": "2",
                "champion_after": "2",
                "approver": "bob",
            },
            "v4 rejected (approval_rejected); rejected by bob; champion stays 2",
        ),
        (
            {
                "decision": "rollback",
                "rule": "rollback",
                "challenger_version": "1",
                "champion_before": "2",
                "champion_after": "1",
            },
            "rollback 2→1",
        ),
        (
            {
                "decision": "skipped",
                "rule": "identical_window",
                "challenger_version": "2",
                "champion_before": "2",
                "champion_after": "2",
            },
            "skipped (identical_window): same window and training config as v2",
        ),
    ],
)
def test_a_decision_reads_as_one_line(rec, line):
    from ctrain.promotion.decisions import headline

    assert headline(rec) == line
