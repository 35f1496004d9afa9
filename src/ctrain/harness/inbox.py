"""A local inbox for notifications: an HTTP server on 127.0.0.1 that keeps every JSON body
POSTed to it, which is what Apprise's ``json://`` service sends (title, message, type). The demo
(``ctrain demo --notify``) and the tests route ctrain's notifications here through an Airflow
connection of type apprise, so what the operators would be told can be read back."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Inbox:
    """The server, in a daemon thread of this process (a context manager)."""

    def __init__(self):
        got: list[dict] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    message = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                with lock:
                    got.append(message | {"path": self.path, "at": datetime.now(UTC)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # quiet: the demo prints what arrived itself
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self._got, self._lock = got, lock
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def connection(self, path: str = "") -> str:
        """An Airflow connection (the JSON form of an ``AIRFLOW_CONN_*`` variable) of type
        apprise whose one service posts here, under ``/path``."""
        return json.dumps(
            {
                "conn_type": "apprise",
                "extra": {"config": {"path": f"json://127.0.0.1:{self.port}/{path}"}},
            }
        )

    def messages(self, path: str | None = None) -> list[dict]:
        """What arrived (under ``/path``), oldest first: title, message, type, path, at."""
        with self._lock:
            return [m for m in self._got if path is None or m["path"] == f"/{path}"]

    def __enter__(self) -> Inbox:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
