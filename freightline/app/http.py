"""The one HTTP stack for what Freightline serves: a Starlette app on uvicorn, with limits.

Everything that listens (the webhook receiver, the web UI in
``freightline.app.ui``) is routes or mounts on a Starlette application made by
:func:`build_app`, served by :func:`serve` inside the caller's event loop::

    app = build_app(*webhook_routes)
    async with serve(app, host="0.0.0.0", port=8090, limits=Limits()) as server:
        ...  # server.port is the bound port (port 0 picks a free one)

Why not uvicorn's defaults alone: they guard the header size
(``h11_max_incomplete_event_size``) and the idle time between requests
(``timeout_keep_alive``), but nothing bounds how long a client may take to
send a request. uvicorn's keep-alive timer is not armed on a new connection
and is reset by every byte received, so a client trickling its headers or
its body holds a connection forever (uvicorn issue #157, "timeout-request-
start" is still open). :func:`serve` adds the missing bounds from
:class:`Limits`:

- the request line and headers must arrive within ``header_timeout`` of the
  connection opening (or of the previous response, on a kept-alive
  connection), else the connection is closed: a small h11 protocol subclass,
  since no ASGI code runs before the headers are complete;
- the body must arrive within ``body_timeout`` of the headers (``408``) and
  be at most ``max_body`` bytes (``413``): the ``Content-Length`` is checked
  before the application runs, a chunked body is counted as it streams, so an
  oversized body is refused without being read into memory. A response sent
  before its request's body was read closes the connection, so a client
  cannot keep trickling into a kept-alive connection either.

uvicorn runs without its signal handlers (the worker and the CLI own
SIGINT/SIGTERM and stop the server by leaving the context), without its own
logging configuration (its records go through ``freightline.logging``'s
JSON) and without the access log. Refusals and errors are JSON:
``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from freightline.logging import get_logger

__all__ = ["HttpServer", "Limits", "RequestLimits", "build_app", "serve"]

log = get_logger("freightline.app.http")


@dataclass(frozen=True)
class Limits:
    """What one client may cost the server; every listener has all of them."""

    max_body: int = 1 << 20
    """Largest request body, in bytes (``413`` beyond)."""
    max_header_bytes: int = 64 << 10
    """Largest request line plus headers, in bytes (``400`` beyond)."""
    header_timeout: float = 10.0
    """Seconds to send the request line and headers, else the connection is closed."""
    body_timeout: float = 10.0
    """Seconds to send the whole body once the headers are in (``408`` beyond)."""
    idle_timeout: int = 5
    """Seconds a kept-alive connection may sit idle between requests."""
    shutdown_timeout: int = 5
    """Seconds in-flight requests get to finish when the server stops."""


# --- the application --------------------------------------------------------------------------


def build_app(*routes: BaseRoute) -> Starlette:
    """The Starlette application: ``routes`` (routes and mounts), ``GET /healthz``, JSON errors."""
    return Starlette(
        routes=[Route("/healthz", _healthz, methods=["GET"]), *routes],
        exception_handlers={HTTPException: _json_error},
    )


async def _healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _json_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_response(exc)


def _error_response(exc: HTTPException) -> Response:
    if isinstance(exc, _BodyRefused):
        # Refused before the application saw the request: this is its only trace.
        log.warning("request refused", status=exc.status_code, reason=exc.detail)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


# --- body limits ------------------------------------------------------------------------------


class _BodyRefused(HTTPException):
    """The request body is too large or too slow; the connection closes after the answer.

    An ``HTTPException`` so that a Starlette app answers it with its own error
    handler; :class:`RequestLimits` answers it for any other ASGI app.
    """

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code, detail, headers={"connection": "close"})


class RequestLimits:
    """ASGI middleware: each HTTP request's body within ``max_body`` bytes and ``body_timeout``."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = _LimitedBody(scope, receive, self.limits)
        except _BodyRefused as refused:
            await _error_response(refused)(scope, receive, send)
            return

        async def send_closing_early(message: Message) -> None:
            if message["type"] == "http.response.start":
                body.response_started = True
                headers = list(message.get("headers", []))
                if not body.complete and (b"connection", b"close") not in headers:
                    # Answered before the body was read: close rather than wait for (and
                    # discard) a body the client may trickle for as long as it likes.
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            body.check_length()
            await self.app(scope, body.receive, send_closing_early)
        except _BodyRefused as refused:
            if body.response_started:
                raise
            await _error_response(refused)(scope, receive, send_closing_early)


