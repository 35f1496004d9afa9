"""One Airflow on the embedded stores (SQLite, LocalExecutor) for the end-to-end modules here.

Migrating Airflow's database, starting its four components and warming the task processes'
preload cost more than a minute on 2 cores, so the modules of this folder share one stack,
started before the first of them and stopped after the last. Each module still works in a ctrain
home of its own: ``stack.use(settings)`` makes the stack's project file (``CTRAIN_PROJECT`` of
every Airflow process) that module's project, and every task reads it when it runs (the
approval's timeout included), as does the ctrain view. What Airflow reads when it parses the DAG
files is pinned by the stack's environment and is the same for every module: the landing folders
and their watchers, no daily training, no training on new data alone. Each module selects its own
runs (``stack.runs``: started since its ``use``); between modules the stack is idle.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from tests_support import bootstrap_champion, copy_store, migrated_airflow_db

from ctrain import dag_ids
from ctrain.harness.inbox import Inbox
from ctrain.runtime import AirflowServices, wait_for
from ctrain.settings import EventKind, Settings, default_project_file, load_settings

ACTIVE = ("queued", "running")
EVENT_KINDS = EventKind.__args__


@dataclass
class Stack:
    af: AirflowServices
    project: Path  # the project file every Airflow process reads
    landing: Path
    labels_landing: Path
    receiver: Inbox
    since: datetime = datetime.min.replace(tzinfo=UTC)

    def told(self, kind_title: str = "") -> list[dict]:
        """The messages the stack's runs sent since the last ``use`` whose title has
        ``kind_title`` in it."""
        return [
            m
            for m in self.receiver.messages()
            if m["at"] >= self.since and kind_title in m["title"]
        ]

    def use(self, settings: Settings) -> None:
        """From now on every task, and the ctrain view, works with ``settings``: written
        whole, then renamed over the project file (a task never reads half of it)."""
        self.drain()
        data = settings.model_dump(mode="json")
        tmp = self.project.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(data))
        os.replace(tmp, self.project)
        self.since = datetime.now(UTC)

    def runs(self, dag_id: str) -> list[dict]:
        """The runs of ``dag_id`` started since the last ``use``, oldest first."""
        status, body = self.af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")
        assert status == 200, body
        mine = [r for r in body["dag_runs"] if datetime.fromisoformat(r["run_after"]) >= self.since]
        return sorted(mine, key=lambda r: r["run_after"])

    def run_now(self, dag_id: str, conf: dict | None = None, timeout: float = 180) -> dict:
        """Start a run of ``dag_id`` through the REST API, as a person does, and wait for its
        end; returns the run."""
        body = {"logical_date": None, "conf": conf or {}}
        status, run = self.af.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        assert status == 200, run
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run['dag_run_id'], safe='')}"

        def ended() -> dict | None:
            status, now = self.af.api("GET", path)
            return now if status == 200 and now["state"] in ("success", "failed") else None

        return wait_for(f"{dag_id} {run['dag_run_id']} to end", ended, timeout, alive=self.af.alive)

    def drain(self) -> None:
        """Wait until what the previous module left in the shared landing folders (a service's
        last log window, written as it stopped) is ingested into that module's home, and the
        stack is idle: a module that lands files of its own (``bootstrap_champion``) or
        switches the project after this finds the folders empty."""
        from ctrain.storage import landed

        def drained() -> bool:
            return not landed(self.landing) and not landed(self.labels_landing)

        wait_for("the landing folders to be drained", drained, 300, alive=self.af.alive)
        self.quiet()

    def quiet(self, timeout: float = 300) -> None:
        """Wait until no run of a ctrain DAG is queued or running."""

        def idle() -> bool:
            return not any(r["state"] in ACTIVE for d in dag_ids.ALL for r in self.runs(d))

        wait_for("the stack to be idle", idle, timeout, alive=self.af.alive)

    def settings(self, home: Path, **overrides) -> tuple[Settings, Path]:
        """The demo project deep-merged with ``overrides``, its data in ``home`` and its files
        landing where the stack watches; written next to ``home``. Returns it and its file.
        The previous module's files are out of the landing folders first (``drain``)."""
        self.drain()
        data = _merge(yaml.safe_load(default_project_file().read_text()), overrides)
        data["home"] = str(home)
        data["dataset"] |= {
            "landing_dir": str(self.landing),
            "labels_landing_dir": str(self.labels_landing),
        }
        path = home.parent / "project.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        with pytest.MonkeyPatch.context() as mp:
            for key in [k for k in os.environ if k.startswith("CTRAIN_")]:
                mp.delenv(key)
            return load_settings(path), path

    @contextlib.contextmanager
    def champion_home(self, home: Path, **overrides):
        """A module's own project in ``home`` (``settings``), its first champion bootstrapped,
        in use by the stack, and this process's ``CTRAIN_*`` environment naming only it while
        the block runs; yields ``(settings, client)``."""
        from ctrain.data.demo_source import DemoSource
        from ctrain.tracking import configure

        settings, project = self.settings(home, **overrides)
        with pytest.MonkeyPatch.context() as mp:
            for key in [k for k in os.environ if k.startswith("CTRAIN_")]:
                mp.delenv(key)
            mp.setenv("CTRAIN_PROJECT", str(project))
            client = configure(settings)
            bootstrap_champion(settings, DemoSource(**settings.demo.model_dump()))
            self.use(settings)
            yield settings, client


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="package")
def receiver():
    with Inbox() as r:
        yield r


