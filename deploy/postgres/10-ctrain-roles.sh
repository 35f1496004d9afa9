#!/usr/bin/env bash
# Run once by the postgres image on a new, empty volume (/docker-entrypoint-initdb.d): one login
# role per service, each owning only its own database(s), and no one else allowed to connect.
#   airflow      -> airflow          (Airflow's metadata and Celery results)
#   mlflow       -> mlflow           (MLflow's tracking and registry store)
#   ctrain_lock  -> ctrain_lock      (the promotion lock: advisory locks only, no tables)
# None of them is a superuser or may create roles or databases; the superuser's password
# (POSTGRES_PASSWORD) is given to this container only.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v airflow_pw="$AIRFLOW_DB_PASSWORD" \
    -v mlflow_pw="$MLFLOW_DB_PASSWORD" \
    -v lock_pw="$LOCK_DB_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'airflow_pw';
CREATE ROLE mlflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'mlflow_pw';
CREATE ROLE ctrain_lock LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'lock_pw';
CREATE DATABASE airflow OWNER airflow;
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE ctrain_lock OWNER ctrain_lock;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE ctrain_lock FROM PUBLIC;
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
SQL
