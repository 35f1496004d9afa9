"""Limits on a connection before a request reaches the app: the size and time of its head.

uvicorn's httptools protocol (the fast one, picked when httptools is installed) buffers a
request's head (request line and headers) without a size limit and without a deadline: a caller
that sends a header without end grows the buffer, one that sends nothing after connecting holds
its socket for good. ``_BoundedHead`` adds both; the body's limits (size, deadline) are checked
by the app's guard once the head is in (``serving.app``), which is also where a request starts
to count as in progress.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ctrain.settings import ServingConfig


class _BoundedHead(HttpToolsProtocol):
    """httptools' protocol with a size limit (400) and a deadline (408) on each request's head."""

    max_head_bytes = 65536
    head_timeout = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes, self._timer = 0, None
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        in_head = self._timer is not None
        super().data_received(data)
        # Counted only while the head is still incomplete after this data: the body that comes
        # in the same read as the end of a head is the body's (held to the app's limit).
        if in_head and self._timer is not None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._stop_timer()
                self.send_400_response(f"the request head is over {self.max_head_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._stop_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()  # the next request on this connection (keep-alive)

    def _await_head(self) -> None:
        self._head_bytes = 0
        self._timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        msg = f"the request head did not arrive within {self.head_timeout:g} s".encode()
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: " + str(len(msg)).encode() + b"\r\n\r\n" + msg
        )
        self.transport.close()


def uvicorn_options(cfg: ServingConfig) -> dict[str, Any]:
    """The uvicorn settings ``ctrain serve`` runs with (and the tests serve with)."""
    protocol = type(
        "BoundedHead",
        (_BoundedHead,),
        {"max_head_bytes": cfg.max_head_bytes, "head_timeout": cfg.read_timeout_seconds},
    )
    return {"http": protocol}
