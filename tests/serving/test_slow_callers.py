"""Callers that send slowly, too much, or text UTF-8 cannot hold, against a real uvicorn.

Raw sockets play the callers a client library would never be: headers and then nothing, half a
body and then nothing, a header that grows without end. Valid requests sent beside them must be
answered (200), never refused as overload (503), and the stalled ones must be let go.
"""

import json
import socket
import time

import httpx
import pytest
from tests_support import ServerThread, bootstrap_champion, request_rows

from ctrain.data.demo_source import DemoSource
from ctrain.serving.app import create_app

STALLED = 64  # as many stalled callers as the probe that found the defect used


@pytest.fixture
def server(make_settings, client):
    settings = make_settings(
        dataset={"labels": "delayed"},
        monitoring={"html_reports": False},
        serving={
            "reload_seconds": 0.2,
            "max_in_flight": 8,
            "read_timeout_seconds": 3,
            "max_head_bytes": 16384,
        },
    )
    src = DemoSource(**settings.demo.model_dump())
    bootstrap_champion(settings, src)
    with ServerThread(create_app(settings, client, source="test"), settings) as srv:
        yield srv, request_rows(src, n=2)


def _stall(port: int, head: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(head)
    return s


def _status(s: socket.socket) -> str:
    """The status line the server answered on ``s`` (empty if it closed without one)."""
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.split(b"\r\n", 1)[0].decode()


def test_stalled_callers_hold_no_place_and_are_let_go(server):
    srv, rows = server
    headers = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    half_body = [
        _stall(srv.port, headers + b'Content-Length: 5000\r\n\r\n{"rows": [')
        for _ in range(STALLED // 2)
    ]
    half_headers = [_stall(srv.port, headers) for _ in range(STALLED // 2)]
    time.sleep(0.5)  # every stalled caller is connected and waiting before the valid ones
    answers = [httpx.post(f"{srv.url}/predict", json={"rows": rows}) for _ in range(20)]
    assert [r.status_code for r in answers] == [200] * 20, answers[-1].text
    # A body that does not arrive within serving.body_timeout_seconds gets 408.
    assert {_status(s) for s in half_body} == {"HTTP/1.1 408 Request Timeout"}
    # The ones still in their headers took nothing from anyone; closing them is the caller's.
    assert httpx.get(f"{srv.url}/health").status_code == 200
    for s in half_headers:
        s.close()


def test_a_header_that_grows_slowly_past_the_limit_is_cut(server):
    srv, _ = server
    s = _stall(srv.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
    try:
        for _ in range(64):  # 64 KiB of one header, 1 KiB at a time
            s.sendall(b"a" * 1024)
            time.sleep(0.005)
    except (BrokenPipeError, ConnectionResetError):
        pass  # cut while still sending: the limit held
    assert _status(s) in ("HTTP/1.1 400 Bad Request", "")


def test_a_chunked_body_past_the_limit_is_413_not_400(server):
    srv, _ = server

    def chunks():
        for _ in range(10):
            yield b" " * 1_048_576

    r = httpx.post(
        f"{srv.url}/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "over 1048576 bytes" in r.json()["error"]


def test_a_lone_surrogate_gets_a_422_that_says_where(server):
    srv, rows = server
    body = json.dumps({"rows": [rows[0] | {"row_id": "PLACEHOLDER"}]}).replace(
        "PLACEHOLDER", "\\ud800"
    )
    r = httpx.post(f"{srv.url}/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]  # one per type the id may have (text, integer)
    assert {(e["row"], e["column"], e["row_id"]) for e in errors} == {(0, "row_id", "\ud800")}
    assert "unicode" in errors[0]["message"]


def test_a_large_body_sent_with_its_head_is_not_counted_as_head(server):
    """Head and a 200 KB body in one write (one read on the server): the head limit does not
    take the body for head."""
    srv, rows = server
    body = json.dumps({"rows": rows}).encode() + b" " * 200_000
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    assert _status(_stall(srv.port, head + body)) == "HTTP/1.1 200 OK"
