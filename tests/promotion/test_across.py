"""Promotion across environments, pulled by the target: the bytes carried and checked by hash,
judged by the target's own comparison, recorded in both. Two real MLflow stores (SQLite, each
environment's own home), the real safe loader and the real comparison."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import httpx
import pytest
from tests_support import ServerThread, env_project, killed_at

from ctrain.promotion.across import CarryRefused, carry, promote_across
from ctrain.promotion.decisions import list_decisions
from ctrain.promotion.promote import PromotionRefused, manual_promote, refusal
from ctrain.records import RunContext
from ctrain.registry import (
    current_champion,
    download_model,
    manifest,
    manifest_digest,
    version_uri,
)
from ctrain.serving.app import create_app
from ctrain.settings import load_settings
from ctrain.tracking import client_of, configure


def _files(settings, version: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        return manifest(
            download_model(
                version_uri(settings.model_name, version),
                settings.resolved_tracking_uri,
                Path(tmp),
            )
        )


def test_a_version_is_carried_byte_for_byte_judged_by_the_target_and_recorded_in_both(envs):
    dev, staging = envs
    client = configure(staging)
    ctx = RunContext(dag_id="cli", run_id="carry-1", trigger_reason="test", force=True)
    decision = promote_across(staging, "dev", "1", ctx, client)
    # Judged by staging's own comparison on its own held-out rows; force lets an equal win.
    assert decision.moved and (decision.champion_before, decision.champion_after) == ("1", "2")
    mv = client.get_model_version(staging.model_name, "2")
    source = _files(dev, "1")
    assert _files(staging, "2") == source  # the bytes, in staging's own store
    # ... dev's, not staging's own v1 of the same name (MLflow's downloader resolves a
    # models:/ URI in the process's registry; the two differ: MLmodel names its folder).
    assert _files(staging, "1") != source
    assert mv.source.startswith("models:/m-") and "dev" not in mv.source
    assert (mv.tags["source_environment"], mv.tags["source_version"]) == ("dev", "1")
    assert mv.tags["model_sha256"] == manifest_digest(source)
    assert mv.tags["validation_status"] == "passed"
    assert decision.model_name == staging.model_name
    assert refusal(staging, client, "2") is None  # it may serve: carried, its hash still true
    # Served on the fast path, though it has no training window here: it warms up on the
    # held-out rows staging judged it on (without any, it was served 10x slower).
    with ServerThread(create_app(staging, client, version="2"), staging) as server:
        health = httpx.get(f"{server.url}/health").json()
    assert health["serving_version"] == "2" and health["fast_path"] is True, health
    # The source says where it went and what was decided there.
    (proposed,) = [d for d in list_decisions(client_of(dev), dev) if d.decision == "proposed"]
    assert proposed.challenger_version == "1"
    assert "proposed to staging, where it is v2: v2 promoted 1→2" in proposed.reason
    assert current_champion(client_of(dev), dev.model_name) == "1"  # nothing moved in dev
    # A retry (the task retried) carries nothing twice and decides nothing twice.
    again = promote_across(staging, "dev", "1", ctx, client)
    assert again.replayed and again.record_run_id == decision.record_run_id
    versions = client.search_model_versions(f"name = '{staging.model_name}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert len([d for d in list_decisions(client_of(dev), dev) if d.decision == "proposed"]) == 1


def test_a_carried_version_whose_bytes_changed_is_refused_with_a_record(envs):
    dev, staging = envs
    client = configure(staging)
    ctx = RunContext(dag_id="cli", run_id="carry-2", trigger_reason="test")
    carried = carry(staging, "dev", "1", ctx, client)
    # Someone rewrites the stored model file in staging's artifact store.
    mv = client.get_model_version(staging.model_name, carried.version)
    (stored,) = [
        p
        for p in (staging.mlflow_dir / "artifacts").rglob("model.skops")
        if mv.source.removeprefix("models:/") in str(p)
    ]
    stored.write_bytes(stored.read_bytes() + b"\0")
    why = refusal(staging, client, carried.version)
    assert why and "its files hash to" in why and "as verified" in why
    with pytest.raises(PromotionRefused, match="its files hash to .* as verified"):
        manual_promote(staging, carried.version, ctx, client)
    (record,) = [d for d in list_decisions(client, staging) if d.rule == "refused"]
    assert not record.moved and "as verified" in record.reason
    assert current_champion(client, staging.model_name) == "1"


def test_a_version_whose_signature_does_not_fit_the_target_is_refused_and_not_visible(
    envs, tmp_path
):
    dev, staging = envs
    # Staging's schema lost a feature dev's model takes.
    features = [f for f in staging.dataset.features if f.name != staging.dataset.feature_names[0]]
    narrow = staging.model_copy(
        update={"dataset": staging.dataset.model_copy(update={"features": features})}
    )
    client = configure(staging)
    ctx = RunContext(dag_id="cli", run_id="carry-3", trigger_reason="test")
    with pytest.raises(CarryRefused, match="signature does not fit staging's features"):
        carry(narrow, "dev", "1", ctx, client)
    assert [
        str(v.version) for v in client.search_model_versions(f"name = '{staging.model_name}'")
    ] == ["1"]


def test_an_unknown_environment_is_refused_at_load_in_one_line(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("CTRAIN_")]:
        monkeypatch.delenv(key)
    with pytest.raises(ValueError) as bad:
        load_settings(env_project(tmp_path, "prod"))
    assert "'prod' is not one of environments (dev, staging)" in str(bad.value)
    staging = load_settings(env_project(tmp_path, "staging"))
    with pytest.raises(ValueError, match="unknown environment 'qa'"):
        staging.of("qa")


def test_ct_env_promotion_pulls_a_version_through_airflow(envs, airflow_db, monkeypatch):
    """The DAG a person triggers in the target's Airflow (``dag.test()``, with its form's
    values): the same pull, its decision as the task's result and the run's note."""
    from tests_support import load_dagbag

    dev, staging = envs
    monkeypatch.setenv("CTRAIN_PROJECT", str(Path(staging.root).parent / "staging.yaml"))
    dag = load_dagbag().get_dag("ct_env_promotion")
    run = dag.test(run_conf={"source": "dev", "version": "1", "force": True})
    assert str(run.state) == "success"
    client = configure(staging)
    assert current_champion(client, staging.model_name) == "2"
    mv = client.get_model_version(staging.model_name, "2")
    assert (mv.tags["source_environment"], mv.tags["airflow_dag_id"]) == ("dev", "ct_env_promotion")
    (moved,) = [d for d in list_decisions(client, staging) if d.moved and d.champion_after == "2"]
    assert moved.airflow_dag_id == "ct_env_promotion" and moved.trigger_reason == (
        "environment promotion"
    )


_CARRY = """
from ctrain.promotion.across import carry
from ctrain.records import RunContext
from ctrain.settings import load_settings

