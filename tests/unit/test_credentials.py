"""Each environment's MLflow user, from the process's environment, sent to its server only."""

from __future__ import annotations

import base64

import pytest
from mlflow.exceptions import MlflowException

from ctrain.credentials import EnvironmentAuth, login_of, refused, route
from ctrain.settings import load_settings


class _Request:
    def __init__(self, url: str):
        self.url, self.headers = url, {"Authorization": "Basic process-wide"}


def _user_of(request) -> str:
    return base64.b64decode(request.headers["Authorization"].split()[1]).decode()


def test_a_request_carries_the_user_of_the_environment_whose_server_it_goes_to(
    tmp_path, monkeypatch
):
    secret = tmp_path / "staging-password"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("MLFLOW_DEV_TRACKING_USERNAME", "puller")
    monkeypatch.setenv("MLFLOW_DEV_TRACKING_PASSWORD", "dev-pw")
    monkeypatch.setenv("MLFLOW_STAGING_TRACKING_USERNAME", "worker")
    monkeypatch.setenv("MLFLOW_STAGING_TRACKING_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "ctrain-environments")  # restored after
    envs = {
        "dev": {"tracking_uri": "http://dev.example:5000"},
        "staging": {"tracking_uri": "https://Staging.example"},
    }
    settings = load_settings(environments=envs)
    assert sorted(route(settings)) == ["dev", "staging"]

    auth = EnvironmentAuth()
    assert _user_of(auth(_Request("http://dev.example:5000/api/2.0/x"))) == "puller:dev-pw"
    assert _user_of(auth(_Request("https://staging.example:443/get-artifact"))) == "worker:s3cret"
    # Another server (or port) gets what MLflow would have sent, untouched.
    other = auth(_Request("http://dev.example:5001/api"))
    assert other.headers["Authorization"] == "Basic process-wide"


def test_a_user_without_a_password_or_an_unreadable_secret_is_named(tmp_path):
    with pytest.raises(ValueError, match="MLFLOW_PROD_TRACKING_USERNAME is set but neither"):
        login_of("prod", {"MLFLOW_PROD_TRACKING_USERNAME": "w"})
    missing = str(tmp_path / "nope")
    env = {"MLFLOW_PROD_TRACKING_USERNAME": "w", "MLFLOW_PROD_TRACKING_PASSWORD_FILE": missing}
    with pytest.raises(
        ValueError, match=f"MLFLOW_PROD_TRACKING_PASSWORD_FILE: cannot read {missing}"
    ):
        login_of("prod", env)
    assert login_of("prod", {}) is None


def test_a_servers_refusal_says_which_it_is():
    body = "API request to endpoint /api/2.0/mlflow/registered-models/alias failed with "
    assert "HTTP 401" in refused(MlflowException(body + "error code 401 != 200. x"))
    assert "HTTP 403" in refused(MlflowException(body + "error code 403 != 200. x"))
    assert refused(MlflowException(body + "error code 500 != 200. x")) is None
    assert refused(ConnectionError("refused")) is None


def test_a_server_that_moved_is_not_sent_the_user_any_more(monkeypatch):
    monkeypatch.setenv("MLFLOW_DEV_TRACKING_USERNAME", "puller")
    monkeypatch.setenv("MLFLOW_DEV_TRACKING_PASSWORD", "pw")
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "ctrain-environments")
    route(load_settings(environments={"dev": {"tracking_uri": "http://old.example:5000"}}))
    route(load_settings(environments={"dev": {"tracking_uri": "http://new.example:5000"}}))
    auth = EnvironmentAuth()
    assert _user_of(auth(_Request("http://new.example:5000/x"))) == "puller:pw"
    assert auth(_Request("http://old.example:5000/x")).headers["Authorization"] == (
        "Basic process-wide"
    )
    with pytest.raises(ValueError, match="both have an MLflow user and share the server"):
        monkeypatch.setenv("MLFLOW_PROD_TRACKING_USERNAME", "w")
        monkeypatch.setenv("MLFLOW_PROD_TRACKING_PASSWORD", "w")
        same = {"tracking_uri": "http://one.example"}
        route(load_settings(environments={"dev": same, "prod": same}))


def test_mlflow_finds_the_plugin_by_its_entry_point_and_importing_it_costs_no_mlflow():
    import subprocess
    import sys

    code = "import sys, ctrain.credentials; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from mlflow.tracking.request_auth.registry import fetch_auth

    assert isinstance(fetch_auth("ctrain-environments"), EnvironmentAuth)
