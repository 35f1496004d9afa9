"""Helpers for running ctrain's production topology natively: ports, PostgreSQL databases, a Redis
database index, long-running processes in their own process groups, health waits and teardown.

Every process started here carries an environment marker (``CTRAIN_TOPOLOGY_RUN``) that its
children inherit, so teardown finds and kills stragglers even if they left the process group or
were re-parented (Celery pool children, task supervisors, uvicorn/gunicorn workers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from ctrain.runtime import wait_for

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

PG_HOST = os.environ.get("CTRAIN_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CTRAIN_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("CTRAIN_TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("CTRAIN_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CTRAIN_TEST_REDIS_PORT", "6379"))

MARKER = "CTRAIN_TOPOLOGY_RUN"

# The production shape, shared by the native run and the static check of docker-compose.yaml.
AIRFLOW_DB_SCHEME = "postgresql+psycopg2"  # [database] sql_alchemy_conn
RESULT_BACKEND_SCHEME = "db+postgresql"  # [celery] result_backend
BROKER_SCHEME = "redis"  # [celery] broker_url
# MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX (mlflow/environment_variables.py; checked in
# mlflow/server/handlers.py:_create_model_version before anything is stored): a model version may
# only point at a logged model of this server (``models:/m-<id>``, whose lineage the server then
# checks against ``model_id``) or into the server's own proxied store (``mlflow-artifacts:/<path>``,
# no host). Without it the server accepts any non-local source, e.g. ``s3://another-bucket/...``.
MODEL_SOURCE_REGEX = r"^(models:/m-[0-9a-f]+|mlflow-artifacts:/[^/].*)$"
# Settings every Airflow component needs in production, and the values they must not differ in.
AIRFLOW_PRODUCTION_KEYS = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__FAB__CUSTOM_ROLES",
    "CTRAIN_HOME",
    "CTRAIN_TRACKING_URI",
    "CTRAIN_LOCK_URL",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
MLFLOW_PRODUCTION_KEYS = (
    "MLFLOW_AUTH_CONFIG_PATH",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX",
)


# --- PostgreSQL and Redis -------------------------------------------------------------------------


def pg_url(db: str, scheme: str = "postgresql", user: str = PG_USER) -> str:
    """A trust-auth URL for ``db`` as ``user`` on the local server (``postgresql+psycopg2://...``)."""
    return f"{scheme}://{user}@{PG_HOST}:{PG_PORT}/{db}"


def _pg_admin():
    import psycopg2

    conn = psycopg2.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=10
    )
    conn.autocommit = True
    return conn


def pg_available() -> str | None:
    """None when the local PostgreSQL server answers, else why not."""
    try:
        _pg_admin().close()
        return None
    except Exception as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} unavailable: {exc}"


def redis_available() -> str | None:
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5).ping()
        return None
    except Exception as exc:
        return f"Redis at {REDIS_HOST}:{REDIS_PORT} unavailable: {exc}"


@contextlib.contextmanager
def pg_databases(*names: str) -> Iterator[list[str]]:
    """Create fresh databases ``names``; drop them WITH (FORCE) afterwards, even on failure."""
    from psycopg2 import sql

    created: list[str] = []
    try:
        conn = _pg_admin()
        try:
            with conn.cursor() as cur:
                for name in names:
                    cur.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created.append(name)
        finally:
            conn.close()
        yield created
    finally:
        errors = []
        conn = _pg_admin()
        try:
            with conn.cursor() as cur:
                for name in created:
                    try:
                        cur.execute(
                            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                                sql.Identifier(name)
                            )
                        )
                    except Exception as exc:  # keep dropping the others
                        errors.append(f"{name}: {exc}")
        finally:
            conn.close()
        if errors:
            raise RuntimeError(f"could not drop test databases: {errors}")


@contextlib.contextmanager
def pg_owned_databases(owners: dict[str, str]) -> Iterator[dict[str, str]]:
    """Fresh databases, each owned by its own new login role (``{database: role}``), that only
    their owner may connect to: the least-privilege layout of the production shape. Dropped,
    roles too, afterwards."""
    from psycopg2 import sql

    with pg_databases(*owners) as created:
        conn = _pg_admin()
        try:
            with conn.cursor() as cur:
                for role in sorted(set(owners.values())):
                    cur.execute(
                        sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                            sql.Identifier(role)
                        )
                    )
                for db in created:
                    ident, role = sql.Identifier(db), sql.Identifier(owners[db])
                    cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident, role))
                    cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
            yield owners
        finally:
            with conn.cursor() as cur:
                for db in created:  # the roles can only go once nothing of theirs is left
                    cur.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(db)
                        )
                    )
                for role in sorted(set(owners.values())):
                    cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            conn.close()


def pg_can_connect(db: str, user: str) -> str | None:
    """None when ``user`` may connect to ``db``, else PostgreSQL's refusal."""
    import psycopg2

    try:
        psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=user, dbname=db, connect_timeout=10
        ).close()
        return None
    except psycopg2.OperationalError as exc:
        return str(exc).strip()


def pg_database_exists(name: str) -> bool:
    conn = _pg_admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None
    finally:
        conn.close()


@contextlib.contextmanager
def redis_db(index: int) -> Iterator[str]:
    """FLUSHDB Redis database ``index`` before and after; yields its URL."""
    import redis

    r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=index, socket_timeout=10)
    r.flushdb()
    try:
        yield f"{BROKER_SCHEME}://{REDIS_HOST}:{REDIS_PORT}/{index}"
    finally:
        r.flushdb()
        r.close()


