"""Configuration promotion ("promote code, not models"): the configuration a dev version won
with becomes the only one a restricted environment trains, on its own data. Two real MLflow
stores (SQLite), real training."""

from __future__ import annotations

import json

import pytest
import yaml
from tests_support import ingest_batches

from ctrain import steps
from ctrain.cli import main
from ctrain.promotion.across import CarryRefused, promote_config
from ctrain.promotion.decisions import list_decisions
from ctrain.records import RunContext
from ctrain.registry import current_champion
from ctrain.settings import CandidateSpec
from ctrain.tracking import client_of, configure
from ctrain.training.restricted import CANDIDATE_TAG, CONFIG_TAG, NoConfigPromoted


def _restricted(settings):
    return settings.model_copy(
        update={"training": settings.training.model_copy(update={"tuning": "restricted"})}
    )


def _won_with(settings, version: str) -> CandidateSpec:
    client = client_of(settings)
    run = client.get_run(client.get_model_version(settings.model_name, version).run_id)
    return CandidateSpec.model_validate_json(run.data.tags[CANDIDATE_TAG])


def test_restricted_training_trains_only_the_promoted_configuration_on_its_own_data(envs):
    dev, staging = envs
    staging = _restricted(staging)
    client = configure(staging)
    ctx = RunContext(dag_id="cli", run_id="cfg-1", trigger_reason="test", force=True)
    # Nothing promoted yet: restricted training refuses, and says what to do.
    with pytest.raises(NoConfigPromoted, match="ctrain env promote-config --from ENV"):
        steps.run_training(ctx, settings=staging)

    won = _won_with(dev, "1")  # the grid's choice fixed: no grid left
    assert won.grid == {} and won.params  # e.g. {random_state: 42, max_depth: 3, ...}
    decision = promote_config(staging, "dev", "1", ctx, client)
    assert decision.decision == "configured" and not decision.moved
    assert f"staging trains {won.name} ({won.estimator}" in decision.reason
    assert "from dev v1" in decision.reason
    assert current_champion(client, staging.model_name) == "1"  # nothing moved
    (proposed,) = [d for d in list_decisions(client_of(dev), dev) if d.rule == "config_proposed"]
    assert proposed.challenger_version == "1" and "now the one staging trains" in proposed.reason

    # Staging trains on its own data (a batch dev never saw) with that configuration alone.
    ingest_batches(staging, 1, start=3)
    steps.run_training(ctx, settings=staging)
    (mv,) = client.search_model_versions(f"name = '{staging.model_name}' and version_number = 2")
    run = client.get_run(mv.run_id)
    assert CandidateSpec.model_validate_json(run.data.tags[CANDIDATE_TAG]) == won
    assert [k for k in run.data.metrics if k.startswith("cv_roc_auc__")] == [
        f"cv_roc_auc__{won.name}"
    ]
    assert mv.tags["data_window"].endswith("(4 batches)")  # its own fourth batch in it
    # Its config hash is the restricted configuration's, not the project's grid.
    assert mv.tags["training_config_hash"] != client.get_model_version(
        staging.model_name, "1"
    ).tags.get("training_config_hash")

    # A retry of the promotion records nothing twice.
    again = promote_config(staging, "dev", "1", ctx, client)
    assert again.record_run_id == decision.record_run_id
    assert len([d for d in list_decisions(client, staging) if d.decision == "configured"]) == 1


def test_a_configuration_ctrain_does_not_train_is_refused_and_nothing_changes(envs):
    dev, staging = envs
    src = client_of(dev)
    run_id = src.get_model_version(dev.model_name, "1").run_id
    # Someone with write access in dev rewrites what the version won with.
    src.set_tag(run_id, CANDIDATE_TAG, json.dumps({"name": "x", "estimator": "os.system"}))
    client = configure(staging)
    ctx = RunContext(dag_id="cli", run_id="cfg-2", trigger_reason="test")
    with pytest.raises(CarryRefused, match="not a training configuration ctrain trains"):
        promote_config(staging, "dev", "1", ctx, client)
    assert CONFIG_TAG not in client.get_registered_model(staging.model_name).tags
    assert not [d for d in list_decisions(client, staging) if d.decision == "configured"]
    # A version dev has not got is named.
    with pytest.raises(CarryRefused, match="dev ctrain-demo v9: not found"):
        promote_config(staging, "dev", "9", ctx, client)


def test_env_status_shows_each_environment_from_its_own_store(envs, monkeypatch, capsys):
    from pathlib import Path

    dev, staging = envs
    monkeypatch.setenv("CTRAIN_PROJECT", str(Path(staging.root).parent / "staging.yaml"))
    assert main(["env", "promote-config", "--from", "dev", "--version", "1"]) == 0
    capsys.readouterr()
    assert main(["env", "status", "--json"]) == 0
    entries = {e["environment"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["staging"]["this"] and not entries["dev"]["this"]
    for name in ("dev", "staging"):
        champion = entries[name]["champion"]
        mv = client_of(dev if name == "dev" else staging).get_model_version(
            dev.model_name, champion["version"]
        )
        assert champion["model_sha256"] == mv.tags["model_sha256"]  # hashed when trained
        assert champion["from"].startswith("trained here")
    assert "dev v1" in entries["staging"]["training_config"]["from"]
    # dev's server is down: staging still shows, dev says why in one line.
    project = Path(staging.root).parent / "staging.yaml"
    data = yaml.safe_load(project.read_text())
    data["environments"]["dev"]["tracking_uri"] = "http://127.0.0.1:9"  # nothing listens
    project.write_text(yaml.safe_dump(data))
    assert main(["env", "status"]) == 0
    out = capsys.readouterr().out
    assert "staging (this one)" in out and "champion: v1, sha256" in out
    assert "dev: ctrain-demo" in out and "unreachable:" in out
    # Found by a health check that is refused at once, not by MLflow's client, which retries a
    # server that is down for minutes before it gives up ("Max retries exceeded").
    assert "Connection refused" in out and "Max retries" not in out
