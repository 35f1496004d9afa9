"""Generated requests for ``ctrain serve``: malformed JSON, wrong types, sizes, nesting,
encodings and slow senders, with valid requests among them.

``run(url, port, rows, n, seed)`` sends them (``n`` in all, one valid request in every
``VALID_EVERY``) and counts what came back. ``tests/reliability/test_serving_fuzz.py`` and
``make reliability`` both use it. Every request is sent over a raw socket, so bodies and headers
are exactly the bytes generated (no client library tidies them).
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

VALID_EVERY = 5
READ_TIMEOUT = 30.0  # a request not answered within this is a hang

# Values of every JSON type and then some: what a field may be sent instead of its own type.
ODD_VALUES: list = [
    True,
    False,
    None,
    "12",
    "",
    "x" * 5000,
    2**80,
    -(2**63),
    1e308,
    [],
    [1, 2],
    {},
    {"a": 1},
    "\u0000",
    "\ud800",
    "\U0001f600",
    "1e999",
]


@dataclass
class Tally:
    """What the generated requests got: status counts per kind, hangs, 5xx, valid failures."""

    sent: int = 0
    by_kind: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    kind_status: Counter = field(default_factory=Counter)  # (kind, status) -> count
    server_errors: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    valid_failed: list[str] = field(default_factory=list)
    valid_ok: int = 0
    seconds: float = 0.0


def _http(method: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = {"Host": "fuzz", "Content-Type": "application/json", "Content-Length": str(len(body))}
    head.update(headers or {})
    lines = [f"{method} /predict HTTP/1.1", *(f"{k}: {v}" for k, v in head.items() if v != "")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _chunked(body: bytes, size: int) -> bytes:
    """``body`` with chunked transfer encoding, ``size`` bytes a chunk."""
    out = _http("POST", b"", {"Content-Length": "", "Transfer-Encoding": "chunked"})
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


def _generators(rows: list[dict], max_rows: int, max_body: int):
    """(kind, make(rng) -> raw request bytes) for every kind of bad request."""
    ids = list(rows[0])

    def body(obj) -> bytes:
        return json.dumps(obj, allow_nan=True).encode()

    def valid(rng: random.Random) -> bytes:
        return _http("POST", body({"rows": rng.sample(rows, rng.randint(1, len(rows)))}))

    def wrong_type(rng):
        row = dict(rng.choice(rows))
        row[rng.choice(ids)] = rng.choice(ODD_VALUES)
        return _http("POST", body({"rows": [row]}))

    def missing_field(rng):
        row = dict(rng.choice(rows))
        del row[rng.choice(ids)]
        return _http("POST", body({"rows": [row]}))

    def broken_json(rng):
        text = body({"rows": [rng.choice(rows)]})
        cut = rng.randint(0, len(text) - 1)
        variants = [
            text[:cut],
            text + b"}",
            text.replace(b":", b"=", 1),
            b"{'rows': []}",
            b"NaN",
            b'{"rows": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
            b'{"rows": [{"row_id": 1e999999}]}',
            text[:cut] + bytes([rng.randint(0, 255)]) + text[cut + 1 :],
        ]
        return _http("POST", rng.choice(variants))

    def shape(rng):
        row = rng.choice(rows)
        variants = [
            {"rows": row},
            {"rows": [[*row.values()]]},
            {"rows": [row], "extra": 1},
            {"row": [row]},
            [row],
            {"rows": []},
            {"rows": [row] * (max_rows + 1)},
            {"rows": [{"a": {"b": {"c": [row]}}}]},
            {"rows": None},
        ]
        return _http("POST", body(rng.choice(variants)))

    def encoding(rng):
        text = json.dumps({"rows": [rng.choice(rows)]}, ensure_ascii=False)
        variants = [
            text.encode("utf-16"),
            text.encode("latin-1", "replace") + b"\xff\xfe",
            b"\xef\xbb\xbf" + text.encode(),
            text.replace('"row_id": "', '"row_id": "\\ud800', 1).encode(),
            text.encode().replace(b'"', b'"\x00', 1),
        ]
        return _http("POST", rng.choice(variants))

    def headers(rng):
        raw = body({"rows": [rng.choice(rows)]})
        variants = [
            _http("POST", raw, {"Content-Type": "text/plain"}),
            _http("POST", raw, {"Content-Type": ""}),
            _http("POST", raw, {"Content-Length": str(len(raw) + 10**9)}),
            _http("POST", raw, {"Content-Length": "-1"}),
            _http("POST", raw, {"Content-Length": "abc"}),
            _http("GET", b""),
            _http("PUT", raw),
            _chunked(raw, rng.randint(1, 64)),
            _chunked(b" " * (max_body + 1), 65536),
            _http("POST", raw, {"X-Big": "a" * 70000}),
        ]
        return rng.choice(variants)

    def size(rng):
        pad = rng.choice([max_body - 20, max_body + 1, 2 * max_body])
        raw = b'{"rows": [' + json.dumps(rng.choice(rows)).encode() + b"]" + b" " * pad + b"}"
        return _http("POST", raw)

    return valid, [
        ("wrong type", wrong_type),
        ("missing field", missing_field),
        ("broken JSON", broken_json),
        ("shape", shape),
        ("encoding", encoding),
        ("headers", headers),
        ("size", size),
    ]


def _exchange(port: int, data: bytes) -> int | None:
    """Send ``data`` on a new connection; the status code answered, or None on a hang."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as s:
        # Cut off while sending (a limit held): the answer may still be there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        head = b""
        try:
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
        except TimeoutError:
            return None
        except ConnectionResetError:
            pass
    line = head.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0  # 0: closed, no answer


