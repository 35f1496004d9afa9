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
import yaml
from mlflow import MlflowClient
from tests_support import LENIENT_LOAD_TEST, killed_at

from ctrain import steps
from ctrain.credentials import variable
from ctrain.demo_envs import ENVS, run_envs_demo
from ctrain.promotion.across import carry
from ctrain.promotion.decisions import list_decisions
from ctrain.promotion.promote import PromotionRefused, manual_promote
from ctrain.records import RunContext
from ctrain.runtime import MlflowServers
from ctrain.settings import default_project_file, load_settings
from ctrain.tracking import configure

pytestmark = pytest.mark.integration

_CARRY_V2 = """
from ctrain.promotion.across import carry
from ctrain.records import RunContext
from ctrain.settings import default_project_file, load_settings

settings = load_settings()
carry(settings, "dev", "2", RunContext(run_id="killed"), dying_client(settings.resolved_tracking_uri))
print("finished without being killed")
"""


def _store(root: Path, env: str) -> MlflowClient:
    uri = f"sqlite:///{root / env / 'mlflow-server' / 'mlflow.db'}"
    return MlflowClient(uri, uri)


def _model_files(root: Path, env: str) -> list[str]:
    """The sha256 of each model file in ``env``'s served artifact store."""
    found = (root / env / "mlflow-server" / "artifacts").rglob("model.skops")
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in found)


def _passwords(root: Path) -> dict[tuple[str, str], str]:
    """(environment, user) -> password, as the demo kept them in ``secrets.env``."""
    out = {}
    for line in (root / "secrets.env").read_text().splitlines():
        env, rest = line.split(": ", 1)
        user, password = rest.split()
        out[env, user] = password
    return out


def _as(monkeypatch, **users: tuple[str, str]) -> None:
    for env in ENVS:
        for what in ("USERNAME", "PASSWORD"):
            monkeypatch.delenv(variable(env, what), raising=False)
    for env, (user, password) in users.items():
        monkeypatch.setenv(variable(env, "USERNAME"), user)
        monkeypatch.setenv(variable(env, "PASSWORD"), password)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's folder and what it printed (it runs once for the module)."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("envs") / "demo"
    root.mkdir()
    # The packaged project, but load-tested with budgets a busy 2-core machine keeps (the
    # budgets themselves are tests/promotion/test_predeploy.py's).
    base = yaml.safe_load(default_project_file().read_text())
    base["promotion"]["predeployment"] = LENIENT_LOAD_TEST
    project = root.parent / "base.yaml"
    project.write_text(yaml.safe_dump(base))
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(("CTRAIN_", "MLFLOW_TRACKING_"))]:
        del os.environ[key]
    try:
        before = dict(os.environ)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = run_envs_demo(root, project)
        assert dict(os.environ) == before  # the users it played are gone with it
    finally:
        os.environ.clear()
        os.environ.update(saved)
    print(out.getvalue())
    assert code == 0, out.getvalue()
    return root, out.getvalue()


def test_the_three_environment_demo_moves_one_model_through_three_servers(demo):
    root, out = demo
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


def test_on_the_servers_a_changed_file_and_a_killed_copy_are_refused_and_resumed(
    demo, monkeypatch, tmp_path
):
    """The demo's stores served again: as each environment's worker, a version whose stored
    file changed is refused with a record, and a copy killed half way leaves nothing visible
    and its retry completes."""
    root, _ = demo
    for key in [k for k in os.environ if k.startswith(("CTRAIN_", "MLFLOW_TRACKING_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "ctrain-environments")
    pw = _passwords(root)
    with MlflowServers() as servers:
        urls = {e: servers.add(root / e / "mlflow-server", pw[e, "admin"]) for e in ENVS}
        servers.wait_until_serving()
        envs = {e: {"tracking_uri": urls[e], "home": str(root / e)} for e in ENVS}
        projects = {}
        for e in ENVS:  # the demo's project files, pointing at the servers' new ports
            data = yaml.safe_load((root / f"{e}.yaml").read_text()) | {"environments": envs}
            projects[e] = tmp_path / f"{e}.yaml"
            projects[e].write_text(yaml.safe_dump(data))
        s = {e: load_settings(projects[e]) for e in ENVS}

        # prod's worker asks to make its own v2 champion after someone changed its file.
        _as(monkeypatch, prod=("prod-worker", pw["prod", "prod-worker"]))
        client = configure(s["prod"])
        mv = client.get_model_version("ctrain-demo", "2")
        model_id = mv.source.removeprefix("models:/")
        (stored,) = [
            p
            for p in (root / "prod" / "mlflow-server" / "artifacts").rglob("model.skops")
            if model_id in str(p)
        ]
        stored.write_bytes(stored.read_bytes() + b"\0")
        ctx = RunContext(dag_id="cli", run_id="tampered", trigger_reason="test")
        with pytest.raises(PromotionRefused, match="its files hash to .* as verified"):
            manual_promote(s["prod"], "2", ctx, client)
        (record,) = [d for d in list_decisions(client, s["prod"]) if d.rule == "refused"]
        assert not record.moved and record.champion_after == "1"

        # dev trains a v2; staging's worker pulls it and is killed once the bytes are written.
        _as(monkeypatch, dev=("dev-worker", pw["dev", "dev-worker"]))
        configure(s["dev"])
        steps.run_training(RunContext(run_id="dev-again", force=True), settings=s["dev"])
        _as(
            monkeypatch,
            staging=("staging-worker", pw["staging", "staging-worker"]),
            dev=("staging-worker", pw["dev", "staging-worker"]),
        )
        monkeypatch.setenv("CTRAIN_PROJECT", str(projects["staging"]))
        killed_at(_CARRY_V2, "log_model_artifacts", 1)
        client = configure(s["staging"])
        found = client.search_model_versions("name = 'ctrain-demo'")
        assert sorted(str(v.version) for v in found) == ["1"]  # nothing half-copied visible
        carried = carry(s["staging"], "dev", "2", RunContext(run_id="retry"), client)
        assert carried.version == "2"
        found = client.search_model_versions("name = 'ctrain-demo'")
        assert sorted(str(v.version) for v in found) == ["1", "2"]
        dev_v2 = _store(root, "dev").get_model_version("ctrain-demo", "2").tags["model_sha256"]
        assert client.get_model_version("ctrain-demo", "2").tags["model_sha256"] == dev_v2
