"""``ctrain demo --envs``: dev → staging → prod between three real MLflow tracking servers
(``mlflow server`` with its basic-auth app, artifacts served by each: ``mlflow-artifacts:``
URIs), as the production shape runs them. Each environment's worker is a user of its own
server with EDIT on ctrain's model and experiments, and a user of the previous environment's
server that may read its versions and record a proposal there, nothing more (``ctrain
mlflow-init --puller-user``); this process sends each server its own user
(``ctrain.credentials``). What the demo printed is checked, then what the three stores hold
(read from their files once the servers have stopped)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ctrain.demo_envs import ENVS, run_envs_demo
from ctrain.promotion.decisions import list_decisions
from ctrain.settings import load_settings

pytestmark = pytest.mark.integration


def _store(root: Path, env: str) -> MlflowClient:
    uri = f"sqlite:///{root / env / 'mlflow-server' / 'mlflow.db'}"
    return MlflowClient(uri, uri)


def _model_files(root: Path, env: str) -> list[str]:
    """The sha256 of each model file in ``env``'s served artifact store."""
    found = (root / env / "mlflow-server" / "artifacts").rglob("model.skops")
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in found)


def test_the_three_environment_demo_moves_one_model_through_three_servers(
    tmp_path, monkeypatch, capsys
):
    for key in [k for k in os.environ if k.startswith(("CTRAIN_", "MLFLOW_TRACKING_"))]:
        monkeypatch.delenv(key)
    root = tmp_path / "demo"
    root.mkdir()
    before = dict(os.environ)

    assert run_envs_demo(root) == 0
    assert dict(os.environ) == before  # the users it played are gone with it
    out = capsys.readouterr().out
    print(out)
    lines = {line.split(":")[0].strip(): line for line in out.splitlines()}

    assert "v1 promoted none→1 (first_champion)" in lines["2. dev trains on its own 4500 rows"]
    assert "load test: p50" in out and "v1 promoted none→1 (first_champion): roc_auc" in out
    # prod: the requester's approval refused and recorded, another person's promotes.
    assert "alice approves her own request: v1 rejected (self_approval)" in out
    assert "bob approves: v1 promoted none→1 (first_champion)" in out
    # The servers' own answers.
    assert "dev-worker moves prod's champion: HTTP 401" in out
    assert "staging-worker moves prod's champion: HTTP 401" in out
    assert "prod-worker moves staging's champion: HTTP 403" in out
    # prod trains only what was promoted, on its own data.
    assert "refused: training.tuning is restricted in prod" in out
    assert "prod trains logistic_regression" in out and "from staging v1" in out
    assert "prod retrains: v2, the promoted configuration on prod's data" in out
    # env status as prod's worker: dev does not know it; the others say where each came from.
    assert "dev: ctrain-demo at" in out and "refused (HTTP 401)" in out
    assert "from dev v1" in out and "from staging v1" in out

    # One set of bytes in all three stores, each written through its own server; prod's own
    # v2 beside it.
    dev_files = _model_files(root, "dev")
    assert len(dev_files) == 1 and _model_files(root, "staging") == dev_files
    prod_files = _model_files(root, "prod")
    assert len(prod_files) == 2 and dev_files[0] in prod_files
    stores = {env: _store(root, env) for env in ENVS}
    sha = {
        env: stores[env].get_model_version("ctrain-demo", "1").tags["model_sha256"] for env in ENVS
    }
    assert len(set(sha.values())) == 1, sha
    carried = stores["prod"].get_model_version("ctrain-demo", "1").tags
    assert (carried["source_environment"], carried["source_version"]) == ("staging", "1")
    assert str(stores["prod"].get_registered_model("ctrain-demo").aliases["champion"]) == "1"
    staging = load_settings(root / "staging.yaml")
    proposed = [d for d in list_decisions(stores["staging"], staging) if d.decision == "proposed"]
    assert any("proposed to prod, where it is v1" in d.reason for d in proposed), proposed
    prod = load_settings(root / "prod.yaml")
    refused = [d for d in list_decisions(stores["prod"], prod) if d.rule == "self_approval"]
    assert [d.approver for d in refused] == ["alice"]