def _stall(port: int, rng: random.Random) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    partial = rng.choice(
        [
            b"POST /predict HTTP/1.1\r\nHost: fuzz\r\n",
            b'POST /predict HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 900\r\n\r\n{"rows": [',
            b"",
        ]
    )
    s.sendall(partial)
    return s


def run(
    port: int,
    rows: list[dict],
    n: int,
    seed: int = 0,
    max_rows: int = 1000,
    max_body: int = 1_048_576,
    stalled: int = 32,
    on_valid: Callable[[int], None] | None = None,
) -> Tally:
    """Send ``n`` generated requests (and keep ``stalled`` slow senders open meanwhile)."""
    rng = random.Random(seed)
    valid, kinds = _generators(rows, max_rows, max_body)
    tally = Tally()
    slow = [_stall(port, rng) for _ in range(stalled)]
    tally.by_kind["slow sender"] += stalled
    started = time.monotonic()
    for i in range(n - stalled):
        if i % VALID_EVERY == 0:
            kind, data = "valid", valid(rng)
        else:
            kind, make = rng.choice(kinds)
            data = make(rng)
        tally.by_kind[kind] += 1
        status = _exchange(port, data)
        tally.sent += 1
        tally.statuses[status] += 1
        tally.kind_status[kind, status] += 1
        where = f"#{i} {kind}: {data[:120]!r}"
        if status is None:
            tally.hangs.append(where)
        elif status >= 500:
            tally.server_errors.append(f"{where} -> {status}")
        if kind == "valid":
            if status == 200:
                tally.valid_ok += 1
            else:
                tally.valid_failed.append(f"{where} -> {status}")
            if on_valid is not None:
                on_valid(status or 0)
    # The slow senders: each is let go (408 or closed) once its read deadline passes.
    for s in slow:
        try:
            head = s.recv(64)
        except (TimeoutError, ConnectionResetError):
            head = b""
        s.close()
        tally.sent += 1
        status = int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else 0
        tally.statuses[status] += 1
        tally.kind_status["slow sender", status] += 1
        if status >= 500:
            tally.server_errors.append(f"slow sender -> {status}")
    tally.seconds = time.monotonic() - started
    return tally


def refused_share(tally: Tally, kind: str) -> float:
    """The share of ``kind``'s requests answered 4xx."""
    mine = {s: c for (k, s), c in tally.kind_status.items() if k == kind}
    return sum(c for s, c in mine.items() if s and 400 <= s < 500) / max(1, sum(mine.values()))
