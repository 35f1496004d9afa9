"""Run Airflow and MLflow on the embedded stores: environment, commands, and their logs.

Builds the environment that points Airflow at ``CTRAIN_HOME/airflow`` (SQLite), the repo's
``dags/`` and ``plugins/``, and runs Airflow's own CLI in subprocesses, so the DAGs run through
real Airflow. Nothing here imports Airflow.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ctrain import dag_ids
from ctrain.settings import Settings, project_root

_ALL_DAGS = "^(" + "|".join(dag_ids.ALL) + ")$"

# Libraries the ct_* tasks import: 10-15 s of imports on 2 cores, paid by every task process.
# The scheduler's LocalExecutor starts its workers from a forkserver that has imported them once,
# and each task process is forked from a worker, so tasks inherit them copy-on-write (Airflow
# 3.3's [scheduler] mp_start_method / mp_forkserver_preload). None of them starts a thread at
# import, so forking after them is safe. ctrain's own modules are left out: they import in about
# 0.1 s once these are loaded, and an edit to them takes effect without restarting the scheduler.
TASK_PRELOAD = (
    "airflow.sdk",
    "pandas",
    "pyarrow.parquet",
    "scipy.stats",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.model_selection",
    "skops.io",
    "mlflow",
    "mlflow.sklearn",
    # Importing these configures every SQLAlchemy mapper in the process, Airflow's included.
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "great_expectations",
    "evidently",
)


def airflow_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment for Airflow commands on the embedded default."""
    env = dict(os.environ if base is None else base)
    home = settings.airflow_home
    # Airflow's own launchers (standalone, dags test) start `airflow` subcommands by name.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        {
            "CTRAIN_HOME": str(settings.root),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.resolved_dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(project_root() / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The home is ctrain's own: its DAGs start unpaused, so data that lands is acted on.
            # A DAG a person pauses stays paused.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
            "AIRFLOW__API__HOST": env.get("AIRFLOW__API__HOST", "127.0.0.1"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": "ctrain\\..*",
            "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
            "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ",".join(TASK_PRELOAD),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
            "GX_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PYTHONWARNINGS": env.get("PYTHONWARNINGS", "ignore"),
        }
    )
    if os.environ.get("CTRAIN_PROJECT"):
        env["CTRAIN_PROJECT"] = str(Path(os.environ["CTRAIN_PROJECT"]).resolve())
    return env


