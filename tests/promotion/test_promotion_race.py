"""Promotions racing (threads, processes, and the PostgreSQL lock): one winner, one record each."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
from tests_support import trained_champion

from ctrain import steps
from ctrain.promotion.decisions import list_decisions
from ctrain.records import Comparison, RunContext
from ctrain.registry import current_champion


@pytest.fixture
def contenders(settings, client):
    """Champion v1 plus two validated versions, v2 and v3, each with a comparison that saw v1."""
    import mlflow

    trained_champion(settings)
    mv1 = client.get_model_version(settings.model_name, "1")
    comparisons = []
    for _ in range(2):
        v = str(mlflow.register_model(mv1.source, settings.model_name).version)
        client.set_model_version_tag(settings.model_name, v, "validation_status", "passed")
        comparisons.append(
            Comparison(
                model_name=settings.model_name,
                challenger_version=v,
                champion_seen="1",
                action="promote",
                rule="significant_improvement",
                reason=f"v{v} looked better than v1",
                metric="roc_auc",
                challenger_metric=0.9,
                champion_metric=0.8,
                diff=0.1,
                ci_low=0.05,
                ci_high=0.15,
                confidence=0.95,
                n_resamples=1000,
                holdout_rows=1000,
                dataset_id="race",
                comparison_uri="",
            ).to_xcom()
        )
    return comparisons


def _check_one_winner(settings, client, results):
    decisions = sorted(r["decision"] for r in results)
    assert decisions == ["promoted", "rejected"], results
    winner = next(r for r in results if r["decision"] == "promoted")
    loser = next(r for r in results if r["decision"] == "rejected")
    assert (
        loser["rule"] == "stale_champion"
        and f"to {winner['challenger_version']}" in loser["reason"]
    )
    assert current_champion(client, settings.model_name) == winner["challenger_version"]
    records = list_decisions(client, settings)
    assert len(records) == 3  # the first champion, then one per racer
    assert {r["record_run_id"] for r in results} <= {r.record_run_id for r in records}


def _race_threads(settings, comparisons):
    barrier = threading.Barrier(len(comparisons))
    results, errors = [], []

    def go(i, comp):
        try:
            barrier.wait()
            results.append(steps.promote(comp, RunContext(run_id=f"racer{i}").to_xcom(), settings))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i, c)) for i, c in enumerate(comparisons)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_two_threads_racing_end_with_one_winner(settings, client, contenders):
    _check_one_winner(settings, client, _race_threads(settings, contenders))


def test_two_processes_racing_end_with_one_winner(settings, client, contenders, tmp_path):
    go = tmp_path / "go"
    code = (
        "import json, os, sys, time\n"
        "from ctrain import steps\n"
        "from ctrain.records import RunContext\n"
        "comp = json.loads(sys.argv[1])\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.01)\n"
        "print(json.dumps(steps.promote(comp, RunContext(run_id=sys.argv[3]).to_xcom())))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(c), str(go), f"proc{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for i, c in enumerate(contenders)
    ]
    time.sleep(4)  # both have imported and are polling for the start signal
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    _check_one_winner(settings, client, results)


@pytest.fixture
def pg_database():
    """A uniquely named PostgreSQL database on the local server, dropped afterwards."""
    import psycopg2

    name = f"ctrain_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_racing_under_the_postgres_advisory_lock(make_settings, contenders, pg_database):
    settings = make_settings(lock_url=pg_database)
    from ctrain.tracking import configure

    _check_one_winner(settings, configure(settings), _race_threads(settings, contenders))


def test_the_lock_excludes_a_second_holder(make_settings, pg_database):
    from ctrain.promotion.lock import LockTimeout, promotion_lock

    for s in (
        make_settings(promotion={"lock_timeout_s": 0.3}),
        make_settings(lock_url=pg_database, promotion={"lock_timeout_s": 0.3}),
    ):
        with promotion_lock(s):
            err = []
            t = threading.Thread(target=_try, args=(s, err))
            t.start()
            t.join()
            assert len(err) == 1 and isinstance(err[0], LockTimeout)
        with promotion_lock(s):
            pass  # released


def _try(settings, err):
    from ctrain.promotion.lock import promotion_lock

    try:
        with promotion_lock(settings):
            pass
    except Exception as exc:
        err.append(exc)


def test_waiting_for_the_postgres_lock_holds_no_connection(make_settings, pg_database):
    """40 waiters while one holds: the server sees the holder and at most four tries, not 41."""
    import psycopg2

    from ctrain.promotion.lock import promotion_lock

    settings = make_settings(lock_url=pg_database, promotion={"lock_timeout_s": 120})
    db = pg_database.rsplit("/", 1)[1]
    watcher = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    watcher.autocommit = True

    def connections() -> int:
        with watcher.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,))
            return cur.fetchone()[0]

    entered, errors = [], []

    def wait_then_enter(i):
        try:
            with promotion_lock(settings):
                entered.append(i)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    with promotion_lock(settings):
        threads = [threading.Thread(target=wait_then_enter, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        seen = []
        for _ in range(60):  # three seconds of waiting, sampled
            seen.append(connections())
            time.sleep(0.05)
        assert entered == []  # nobody got in while it was held
    for t in threads:
        t.join(timeout=180)
    watcher.close()
    assert errors == [] and sorted(entered) == list(range(40))  # every waiter got in, once
    # The holder plus at most four tries in flight (lock.py), and a few backends of tries that
    # just closed, which PostgreSQL lists for a moment after their client left: not 41.
    assert max(seen) <= 8, seen
