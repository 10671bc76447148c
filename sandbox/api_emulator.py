"""A vendor API emulator's plumbing: a WSGI app on a free loopback port, checked against
the vendor's published description.

Subclasses answer requests (:meth:`ApiEmulator.answer`) and say how a request
or a response is checked against the vendor's description (an OpenAPI
document, a GraphQL schema): :meth:`ApiEmulator.check_request` and
:meth:`ApiEmulator.check_response` return the problems found. A request the
description refuses is answered 400 with the problems, as the vendor would
refuse it; every problem, in either direction, is kept in
:attr:`ApiEmulator.violations` for the tests to assert there are none.

:meth:`ApiEmulator.fail_next` queues answers the vendor gives under load or
outage (a 429 with ``Retry-After``, a 503), served before any real answer.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from types import TracebackType
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

__all__ = ["ApiEmulator", "json_response"]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # a test's output is no place for an access log


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer."""
    return Response(
        json.dumps(body), status=status, headers=headers or {}, content_type="application/json"
    )


class ApiEmulator:
    """A vendor API on ``127.0.0.1`` at a free port, from construction until :meth:`stop`."""

    name = "api"

    def __init__(self, port: int = 0) -> None:
        self.violations: list[str] = []
        self.requests: list[Request] = []
        self._failures: deque[Response] = deque()
        self._lock = threading.Lock()
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", port, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    # --- for subclasses -------------------------------------------------------

    def answer(self, request: Request) -> Response:
        """The vendor's answer to a request the description accepts."""
        raise NotImplementedError

    def check_request(self, request: Request) -> list[str]:
        """What the vendor's description finds wrong with ``request``."""
        return []

    def check_response(self, request: Request, response: Response) -> list[str]:
        """What the vendor's description finds wrong with ``response``."""
        return []

    # --- for tests ------------------------------------------------------------

    def fail_next(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """Answer the next request with ``status`` and ``body`` instead (checked like any)."""
        with self._lock:
            self._failures.append(json_response(status, body, headers))

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals ------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        request.get_data()  # read once, so both the check and the answer see the body
        with self._lock:
            self.requests.append(request)
            failure = self._failures.popleft() if self._failures else None
        problems = self.check_request(request)
        if problems:
            self.record_violation(f"request {request.method} {request.path}", problems)
            response = json_response(400, {"errors": problems})
        elif failure is not None:
            response = failure
        else:
            response = self.answer(request)
        response_problems = self.check_response(request, response)
        if response_problems:
            self.record_violation(
                f"response {response.status_code} to {request.method} {request.path}",
                response_problems,
            )
        return response(environ, start_response)

    def record_violation(self, what: str, problems: list[str]) -> None:
        """Keep ``problems`` found with a request or an answer."""
        with self._lock:
            self.violations.extend(f"{self.name} {what}: {problem}" for problem in problems)
