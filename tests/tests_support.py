"""Paths and helpers shared by tests."""

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
# What the DAG files share; imported by them, not a DAG file itself (see dags/.airflowignore).
DAG_SHARED = DAGS / "ctrain_common.py"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if p != DAG_SHARED)

# A candidate list that trains a deliberately weak model (a depth-1 tree).
WEAK = [
    {
        "name": "stump",
        "estimator": "sklearn.tree.DecisionTreeClassifier",
        "params": {"max_depth": 1},
        "grid": {},
    }
]


def load_dagbag():
    """The DAGs as Airflow's own loaders see them: the folder is on sys.path while they parse."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)


def bootstrap_champion(settings, src, n: int = 3) -> None:
    """Land ``n`` batches with their labels in separate files, ingest them, train the first champion."""
    from ctrain import steps
    from ctrain.records import RunContext

    for i in range(n):
        src.write_batch(i, settings.landing_dir, with_labels=False)
        src.write_labels(i, settings.labels_landing_dir)
    for p in steps.list_landed(settings):
        steps.ingest_one(p, settings)
    steps.ingest_labels(settings)
    steps.run_training(RunContext(run_id="bootstrap"), settings=settings)


@contextlib.contextmanager
def browser():
    """Headless Debian Chromium driven by Selenium (``chromium`` and ``chromium-driver``)."""
    import pytest
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "the browser tests need Debian's chromium and chromium-driver "
            "(`apt-get install chromium chromium-driver`; .ci/run and make test install them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,2400",
    ):
        options.add_argument(flag)
    d = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield d
    finally:
        d.quit()


class Payload:
    """Unpickling this object runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def register_crafted(client, settings, log):
    """Log a model with ``log(mlflow)``, register it, and tag it as if it had passed validation
    and come from ctrain's training (an attacker can write tags too)."""
    import mlflow

    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run() as run:
        info = log(mlflow)
        mlflow.set_tags({"ctrain_stage": "trained", "model_uri": info.model_uri})
    version = str(mlflow.register_model(info.model_uri, settings.model_name).version)
    client.set_model_version_tag(settings.model_name, version, "validation_status", "passed")
    assert client.get_model_version(settings.model_name, version).run_id == run.info.run_id
    return version


class ServerThread:
    """uvicorn serving ``app`` on a free loopback port, in a thread of the test process."""

    def __init__(self, app):
        import uvicorn

        from ctrain.runtime import free_port

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=60)


def wait_serving(server, version, timeout=30):
    """Until the service at ``server`` answers with ``version``."""
    import httpx

    deadline = time.monotonic() + timeout
    while httpx.get(f"{server.url}/health").json()["serving_version"] != version:
        assert time.monotonic() < deadline, f"v{version} never served"
        time.sleep(0.1)


def request_rows(src, batch=20, n=5, start=0):
    """Rows of a demo batch as a caller would send them (JSON types, no label)."""
    df = src.batch(batch).iloc[start : start + n].drop(columns=["label"])
    df["event_time"] = df["event_time"].astype(str)
    df = df.astype(object).where(df.notna(), None)  # a missing value is JSON's null
    return df.to_dict(orient="records")


def lose_artifacts(client, name: str, version: str) -> None:
    """Delete a model version's files from the artifact store, as a store that lost them would."""
    from urllib.parse import urlparse

    source = client.get_model_version(name, version).source  # models:/m-...
    logged = client.get_logged_model(source.rsplit("/", 1)[-1])
    folder = Path(urlparse(logged.artifact_location).path)
    assert folder.is_dir(), folder
    shutil.rmtree(folder)
