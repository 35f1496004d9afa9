"""Locust users (``promotion/predeploy.locust``): the pre-deployment load test, ``bench/serving.py``.

Each user sends ``CTRAIN_LOAD_BATCH`` rows (default 1) per request, with no think time.
``CTRAIN_LOAD_ROWS`` is a JSON file of rows (the same rows for every server);
``CTRAIN_LOAD_API`` is ``ctrain`` (``POST /predict {"rows": [...]}``, with the bearer token in
``CTRAIN_LOAD_TOKEN``) or ``mlflow`` (``POST /invocations {"dataframe_records": [...]}``).
A 429 or a 503 is counted as shed (and a failure in Locust's figures), apart from other errors.
"""

import json
import os
import random

from locust import FastHttpUser, constant, events, task

with open(os.environ["CTRAIN_LOAD_ROWS"]) as _fh:
    ROWS = json.load(_fh)
API = os.environ.get("CTRAIN_LOAD_API", "ctrain")
TOKEN = os.environ.get("CTRAIN_LOAD_TOKEN", "")
BATCH = int(os.environ.get("CTRAIN_LOAD_BATCH", "1"))
SHED = {"count": 0, "without_retry_after": 0}


class Caller(FastHttpUser):
    wait_time = constant(0)

    @task
    def score_rows(self):
        rows = random.sample(ROWS, min(BATCH, len(ROWS))) if BATCH > 1 else [random.choice(ROWS)]
        if API == "ctrain":
            path, body = "/predict", {"rows": rows}
            headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
        else:
            path, body = "/invocations", {"dataframe_records": rows}
            headers = {}
        with self.client.post(
            path, json=body, headers=headers, catch_response=True, name="rows"
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
    path = os.environ.get("CTRAIN_LOAD_SHED")
    if path:
        with open(path, "w") as fh:
            json.dump(SHED, fh)
