"""3,000 generated requests against a real ``ctrain serve`` (uvicorn, as the CLI runs it):
malformed JSON, wrong types, sizes, nesting, encodings, odd headers and slow senders, with a
valid request in every five. None may get a 5xx or go unanswered, and every valid one is
answered with its scores."""

import httpx
import pytest
from fuzz import VALID_EVERY, refused_share, run
from tests_support import ServerThread, bootstrap_champion, request_rows

from ctrain.data.demo_source import DemoSource
from ctrain.serving.app import create_app

N = 3000


@pytest.fixture
def server(make_settings, client):
    settings = make_settings(
        dataset={"labels": "delayed"},
        monitoring={"html_reports": False},
        # A body promised and never sent waits out this deadline: short, so 3,000 run quickly.
        serving={"read_timeout_seconds": 1, "max_rows": 200},
    )
    src = DemoSource(**settings.demo.model_dump())
    bootstrap_champion(settings, src)
    with ServerThread(create_app(settings, client, source="fuzz"), settings) as srv:
        yield srv, settings, request_rows(src, n=20)


def test_generated_requests_get_no_5xx_no_hang_and_valid_ones_are_answered(server):
    srv, settings, rows = server
    cfg = settings.serving
    tally = run(srv.port, rows, N, seed=7, max_rows=cfg.max_rows, max_body=cfg.max_body_bytes)
    assert tally.sent == N
    assert tally.server_errors == [] and tally.hangs == []
    assert tally.valid_failed == [] and tally.valid_ok >= N // VALID_EVERY - 10
    # Every kind was tried. Kinds whose every variant breaks the schema or a limit are all
    # refused (4xx); the others may hold requests that fit (a random value that is a valid
    # text, a flipped byte that leaves valid JSON), which are answered.
    assert len(tally.by_kind) == 9, tally.by_kind
    for kind in ("shape", "size", "slow sender"):
        assert refused_share(tally, kind) == 1.0, (kind, tally.kind_status)
    assert refused_share(tally, "broken JSON") > 0.8, tally.kind_status
    health = httpx.get(f"{srv.url}/health").json()
    assert health["serving_version"] == "1"
