"""The records between steps: what they give XCom, and back."""

import json


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
