"""The promotion lock: one promoter at a time per registered model.

Embedded default: an ``flock`` on a file under ``CTRAIN_HOME`` (processes on one machine).
Production (``CTRAIN_LOCK_URL=postgresql://...``): a PostgreSQL advisory lock, which every Celery
worker on every machine sees; waiting for it holds no connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import random
import threading
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
def promotion_lock(settings: Settings, timeout: float | None = None) -> Iterator[None]:
    """Hold the registered model's promotion lock for the duration of the block, waiting at
    most ``timeout`` seconds for it (default ``promotion.lock_timeout_s``)."""
    timeout = settings.promotion.lock_timeout_s if timeout is None else timeout
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
    """The advisory lock; only its holder keeps a connection open.

    A waiter connects, tries the lock once, disconnects and sleeps (backing off, with jitter), at
    most four tries at a time per process, so a crowd of waiting promoters costs the server a few
    short connections instead of one each for as long as they wait. A server with no connection
    slot left counts as busy.
    """
    deadline = time.monotonic() + timeout
    delay = 0.02
    while (conn := _try(url, key)) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockTimeout(
                f"advisory lock {key} not acquired within {timeout}s; nothing changed"
            )
        time.sleep(min(left, delay * random.uniform(0.5, 1.5)))
        delay = min(delay * 2, 1.0)
    try:
        yield
    finally:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            conn.close()


# At most this many tries in flight per process: waiting for a slot holds no connection.
_TRIES = threading.BoundedSemaphore(4)


def _try(url: str, key: int):
    with _TRIES:
        return _try_lock(url, key)


def _try_lock(url: str, key: int):
    """A connection that holds the lock now, or None (held elsewhere, or no slot to connect)."""
    import psycopg2

    try:
        conn = psycopg2.connect(
            url.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=10
        )
    except psycopg2.OperationalError as exc:
        if "too many clients" in str(exc) or "connection slots" in str(exc):
            return None
        raise
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            if cur.fetchone()[0]:
                return conn
    except BaseException:
        conn.close()
        raise
    conn.close()
    return None
