"""The HTTP stack (freightline.app.http) against a real uvicorn server on a loopback port."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from freightline.app.http import HttpServer, Limits, RequestLimits, build_app, serve
from tests.hostile_http import exchange, large_body, request_head, slow_body, slow_headers

FAST = Limits(header_timeout=1.0, body_timeout=1.0, idle_timeout=1, shutdown_timeout=1)


async def echo(request: Request) -> Response:
    return JSONResponse({"received": len(await request.body())})


async def ignore_body(_request: Request) -> Response:
    return JSONResponse({"read": False})


APP = build_app(
    Route("/echo", echo, methods=["POST"]), Route("/ignore", ignore_body, methods=["POST"])
)


async def halves(size: int) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield b"x" * (size // 2)


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    async with serve(APP, "127.0.0.1", 0, FAST, name="test") as running:
        yield running


async def test_serves_routes_on_the_bound_port(server: HttpServer) -> None:
    assert server.port != 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.post("/echo", content=b"x" * 1000)).json() == {"received": 1000}
        # A body of exactly the limit is fine, chunked too.
        exact = await http.post("/echo", content=halves(FAST.max_body))
        assert exact.json() == {"received": FAST.max_body}
        missing = await http.get("/nowhere")
        assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})
        wrong_method = await http.get("/echo")
        assert wrong_method.status_code == 405


async def test_oversized_content_length_is_refused_before_the_body(server: HttpServer) -> None:
    # Only the head and a first kilobyte go out: the answer cannot have waited for the rest.
    head = request_head("POST", "/echo", {"Content-Length": str(10 << 20)})
    outcome = await exchange(server.port, [head, b"x" * 1024])
    assert outcome.status == 413


async def test_oversized_bodies_are_refused(server: HttpServer) -> None:
    with_length = await large_body(server.port, "/echo", 10 << 20)
    chunked = await large_body(server.port, "/echo", 10 << 20, chunked=True)
    assert (with_length.status, chunked.status) == (413, 413)
    # The chunked one was counted as it came: refused long before its end.
    assert not chunked.finished


async def test_slow_clients_are_cut_off(server: HttpServer) -> None:
    headers, body, silent = await asyncio.gather(
        slow_headers(server.port),
        slow_body(server.port, "/echo"),
        exchange(server.port, []),  # connects, sends nothing
    )
    assert (headers.status, headers.finished) == (None, False)  # closed: no request to answer
    assert silent.status is None
    assert (body.status, body.finished) == (408, False)


async def test_an_early_answer_closes_the_connection(server: HttpServer) -> None:
    # The route answers without reading: a client trickling its body gets the answer
    # and the connection closed, rather than a kept-alive connection to trickle into.
    outcome = await slow_body(server.port, "/ignore")
    assert outcome.status == 200 and not outcome.finished


async def test_kept_alive_connections_get_the_head_deadline_again(server: HttpServer) -> None:
    first = request_head("GET", "/healthz", {})
    # A first request answered, then the next head trickled: cut off, no second answer.
    outcome = await exchange(server.port, [first, *(bytes([b]) for b in first)], interval=0.3)
    assert (outcome.status, outcome.answers, outcome.finished) == (200, 1, False)


async def test_process_signal_handlers_are_left_alone() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    async with serve(APP, "127.0.0.1", 0, FAST) as running:
        assert {sig: signal.getsignal(sig) for sig in before} == before
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"http://127.0.0.1:{running.port}/healthz")).status_code == 200
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_a_taken_port_is_an_error_for_the_caller() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            async with serve(APP, "127.0.0.1", taken.getsockname()[1], FAST):
                pass


MALFORMED_LENGTHS = ["-1", "-100", "abc", "1e3", "+5", "0x10", "5, 6", "9" * 40]


@pytest.mark.parametrize("length", MALFORMED_LENGTHS)
async def test_a_malformed_content_length_is_a_400_and_the_server_keeps_serving(
    server: HttpServer, length: str
) -> None:
    head = request_head("POST", "/echo", {"Content-Length": length})
    outcome = await exchange(server.port, [head + b"hello"])
    assert outcome.status == 400
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
        assert (await http.post("/echo", content=b"hello")).json() == {"received": 5}


async def test_request_limits_refuse_a_malformed_content_length_behind_any_server() -> None:
    # Another ASGI server in front may pass the header through unchecked: the middleware
    # answers 400 itself and never runs the application.
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the application ran")

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "headers": [(b"content-length", b"-1")],
    }
    await RequestLimits(application, FAST)(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
