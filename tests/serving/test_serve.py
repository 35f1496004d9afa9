"""``ctrain serve`` over real HTTP: a real model from a real MLflow store, uvicorn on a free port.

Every call goes through a socket to uvicorn, as a caller's would: validation errors, auth, hot
reload while requests run, a version that must never answer, and the inference log that the
monitor then reads like any scored batch.
"""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pytest
from tests_support import (
    Payload,
    ServerThread,
    bootstrap_champion,
    register_crafted,
    request_rows,
    wait_serving,
)

from ctrain import steps
from ctrain.data.demo_source import DemoSource
from ctrain.model_io import features, positive_scores
from ctrain.promotion.promote import manual_promote
from ctrain.records import RunContext
from ctrain.registry import CHAMPION, current_champion, load_model
from ctrain.runtime import wait_for
from ctrain.serving.app import create_app

TOKEN = "t0ken-for-tests-only-0123456789"


@pytest.fixture
def project(make_settings):
    base = make_settings()
    settings = make_settings(
        dataset={**base.dataset.model_dump(mode="json"), "labels": "delayed"},
        monitoring={"html_reports": False},
        serving={"reload_seconds": 0.2, "log_window_rows": 300, "max_rows": 500},
    )
    src = DemoSource(**settings.demo.model_dump())
    bootstrap_champion(settings, src)
    return settings, src


@pytest.fixture
def served(project, client):
    settings, src = project
    app = create_app(settings, client, source="test")
    with ServerThread(app, settings) as server:
        yield settings, src, server, app


