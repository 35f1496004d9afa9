"""The one module of ctrain that imports Airflow: settings that Airflow loads by import path.

``CELERY_CONFIG`` is Airflow's own Celery configuration plus ``imports``: the libraries ctrain's
tasks use (``ctrain.runtime.TASK_PRELOAD``). A Celery worker imports them once when it starts,
before it forks its pool, so each task process (forked from a pool process) starts with them
loaded instead of importing them again. Point Airflow at it with
``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=ctrain.orchestration.CELERY_CONFIG``; the embedded
default (LocalExecutor) gets the same effect from a preloading forkserver instead.
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from ctrain.runtime import TASK_PRELOAD

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": TASK_PRELOAD}
