"""Paths and helpers shared by tests."""

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "test-output"  # what the browser tests saw, for a person to look at
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DAGS = REPO / "dags"
# What the DAG files share; imported by them, not a DAG file itself (see dags/.airflowignore).
DAG_SHARED = DAGS / "ctrain_common.py"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if p != DAG_SHARED)

# One quick candidate, for tests whose subject is not the model (a gate, a rollout): a logistic
# regression with no grid, clearly better than WEAK.
QUICK = [
    {
        "name": "logistic_regression",
        "estimator": "sklearn.linear_model.LogisticRegression",
        "params": {"max_iter": 500},
        "grid": {},
    }
]

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
    """Land ``n`` batches with their labels in separate files, ingest them, train the first champion.

    Made once per project and source in a template home, then copied (``from_template``).
    """
    source = {k: v for k, v in sorted(vars(src).items()) if not k.startswith("_")}
    from_template(
        settings,
        ("bootstrap", source, n),
        lambda home: run_bootstrap(settings.model_copy(update={"home": home}), src, n),
    )


def from_template(settings, key, build):
    """Make the home of ``settings`` what ``build(home)`` makes of an empty home; return what
    ``build`` returned (JSON-able), its paths moved to this home.

    The first time for a given project and ``key`` (JSON-able: what else decides the result)
    ``build`` runs in a template home; every later time the template is copied in, with its
    paths moved to this home, which leaves the same files and records as building again (see
    ``tests/unit/test_templates.py``). A home that holds more than an empty MLflow store, or a
    project that points outside its home, gets ``build`` run in it directly.
    """
    from ctrain.tracking import configure

    digest = _project_key(settings, key)
    if digest is None or not _empty_home(settings.root):
        return build(settings.root)
    folder = template_dir() / digest
    template = folder / "ctrain"
    # One builder per template across the session's processes (pytest-xdist workers); the
    # others wait, then copy what it made.
    with open(template_dir() / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "made.json").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half way
            made = json.dumps(build(template))
            (folder / "made.json").write_text(made)
        made = (folder / "made.json").read_text()
    clone_home(template, settings.root)
    configure(settings)  # the process's MLflow points at this home's store again
    return json.loads(made.replace(str(template.resolve()), str(settings.root)))


def ingest_batches(settings, n: int = 3, start: int = 0) -> list[dict]:
    """Land demo batches ``start .. start + n - 1`` (labels in the rows) and ingest them."""
    from ctrain import steps
    from ctrain.data.demo_source import DemoSource

    src = DemoSource(**settings.demo.model_dump())
    for i in range(start, start + n):
        src.write_batch(i, settings.landing_dir)
    return [steps.ingest_one(p, settings) for p in steps.list_landed(settings)]


def trained_champion(settings, run_id: str = "base") -> dict:
    """Three demo batches (labels in their rows) ingested and a first champion trained on them;
    returns the training's decision (made once per project, then copied: ``from_template``)."""
    from ctrain import steps
    from ctrain.records import RunContext

    def build(home):
        here = settings.model_copy(update={"home": home})
        ingest_batches(here, 3)
        return steps.run_training(RunContext(run_id=run_id), settings=here)

    return from_template(settings, ("champion", run_id), build)


def run_bootstrap(settings, src, n: int = 3) -> None:
    """The bootstrap itself, run in the home of ``settings``."""
    from ctrain import steps
    from ctrain.records import RunContext

    for i in range(n):
        src.write_batch(i, settings.landing_dir, with_labels=False)
        src.write_labels(i, settings.labels_landing_dir)
    for p in steps.list_landed(settings):
        steps.ingest_one(p, settings)
    steps.ingest_labels(settings)
    steps.run_training(RunContext(run_id="bootstrap"), settings=settings)


_TEMPLATE_DIR: Path | None = None


def template_dir() -> Path:
    """Where templates are kept: ``use_template_dir``'s folder (the session's, shared by its
    workers), else a folder of this process, removed at exit."""
    global _TEMPLATE_DIR
    if _TEMPLATE_DIR is None:
        _TEMPLATE_DIR = Path(tempfile.mkdtemp(prefix="ctrain-templates-"))
        atexit.register(shutil.rmtree, _TEMPLATE_DIR, True)
    return _TEMPLATE_DIR


def use_template_dir(folder: Path) -> None:
    global _TEMPLATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _TEMPLATE_DIR = folder