settings = load_settings()
carry(settings, "dev", "1", RunContext(run_id="killed"), dying_client(settings.resolved_tracking_uri))
print("finished without being killed")
"""

# Each point of a carry's life in the target: its run made, the bytes written (not yet read
# back), the logged model finalized (verified, no version yet), the version made (its run not
# yet tagged with it).
KILL_POINTS = [
    "create_run",
    "log_model_artifacts",
    "finalize_logged_model",
    "create_model_version",
]


@pytest.mark.parametrize("method", KILL_POINTS)
def test_a_carry_killed_at_any_point_shows_nothing_half_copied_and_its_retry_finishes(
    envs, method, monkeypatch
):
    dev, staging = envs
    monkeypatch.setenv("CTRAIN_PROJECT", str(Path(staging.root).parent / "staging.yaml"))
    killed_at(_CARRY, method, 1)
    client = configure(staging)
    source = _files(dev, "1")

    def versions():
        found = client.search_model_versions(f"name = '{staging.model_name}'")
        return sorted(str(v.version) for v in found)

    # What is visible is whole: a version exists only once its bytes were verified.
    for v in versions():
        if v != "1":
            assert _files(staging, v) == source
    assert versions() == (["1", "2"] if method == "create_model_version" else ["1"])
    # The retry (same version, same bytes) finishes it, and makes no second version.
    carried = carry(staging, "dev", "1", RunContext(run_id="retry"), client)
    assert carried.version == "2" and versions() == ["1", "2"]
    assert _files(staging, "2") == source
    assert refusal(staging, client, "2") is None


def test_a_pull_into_an_environment_that_requires_approval_waits_for_another_person(envs):
    """What ct_env_promotion does task by task when staging requires approval: the pull is
    judged, the request asked, the requester's own approval refused, another's promotes."""
    from ctrain import steps
    from ctrain.promotion.across import ApprovalRequired

    dev, staging = envs
    required = staging.model_copy(
        update={"promotion": staging.promotion.model_copy(update={"approval": "required"})}
    )
    client = configure(required)
    ctx = RunContext(dag_id="ct_env_promotion", run_id="ask", trigger_reason="t", force=True)
    # From a shell, nobody could answer: refused before anything is carried.
    with pytest.raises(ApprovalRequired, match="trigger ct_env_promotion"):
        promote_across(required, "dev", "1", ctx, client)
    assert len(client.search_model_versions(f"name = '{staging.model_name}'")) == 1

    mine = dict(ctx.to_xcom(), started_by="erin", requested_by="erin")
    pulled = steps.pull("dev", "1", mine, required)
    request = steps.approval_request(pulled["comparison"], mine, required)
    assert request["subject"].startswith(f"Promote {staging.model_name} v2 over v1?")

    def answer(user):
        return {
            "chosen_options": ["Approve"],
            "params_input": {"comment": ""},
            "responded_by_user": {"id": user, "name": user},
        }

    args = (pulled["comparison"], mine, pulled["dataset"])
    refused = steps.promote_after_approval(*args, answer("erin"), required)
    assert (
        refused["rule"] == "self_approval" and current_champion(client, staging.model_name) == "1"
    )
    moved = steps.promote_after_approval(
        pulled["comparison"],
        dict(mine, run_id="ask-again"),
        pulled["dataset"],
        answer("frank"),
        required,
    )
    assert moved["decision"] == "promoted" and moved["approver"] == "frank"
    assert current_champion(client, staging.model_name) == "2"
    steps.record_proposal("dev", "1", moved, mine, required)
    (proposed,) = [d for d in list_decisions(client_of(dev), dev) if d.decision == "proposed"]
    assert "approved by frank" in proposed.reason
