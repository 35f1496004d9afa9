"""ctrain's production topology, started natively (no containers) and driven end to end.

The same shape as docker-compose.yaml: Airflow 3 with the CeleryExecutor (API server, scheduler,
DAG processor, triggerer, one Celery worker, each its own process group) on a fresh PostgreSQL
metadata database and a dedicated Redis database index; an MLflow tracking server with the
basic-auth app on its own fresh PostgreSQL database (users in a third one), artifacts proxied by
the server. The one deliberate difference: the artifact destination is a local folder here where
compose uses MinIO (S3); clients see ``mlflow-artifacts:/`` either way.

Data is landed and accepted through ``ct_ingest``, then ``ct_training`` is triggered through
Airflow's REST API; the result is read back through MLflow's REST API only. Refusals (no or wrong
credentials, a user without grants, a model-version source outside the server's artifact store)
are checked too. Run with ``-s`` to see the phase timings.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from topology import (
    AIRFLOW_DB_SCHEME,
    AIRFLOW_PRODUCTION_KEYS,
    BROKER_SCHEME,
    FAB_AUTH_MANAGER,
    MLFLOW_PRODUCTION_KEYS,
    MODEL_SOURCE_REGEX,
    REPO,
    RESULT_BACKEND_SCHEME,
    VENV_BIN,
    Timer,
    Topology,
    clean_env,
    http_ok,
    log_contains,
    pg_available,
    pg_can_connect,
    pg_database_exists,
    pg_owned_databases,
    pg_url,
    redis_available,
    redis_db,
    tail,
    wait_until,
)

from ctrain.runtime import free_ports, wait_for

pytestmark = pytest.mark.integration

REDIS_DB = int(os.environ.get("CTRAIN_TEST_REDIS_DB", "11"))
MODEL = "ctrain-demo"
DECISIONS = "ctrain-decisions"
REASON = "production topology test"
WORKER = "ctrain-worker"  # the MLflow user the Airflow components run as
VIEWER = "ctrain-viewer"  # the read-only MLflow user of the API server (the ctrain view)
SERVING = "ctrain-serving"  # ctrain serve's MLflow user: READ on the model only
RUN_TIMEOUT = 600
# Airflow users and their roles: FAB's Viewer, plus ctrain's (docker-compose.yaml's
# AIRFLOW__FAB__CUSTOM_ROLES, read from there).
PEOPLE = {
    "vera": ["Viewer", "ctrain-view"],
    "otto": ["Viewer", "ctrain-view", "ctrain-operator"],
    "ada": ["Viewer", "ctrain-view", "ctrain-approver"],
}


@dataclass
class Stack:
    topo: Topology
    timer: Timer
    airflow_url: str
    mlflow_url: str
    airflow_password: str
    mlflow_password: str
    worker_password: str
    viewer_password: str
    serving_password: str
    ctrain_home: Path
    airflow_home: Path
    artifacts: Path
    dbs: dict[str, str]  # role of the database -> its name
    owners: dict[str, str]  # database name -> the login role that owns it
    people: dict[str, str]  # Airflow user -> password (besides admin)

    @property
    def mlflow_admin(self) -> tuple[str, str]:
        return ("admin", self.mlflow_password)

    @property
    def mlflow_worker(self) -> tuple[str, str]:
        return (WORKER, self.worker_password)

    @property
    def mlflow_viewer(self) -> tuple[str, str]:
        return (VIEWER, self.viewer_password)


# --- the stack ------------------------------------------------------------------------------------


def _land_batches(home: Path, n: int = 3) -> list[Path]:
    """Write ``n`` demo batches into the landing folder of ``home`` (ctrain's demo settings)."""
    from ctrain.data.demo_source import DemoSource
    from ctrain.settings import load_settings

    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("CTRAIN_")]:
            mp.delenv(key)
        mp.setenv("CTRAIN_HOME", str(home))
        s = load_settings()
    src = DemoSource(**s.demo.model_dump())
    return [src.write_batch(i, s.landing_dir) for i in range(n)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    for problem in (pg_available(), redis_available()):
        if problem:
            pytest.fail(problem)
    tmp = tmp_path_factory.mktemp("topology")
    run = secrets.token_hex(4)
    timer = Timer()
    topo = Topology(run_id=run, logs=tmp / "logs")
    topo.logs.mkdir()
    dbs = {
        "airflow": f"ctrain_af_{run}",
        "mlflow": f"ctrain_mlf_{run}",
        "auth": f"ctrain_mlfauth_{run}",
        "lock": f"ctrain_lock_{run}",
    }
    # One login role per service, each owning only its own databases (as compose's init does).
    owners = {
        dbs["airflow"]: f"ctrain_airflow_{run}",
        dbs["mlflow"]: f"ctrain_mlflow_{run}",
        dbs["auth"]: f"ctrain_mlflow_{run}",
        dbs["lock"]: f"ctrain_lockrole_{run}",
    }
    api_port, mlflow_port, health_port, worker_log_port, trigger_log_port = free_ports(5)
    airflow_url = f"http://127.0.0.1:{api_port}"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    home = tmp / "ctrain"
    airflow_home = tmp / "airflow"
    artifacts = tmp / "mlflow-artifacts"
    for d in (home, airflow_home, artifacts):
        d.mkdir()
    airflow_password = secrets.token_urlsafe(18)
    mlflow_password = secrets.token_urlsafe(18)
    worker_password = secrets.token_urlsafe(18)
    viewer_password = secrets.token_urlsafe(18)
    serving_password = secrets.token_urlsafe(18)

    with contextlib.ExitStack() as cleanup:
        with timer.phase("create PG roles and databases, flush Redis db"):
            cleanup.enter_context(pg_owned_databases(owners))
            broker = cleanup.enter_context(redis_db(REDIS_DB))

        def stop_everything():
            with timer.phase("stop all process groups"):
                survivors = topo.stop()
            print(f"[topology] how each process ended: {topo.exits}", flush=True)
            print(timer.summary(), flush=True)
            assert not survivors, f"processes survived the test: {survivors}"

        cleanup.callback(stop_everything)

        with timer.phase("land 3 demo batches"):
            _land_batches(home)

        # MLflow: basic-auth app, fresh Postgres stores, proxied artifacts (local destination).
        auth_ini = tmp / "basic_auth.ini"
        auth_ini.write_text(
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = {pg_url(dbs['auth'], user=owners[dbs['auth']])}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "grant_default_workspace_access = false\n"
            "auth_cache_ttl_seconds = 60\n"
        )
        mlflow_env = clean_env(
            MLFLOW_AUTH_CONFIG_PATH=str(auth_ini),
            MLFLOW_AUTH_ADMIN_PASSWORD=mlflow_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_urlsafe(48),
            MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX=MODEL_SOURCE_REGEX,
            MLFLOW_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="1",
        )

        # Airflow: CeleryExecutor, Postgres metadata DB, Redis broker, one set of secrets.
        from cryptography.fernet import Fernet

        ctrain_env = {
            "CTRAIN_HOME": str(home),
            "CTRAIN_TRACKING_URI": mlflow_url,
            "CTRAIN_MLFLOW_UI_URL": mlflow_url,
            "CTRAIN_LOCK_URL": pg_url(dbs["lock"], user=owners[dbs["lock"]]),
            # Each promotion waits for an approver, as prod's do.
            "CTRAIN_PROMOTION__APPROVAL": "required",
            # The workers are an MLflow user with EDIT on ctrain's experiments and model only.
            "MLFLOW_TRACKING_USERNAME": WORKER,
            "MLFLOW_TRACKING_PASSWORD": worker_password,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
            "GX_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        airflow_env = clean_env(
            AIRFLOW_HOME=str(airflow_home),
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_url(
                dbs["airflow"], AIRFLOW_DB_SCHEME, owners[dbs["airflow"]]
            ),
            AIRFLOW__CELERY__BROKER_URL=broker,
            AIRFLOW__CELERY__RESULT_BACKEND=pg_url(
                dbs["airflow"], RESULT_BACKEND_SCHEME, owners[dbs["airflow"]]
            ),
            AIRFLOW__CELERY__WORKER_CONCURRENCY="2",
            AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS="ctrain.orchestration.CELERY_CONFIG",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{airflow_url}/execution/",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(48),
            AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(48),
            AIRFLOW__CORE__FERNET_KEY=Fernet.generate_key().decode(),
            AIRFLOW__CORE__AUTH_MANAGER=FAB_AUTH_MANAGER,
            AIRFLOW__FAB__CUSTOM_ROLES=_compose_env()["AIRFLOW__FAB__CUSTOM_ROLES"],
            # 2 shared cores: parsing may be slow.
            AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",
            AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT="180",
            # Test-only: no timetable or asset-triggered runs, so the only ct_training run is the
            # one this test triggers (ct_training's cron would otherwise start a run on unpause
            # with catchup=False, and ct_ingest's asset event another).
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="True",
            AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST="127.0.0.1",
            AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT=str(health_port),
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(worker_log_port),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_log_port),
            **ctrain_env,
        )
        missing = [k for k in AIRFLOW_PRODUCTION_KEYS if k not in airflow_env]
        missing += [k for k in MLFLOW_PRODUCTION_KEYS if k not in mlflow_env]
        assert not missing, f"the native topology lacks production settings: {missing}"
        assert broker.startswith(f"{BROKER_SCHEME}://")
        airflow = str(VENV_BIN / "airflow")

        with timer.phase("start MLflow + airflow db migrate"):
            topo.start(
                "mlflow",
                [
                    str(VENV_BIN / "mlflow"),
                    "server",
                    "--app-name",
                    "basic-auth",
                    "--backend-store-uri",
                    pg_url(dbs["mlflow"], user=owners[dbs["mlflow"]]),
                    "--serve-artifacts",
                    "--artifacts-destination",
                    str(artifacts),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(mlflow_port),
                    "--workers",
                    "2",
                    "--allowed-hosts",
                    f"127.0.0.1:{mlflow_port},localhost:{mlflow_port}",
                ],
                mlflow_env,
                cwd=tmp,
            )
            topo.run("airflow-db-migrate", [airflow, "db", "migrate"], airflow_env, tmp, 300)
            # As compose's airflow-init: the admin; the people are added by the admin (REST).
            admin = ["--username", "admin", "--role", "Admin", "--firstname", "a", "--lastname"]
            admin += ["b", "--email", "admin@ctrain.invalid", "--password", airflow_password]
            topo.run(
                "airflow-users-create", [airflow, "users", "create", *admin], airflow_env, tmp, 120
            )

        # Airflow starts while MLflow comes up and is provisioned: no task runs before both.
        with timer.phase("start 5 Airflow components"):
            topo.start(
                "api-server",
                [
                    airflow,
                    "api-server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(api_port),
                    "--workers",
                    "1",
                ],
                # It runs no task: it reads ctrain's records for the view, read-only.
                airflow_env
                | {"MLFLOW_TRACKING_USERNAME": VIEWER, "MLFLOW_TRACKING_PASSWORD": viewer_password},
                cwd=tmp,
            )
            for name in ("scheduler", "dag-processor", "triggerer"):
                topo.start(name, [airflow, name], airflow_env, cwd=tmp)
            topo.start(
                "celery-worker",
                [
                    airflow,
                    "celery",
                    "worker",
                    "--concurrency",
                    "2",
                    "--celery-hostname",
                    f"ctrain-{run}@%h",
                ],
                airflow_env,
                cwd=tmp,
            )

        with timer.phase("ctrain mlflow-init (as MLflow's admin), while Airflow starts"):
            wait_until("MLflow /health", http_ok(f"{mlflow_url}/health"), 240, topo)
            admin_env = clean_env(
                CTRAIN_HOME=str(home),
                CTRAIN_TRACKING_URI=mlflow_url,
                MLFLOW_TRACKING_USERNAME="admin",
                MLFLOW_TRACKING_PASSWORD=mlflow_password,
                MLFLOW_WORKER_PASSWORD=worker_password,
                MLFLOW_VIEWER_PASSWORD=viewer_password,
                MLFLOW_SERVING_PASSWORD=serving_password,
                MLFLOW_DISABLE_TELEMETRY="true",
            )
            topo.run(
                "mlflow-init",
                [
                    str(VENV_BIN / "ctrain"),
                    "mlflow-init",
                    "--worker-user",
                    WORKER,
                    "--viewer-user",
                    VIEWER,
                    "--serving-user",
                    SERVING,
                ],
                admin_env,
                tmp,
                300,
            )
            # Nothing the Airflow components start with holds MLflow's admin password.
            assert mlflow_password not in airflow_env.values()

        with timer.phase("Airflow components healthy"):
            wait_until(
                "Airflow API server", http_ok(f"{airflow_url}/api/v2/monitor/health"), 240, topo
            )
            wait_until(
                "scheduler health check",
                http_ok(f"http://127.0.0.1:{health_port}/health"),
                240,
                topo,
            )

            def components_healthy():
                h = requests.get(f"{airflow_url}/api/v2/monitor/health", timeout=5).json()
                return (
                    all(
                        (h.get(k) or {}).get("status") == "healthy"
                        for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                    )
                    and h
                )

            wait_until(
                "scheduler, triggerer and dag-processor heartbeats", components_healthy, 240, topo
            )
            worker_log = topo.services["celery-worker"].log
            wait_until(
                f"Celery worker ctrain-{run} ready", log_contains(worker_log, " ready."), 240, topo
            )
            # Before any task: the worker imported the task libraries (scikit-learn's compiled
            # modules are mapped), so every task process it forks inherits them.
            worker_pid = topo.services["celery-worker"].proc.pid
            assert "/sklearn/" in Path(f"/proc/{worker_pid}/maps").read_text()

        with timer.phase("the admin adds the people, with their roles (FAB's REST API)"):
            people = {name: secrets.token_urlsafe(15) for name in PEOPLE}
            token = _token(airflow_url, "admin", airflow_password)
            for name, roles in PEOPLE.items():
                body = {"username": name, "password": people[name], "email": f"{name}@x.invalid"}
                body |= {
                    "first_name": name,
                    "last_name": "-",
                    "roles": [{"name": r} for r in roles],
                }
                r = requests.post(
                    f"{airflow_url}/auth/fab/v1/users",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
                assert r.status_code in (200, 201), (r.status_code, r.text)

        yield Stack(
            topo=topo,
            timer=timer,
            airflow_url=airflow_url,
            mlflow_url=mlflow_url,
            airflow_password=airflow_password,
            mlflow_password=mlflow_password,
            worker_password=worker_password,
            viewer_password=viewer_password,
            serving_password=serving_password,
            ctrain_home=home,
            airflow_home=airflow_home,
            artifacts=artifacts,
            dbs=dbs,
            owners=owners,
            people=people,
        )
    # ExitStack done: processes stopped, databases dropped, Redis db flushed.
    for name in dbs.values():
        assert not pg_database_exists(name), f"database {name} was not dropped"


# --- REST helpers ---------------------------------------------------------------------------------


def _compose_env() -> dict[str, str]:
    """The environment docker-compose.yaml gives every Airflow component."""
    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    return compose["x-airflow-common"]["environment"]


def _token(url: str, user: str, password: str) -> str:
    r = requests.post(
        f"{url}/auth/token", json={"username": user, "password": password}, timeout=30
    )
    assert r.status_code in (200, 201), (r.status_code, r.text)
    return r.json()["access_token"]


class AirflowApi:
    """Airflow's public REST API with a bearer token from ``POST /auth/token``, as ``user``
    (the admin, or one of ``PEOPLE``)."""

    def __init__(self, stack: Stack, user: str = "admin"):
        self.stack = stack
        self.url = stack.airflow_url
        password = stack.airflow_password if user == "admin" else stack.people[user]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {_token(self.url, user, password)}"

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(f"{self.url}{path}", timeout=30, **kw)

    def post(self, path: str, body: dict) -> requests.Response:
        return self.session.post(f"{self.url}{path}", json=body, timeout=30)

    def patch(self, path: str, body: dict) -> requests.Response:
        return self.session.patch(f"{self.url}{path}", json=body, timeout=30)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        r = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        r.raise_for_status()
        out = {}
        for ti in r.json()["task_instances"]:
            key = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
            out[key] = f"{ti['state']} (try {ti.get('try_number')})"
        return out

    def diagnose(self, dag_id: str, run_id: str) -> str:
        parts = []
        try:
            parts.append(f"task states: {self.task_states(dag_id, run_id)}")
        except Exception as exc:
            parts.append(f"task states unavailable: {exc}")
        run_dir = self.stack.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        for log in sorted(run_dir.rglob("*.log")) if run_dir.is_dir() else []:
            text = log.read_text(errors="replace")
            if "ERROR" in text or "Traceback" in text:
                parts.append(f"--- task log {log.relative_to(run_dir)} ---\n{tail(log, 40)}")
        parts.append(self.stack.topo.tails(["celery-worker", "scheduler"], 40))
        return "\n".join(parts)

    def unpause_and_trigger(self, dag_id: str, conf: dict | None = None) -> str:
        wait_until(
            f"{dag_id} parsed",
            lambda: self.get(f"/api/v2/dags/{dag_id}").status_code == 200,
            240,
            self.stack.topo,
            interval=2,
            diagnose=lambda: (
                f"import errors: {self.get('/api/v2/importErrors').text}\n"
                + self.stack.topo.tails(["dag-processor"], 40)
            ),
        )
        r = self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
        assert r.status_code == 200 and r.json()["is_paused"] is False, r.text
        r = self.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        assert r.status_code in (200, 201), (r.status_code, r.text)
        return r.json()["dag_run_id"]

    def wait_for_success(self, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT) -> None:
        def done() -> bool:
            r = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            r.raise_for_status()
            state = r.json()["state"]
            if state == "success":
                return True
            states = self.task_states(dag_id, run_id)
            bad = {t: s for t, s in states.items() if s.split()[0] in ("failed", "up_for_retry")}
            if state == "failed" or bad:
                raise AssertionError(
                    f"{dag_id} run {run_id} is {state}; failing tasks {bad}\n"
                    + self.diagnose(dag_id, run_id)
                )
            return False

        wait_until(
            f"{dag_id} run {run_id} to succeed",
            done,
            timeout,
            self.stack.topo,
            interval=2,
            diagnose=lambda: self.diagnose(dag_id, run_id),
        )


def _tags(entity: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("tags", [])}


# --- tests ----------------------------------------------------------------------------------------


def test_ct_training_through_the_rest_api_promotes_a_tagged_champion(stack: Stack):
    timer = stack.timer
    with timer.phase("Airflow token"):
        api = AirflowApi(stack)

    with timer.phase("ct_ingest via REST (3 batches accepted)"):
        ingest_run = api.unpause_and_trigger("ct_ingest")
        api.wait_for_success("ct_ingest", ingest_run)
    accepted = sorted(p.name for p in (stack.ctrain_home / "accepted").glob("*.parquet"))
    assert len(accepted) == 3, accepted
    assert not list((stack.ctrain_home / "landing").iterdir())

    with timer.phase("ct_training via REST: the operator triggers, the approver approves"):
        viewer, operator, approver = (AirflowApi(stack, name) for name in PEOPLE)
        runs = "/api/v2/dags/ct_training/dagRuns"
        # Neither the viewer nor the approver can start a run.
        for who in (viewer, approver):
            r = who.post(runs, {"logical_date": None, "conf": {"reason": REASON}})
            assert r.status_code == 403, (r.status_code, r.text)
        run_id = operator.unpause_and_trigger("ct_training", {"reason": REASON})
        waiting = f"{runs}/{run_id}/hitlDetails?response_received=false"
        wait_until(
            "ct_training to ask for approval",
            lambda: approver.get(waiting).json()["hitl_details"],
            RUN_TIMEOUT,
            stack.topo,
            interval=2,
            diagnose=lambda: api.diagnose("ct_training", run_id),
        )
        answer = f"{runs}/{run_id}/taskInstances/approval/-1/hitlDetails"
        body = {"chosen_options": ["Approve"], "params_input": {"comment": "four eyes"}}
        r = operator.patch(answer, body)  # who started it cannot answer (and has no grant to)
        assert r.status_code == 403, (r.status_code, r.text)
        r = approver.patch(answer, body)
        assert r.status_code == 200, (r.status_code, r.text)
        api.wait_for_success("ct_training", run_id)
    states = api.task_states("ct_training", run_id)
    assert states.pop("approval").startswith("success"), states
    # Nothing was handed to ct_rollout: that gate skipped itself.
    assert states.pop("start_rollout").startswith("skipped"), states
    assert {s.split()[0] for s in states.values()} == {"success"}, states
    runs = api.get("/api/v2/dags/ct_training/dagRuns").json()
    assert [r["dag_run_id"] for r in runs["dag_runs"]] == [run_id], "unexpected extra runs"

    with timer.phase("MLflow REST checks"):
        mlflow = requests.Session()
        mlflow.auth = stack.mlflow_admin
        api2 = f"{stack.mlflow_url}/api/2.0/mlflow"

        r = mlflow.get(
            f"{api2}/registered-models/alias",
            params={"name": MODEL, "alias": "champion"},
            timeout=30,
        )
        assert r.status_code == 200, (r.status_code, r.text)
        mv = r.json()["model_version"]
        tags = _tags(mv)
        assert tags.get("validation_status") == "passed", tags
        assert tags.get("airflow_dag_id") == "ct_training", tags
        assert tags.get("airflow_run_id") == run_id, tags
        assert tags.get("trigger_reason") == REASON, tags
        assert tags.get("data_content_hash") and tags.get("code_version"), tags
        # The version points inside the server's own store (and so passed the source regex).
        assert re.search(MODEL_SOURCE_REGEX, mv["source"]), mv["source"]

        r = mlflow.get(
            f"{api2}/experiments/get-by-name", params={"experiment_name": DECISIONS}, timeout=30
        )
        assert r.status_code == 200, (r.status_code, r.text)
        exp = r.json()["experiment"]
        assert exp["artifact_location"].startswith("mlflow-artifacts:/"), exp
        r = mlflow.post(
            f"{api2}/runs/search",
            json={"experiment_ids": [exp["experiment_id"]], "max_results": 100},
            timeout=30,
        )
        assert r.status_code == 200, (r.status_code, r.text)
        records = r.json().get("runs", [])
        assert len(records) == 1, [(x["info"]["status"], _tags(x["data"])) for x in records]
        (record,) = records
        rtags = _tags(record["data"])
        assert record["info"]["status"] == "FINISHED", record["info"]
        assert rtags.get("decision") == "promoted", rtags
        assert rtags.get("airflow_run_id") == run_id, rtags
        assert rtags.get("champion_after") == str(mv["version"]), rtags
        assert rtags.get("approver") == "ada" and rtags.get("started_by") == "otto", rtags

    with timer.phase("run note and the ctrain view, behind Airflow's login"):
        note = api.get(f"/api/v2/dags/ct_training/dagRuns/{run_id}").json()["note"]
        assert note.startswith(f"v{mv['version']} promoted none→{mv['version']} ("), note
        view = viewer.get(f"/ctrain/api/models/{MODEL}").json()  # the viewer's ctrain view
        assert view["champion"]["version"] == str(mv["version"]), view["champion"]
        assert [h["headline"] for h in view["history"]] == [note]

    # Artifacts went through the server's proxy into its destination (MinIO in compose).
    assert list(stack.artifacts.rglob("MLmodel")), "no model artifacts in the proxied store"
    assert len(list(stack.artifacts.rglob("decision.json"))) == 1
    assert not (stack.ctrain_home / "mlflow").exists(), "ctrain fell back to a local MLflow store"


def test_two_serving_processes_hot_reload_the_champion_both(stack: Stack):
    """Two ``ctrain serve`` replicas against the MLflow server, as the serving user (READ on the
    model only), with a token; the alias moves and both answer with the new version, with no
    failed request while it moves."""
    topo, timer = stack.topo, stack.timer
    mv = _champion_version(stack)
    token = secrets.token_urlsafe(24)
    env = clean_env(
        CTRAIN_HOME=str(stack.ctrain_home),
        CTRAIN_TRACKING_URI=stack.mlflow_url,
        CTRAIN_SERVING__RELOAD_SECONDS="1",
        CTRAIN_SERVE_TOKEN=token,
        MLFLOW_TRACKING_USERNAME=SERVING,
        MLFLOW_TRACKING_PASSWORD=stack.serving_password,
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false",
    )
    ports = free_ports(2)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    with timer.phase("start 2 ctrain serve replicas"):
        for i, port in enumerate(ports):
            topo.start(
                f"serving-{i}",
                [str(VENV_BIN / "ctrain"), "serve", "--port", str(port)],
                env,
                cwd=stack.ctrain_home,
            )
        for i, url in enumerate(urls):
            wait_until(f"serving-{i} /ready", http_ok(f"{url}/ready"), 120, topo)
    rows = {"rows": _demo_rows(stack, 3)}
    auth = {"Authorization": f"Bearer {token}"}
    for url in urls:
        assert requests.post(f"{url}/predict", json=rows, timeout=30).status_code == 401
        r = requests.post(f"{url}/predict", json=rows, headers=auth, timeout=30)
        assert r.status_code == 200 and r.json()["model_version"] == mv, r.text

    # The serving user cannot move the alias itself (READ only); the admin registers a second
    # version of the same files and moves the alias, as a promotion would.
    admin = requests.Session()
    admin.auth = stack.mlflow_admin
    api2 = f"{stack.mlflow_url}/api/2.0/mlflow"
    serving = requests.Session()
    serving.auth = (SERVING, stack.serving_password)
    r = serving.post(
        f"{api2}/registered-models/alias",
        json={"name": MODEL, "alias": "champion", "version": mv},
        timeout=30,
    )
    assert r.status_code == 403, (r.status_code, r.text)
    first = admin.get(
        f"{api2}/model-versions/get", params={"name": MODEL, "version": mv}, timeout=30
    ).json()["model_version"]
    r = admin.post(
        f"{api2}/model-versions/create",
        json={
            "name": MODEL,
            "source": first["source"],
            "run_id": first["run_id"],
            # MLflow 3: a source models:/m-... must come with the id of that logged model.
            "model_id": first.get("model_id") or first["source"].removeprefix("models:/"),
        },
        timeout=30,
    )
    assert r.status_code == 200, (r.status_code, r.text)
    new = r.json()["model_version"]["version"]
    with timer.phase("alias moves; both replicas reload under traffic"):
        r = admin.post(
            f"{api2}/registered-models/alias",
            json={"name": MODEL, "alias": "champion", "version": new},
            timeout=30,
        )
        assert r.status_code == 200, (r.status_code, r.text)
        seen = {url: [] for url in urls}
        failures = []

        def both_switched() -> bool:
            for url in urls:
                r = requests.post(f"{url}/predict", json=rows, headers=auth, timeout=30)
                if r.status_code != 200:
                    failures.append((url, r.status_code, r.text[:200]))
                else:
                    seen[url].append(r.json()["model_version"])
            return all(v and v[-1] == new for v in seen.values())

        wait_for("both replicas to answer with the new version", both_switched, 60, 0)
    assert not failures, failures[:3]
    for url, versions in seen.items():
        assert versions and versions[-1] == new, (url, versions[-5:])
        switched = versions.index(new)
        assert set(versions[switched:]) == {new}, (url, versions)
        health = requests.get(f"{url}/health", timeout=30).json()
        assert health["serving_version"] == new and health["not_serving"] is None, health


def _champion_version(stack: Stack) -> str:
    admin = requests.Session()
    admin.auth = stack.mlflow_admin
    r = admin.get(
        f"{stack.mlflow_url}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL, "alias": "champion"},
        timeout=30,
    )
    assert r.status_code == 200, (r.status_code, r.text)
    return str(r.json()["model_version"]["version"])


def _demo_rows(stack: Stack, n: int) -> list[dict]:
    from ctrain.data.demo_source import DemoSource

    df = DemoSource().batch(30).head(n).drop(columns=["label"])
    df["event_time"] = df["event_time"].astype(str)
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")


def test_refusals_without_valid_credentials_or_grants(stack: Stack):
    af, ml = stack.airflow_url, stack.mlflow_url
    api2 = f"{ml}/api/2.0/mlflow"
    with stack.timer.phase("refusal checks"):
        # Airflow: no token, wrong password; the ctrain view's routes too.
        r = requests.get(f"{af}/api/v2/dags", timeout=30)
        assert r.status_code in (401, 403), (r.status_code, r.text)
        r = requests.get(f"{af}/ctrain/api/models/{MODEL}", timeout=30)
        assert r.status_code == 401, (r.status_code, r.text)
        r = requests.post(
            f"{af}/auth/token", json={"username": "admin", "password": "wrong-password"}, timeout=30
        )
        assert r.status_code in (401, 403), (r.status_code, r.text)

        # MLflow: no credentials, wrong password.
        r = requests.get(f"{api2}/experiments/search", params={"max_results": 10}, timeout=30)
        assert r.status_code == 401, (r.status_code, r.text)
        r = requests.get(
            f"{api2}/experiments/search",
            params={"max_results": 10},
            auth=("admin", "wrong-password"),
            timeout=30,
        )
        assert r.status_code == 401, (r.status_code, r.text)

        # MLflow: a Host header outside --allowed-hosts is refused (DNS-rebinding protection).
        r = requests.get(
            f"{api2}/experiments/search",
            params={"max_results": 10},
            auth=stack.mlflow_admin,
            headers={"Host": "attacker.example"},
            timeout=30,
        )
        assert r.status_code in (400, 403), (r.status_code, r.text)

        # MLflow: a model-version source outside the server's store is refused, even for admin.
        r = requests.post(
            f"{api2}/model-versions/create",
            json={"name": MODEL, "source": "s3://somewhere-else/model"},
            auth=stack.mlflow_admin,
            timeout=30,
        )
        assert r.status_code == 400 and "Invalid model version source" in r.text, (
            r.status_code,
            r.text,
        )

        # MLflow: a new user has no permission on anything (default_permission = NO_PERMISSIONS).
        admin = requests.Session()
        admin.auth = stack.mlflow_admin
        r = admin.get(
            f"{api2}/experiments/get-by-name", params={"experiment_name": DECISIONS}, timeout=30
        )
        if r.status_code == 404:  # the end-to-end test did not get that far: make one
            r = admin.post(f"{api2}/experiments/create", json={"name": DECISIONS}, timeout=30)
            assert r.status_code == 200, r.text
        else:
            assert r.status_code == 200, r.text
        viewer = ("viewer-" + secrets.token_hex(3), secrets.token_urlsafe(18))
        r = admin.post(
            f"{api2}/users/create", json={"username": viewer[0], "password": viewer[1]}, timeout=30
        )
        assert r.status_code == 200, (r.status_code, r.text)
        r = requests.get(
            f"{api2}/experiments/get-by-name",
            params={"experiment_name": DECISIONS},
            auth=viewer,
            timeout=30,
        )
        assert r.status_code == 403, (r.status_code, r.text)
        r = requests.get(
            f"{api2}/registered-models/alias",
            params={"name": MODEL, "alias": "champion"},
            auth=viewer,
            timeout=30,
        )
        assert r.status_code in (403, 404), (r.status_code, r.text)
        r = requests.get(
            f"{api2}/experiments/search", params={"max_results": 100}, auth=viewer, timeout=30
        )
        assert r.status_code == 200, (r.status_code, r.text)
        visible = [e["name"] for e in r.json().get("experiments", [])]
        assert DECISIONS not in visible and "ctrain-training" not in visible, visible


def test_each_service_has_only_the_access_it_needs(stack: Stack):
    api2 = f"{stack.mlflow_url}/api/2.0/mlflow"
    with stack.timer.phase("least-privilege checks"):
        worker = requests.Session()
        worker.auth = stack.mlflow_worker
        # The workers' MLflow user reads and writes ctrain's model and experiments...
        r = worker.get(f"{api2}/registered-models/get", params={"name": MODEL}, timeout=30)
        assert r.status_code == 200, (r.status_code, r.text)
        r = worker.get(
            f"{api2}/experiments/get-by-name", params={"experiment_name": DECISIONS}, timeout=30
        )
        assert r.status_code == 200, (r.status_code, r.text)
        decisions_id = r.json()["experiment"]["experiment_id"]
        # ...but cannot delete them, nor create users.
        r = worker.delete(f"{api2}/registered-models/delete", json={"name": MODEL}, timeout=30)
        assert r.status_code == 403, (r.status_code, r.text)
        r = worker.post(
            f"{api2}/experiments/delete", json={"experiment_id": decisions_id}, timeout=30
        )
        assert r.status_code == 403, (r.status_code, r.text)
        r = worker.post(
            f"{api2}/users/create",
            json={"username": "x-" + secrets.token_hex(3), "password": "p" * 12},
            timeout=30,
        )
        assert r.status_code == 403, (r.status_code, r.text)
        admin = requests.Session()
        admin.auth = stack.mlflow_admin
        r = admin.get(f"{api2}/registered-models/get", params={"name": MODEL}, timeout=30)
        assert r.status_code == 200, "the worker's refused delete must have left the model"
        # The API server's user reads the records (the ctrain view) and can change nothing.
        viewer = requests.Session()
        viewer.auth = stack.mlflow_viewer
        r = viewer.get(f"{api2}/registered-models/get", params={"name": MODEL}, timeout=30)
        assert r.status_code == 200, (r.status_code, r.text)
        r = viewer.post(
            f"{api2}/registered-models/alias",
            json={"name": MODEL, "alias": "champion", "version": "1"},
            timeout=30,
        )
        assert r.status_code == 403, (r.status_code, r.text)
        r = viewer.post(f"{api2}/runs/create", json={"experiment_id": decisions_id}, timeout=30)
        assert r.status_code == 403, (r.status_code, r.text)

    # PostgreSQL: each role reaches its own databases only.
    owners, dbs = stack.owners, stack.dbs
    lock_role, airflow_role = owners[dbs["lock"]], owners[dbs["airflow"]]
    mlflow_role = owners[dbs["mlflow"]]
    assert pg_can_connect(dbs["lock"], lock_role) is None
    for db in (dbs["airflow"], dbs["mlflow"], dbs["auth"]):
        refused = pg_can_connect(db, lock_role)
        assert refused and "permission denied" in refused, (db, refused)
    for db in (dbs["mlflow"], dbs["auth"], dbs["lock"]):
        assert pg_can_connect(db, airflow_role), db
    for db in (dbs["airflow"], dbs["lock"]):
        assert pg_can_connect(db, mlflow_role), db
    # And none of them is a superuser that could grant itself more.
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    with conn.cursor() as cur:
        cur.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) AND (rolsuper OR rolcreaterole OR rolcreatedb)",
            (sorted(set(owners.values())),),
        )
        assert cur.fetchall() == []
    conn.close()
