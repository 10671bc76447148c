"""A real HTTP metric source for verification tests: ``GET /rate/<tag>`` → ``{"errorRate": x}``,
and the loopback server base every small test server here and in the tests builds on."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackServer:
    """Serves ``handler`` on a free loopback port, from construction until ``stop()``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.host}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ErrorRateServer(LoopbackServer):
    """Answers ``{"errorRate": x}``, x from ``rates`` by the path's last part (default 0.0),
    and counts the requests it answered. Serving from construction until ``stop()``."""

    def __init__(self) -> None:
        self.rates: dict[str, float] = {}
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                tag = self.path.rsplit("/", 1)[-1]
                body = json.dumps({"errorRate": outer.rates.get(tag, 0.0)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)


class StatusServer(LoopbackServer):
    """Answers every request with ``status``, ``headers`` and ``body`` (JSON) and keeps what it
    was sent: the provider answers a real one cannot be made to give here (a 429 with
    ``Retry-After``, a 500). Serving from construction until ``stop()``."""

    def __init__(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                sent = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, dict(self.headers), sent))
                payload = json.dumps(outer.body).encode()
                self.send_response(outer.status)
                for key, value in outer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
