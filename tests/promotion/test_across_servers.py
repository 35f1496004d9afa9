"""Promotion across environments between two real MLflow tracking servers (``mlflow server``,
artifacts served by each: ``mlflow-artifacts:`` URIs), as the production shape runs them: the
bytes are read through dev's server and written through staging's, and the registry of each
is asked through its own server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tests_support import env_project, ingest_batches

from ctrain import steps
from ctrain.promotion.across import promote_across
from ctrain.promotion.decisions import list_decisions
from ctrain.records import RunContext
from ctrain.registry import current_champion, download_model, manifest, version_uri
from ctrain.runtime import free_port, wait_for
from ctrain.settings import load_settings
from ctrain.tracking import client_of, configure

pytestmark = pytest.mark.integration
QUICK_START = {"promotion": {"predeployment": {"start_timeout_seconds": 60}}}


@contextlib.contextmanager
def mlflow_servers(*roots: Path):
    """``mlflow server`` on a SQLite store under each of ``roots``, serving its artifacts,
    started together; their URLs."""
    import urllib.request

    procs, urls, logs = [], [], []
    for root in roots:
        port = free_port()
        root.mkdir(parents=True)
        logs.append((root / "server.log").open("w"))
        procs.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("mlflow")),
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{root / 'mlflow.db'}",
                    "--serve-artifacts",
                    "--artifacts-destination",
                    str(root / "artifacts"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                ],
                stdout=logs[-1],
                stderr=subprocess.STDOUT,
                env={
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith(("CTRAIN_", "MLFLOW_TRACK"))
                },
            )
        )
        urls.append(f"http://127.0.0.1:{port}")

    def up(proc, root, url) -> bool:
        if proc.poll() is not None:
            raise RuntimeError((root / "server.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        for proc, root, url in zip(procs, roots, urls, strict=True):
            wait_for(f"mlflow server at {url}", lambda: up(proc, root, url), 120)  # noqa: B023
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc, log in zip(procs, logs, strict=True):
            proc.wait(30)
            log.close()


def _files(settings, version: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        return manifest(
            download_model(
                version_uri(settings.model_name, version), settings.resolved_tracking_uri, Path(tmp)
            )
        )


def test_a_version_is_carried_between_two_mlflow_servers_byte_for_byte(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("CTRAIN_")]:
        monkeypatch.delenv(key)
    with mlflow_servers(tmp_path / "dev-server", tmp_path / "staging-server") as urls:
        servers = dict(zip(("dev", "staging"), urls, strict=True))
        envs = {
            name: {"tracking_uri": url, "home": str(tmp_path / name)}
            for name, url in servers.items()
        }
        dev, staging = (
            load_settings(env_project(tmp_path, name, environments=envs, **QUICK_START))
            for name in ("dev", "staging")
        )
        for s in (dev, staging):  # each trains its first champion through its own server
            configure(s)
            ingest_batches(s, 2)
            # (not load-tested: the pull below is)
            off = s.promotion.model_copy(
                update={
                    "predeployment": s.promotion.predeployment.model_copy(
                        update={"environments": ()}
                    )
                }
            )
            steps.run_training(
                RunContext(run_id="first"), settings=s.model_copy(update={"promotion": off})
            )
        client = configure(staging)
        ctx = RunContext(dag_id="cli", run_id="carry", trigger_reason="test", force=True)
        decision = promote_across(staging, "dev", "1", ctx, client)

        assert decision.moved and (decision.champion_before, decision.champion_after) == ("1", "2")
        source = _files(dev, "1")
        assert _files(staging, "2") == source and _files(staging, "1") != source
        mv = client.get_model_version(staging.model_name, "2")
        # Written through staging's server into its own artifact store, not pointing at dev's.
        location = client.get_logged_model(mv.source.removeprefix("models:/")).artifact_location
        assert location.startswith("mlflow-artifacts:/"), location
        stored = list((tmp_path / "staging-server" / "artifacts").rglob("model.skops"))
        assert len(stored) == 2  # staging's own v1 and the carried v2, in its served store
        assert (
            mv.tags["source_environment"] == "dev"
            and current_champion(client, staging.model_name) == "2"
        )
        (proposed,) = [d for d in list_decisions(client_of(dev), dev) if d.decision == "proposed"]
        assert "where it is v2" in proposed.reason