def api_server_env(port: int) -> dict[str, str]:
    """What Airflow needs to serve its UI and its Task Execution API on ``127.0.0.1:port``.

    Tasks reach Airflow through the execution API, whose address does not follow
    ``[api] port``: without it they call ``localhost:8080``.
    """
    return {
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that nothing listens on right now (all sockets
    are held open together, so no two are the same)."""
    import socket

    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def wait_for(
    what: str,
    done: Callable[[], Any],
    timeout: float = 300,
    interval: float = 0.5,
    alive: Callable[[], bool] | None = None,
) -> Any:
    """Call ``done`` every ``interval`` seconds until it returns something true, and return that.

    Raises ``TimeoutError`` once ``timeout`` seconds have passed, and ``RuntimeError`` as soon as
    ``alive()`` (the services being waited on) is false. The one poll loop of the demo, the tests
    and the bench.
    """
    deadline = time.monotonic() + timeout
    while not (value := done()):
        if alive is not None and not alive():
            raise RuntimeError(f"a service stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting {timeout:.0f}s for {what}")
        time.sleep(interval)
    return value


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def run_airflow(
    settings: Settings, args: list[str], log_file: Path, extra_env: dict[str, str] | None = None
) -> int:
    """Run ``airflow *args`` with the embedded environment, appending its output to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = airflow_env(settings) | (extra_env or {})
    with open(log_file, "a") as log:
        log.write(f"\n$ airflow {' '.join(args)}\n")
        log.flush()
        return subprocess.run(
            [airflow_bin(), *args], env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode


def migrate(settings: Settings, log_file: Path) -> None:
    """Create or upgrade Airflow's metadata database."""
    if run_airflow(settings, ["db", "migrate"], log_file) != 0:
        raise RuntimeError(f"airflow db migrate failed; see {log_file}")


def dag_test(settings: Settings, dag_id: str, log: Path, conf: dict | None = None) -> float:
    """``airflow dags test`` of ``dag_id`` (a real DAG run, executed in one process) on the
    embedded stores; its output goes to ``log``. Returns its duration in seconds."""
    import json

    started = time.monotonic()
    args = ["dags", "test", dag_id] + (["--conf", json.dumps(conf)] if conf else [])
    print(f"  $ airflow {' '.join(args)}", flush=True)
    # No scheduler watches a run made here, so ct_training gets no Deadline Alert (and Airflow
    # 3.3.2's `dags test` fails a successful run of a DAG that has one: apache/airflow#73428).
    no_deadline = {"CTRAIN_ALERTS__TRAINING_RUN_MINUTES": "none"}
    if run_airflow(settings, args, log, no_deadline) != 0:
        raise RuntimeError(f"airflow dags test {dag_id} failed; see {log}")
    return time.monotonic() - started


class Services:
    """Long-running processes started together and stopped as a whole (a context manager).

    Each runs in its own process group, so whatever it starts is stopped with it: first SIGINT
    (the clean shutdown of Airflow's components and of MLflow's server), then SIGKILL for
    anything still alive after ``grace`` seconds. Nothing outlives ``stop``.
    """

    def __init__(self, env: dict[str, str] | None = None, grace: float = 30):
        self.env, self.grace = env, grace
        self.procs: list[subprocess.Popen] = []

    def start(
        self, args: list[str], log: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start ``args`` (with ``env``, else the services' environment); its output goes to
        ``log`` (appended), or where this process's goes."""
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the log's descriptor; ours closes at once.
        with open(log, "a") if log is not None else contextlib.nullcontext() as out:
            proc = subprocess.Popen(
                args,
                env=self.env if env is None else env,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGINT)
        deadline = time.monotonic() + self.grace
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # stragglers in the group (task runners)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# Where a model version's files may be: a logged model of the server, or its own served store
# (MLflow refuses to register a version pointing anywhere else, e.g. another server's files).
MODEL_SOURCE_REGEX = r"^(models:/m-[0-9a-f]+|mlflow-artifacts:/[^/].*)$"


class MlflowServers(Services):
    """MLflow tracking servers as one environment's is run in production, on this machine: each on
    a SQLite store in its own folder, serving its own artifacts, with MLflow's basic-auth app
    (users in a SQLite file beside the store; nobody but the admin sees what was not granted)."""

    def __init__(self, grace: float = 30):
        super().__init__(grace=grace)
        self.urls: list[str] = []

    def add(self, root: Path, admin_password: str) -> str:
        """Start a server on ``root`` whose admin (``admin``) has ``admin_password``; its URL."""
        import secrets

        port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        ini = root / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "grant_default_workspace_access = false\n"
            "auth_cache_ttl_seconds = 60\n"
        )
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CTRAIN_", "MLFLOW_TRACK"))
        } | {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
            "MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX": MODEL_SOURCE_REGEX,
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        args = [str(Path(sys.executable).with_name("mlflow")), "server", "--app-name"]
        args += ["basic-auth", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
        args += ["--serve-artifacts", "--artifacts-destination", str(root / "artifacts")]
        args += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        self.start(args, root / "server.log", env=env)
        self.urls.append(f"http://127.0.0.1:{port}")
        return self.urls[-1]

    def wait_until_serving(self, timeout: float = 180) -> None:
        """Return once every server answers ``/health``; raise if one stopped."""
        import urllib.request

        def up(url: str) -> bool:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        for url in self.urls:
            wait_for(f"mlflow server at {url}", lambda u=url: up(u), timeout, alive=self.alive)


class AirflowServices(Services):
    """Airflow's API server, scheduler, DAG processor and triggerer on the embedded stores, as a
    context manager; with the calls the demo, the tests and the bench make of them (REST with a
    token, approvals, triggers)."""

    # Tasks reach Airflow through the api-server's Task Execution API, so it runs here too.
    COMPONENTS = (["api-server"], ["scheduler"], ["dag-processor"], ["triggerer"])

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
        grace: float = 30,
        base_env: dict[str, str] | None = None,
    ):
        port, worker_logs, trigger_logs = free_ports(3)
        env = (
            airflow_env(settings, base_env)
            | api_server_env(port)
            | {
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_logs),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_logs),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__CORE__PARALLELISM": "2",
            }
            | (extra_env or {})
        )
        super().__init__(env, grace)
        self.settings, self.log_dir = settings, log_dir
        self.base_url = f"http://127.0.0.1:{port}"
        self._token: str | None = None

    def __enter__(self) -> AirflowServices:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # DAGs first registered by `airflow dags test` were created paused; new ones are not.
        with open(self.log_dir / "unpause.log", "a") as log:
            subprocess.run(
                [airflow_bin(), "dags", "unpause", "--treat-dag-id-as-regex", _ALL_DAGS, "-y"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        try:
            for args in self.COMPONENTS:
                self.start([airflow_bin(), *args], self.log_dir / f"{args[0]}.log")
        except BaseException:
            self.stop()
            raise
        return self

    def admin_password(self, user: str = "admin") -> str:
        """The generated password of Airflow's ``admin`` user (SimpleAuthManager), or of
        another user it was told of (``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS``)."""
        import json

        path = self.settings.airflow_home / "simple_auth_manager_passwords.json.generated"
        return json.loads(path.read_text())[user]

    def token(self, username: str = "admin", password: str | None = None) -> str:
        """A JWT from ``POST /auth/token``, as the UI and the official clients get one."""
        status, body = self.api(
            "POST",
            "/auth/token",
            {"username": username, "password": password or self.admin_password(username)},
            token="",
        )
        if status not in (200, 201):
            raise RuntimeError(f"POST /auth/token answered {status}: {body}")
        return body["access_token"]

    def api(
        self, method: str, path: str, body: dict | None = None, token: str | None = None
    ) -> tuple[int, Any]:
        """Call the API server; returns ``(status, parsed JSON or text)``. ``token=None`` logs in
        as admin (once), ``""`` sends no credentials."""
        import json
        import urllib.error
        import urllib.request

        if token is None:
            self._token = self._token or self.token()
            token = self._token
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def wait_until_serving(self, timeout: float = 120) -> None:
        """Wait until the API server answers its health check."""

        def healthy() -> bool:
            try:
                return self.api("GET", "/api/v2/monitor/health", token="")[0] == 200
            except OSError:
                return False

        wait_for("Airflow's API server", healthy, timeout, interval=0.5, alive=self.alive)

    def pending_approvals(self, dag_id: str) -> list[dict]:
        """Human-in-the-loop requests of ``dag_id`` that no one has answered."""
        status, body = self.api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails?response_received=false"
        )
        if status != 200:
            raise RuntimeError(f"listing approvals answered {status}: {body}")
        return list(body["hitl_details"])

    def answer(
        self, detail: dict, option: str, comment: str, token: str | None = None
    ) -> dict | None:
        """Answer a human-in-the-loop request as a person does in the UI; None if someone
        answered it first."""
        ti = detail["task_instance"]
        path = (
            f"/api/v2/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/"
            f"{ti['task_id']}/{ti['map_index']}/hitlDetails"
        )
        body = {"chosen_options": [option], "params_input": {"comment": comment}}
        status, out = self.api("PATCH", path, body, token=token)
        if status == 409:
            return None
        if status != 200:
            raise RuntimeError(f"answering {path} answered {status}: {out}")
        return out

    def trigger(
        self, dag_id: str, conf: dict | None = None, timeout: float = 300, run_id: str | None = None
    ) -> None:
        """``airflow dags trigger``, retried until the DAG processor has registered the DAG."""
        import json

        args = [airflow_bin(), "dags", "trigger", dag_id]
        args += ["--conf", json.dumps(conf)] if conf else []
        args += ["--run-id", run_id] if run_id else []

        def once() -> bool:
            out = subprocess.run(args, env=self.env, capture_output=True, text=True)
            if out.returncode != 0 and "DagNotFound" not in out.stderr:
                raise RuntimeError(f"airflow dags trigger {dag_id} failed: {out.stderr[-2000:]}")
            return out.returncode == 0

        wait_for(f"{dag_id} to be registered", once, timeout, interval=2, alive=self.alive)
