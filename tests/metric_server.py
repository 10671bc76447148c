"""A real HTTP metric source for verification tests: ``GET /rate/<tag>`` → ``{"errorRate": x}``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ErrorRateServer:
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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
