"""Promotion dev → staging → prod between three real MLflow tracking servers (``mlflow server``
with its basic-auth app, artifacts served by each: ``mlflow-artifacts:`` URIs), as the
production shape runs them: each environment's worker is a user of its own server with EDIT on
ctrain's model and experiments, and a user of the previous environment's server that may read
its versions and record a proposal there, nothing more (``ctrain mlflow-init --puller-user``).
The bytes are read through the source's server as the puller and written through the target's
as its worker; every refusal below is the servers' own, over HTTP."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import pytest
import requests
from tests_support import env_project, ingest_batches

from ctrain import steps
from ctrain.cli import main as ctrain
from ctrain.credentials import PROVIDER, variable
from ctrain.promotion.across import promote_across
from ctrain.promotion.decisions import list_decisions
from ctrain.provision import provision
from ctrain.records import RunContext
from ctrain.registry import current_champion, download_model, manifest, version_uri
from ctrain.runtime import MlflowServers
from ctrain.settings import load_settings
from ctrain.tracking import client_of, configure

pytestmark = pytest.mark.integration
QUICK_START = {"promotion": {"predeployment": {"start_timeout_seconds": 60}}}
ENVS = ("dev", "staging", "prod")
ALIAS = "/api/2.0/mlflow/registered-models/alias"
VERSION = "/api/2.0/mlflow/model-versions/get"


def _as(monkeypatch, **users: tuple[str, str]) -> None:
    """This process is now these environments' users (``env=(user, password)``), and no other's."""
    for env in ENVS:
        for what in ("USERNAME", "PASSWORD"):
            monkeypatch.delenv(variable(env, what), raising=False)
    for env, (user, password) in users.items():
        monkeypatch.setenv(variable(env, "USERNAME"), user)
        monkeypatch.setenv(variable(env, "PASSWORD"), password)


def _train_first(s) -> None:
    """Its first champion, trained through its own server (not load-tested: the pulls are)."""
    configure(s)
    ingest_batches(s, 2)
    off = s.promotion.model_copy(
        update={"predeployment": s.promotion.predeployment.model_copy(update={"environments": ()})}
    )
    steps.run_training(RunContext(run_id="first"), settings=s.model_copy(update={"promotion": off}))


def _files(settings, version: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        return manifest(
            download_model(
                version_uri(settings.model_name, version), settings.resolved_tracking_uri, Path(tmp)
            )
        )


def test_a_version_moves_dev_staging_prod_each_server_asked_as_its_own_user(
    tmp_path, monkeypatch, capsys
):
    for key in [k for k in os.environ if k.startswith(("CTRAIN_", "MLFLOW_TRACKING_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", PROVIDER)
    admin = secrets.token_urlsafe(12)
    # One password per user and server: a user sent to the wrong server is refused there.
    pw = {(env, user): secrets.token_urlsafe(12) for env in ENVS for user in ENVS + ("serving",)}
    with MlflowServers() as servers:
        urls = {env: servers.add(tmp_path / f"{env}-server", admin) for env in ENVS}
        servers.wait_until_serving()
        envs = {
            env: {"tracking_uri": url, "home": str(tmp_path / env)} for env, url in urls.items()
        }
        s = {
            env: load_settings(env_project(tmp_path, env, environments=envs, **QUICK_START))
            for env in ENVS
        }

        # ctrain mlflow-init on each server, as its admin: each environment's worker, its
        # serving user, and the next environment's worker as its puller.
        from mlflow.server import get_app_client

        _as(monkeypatch, **{env: ("admin", admin) for env in ENVS})
        for env, puller in zip(ENVS, ("staging", "prod", None), strict=True):
            configure(s[env])
            done = provision(
                s[env],
                client_of(s[env]),
                get_app_client("basic-auth", tracking_uri=urls[env]),
                f"{env}-worker",
                pw[env, env],
                serving=(f"{env}-serving", pw[env, "serving"]),
                puller=(f"{puller}-worker", pw[env, puller]) if puller else None,
            )
            assert any("EDIT on registered_model" in line for line in done), done

        def worker(env: str, source: str | None = None) -> None:
            users = {env: (f"{env}-worker", pw[env, env])}
            if source:  # the source's server knows this worker as its puller
                users[source] = (f"{env}-worker", pw[source, env])
            _as(monkeypatch, **users)

        worker("dev")
        _train_first(s["dev"])
        worker("staging", source="dev")
        _train_first(s["staging"])
        ctx = RunContext(dag_id="cli", run_id="carry", trigger_reason="test", force=True)
        decision = promote_across(s["staging"], "dev", "1", ctx, configure(s["staging"]))
        assert decision.moved and (decision.champion_before, decision.champion_after) == ("1", "2")

        # prod has data and no champion yet: staging's v2 becomes its first, carried as v1.
        worker("prod", source="staging")
        configure(s["prod"])
        ingest_batches(s["prod"], 2)
        client = configure(s["prod"])
        decision = promote_across(s["prod"], "staging", "2", ctx, client)
        assert decision.moved and decision.champion_after == "1", decision.reason
        assert current_champion(client, s["prod"].model_name) == "1"
        mv = client.get_model_version(s["prod"].model_name, "1")
        assert (mv.tags["source_environment"], mv.tags["source_version"]) == ("staging", "2")
        # The same bytes in all three stores, each written through its own server.
        _as(monkeypatch, **{env: ("admin", admin) for env in ENVS})
        dev_files = _files(s["dev"], "1")
        assert _files(s["staging"], "2") == dev_files == _files(s["prod"], "1")
        assert _files(s["staging"], "1") != dev_files
        location = client.get_logged_model(mv.source.removeprefix("models:/")).artifact_location
        assert location.startswith("mlflow-artifacts:/"), location
        assert len(list((tmp_path / "prod-server" / "artifacts").rglob("model.skops"))) == 1
        (proposed,) = [
            d
            for d in list_decisions(client_of(s["staging"]), s["staging"])
            if d.decision == "proposed"
        ]
        assert "proposed to prod, where it is v1" in proposed.reason

        # Who may do what, asked of the servers themselves.
        def alias(env: str, user: str, password: str, version: str = "1") -> requests.Response:
            body = {"name": s[env].model_name, "alias": "champion", "version": version}
            return requests.post(urls[env] + ALIAS, json=body, auth=(user, password), timeout=30)

        def read(env: str, user: str, password: str) -> int:
            params = {"name": s[env].model_name, "version": "1"}
            r = requests.get(urls[env] + VERSION, params=params, auth=(user, password), timeout=30)
            return r.status_code

        assert alias("prod", "dev-worker", pw["dev", "dev"]).status_code == 401  # unknown there
        assert alias("prod", "prod-serving", pw["prod", "serving"]).status_code == 403
        assert read("prod", "prod-serving", pw["prod", "serving"]) == 200  # serving reads
        assert alias("staging", "prod-worker", pw["staging", "prod"]).status_code == 403
        assert read("staging", "prod-worker", pw["staging", "prod"]) == 200  # the puller reads
        assert alias("staging", "staging-worker", pw["staging", "staging"]).status_code == 200
        assert alias("prod", "prod-worker", pw["prod", "prod"]).status_code == 200  # only prod's

        # A dev worker pointed at prod's project: refused by prod's server, in one line.
        worker("dev")
        monkeypatch.setenv("MLFLOW_PROD_TRACKING_USERNAME", "dev-worker")
        monkeypatch.setenv("MLFLOW_PROD_TRACKING_PASSWORD", pw["dev", "dev"])
        capsys.readouterr()
        code = ctrain(["--project", str(tmp_path / "prod.yaml"), "promote", "--version", "1"])
        err = capsys.readouterr().err
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "401" in err or "UNAUTHENTICATED" in err, err
        print(err)
