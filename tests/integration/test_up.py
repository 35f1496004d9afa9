"""``ctrain up`` (Airflow standalone and the MLflow UI): its DAGs run on any port, unpaused, and it
ends everything it started on SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import copy_store, migrated_airflow_db

from ctrain import dag_ids
from ctrain.runtime import free_ports, wait_for

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_of(home: Path) -> list[int]:
    """Processes whose environment names this CTRAIN_HOME: what `ctrain up` started."""
    needle = f"CTRAIN_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:  # gone, or not ours to read
                continue
    return found


def _api(port: int, method: str, path: str, body=None, token: str = ""):
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"} | (
        {"Authorization": f"Bearer {token}"} if token else {}
    )
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _dags(port: int, token: str) -> dict[str, bool]:
    status, body = _api(port, "GET", "/api/v2/dags?limit=100", token=token)
    return {d["dag_id"]: d["is_paused"] for d in body["dags"]} if status == 200 else {}


def _run_state(port: int, token: str, dag_id: str, run_id: str) -> str:
    status, body = _api(port, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", token=token)
    return body["state"] if status == 200 else f"HTTP {status}"


def test_ctrain_up_runs_its_dags_unpaused_and_stops_everything_on_sigterm(tmp_path):
    home = (tmp_path / "home").resolve()
    # A home Airflow has run in before (as after `make demo`): its database migrated.
    copy_store(migrated_airflow_db(), home / "airflow" / "airflow.db")
    airflow_port, mlflow_port = free_ports(2)
    env = os.environ | {"CTRAIN_HOME": str(home), "AIRFLOW__CORE__PARALLELISM": "2"}
    env.pop("AIRFLOW_HOME", None)  # the embedded default puts it under CTRAIN_HOME
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115 (closed below)
    up = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ctrain")),
            "up",
            "--airflow-port",
            str(airflow_port),
            "--mlflow-port",
            str(mlflow_port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            "MLflow and Airflow listening",
            lambda: _listening(mlflow_port) and _listening(airflow_port),
            240,
        )
        assert len(_processes_of(home)) > 3  # ctrain up, standalone and its components, mlflow
        password = home / "airflow" / "simple_auth_manager_passwords.json.generated"
        wait_for("the admin password", password.exists, 60)
        creds = {"username": "admin", "password": json.loads(password.read_text())["admin"]}
        status, body = _api(airflow_port, "POST", "/auth/token", creds)
        assert status in (200, 201), body
        token = body["access_token"]
        wait_for(
            "ctrain's DAGs parsed", lambda: set(dag_ids.ALL) <= set(_dags(airflow_port, token)), 180
        )
        paused = {d: p for d, p in _dags(airflow_port, token).items() if d in dag_ids.ALL}
        assert paused == dict.fromkeys(dag_ids.ALL, False)  # data that lands is acted on

        # A task reaches Airflow through the execution API on the port `up` was given, not 8080.
        status, body = _api(
            airflow_port,
            "POST",
            f"/api/v2/dags/{dag_ids.INGEST}/dagRuns",
            {"logical_date": None, "dag_run_id": "by_hand"},
            token,
        )
        assert status == 200, body
        wait_for(
            "ct_ingest ends",
            lambda: (
                _run_state(airflow_port, token, dag_ids.INGEST, "by_hand") in ("success", "failed")
            ),
            240,
        )
        assert _run_state(airflow_port, token, dag_ids.INGEST, "by_hand") == "success", (
            tmp_path / "up.log"
        ).read_text()[-3000:]
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 0
        wait_for(
            "ports released",
            lambda: not _listening(mlflow_port) and not _listening(airflow_port),
            60,
        )
        wait_for("no process left", lambda: _processes_of(home) == [], 60)
    finally:
        for pid in _processes_of(home):
            os.kill(pid, signal.SIGKILL)
        log.close()