# --- processes ------------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Airflow/MLflow/ctrain settings, plus ``extra``."""
    drop = ("AIRFLOW", "MLFLOW_", "CTRAIN_", "_MLFLOW", "PYTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Service:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ({self.log}) ---\n{tail(self.log, lines)}"


@dataclass
class Topology:
    """The processes of one test run; all share one environment marker."""

    run_id: str
    logs: Path
    services: dict[str, Service] = field(default_factory=dict)
    exits: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Service:
        log = self.logs / f"{name}.log"
        fh = open(log, "ab")  # noqa: SIM115 - the child owns it; closed below after fork
        try:
            proc = subprocess.Popen(
                argv,
                env={**env, MARKER: self.run_id},
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group
            )
        finally:
            fh.close()
        svc = Service(name, argv, log, proc)
        self.services[name] = svc
        return svc

    def run(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, timeout: float):
        """Run a one-shot command (same marker) and fail with its output if it fails."""
        log = self.logs / f"{name}.log"
        with open(log, "ab") as fh:
            res = subprocess.run(
                argv,
                env={**env, MARKER: self.run_id},
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                start_new_session=True,
            )
        if res.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {res.returncode}\n{tail(log, 60)}")

    def dead(self) -> list[Service]:
        return [s for s in self.services.values() if not s.alive()]

    def check_alive(self) -> None:
        dead = self.dead()
        if dead:
            raise AssertionError(
                "process(es) exited early: "
                + ", ".join(f"{s.name} (rc={s.proc.returncode})" for s in dead)
                + "\n"
                + "\n".join(s.tail(60) for s in dead)
            )

    def tails(self, names: list[str] | None = None, lines: int = 40) -> str:
        return "\n".join(
            s.tail(lines) for n, s in self.services.items() if names is None or n in names
        )

    def marked(self) -> list[psutil.Process]:
        """Every live process that carries this run's marker (children included)."""
        me = os.getpid()
        found = []
        for p in psutil.process_iter(["pid"]):
            if p.pid == me:
                continue
            try:
                if p.environ().get(MARKER) == self.run_id and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        return found

    def stop(self, grace: float = 30.0) -> list[str]:
        """SIGTERM each process group (SIGINT first for Celery's warm shutdown), wait up to
        ``grace`` seconds, SIGKILL the groups, then SIGKILL any marked straggler.

        Returns a description of every process still alive afterwards (empty when clean).
        """
        groups = {}
        for s in self.services.values():
            if s.proc is None:
                continue
            try:
                groups[s.name] = os.getpgid(s.proc.pid)
            except ProcessLookupError:
                groups[s.name] = s.proc.pid  # leader gone; its group may still hold children
        for name, pgid in groups.items():
            sig = signal.SIGINT if "worker" in name else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        t0 = time.monotonic()
        deadline = t0 + grace
        waiting = [s for s in self.services.values() if s.proc is not None]
        while waiting and time.monotonic() < deadline:
            for s in list(waiting):
                if s.proc.poll() is not None:
                    waiting.remove(s)
                    self.exits.setdefault(
                        s.name, f"exited {s.proc.returncode} after {time.monotonic() - t0:.1f}s"
                    )
            time.sleep(0.1)
        # Give the groups' other members the rest of the grace period.
        while time.monotonic() < deadline and self.marked():
            time.sleep(0.5)
        for pgid in groups.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for p in self.marked():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        for s in self.services.values():
            if s.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    s.proc.wait(timeout=10)
                self.exits.setdefault(s.name, f"SIGKILLed (rc {s.proc.returncode})")
        gone_by = time.monotonic() + 10
        left = self.marked()
        while left and time.monotonic() < gone_by:
            time.sleep(0.2)
            left = self.marked()
        out = []
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                out.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
        return out


# --- waiting --------------------------------------------------------------------------------------


def wait_until(
    what: str,
    check: Callable[[], object],
    timeout: float,
    topo: Topology | None = None,
    interval: float = 1.0,
    diagnose: Callable[[], str] | None = None,
):
    """Call ``check`` until it returns something truthy (returned). Exceptions count as "not
    yet", except AssertionError, which ``check`` raises to fail at once.

    Fails early when a process of ``topo`` has died, and at ``timeout`` with the last error and
    ``diagnose()``.
    """
    last: list[object] = [None]

    def done():
        if topo is not None:
            topo.check_alive()
        try:
            result = check()
        except AssertionError:  # a verdict, not "not ready yet"
            raise
        except Exception as exc:  # not ready yet
            result = exc
        last[0] = result
        return result if result and not isinstance(result, Exception) else None

    try:
        return wait_for(what, done, timeout, interval)
    except TimeoutError:
        extra = diagnose() if diagnose else ""
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}: {last[0]!r}\n{extra}"
        ) from None


def http_ok(url: str, **kwargs) -> Callable[[], bool]:
    def check() -> bool:
        r = requests.get(url, timeout=5, **kwargs)
        return r.status_code == 200

    return check


def log_contains(path: Path, needle: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return needle in path.read_text(errors="replace")
        except OSError:
            return False

    return check


class Timer:
    """Phase timings, printed as they finish (visible with ``pytest -s``)."""

    def __init__(self, label: str = "topology") -> None:
        self.label = label
        self.phases: list[tuple[str, float]] = []
        self.t0 = time.monotonic()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            dt = time.monotonic() - start
            self.phases.append((name, dt))
            print(f"[{self.label}] {name}: {dt:.1f} s", flush=True)

    def summary(self) -> str:
        total = time.monotonic() - self.t0
        rows = "\n".join(f"  {name:<42} {dt:7.1f} s" for name, dt in self.phases)
        return f"[{self.label}] phase timings:\n{rows}\n  {'total':<42} {total:7.1f} s"
