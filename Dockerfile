# ctrain production image: the official Airflow image extended with the locked set and ctrain.
# Used by every Airflow service and by the MLflow tracking server in docker-compose.yaml.
# Build: docker compose build   (or: docker build -t ctrain-airflow:0.1.0 .)
FROM apache/airflow:3.3.2-python3.11

# Keep MLflow and Great Expectations off the network and out of the home folder.
ENV MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false \
    GX_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1

# The official image installs Python packages as the airflow user (never as root), into the
# virtualenv at ~/.local. It ships uv; pip is the fallback. apache-airflow is named with the image's
# own version so nothing in the lock can move it (the lock pins the same 3.3.2).
# The MLflow server's s3:// artifact store needs boto3, which the lock does not pin: it comes with the
# image's Amazon provider, so the import check below fails the build rather than the first upload.
# The Celery executor must import with the locked celery (provider 3.26.0 fails on celery 5.7.0:
# "cannot import name 'retry' from 'celery.backends.database'"): that too fails the build rather
# than every worker. A throw-away AIRFLOW_HOME keeps any generated config out of the image.
USER airflow
ARG CTRAIN_BUILD=/opt/airflow/ctrain-build
COPY --chown=airflow:0 requirements.lock ${CTRAIN_BUILD}/requirements.lock
RUN set -eux; \
    if command -v uv >/dev/null 2>&1; then \
        uv pip install --python "$(command -v python)" --no-cache --compile-bytecode \
            "apache-airflow==${AIRFLOW_VERSION}" -r "${CTRAIN_BUILD}/requirements.lock"; \
    else \
        pip install --no-cache-dir \
            "apache-airflow==${AIRFLOW_VERSION}" -r "${CTRAIN_BUILD}/requirements.lock"; \
    fi; \
    python -c "import boto3, psycopg2, mlflow, airflow"; \
    check_home="$(mktemp -d)"; \
    AIRFLOW_HOME="$check_home" python -c "import airflow.providers.celery.executors.celery_executor_utils"; \
    rm -rf "$check_home"

# ctrain itself, without dependencies (they are all in the lock).
COPY --chown=airflow:0 pyproject.toml README.md ${CTRAIN_BUILD}/
COPY --chown=airflow:0 src/ ${CTRAIN_BUILD}/src/
RUN set -eux; \
    if command -v uv >/dev/null 2>&1; then \
        uv pip install --python "$(command -v python)" --no-cache --compile-bytecode --no-deps "${CTRAIN_BUILD}"; \
    else \
        pip install --no-cache-dir --no-deps "${CTRAIN_BUILD}"; \
    fi; \
    rm -rf "${CTRAIN_BUILD}/build"; \
    python -c "import ctrain"

# DAGs and plugins are baked into the image (no bind mounts in production).
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

# Mount points of the named volumes in docker-compose.yaml. Created here, owned by airflow, so a new
# named volume starts with that ownership.
RUN mkdir -p /opt/airflow/ctrain-data /opt/airflow/auth /opt/airflow/mlflow-auth \
    && chmod 700 /opt/airflow/auth /opt/airflow/mlflow-auth
