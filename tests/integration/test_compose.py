"""Static checks of docker-compose.yaml (no container engine needed).

The native run in test_production_topology.py starts the same services as this file describes;
these checks keep the two in the same shape: the same services and settings, pinned images,
secrets only from required variables, health checks and conditional start order.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from topology import (
    AIRFLOW_DB_SCHEME,
    AIRFLOW_PRODUCTION_KEYS,
    BROKER_SCHEME,
    FAB_AUTH_MANAGER,
    MLFLOW_PRODUCTION_KEYS,
    MODEL_SOURCE_REGEX,
    REPO,
    RESULT_BACKEND_SCHEME,
)

COMPOSE = REPO / "docker-compose.yaml"
# What the native test starts, by the names the compose file gives them.
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
SERVICES = (
    "postgres",
    "redis",
    "mlflow",
    "mlflow-init",
    "minio",
    "minio-init",
    *AIRFLOW_SERVICES,
    "serving",
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|FERNET|TOKEN")
REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}")
ONLY_REQUIRED_VAR = re.compile(rf"^{REQUIRED_VAR.pattern}$")
ANY_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")


@pytest.fixture(scope="module")
def raw() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return yaml.safe_load(raw)  # resolves the <<: merge keys


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _unescape(value: str) -> str:
    """The value a container sees: compose turns ``$$`` into ``$`` (no variables in these)."""
    return value.replace("$$", "$")


def test_every_service_of_the_native_topology_is_described(services):
    missing = [s for s in SERVICES if s not in services]
    assert not missing, f"docker-compose.yaml lacks {missing}; it has {sorted(services)}"


def test_images_are_pinned(services):
    for name, svc in services.items():
        image = svc.get("image")
        assert image or svc.get("build"), f"{name}: neither image nor build"
        if svc.get("build"):
            build = svc["build"]
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert (REPO / context / dockerfile).resolve() == (REPO / "Dockerfile").resolve(), name
        if image:
            # ${VAR:-default}: the default is what runs unless the operator pins another.
            image = re.sub(r"\$\{[A-Za-z0-9_]+:?-([^}]*)\}", r"\1", image)
            assert "${" not in image, f"{name}: image {image!r} has no default"
            ref = image.rsplit("/", 1)[-1]
            assert ":" in ref or "@sha256:" in image, f"{name}: image {image!r} has no tag"
            tag = ref.split(":", 1)[1] if ":" in ref else ""
            assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"
    base = re.findall(r"^FROM\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert base, "Dockerfile has no FROM"
    for image in base:
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"Dockerfile base image {image!r} is not pinned"


def test_secrets_come_only_from_required_variables(services, raw):
    for name, svc in services.items():
        for key, value in _env(svc).items():
            if SECRET_NAME.search(key) and key.endswith(("_FILE", "_PATH")):
                # Where a secret is kept, not the secret: an absolute path in the container.
                assert value.startswith("/"), f"{name}: {key} should be a path, not {value!r}"
            elif SECRET_NAME.search(key):
                assert ONLY_REQUIRED_VAR.match(value), (
                    f"{name}: {key} must be exactly ${{VAR:?message}}, not {value!r}"
                )
            # A password inside a URL (user:password@host) must be a required variable too.
            for userinfo in re.findall(r"://[^/@\s]+:([^@\s]+)@", value):
                assert ONLY_REQUIRED_VAR.match(userinfo), f"{name}: {key} embeds a literal password"
    # Anywhere in the file: a secret-named variable never has a default (${VAR:-x} or ${VAR-x}).
    for var, rest in ANY_VAR.findall(raw):
        if SECRET_NAME.search(var):
            assert rest.startswith(":?"), f"${{{var}{rest}}} gives a secret a default"
    # And .env, where init-secrets.sh writes them, stays out of git and out of the image.
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_airflow_runs_celery_on_postgres_and_redis_like_the_native_test(services):
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        missing = [k for k in AIRFLOW_PRODUCTION_KEYS if k not in env]
        assert not missing, f"{name} lacks {missing}"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(f"{AIRFLOW_DB_SCHEME}://"), (
            name
        )
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith(f"{RESULT_BACKEND_SCHEME}://"), (
            name
        )
        assert re.match(
            rf"^{BROKER_SCHEME}://redis:6379/\d+$", env["AIRFLOW__CELERY__BROKER_URL"]
        ), name
        assert env["CTRAIN_LOCK_URL"].startswith("postgresql://"), name
        assert env["CTRAIN_TRACKING_URI"] == "http://mlflow:5000", name
        assert (
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
            == "http://airflow-apiserver:8080/execution/"
        )
        # People sign in as themselves, with roles (FAB), never as one shared user.
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER, name
        roles = json.loads(env["AIRFLOW__FAB__CUSTOM_ROLES"])
        assert set(roles) == {"ctrain-view", "ctrain-operator", "ctrain-approver"}, name
        # Triggering and answering an approval are never one role's.
        grants = {r: {(g["action"], g["resource"]) for g in roles[r]} for r in roles}
        assert ("can_edit", "HITL Detail") not in grants["ctrain-operator"], name
        assert ("can_create", "DAG Runs") not in grants["ctrain-approver"], name
    # The components agree on everything they share (secrets included), but the MLflow user:
    # the API server reads ctrain's records with a read-only one.
    own = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    first = _env(services[AIRFLOW_SERVICES[0]])
    for name in AIRFLOW_SERVICES[1:]:
        env = _env(services[name])
        mine = own if name == "airflow-apiserver" else set()
        differ = [k for k in AIRFLOW_PRODUCTION_KEYS if k not in mine and env[k] != first[k]]
        assert not differ, f"{name} differs from {AIRFLOW_SERVICES[0]} in {differ}"
    commands = {n: services[n].get("command") for n in AIRFLOW_SERVICES[1:]}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker": "celery worker",
    }


def test_mlflow_runs_the_basic_auth_app_with_proxied_artifacts(services):
    mlflow = services["mlflow"]
    cmd = [str(c) for c in mlflow["command"]]
    assert cmd[0] == "server"

    def opt(flag):
        assert flag in cmd, f"mlflow server lacks {flag}: {cmd}"
        return cmd[cmd.index(flag) + 1] if cmd.index(flag) + 1 < len(cmd) else None

    assert opt("--app-name") == "basic-auth"
    assert opt("--allowed-hosts")
    assert "--serve-artifacts" in cmd
    assert opt("--artifacts-destination").startswith("s3://")
    env = _env(mlflow)
    missing = [k for k in MLFLOW_PRODUCTION_KEYS if k not in env]
    assert not missing, f"mlflow lacks {missing}"
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert (
        _unescape(env["MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX"]) == MODEL_SOURCE_REGEX
    )
    # The auth config it mounts gives new users nothing.
    ini_mount = [v for v in mlflow.get("volumes", []) if env["MLFLOW_AUTH_CONFIG_PATH"] in str(v)]
    assert ini_mount, "the MLflow auth config is not mounted"
    host_path = REPO / str(ini_mount[0]).split(":", 1)[0]
    assert re.search(r"^default_permission\s*=\s*NO_PERMISSIONS\s*$", host_path.read_text(), re.M)
    assert "admin_password" not in re.sub(r"#.*", "", host_path.read_text())
    # Logins are cached for a bounded time (every request's scrypt check otherwise dominates).
    assert re.search(r"^auth_cache_ttl_seconds\s*=\s*60\s*$", host_path.read_text(), re.M)


def test_healthchecks_and_conditional_start_order(services):
    for name in ("postgres", "redis", "mlflow", "minio", *AIRFLOW_SERVICES[1:]):
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test"), f"{name} has no healthcheck"
    for name, svc in services.items():
        deps = svc.get("depends_on")
        if deps is None:
            continue
        assert isinstance(deps, dict), f"{name}: depends_on must map services to conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            cond = (spec or {}).get("condition")
            assert cond in ("service_healthy", "service_completed_successfully"), (
                f"{name} -> {dep}: condition {cond!r}"
            )
            if cond == "service_healthy":
                assert services[dep].get("healthcheck"), (
                    f"{name} waits for {dep}'s health, it has none"
                )
    worker = services["airflow-worker"]["depends_on"]
    assert worker["mlflow"]["condition"] == "service_healthy"
    assert worker["airflow-apiserver"]["condition"] == "service_healthy"
    for name in AIRFLOW_SERVICES[1:]:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name


def _vars(service: dict) -> set[str]:
    """The variables a service's environment is built from."""
    return {var for value in _env(service).values() for var, _ in ANY_VAR.findall(value)}