@pytest.fixture(scope="package")
def stack(tmp_path_factory, receiver):
    root = tmp_path_factory.mktemp("embedded-stack")
    project = root / "project.yaml"
    landing, labels_landing = root / "landing", root / "labels_landing"
    # The stack's own home holds Airflow's (its database, logs); modules bring theirs.
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("CTRAIN_")]:
            mp.delenv(key)
        own = load_settings(default_project_file(), home=str(root / "airflow-stack"))
    project.write_text(yaml.safe_dump(own.model_dump(mode="json")))
    copy_store(migrated_airflow_db(), own.airflow_home / "airflow.db")
    base = {k: v for k, v in os.environ.items() if not k.startswith("CTRAIN_")}
    pinned = {
        "CTRAIN_PROJECT": str(project),
        "CTRAIN_DATASET__LANDING_DIR": str(landing),
        "CTRAIN_DATASET__LABELS_LANDING_DIR": str(labels_landing),
        "CTRAIN_SCHEDULES__WATCH_SECONDS": "2",
        # Only the runs the modules start or their data starts (the watchers, the assets): no
        # new-data training, no daily training, and the safety-net crons of ct_ingest and
        # ct_drift_monitor out of the way (tests/dags/test_landing_watch.py covers them).
        "CTRAIN_TRAIN_ON_NEW_DATA": "false",
        "CTRAIN_SCHEDULES__TRAINING": "none",
        "CTRAIN_SCHEDULES__INGEST": "0 0 1 1 *",
        "CTRAIN_SCHEDULES__MONITORING": "0 0 1 1 *",
        # ct_deadlines looks when a module starts it (Stack.run_now); ct_training's deadline is
        # read as the DAG is parsed: two minutes, which a run waiting for a person passes
        # (test_approval_stream_e2e) and a run that trains only seldom does.
        "CTRAIN_SCHEDULES__DEADLINES": "none",
        "CTRAIN_ALERTS__TRAINING_RUN_MINUTES": "2",
        # The DAG files do not change during the run, and what their parse reads is pinned
        # here: parsing them again every 30 s would only take CPU from the tests.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        # A second person: an operator starts the runs an admin approves (an approval by
        # whoever started the run is refused).
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,operator:op",
        # Prometheus' scrape token of /ctrain/metrics (test_stream_e2e scrapes it).
        "CTRAIN_METRICS_TOKEN": secrets.token_urlsafe(24),
        # Every kind of event is told to one Apprise connection, a receiver in this process:
        # the modules check what their runs told (Stack.told).
        "AIRFLOW_CONN_CTRAIN_E2E": receiver.connection("e2e"),
        "CTRAIN_NOTIFICATIONS__ROUTES": json.dumps({kind: ["ctrain_e2e"] for kind in EVENT_KINDS}),
    }
    af = AirflowServices(own, root / "logs" / "airflow", pinned, base_env=base)
    del af.env["CTRAIN_HOME"]  # each module's project names its home
    af.env["CTRAIN_NOTIFICATIONS__AIRFLOW_URL"] = af.base_url  # the messages' links lead here
    with af:
        af.wait_until_serving()
        yield Stack(af, project, landing, labels_landing, receiver)