def _project_key(settings, key) -> str | None:
    """``key`` with what of the project a home's content depends on: all but its home and what
    only later stages read (monitoring, schedules, serving but its strategy). None when the
    project points outside its home (its own landing folders or tracking server)."""
    if settings.tracking_uri or settings.dataset.landing_dir or settings.dataset.labels_landing_dir:
        return None
    parts = settings.model_dump(
        mode="json",
        exclude={"home", "monitoring", "schedules", "serving", "dags_folder", "train_on_new_data"},
    )
    parts["strategy"] = settings.serving.rollout.strategy
    parts["key"] = key
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _empty_home(root: Path) -> bool:
    """Nothing in ``root`` but (perhaps) an MLflow store without runs."""
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    if any(p != root / "mlflow" / "mlflow.db" for p in files):
        return False
    if not files:
        return True
    with contextlib.closing(sqlite3.connect(files[0])) as db:
        return db.execute("select count(*) from runs").fetchone()[0] == 0


def empty_mlflow_store(folder: Path | None = None) -> Path:
    """A new MLflow SQLite store, created and migrated as ctrain's client creates one."""
    from mlflow import MlflowClient

    folder = folder or template_dir() / "empty-mlflow"
    path = folder / "mlflow.db"
    with open(template_dir() / "empty-mlflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").exists():
            folder.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{path}"
            MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
            (folder / "done").touch()
    return path