def _db_user(url: str) -> str:
    return re.match(r"^[a-z0-9+]+://([^:@/]+)", url).group(1)


def test_each_service_gets_only_its_own_credentials(services):
    # Which services may hold which secret at all.
    holders = {
        "POSTGRES_PASSWORD": {"postgres"},
        "MLFLOW_AUTH_ADMIN_PASSWORD": {"mlflow", "mlflow-init"},
        "MINIO_ROOT_USER": {"minio", "minio-init"},
        "MINIO_ROOT_PASSWORD": {"minio", "minio-init"},
        "MLFLOW_DB_PASSWORD": {"postgres", "mlflow"},
        "MLFLOW_S3_SECRET_KEY": {"minio-init", "mlflow"},
        "MLFLOW_VIEWER_PASSWORD": {"mlflow-init", "airflow-apiserver"},
        "MLFLOW_SERVING_PASSWORD": {"mlflow-init", "serving"},
        "CTRAIN_SERVE_TOKEN": {"serving"},
        "CTRAIN_METRICS_TOKEN": {"airflow-apiserver"},  # Prometheus reads it as a secret file
        "MLFLOW_WORKER_PASSWORD": {"mlflow-init", *AIRFLOW_SERVICES},
    }
    for var, allowed in holders.items():
        have = {name for name, svc in services.items() if var in _vars(svc)}
        assert have <= allowed, f"{var} reaches {sorted(have - allowed)}"
    # The Airflow containers: their own database role, the lock's role, the MLflow worker user.
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert _db_user(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]) == "airflow", name
        assert _db_user(env["CTRAIN_LOCK_URL"]) == "ctrain_lock", name
        assert env["CTRAIN_LOCK_URL"].endswith("@postgres/ctrain_lock"), name
        if name == "airflow-apiserver":  # runs no task: reads the records for the ctrain view
            assert env["MLFLOW_TRACKING_USERNAME"] == "ctrain-viewer", name
            assert "MLFLOW_VIEWER_PASSWORD" in _vars(services[name]), name
            assert "MLFLOW_WORKER_PASSWORD" not in _vars(services[name]), name
        else:
            assert env["MLFLOW_TRACKING_USERNAME"] == "ctrain-worker", name
            assert "MLFLOW_WORKER_PASSWORD" in _vars(services[name]), name
            assert "MLFLOW_VIEWER_PASSWORD" not in _vars(services[name]), name
    mlflow = _env(services["mlflow"])
    assert _db_user(mlflow["MLFLOW_BACKEND_STORE_URI"]) == "mlflow"
    assert "MLFLOW_S3_ACCESS_KEY" in mlflow["AWS_ACCESS_KEY_ID"]
    # The roles themselves: made by the postgres image's init script, none privileged.
    mounts = [str(v) for v in services["postgres"].get("volumes", [])]
    init = [m for m in mounts if "/docker-entrypoint-initdb.d/" in m]
    assert init, "postgres mounts no init script"
    script = (REPO / init[0].split(":", 1)[0]).read_text()
    for role in ("airflow", "mlflow", "ctrain_lock"):
        assert re.search(rf"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE", script)
        assert f"REVOKE ALL ON DATABASE {role} FROM PUBLIC" in script