def test_rows_are_scored_by_the_champion_with_the_request_id(served):
    settings, src, server, _ = served
    rows = request_rows(src)
    r = httpx.post(f"{server.url}/predict", json={"rows": rows}, headers={"X-Request-ID": "abc-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-request-id"] == body["request_id"] == "abc-1"
    assert body["model_version"] == "1"
    assert [p["row_id"] for p in body["predictions"]] == [str(x["row_id"]) for x in rows]
    for p in body["predictions"]:
        assert 0 <= p["score"] <= 1 and p["prediction"] == (1 if p["score"] >= 0.5 else 0)
        assert p["model_version"] == "1" and p["arm"] == "champion"
    assert httpx.get(f"{server.url}/ready").json() == {"ready": True, "serving_version": "1"}
    # The NumPy path answered, and it gives the pipeline's own scores.
    assert httpx.get(f"{server.url}/health").json()["fast_path"] is True
    frame = src.batch(20).iloc[:5]
    model = load_model(f"models:/{settings.model_name}/1")
    expected = positive_scores(model, features(frame, settings.dataset), 1)
    got = [p["score"] for p in body["predictions"]]
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-12
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'ctrain_serve_rows_total{arm="champion",version="1"} 5.0' in metrics


def test_bad_rows_get_a_422_that_names_the_row_and_column(served):
    settings, src, server, _ = served
    rows = request_rows(src, n=3)
    rows[1]["tenure_months"] = "about ten"
    del rows[2]["region"]
    r = httpx.post(f"{server.url}/predict", json={"rows": rows})
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert {(e["row"], e["row_id"], e["column"]) for e in errors} == {
        (1, str(rows[1]["row_id"]), "tenure_months"),
        (2, str(rows[2]["row_id"]), "region"),
    }
    assert "nothing was scored" in r.json()["error"]
    # Not a number in JSON, a number where text is expected, no rows, too many rows.
    row = json.dumps(request_rows(src, n=1)[0]).replace(
        '"usage_hours": ', '"usage_hours": NaN, "x": '
    )
    nan = '{"rows": [' + row + "]}"
    cases = {
        "nan": httpx.post(
            f"{server.url}/predict", content=nan, headers={"content-type": "application/json"}
        ),
        "type": httpx.post(f"{server.url}/predict", json={"rows": [rows[0] | {"region": 3}]}),
        # Strict: nothing is coerced (true would score as 1.0, "12" as 12, true as the id "1").
        "bool": httpx.post(
            f"{server.url}/predict", json={"rows": [rows[0] | {"tenure_months": True}]}
        ),
        "text number": httpx.post(
            f"{server.url}/predict", json={"rows": [rows[0] | {"tenure_months": "12"}]}
        ),
        "bool id": httpx.post(f"{server.url}/predict", json={"rows": [rows[0] | {"row_id": True}]}),
        "empty": httpx.post(f"{server.url}/predict", json={"rows": []}),
        "many": httpx.post(f"{server.url}/predict", json={"rows": [rows[0]] * 501}),
        "not json": httpx.post(
            f"{server.url}/predict", content=b"{", headers={"content-type": "application/json"}
        ),
    }
    assert {k: r.status_code for k, r in cases.items()} == dict.fromkeys(cases, 422)
    assert cases["nan"].json()["errors"][0]["column"] == "usage_hours"
    assert cases["type"].json()["errors"][0]["column"] == "region"
    assert cases["bool"].json()["errors"][0]["column"] == "tenure_months"
    assert cases["text number"].json()["errors"][0]["column"] == "tenure_months"
    assert {e["column"] for e in cases["bool id"].json()["errors"]} == {"row_id"}
    assert cases["empty"].json()["errors"][0]["field"] == "rows"
    # Past the body limit: refused before it is read.
    big = httpx.post(f"{server.url}/predict", content=b" " * 2_000_000)
    assert big.status_code == 413 and "over 1048576 bytes" in big.json()["error"]
    # None of it was logged: only scored rows are.
    assert (
        server.url and httpx.get(f"{server.url}/health").json()["inference_log"]["open_rows"] == 0
    )


def test_a_row_the_model_cannot_score_gets_a_422_not_a_500(served):
    """A finite number (1.7e308) that the model's scaling takes past float64 fits the schema
    but cannot be scored: the row is named with the model's error, nothing is scored, and the
    server answers the next request."""
    settings, src, server, _ = served
    rows = request_rows(src, n=3)
    huge = [rows[0], rows[1] | dict.fromkeys(settings.dataset.numeric, -1.7e308), rows[2]]
    r = httpx.post(f"{server.url}/predict", json={"rows": huge})
    assert r.status_code == 422, r.text
    body = r.json()
    assert "nothing was scored" in body["error"]
    (error,) = body["errors"]
    assert (error["row"], error["row_id"]) == (1, str(rows[1]["row_id"]))
    assert "cannot score this row" in error["message"] and "too large" in error["message"]
    assert httpx.post(f"{server.url}/predict", json={"rows": rows}).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'ctrain_serve_refused_total{reason="unscorable"} 1.0' in metrics
    assert 'ctrain_serve_rows_total{arm="champion",version="1"} 3.0' in metrics


def test_a_token_is_required_when_configured(project, client):
    settings, src = project
    with ServerThread(create_app(settings, client, token=TOKEN, source="auth"), settings) as server:
        rows = {"rows": request_rows(src, n=1)}
        assert httpx.post(f"{server.url}/predict", json=rows).status_code == 401
        wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
        assert httpx.post(f"{server.url}/predict", json=rows, headers=wrong).status_code == 401
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        ok = httpx.post(
            f"{server.url}/predict", json=rows, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert ok.status_code == 200
        # Probes stay open: an orchestrator checks them without the token.
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert httpx.get(f"{server.url}/ready").status_code == 200


def test_a_promotion_under_traffic_switches_every_request_without_a_failure(served, client):
    settings, src, server, _ = served
    steps.run_training(RunContext(run_id="second", force=True, window_batches=2), settings=settings)
    if current_champion(client, settings.model_name) == "2":  # it won on its own; go back
        manual_promote(settings, "1", RunContext(trigger_reason="test"), client)
    wait_serving(server, "1")
    stop, seen, failures = threading.Event(), [], []
    pool_rows = request_rows(src, n=200)

    def traffic(k):
        with httpx.Client(base_url=server.url) as c:
            i = 0
            while not stop.is_set():
                r = c.post("/predict", json={"rows": [pool_rows[(k * 50 + i) % 200]]})
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    seen.append((k, time.monotonic(), r.json()["model_version"]))
                i += 1

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(traffic, k) for k in range(4)]
        time.sleep(1.0)
        rec = manual_promote(settings, "2", RunContext(trigger_reason="test: hot reload"), client)
        assert rec.moved, rec
        moved = time.monotonic()
        wait_serving(server, "2")
        time.sleep(1.0)
        stop.set()
    for r in running:
        r.result()  # a client thread that died would hide requests
    assert not failures, failures[:3]
    # Per caller (threads append in the order their answers were read, not the order the
    # service swapped): once it saw v2 it never saw v1 again, and v2 answered within the bound.
    for k in range(4):
        mine = [(t, v) for thread, t, v in seen if thread == k]
        versions = [v for _, v in mine]
        assert versions[0] == "1" and versions[-1] == "2"
        first_v2 = versions.index("2")
        assert set(versions[first_v2:]) == {"2"}
        assert mine[first_v2][0] - moved < settings.serving.reload_seconds + 2.0
    health = httpx.get(f"{server.url}/health").json()
    assert health["serving_version"] == "2" and health["warmed_rows"] > 0


def test_a_version_that_does_not_load_safely_never_answers(served, client, tmp_path):
    settings, src, server, _ = served
    marker = tmp_path / "pwned"
    bad = register_crafted(
        client,
        settings,
        lambda m: m.sklearn.log_model(
            Payload(marker), name="model", serialization_format="cloudpickle"
        ),
    )
    # Someone moves the alias in MLflow directly, past promotion's checks.
    client.set_registered_model_alias(settings.model_name, CHAMPION, bad)

    def reported() -> bool:
        # Meanwhile every request is answered by the version that loaded safely.
        r = httpx.post(f"{server.url}/predict", json={"rows": request_rows(src, n=1)})
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        return httpx.get(f"{server.url}/health").json()["not_serving"] is not None

    wait_for("the failure to be reported", reported, 10, 0.1)
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "degraded" and health["serving_version"] == "1"
    assert health["not_serving"]["version"] == bad
    assert "cloudpickle" in health["not_serving"]["error"]
    r = httpx.post(f"{server.url}/predict", json={"rows": request_rows(src, n=2)})
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    assert "ctrain_serve_reload_failures_total 1.0" in httpx.get(f"{server.url}/metrics").text
    assert not marker.exists()


def test_the_inference_log_lands_windows_the_monitor_checks_like_batches(served, client):
    settings, src, server, app = served
    rows = request_rows(src, batch=20, n=300)
    for i in range(0, 300, 100):
        assert httpx.post(f"{server.url}/predict", json={"rows": rows[i : i + 100]}).is_success
    # 300 rows fill a window: predictions first, then the rows in the landing folder.
    inference_log = app.app.state.log
    # Landed by the service's thread, off the request path.
    wait_for("the full window to land", lambda: inference_log.landed, 10, 0.05)
    (window,) = inference_log.landed
    assert window.startswith("online-") and window.endswith("-test-0001")
    assert (settings.predictions_dir / f"{window}.parquet").exists()
    # ct_ingest validates it like any batch; the monitor then checks it like a scored batch.
    for p in steps.list_landed(settings):
        steps.ingest_one(p, settings)
    assert window not in steps.unscored(settings)  # it has predictions: batch scoring skips it
    (check,) = [c for c in steps.check_windows(settings) if c["batch_id"] == window]
    assert check["rows"] == 300 and check["champion_version"] == "1"
    assert check["performance"]["status"] == "no_labels"
    # Delayed labels join by id: the window's performance is measured for the version that
    # answered.
    labels = src.labels(20).iloc[:300]
    settings.labels_landing_dir.mkdir(parents=True, exist_ok=True)
    labels.to_parquet(settings.labels_landing_dir / "online-labels.parquet")
    steps.ingest_labels(settings)
    (check,) = [c for c in steps.check_windows(settings) if c["batch_id"] == window]
    assert check["performance"]["status"] == "matured"
    assert check["performance"]["labeled_rows"] == 300 and check["performance"]["value"] > 0.7


def test_the_demo_callers_follow_the_stream_and_never_send_one_id_twice(served):
    # ``ctrain demo --serve``'s callers: rows like the batch that landed last, sent round and
    # round; a row sent again gets an id of its own, so a window (300 rows) never holds one id
    # twice and ingest accepts all of it.
    from ctrain.harness.callers import LiveTraffic, live_rows

    settings, src, server, app = served
    spec = settings.dataset
    with LiveTraffic(server.url, [], per=20, pause=0, id_column=spec.id_column) as callers:
        callers.follow(live_rows(settings, src.batch(20).iloc[:120], prefix="live-20"))
        inference_log = app.app.state.log
        wait_for("a window to land", lambda: inference_log.landed, 60, 0.05)
    assert callers.failures == [] and callers.requests >= 15
    window = inference_log.landed[0]
    rows = pd.read_parquet(settings.landing_dir / f"{window}.parquet")
    ids = rows[spec.id_column]
    # A window holds whole requests: it lands once it has 300 rows, with what came in by then.
    assert 300 <= len(rows) < 300 + 2 * 20 and ids.is_unique
    assert {"live-20-0", "live-20-0-r1", "live-20-0-r2"} <= set(ids)
    outcomes = {
        o["batch_id"]: o
        for o in (steps.ingest_one(p, settings) for p in steps.list_landed(settings))
    }
    assert outcomes[window]["status"] == "accepted", outcomes[window]
    assert outcomes[window]["rows_accepted"] == len(rows)
