"""Locust users for ``bench/serving.py``: one row per request, no think time.

``CTRAIN_BENCH_ROWS`` is a JSON file of rows (the same rows for every server);
``CTRAIN_BENCH_API`` is ``ctrain`` (``POST /predict {"rows": [...]}``, with the bearer token in
``CTRAIN_BENCH_TOKEN``) or ``mlflow`` (``POST /invocations {"dataframe_records": [...]}``).
A 429 or a 503 is counted as shed (and a failure in Locust's figures), apart from other errors.
"""

import json
import os
import random

from locust import FastHttpUser, constant, events, task

with open(os.environ["CTRAIN_BENCH_ROWS"]) as _fh:
    ROWS = json.load(_fh)
API = os.environ.get("CTRAIN_BENCH_API", "ctrain")
TOKEN = os.environ.get("CTRAIN_BENCH_TOKEN", "")
SHED = {"count": 0, "without_retry_after": 0}


class Caller(FastHttpUser):
    wait_time = constant(0)

    @task
    def score_one_row(self):
        row = random.choice(ROWS)
        if API == "ctrain":
            path, body = "/predict", {"rows": [row]}
            headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
        else:
            path, body = "/invocations", {"dataframe_records": [row]}
            headers = {}
        with self.client.post(
            path, json=body, headers=headers, catch_response=True, name="one row"
        ) as r:
            if r.status_code in (429, 503):
                SHED["count"] += 1
                if not r.headers.get("Retry-After"):
                    SHED["without_retry_after"] += 1
                r.failure(f"shed: {r.status_code}")
            elif r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")


@events.quitting.add_listener
def _report_shed(environment, **_kw):
    path = os.environ.get("CTRAIN_BENCH_SHED")
    if path:
        with open(path, "w") as fh:
            json.dump(SHED, fh)