def test_serving_replicas_run_with_a_token_and_read_only_mlflow(services):
    serving = services["serving"]
    env = _env(serving)
    assert serving["deploy"]["replicas"] >= 2
    assert serving["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert ONLY_REQUIRED_VAR.match(env["CTRAIN_SERVE_TOKEN"])
    assert env["MLFLOW_TRACKING_USERNAME"] == "ctrain-serving"
    assert env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    assert "/ready" in " ".join(serving["healthcheck"]["test"])
    assert serving["depends_on"]["mlflow"]["condition"] == "service_healthy"
    # The same image as every other ctrain service, and no host port: callers come through
    # the network (a load balancer in front of the replicas).
    assert serving["image"] == services["airflow-worker"]["image"]
    assert not serving.get("ports")
    init = services["mlflow-init"]["command"]
    assert init[init.index("--serving-user") + 1] == "ctrain-serving"


def test_nothing_is_published_beyond_this_host_unless_asked(services):
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("${CTRAIN_BIND_ADDRESS:-127.0.0.1}:"), (name, port)
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"airflow-apiserver", "mlflow"}
    assert "--console-address" not in services["minio"]["command"]


def test_prometheus_scrapes_ctrain_with_a_token_file_and_airflow_sends_statsd(services, compose):
    prom = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert [x["source"] for x in prom["secrets"]] == ["ctrain_metrics_token"]
    # The token reaches Prometheus as a file from the secret, never as a variable.
    assert "CTRAIN_METRICS_TOKEN" not in _vars(prom)
    assert compose["secrets"]["ctrain_metrics_token"] == {"environment": "CTRAIN_METRICS_TOKEN"}
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ctrain"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/ctrain_metrics_token"
    assert job["static_configs"][0]["targets"] == ["airflow-apiserver:8080"]
    (airflow,) = [j for j in config["scrape_configs"] if j["job_name"] == "airflow"]
    assert airflow["static_configs"][0]["targets"] == ["statsd-exporter:9102"]
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert env["AIRFLOW__METRICS__STATSD_ON"] == "true", name
        assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter", name
    assert not prom.get("ports") and not services["statsd-exporter"].get("ports")