def migrated_airflow_db() -> Path:
    """An Airflow metadata database (SQLite) migrated once per session by ``airflow db migrate``;
    copy it (``copy_store``) where a fresh one is wanted."""
    import subprocess
    import sys

    folder = template_dir() / "airflow"
    path = folder / "airflow.db"
    with open(template_dir() / "airflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").exists():
            folder.mkdir(parents=True, exist_ok=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__DATABASE")}
            subprocess.run(
                [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
                check=True,
                capture_output=True,
                env=env | {"AIRFLOW_HOME": str(folder)},
            )
            (folder / "done").touch()
    return path


def copy_store(source: Path, dest: Path, moved: tuple[str, str] | None = None) -> None:
    """Copy an SQLite store into ``dest`` page by page (SQLite's backup API: a connection already
    open on ``dest`` sees the new content); with ``moved=(old, new)``, every text value that names
    ``old`` names ``new`` instead."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(dest)) as out,
    ):
        src.backup(out)
        if moved:
            old, new = moved
            tables = [
                r[0] for r in out.execute("select name from sqlite_master where type='table'")
            ]
            for table in tables:
                for _, column, kind, *_ in out.execute(f"pragma table_info('{table}')"):
                    if any(t in kind.upper() for t in ("CHAR", "TEXT", "CLOB")):
                        out.execute(
                            f'update "{table}" set "{column}" = replace("{column}", ?, ?) '
                            f'where instr("{column}", ?) > 0',
                            (old, new, old),
                        )
            out.commit()


def clone_home(template: Path, dest: Path) -> None:
    """``dest`` becomes what ``template`` is, as if made there: files copied (times kept), and every
    absolute path of the template, in text files and in the MLflow store, moved to ``dest``."""
    old, new = str(template.resolve()), str(dest.resolve())
    store = template / "mlflow" / "mlflow.db"
    for path in sorted(template.rglob("*")):
        target = dest / path.relative_to(template)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path == store:
            copy_store(path, target, moved=(old, new))
        else:
            data = path.read_bytes()
            target.parent.mkdir(parents=True, exist_ok=True)
            if old.encode() in data:
                target.write_text(data.decode().replace(old, new))  # a text file: it names a path
                shutil.copystat(path, target)
            else:
                shutil.copy2(path, target)
    if store.exists():
        _rehash_models(dest / "mlflow")


def _rehash_models(mlflow_dir: Path) -> None:
    """The ``model_sha256`` tags of a cloned store, of its files as they are now: a model's
    ``MLmodel`` names the folder it was logged into, which the clone moved."""
    from ctrain.registry import manifest, manifest_digest

    def digest(model_uri: str) -> str:
        model_id = model_uri.removeprefix("models:/")
        return manifest_digest(
            manifest(mlflow_dir / "artifacts" / "models" / model_id / "artifacts")
        )

    with contextlib.closing(sqlite3.connect(mlflow_dir / "mlflow.db")) as db:
        rows = db.execute(
            "select t.name, t.version, v.source from model_version_tags t join model_versions v "
            "on v.name = t.name and v.version = t.version where t.key = 'model_sha256'"
        ).fetchall()
        for name, version, source in rows:
            db.execute(
                "update model_version_tags set value = ? where name = ? and version = ? "
                "and key = 'model_sha256'",
                (digest(source), name, version),
            )
        rows = db.execute(
            "select t.run_uuid, u.value from tags t join tags u on u.run_uuid = t.run_uuid "
            "and u.key = 'model_uri' where t.key = 'model_sha256'"
        ).fetchall()
        for run_uuid, uri in rows:
            db.execute(
                "update tags set value = ? where run_uuid = ? and key = 'model_sha256'",
                (digest(uri), run_uuid),
            )
        db.commit()


def browser():
    """Headless Debian Chromium driven by Selenium (``ctrain.harness.browser.chromium``, a
    context manager); the test fails, saying what to install, when it is missing."""
    import pytest

    from ctrain.harness.browser import NoBrowser, chromium, require

    try:
        require()
    except NoBrowser as exc:
        pytest.fail(str(exc))
    return chromium()


class Payload:
    """Unpickling this object runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def view_in_browser(
    base: str,
    password: str,
    shot,
    ready: str = "version 2",
    rollout: bool = False,
    environments: bool = False,
) -> dict:
    """Log into Airflow's UI at ``base`` as admin, open the ctrain view, wait until the champion
    card says ``ready`` (with ``rollout``, until a running rollout's guardrails are drawn; with
    ``environments``, until the Environments panel is drawn), read what it shows, and save a
    screenshot at ``shot``."""
    with browser() as driver:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        from ctrain.harness.browser import log_in

        wait = WebDriverWait(driver, 60)
        log_in(driver, base, password)
        driver.get(f"{base}/plugin/ctrain")
        frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe")))
        driver.switch_to.frame(frame)
        wait.until(ec.text_to_be_present_in_element((By.ID, "card-champion"), ready))
        if rollout:  # the first look at the step may come with one of the page's later reads
            WebDriverWait(driver, 90).until(
                ec.presence_of_element_located((By.ID, "rollout-guardrails"))
            )
        if environments:
            WebDriverWait(driver, 60).until(
                ec.presence_of_element_located((By.CSS_SELECTOR, "#env-table tbody tr"))
            )
        seen = {
            "environments": [
                e.text for e in driver.find_elements(By.CSS_SELECTOR, "#env-table tbody tr")
            ],
            "champion": driver.find_element(By.ID, "card-champion").text,
            "history": len(driver.find_elements(By.CSS_SELECTOR, "#history li")),
            "charts": len(driver.find_elements(By.CSS_SELECTOR, "#charts svg")),
            "rows": len(driver.find_elements(By.CSS_SELECTOR, "#windows tbody tr")),
            "pending": driver.find_element(By.ID, "pending").text,
            "error": driver.find_element(By.ID, "error").text,
            "rollout": "\n".join(e.text for e in driver.find_elements(By.ID, "card-rollout")),
            # From the start of the view's navigation to its records drawn (the page keeps it).
            "first_load_ms": driver.execute_script("return window.ctrainFirstLoadMs"),
        }
        # How long the API server's read of the records took as it started: set only by that
        # read (the app's lifespan), never by a request, so None means no read ran ahead.
        warmed = """const done = arguments[arguments.length - 1];
            fetch("api/models").then(r => r.json())
              .then(m => fetch(`api/models/${encodeURIComponent(m[0].name)}`))
              .then(r => r.json()).then(o => done(o.warmed_in), e => done(null));"""
        from ctrain.runtime import wait_for

        def read_ahead():
            value = driver.execute_async_script(warmed)
            return None if value is None else (value,)

        (seen["warmed_in"],) = wait_for("the view's read ahead", read_ahead, 60, 1)
        driver.switch_to.default_content()
        time.sleep(1)
        driver.save_screenshot(str(shot))
        # The charts' widths on a wide screen too, where a flex row once stretched the last one.
        driver.set_window_size(2200, 2400)
        driver.switch_to.frame(frame)
        time.sleep(0.5)
        seen["chart_widths"] = [
            round(e.rect["width"]) for e in driver.find_elements(By.CSS_SELECTOR, "#charts .chart")
        ]
    return seen


def register_crafted(client, settings, log):
    """Log a model with ``log(mlflow)``, register it, and tag it as if it had passed validation
    and come from ctrain's training (an attacker can write tags too)."""
    import mlflow

    from ctrain.registry import REGISTERED_VERSION

    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run() as run:
        info = log(mlflow)
        mlflow.set_tags({"ctrain_stage": "trained", "model_uri": info.model_uri})
    version = str(mlflow.register_model(info.model_uri, settings.model_name).version)
    client.set_model_version_tag(settings.model_name, version, "validation_status", "passed")
    client.set_tag(run.info.run_id, REGISTERED_VERSION, version)
    assert client.get_model_version(settings.model_name, version).run_id == run.info.run_id
    return version


class ServerThread:
    """uvicorn serving ``app`` on a free loopback port, in a thread of the test process."""

    def __init__(self, app, settings):
        """uvicorn runs as ``ctrain serve`` runs it under ``settings`` (its connection limits)."""
        import uvicorn

        from ctrain.runtime import free_port
        from ctrain.serving.connections import uvicorn_options

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                **uvicorn_options(settings.serving),
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        from ctrain.runtime import wait_for

        self.thread.start()
        wait_for("uvicorn to start", lambda: self.server.started, 30, 0.05, self.thread.is_alive)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=60)


def wait_serving(server, version, timeout=30):
    """Until the service at ``server`` answers with ``version``."""
    import httpx

    from ctrain.runtime import wait_for

    def serving() -> bool:
        return httpx.get(f"{server.url}/health").json()["serving_version"] == version

    wait_for(f"v{version} to be served", serving, timeout, 0.1)


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


def promtool(*args: str) -> str:
    """Run Debian's ``promtool`` in deploy/prometheus; its output (raises when it fails)."""
    import pytest

    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("the alerting tests need Debian's prometheus package (make test installs it)")
    out = subprocess.run(
        [exe, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout + out.stderr


@contextlib.contextmanager
def prometheus_scraping(target: str, token: str, folder: Path):
    """A real Prometheus (Debian's) with deploy/prometheus/prometheus.yml and its alert rules,
    its ctrain job pointed at ``target`` (host:port) with ``token``, scraping every second;
    yields a function that runs an instant query and returns its result vector."""
    import httpx
    import yaml

    from ctrain.runtime import Services, free_port, wait_for

    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ctrain"]
    (folder / "token").write_text(token)
    job["authorization"]["credentials_file"] = str(folder / "token")
    job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [job]  # Airflow's StatsD exporter is compose's, not here
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with Services() as server:
        server.start(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            folder / "prometheus.log",
        )

        def query(expr: str) -> list[dict]:
            r = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
            r.raise_for_status()
            return r.json()["data"]["result"]

        def scraped():
            try:
                return query('up{job="ctrain"} == 1')
            except httpx.HTTPError:
                return None

        wait_for("Prometheus to scrape ctrain", scraped, 60, 0.5, server.alive)
        query.base = base
        yield query


LENIENT_LOAD_TEST = {
    "users": 2,
    "seconds": 3,
    "max_p50_ms": 2000,
    "max_p99_ms": 10000,
    "min_rows_per_second": 1,
    "max_error_rate": 0.5,
}


def env_project(tmp_path: Path, environment: str, **overrides) -> Path:
    """The demo project as ``environment`` of two (dev, staging), each with its own store and
    data home under ``tmp_path``, ``overrides`` deep-merged; written to
    ``tmp_path/<environment>.yaml``. The load test before a move in staging is short."""
    import yaml

    from ctrain.settings import default_project_file

    data = yaml.safe_load(default_project_file().read_text())
    # The load test runs, short, with budgets a busy 2-core machine keeps (the figures are
    # the machine's; tests/promotion/test_predeploy.py holds a version to tight ones).
    data["promotion"]["predeployment"] = LENIENT_LOAD_TEST
    homes = {name: tmp_path / name for name in ("dev", "staging")}
    data["environments"] = {
        name: {"tracking_uri": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}", "home": str(home)}
        for name, home in homes.items()
    }
    data["environment"] = environment
    data = merged(data, overrides)
    path = tmp_path / f"{environment}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def merged(base: dict, extra: dict) -> dict:
    """``extra`` deep-merged over a copy of ``base``."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_DYING = """
import os, signal, sys
from mlflow import MlflowClient


def dying_client(uri):
    \"\"\"A client of the store at ``uri`` whose process dies by SIGKILL right after the
    ``sys.argv[2]``-th call of its method ``sys.argv[1]`` returns.\"\"\"
    method, after = sys.argv[1], int(sys.argv[2])
    real = getattr(MlflowClient, method)
    calls = [0]

    def dying(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    return type("Dying", (MlflowClient,), {method: dying})(uri, uri)

"""


def killed_at(body: str, method: str, after: int, *args: str) -> None:
    """Run ``body`` (Python that works through ``dying_client(uri)``; its own arguments in
    ``sys.argv[3:]``) in a fresh process that dies by SIGKILL after ``after`` calls of the
    client's ``method``; fails the test unless it really died so."""
    out = subprocess.run(
        [sys.executable, "-c", _DYING + body, method, str(after), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == -9, out.stderr[-2000:]  # it really died, by SIGKILL
