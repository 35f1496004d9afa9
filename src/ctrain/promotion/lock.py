"""The promotion lock: one promoter at a time per registered model.

Embedded default: an ``flock`` on a file under ``CTRAIN_HOME`` (processes on one machine).
Production (``CTRAIN_LOCK_URL=postgresql://...``): a PostgreSQL advisory lock, which every Celery
worker on every machine sees.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from collections.abc import Iterator

from ctrain.settings import Settings


class LockTimeout(Exception):
    """The lock was not acquired in time; nothing was changed."""


def _key(name: str) -> int:
    return int.from_bytes(
        hashlib.sha256(f"ctrain:{name}".encode()).digest()[:8], "big", signed=True
    )


@contextlib.contextmanager
def promotion_lock(settings: Settings) -> Iterator[None]:
    """Hold the registered model's promotion lock for the duration of the block."""
    timeout = settings.promotion.lock_timeout_s
    if settings.lock_url and settings.lock_url.startswith(("postgresql://", "postgres://")):
        with _pg_lock(settings.lock_url, _key(settings.model_name), timeout):
            yield
        return
    path = settings.root / "locks" / f"{settings.model_name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(
                        f"promotion lock {path} not acquired within {timeout}s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _pg_lock(url: str, key: int, timeout: float) -> Iterator[None]:
    import psycopg2

    conn = psycopg2.connect(
        url.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=10
    )
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = %s", (f"{int(timeout * 1000)}ms",))
            deadline = time.monotonic() + timeout
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise LockTimeout(f"advisory lock {key} not acquired within {timeout}s")
                time.sleep(0.05)
            try:
                yield
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()