class _LimitedBody:
    def __init__(self, scope: Scope, receive: Receive, limits: Limits) -> None:
        headers = Headers(scope=scope)
        self._receive = receive
        self._limits = limits
        self._deadline = asyncio.get_running_loop().time() + limits.body_timeout
        self._length = _content_length(headers)
        self.received = 0
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.complete = not chunked and not self._length
        self.response_started = False

    def check_length(self) -> None:
        if self._length is not None and self._length > self._limits.max_body:
            raise _BodyRefused(413, f"the body is over {self._limits.max_body} bytes")

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()  # only http.disconnect is left to come
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            raise _BodyRefused(
                408, f"the body did not arrive within {self._limits.body_timeout:g}s"
            ) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self._limits.max_body:
                raise _BodyRefused(413, f"the body is over {self._limits.max_body} bytes")
            self.complete = not message.get("more_body", False)
        else:
            self.complete = True
        return message


def _content_length(headers: Headers) -> int | None:
    # h11 answers a malformed one with 400 before the app runs (and the connection closes
    # while the server keeps serving); this is for any other server in front of the app.
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isascii() or not value.strip().isdigit():
        raise _BodyRefused(400, f"Content-Length {value[:40]!r} is not a number of bytes")
    return int(value)


# --- the server -------------------------------------------------------------------------------


class _Config(uvicorn.Config):
    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        super().__init__(
            RequestLimits(app, limits),
            http=_DeadlineH11Protocol,
            ws="none",
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=limits.idle_timeout,
            timeout_graceful_shutdown=limits.shutdown_timeout,
            h11_max_incomplete_event_size=limits.max_header_bytes,
        )
        self.limits = limits


class _DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is not in on time.

    The deadline runs from the connection opening, and again from each response
    on a kept-alive connection, until h11 has parsed a whole request line and
    headers; bytes trickling in do not extend it.
    """

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        assert isinstance(self.config, _Config)
        if self._head_deadline is None and not self.transport.is_closing():
            timeout = self.config.limits.header_timeout
            self._head_deadline = self.loop.call_later(timeout, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The process (worker, CLI) owns SIGINT/SIGTERM and stops the server itself.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            # uvicorn exits the process when the app's lifespan startup fails; here
            # that is an error for the caller, not the end of the worker.
            raise RuntimeError("the HTTP application failed to start") from None
        if self.started:
            self.ready.set()


class HttpServer:
    """A running :func:`serve`: the address it listens on."""

    def __init__(self, host: str, port: int, task: asyncio.Task[None]) -> None:
        self.host = host
        self.port = port
        self._task = task

    async def wait(self) -> None:
        """Until the server stops (it stops when the :func:`serve` context is left)."""
        await asyncio.shield(self._task)


@contextlib.asynccontextmanager
async def serve(
    app: ASGIApp, host: str, port: int, limits: Limits | None = None, *, name: str = "http"
) -> AsyncIterator[HttpServer]:
    """Serve ``app`` on ``host:port`` (0 picks a free port) while the context is open.

    Binding errors (the port is taken) raise ``OSError`` here, before the context opens;
    leaving the context stops the server, giving in-flight requests ``shutdown_timeout``.
    """
    limits = limits or Limits()
    sock = _bind(host, port)
    try:
        bound: int = sock.getsockname()[1]
        server = _Server(_Config(app, limits))
        task = await _start(server, sock, name)
        log.info(f"{name} listening", host=host, port=bound)
        try:
            yield HttpServer(host, bound, task)
        finally:
            server.should_exit = True
            await task
            log.info(f"{name} stopped", host=host, port=bound)
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    # Bound here rather than by uvicorn: a taken port is an OSError for the caller
    # (uvicorn would exit the process), and port 0's choice is known at once.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.setblocking(False)
    return sock


async def _start(server: _Server, sock: socket.socket, name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{name} HTTP server")
    ready = asyncio.create_task(server.ready.wait())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        ready.cancel()
    if task.done():
        task.result()  # raises why it stopped
        raise RuntimeError(f"the {name} HTTP server stopped while starting")
    return task
