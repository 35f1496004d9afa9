"""``ctrain up`` (Airflow standalone and the MLflow UI) ends everything it started on SIGTERM."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _wait(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(1)


def test_ctrain_up_stops_airflow_and_mlflow_on_sigterm(tmp_path):
    home = (tmp_path / "home").resolve()
    airflow_port, mlflow_port = _free_port(), _free_port()
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
        _wait(
            "MLflow and Airflow listening",
            lambda: _listening(mlflow_port) and _listening(airflow_port),
            240,
        )
        assert len(_processes_of(home)) > 3  # ctrain up, standalone and its components, mlflow
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 0
        _wait(
            "ports released",
            lambda: not _listening(mlflow_port) and not _listening(airflow_port),
            60,
        )
        _wait("no process left", lambda: _processes_of(home) == [], 60)
    finally:
        for pid in _processes_of(home):
            os.kill(pid, signal.SIGKILL)
        log.close()
