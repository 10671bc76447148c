"""Raw-socket HTTP clients that misbehave: trickle a request, or send far too much of one.

Each runs until the server answers and closes the connection, or cuts it off,
and reports what it saw; an overall deadline turns a server that never gives
up on the client into a test failure rather than a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Iterable
from dataclasses import dataclass

CUT_OFF_DEADLINE = 60.0  # a bound, not a speed: the servers under test give up within seconds


@dataclass(frozen=True)
class Outcome:
    """How the server ended the exchange."""

    status: int | None
    """The answer's status code, or None when the server closed without one."""
    answers: int
    """How many answers came (more than one on a kept-alive connection)."""
    sent: int
    """Bytes of the request the client got out before the server ended it."""
    finished: bool
    """Whether the client got all of its request out."""


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def slow_headers(
    port: int, *, interval: float = 0.1, started: asyncio.Event | None = None
) -> Outcome:
    """Slowloris: a request head sent a byte at a time, never finished."""
    head = b"POST /webhooks/p/generic HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    endless = itertools.chain(
        (bytes([b]) for b in head), itertools.cycle([b"X", b"-", b"a", b":", b"b", b"\r\n"])
    )
    return await exchange(port, endless, interval=interval, started=started)


async def slow_body(
    port: int,
    path: str,
    *,
    interval: float = 0.1,
    headers: dict[str, str] | None = None,
    started: asyncio.Event | None = None,
) -> Outcome:
    """Whole headers announcing a 100-byte body, then that body a byte at a time."""
    head = request_head("POST", path, {**(headers or {}), "Content-Length": "100"})
    pieces = itertools.chain([head], itertools.repeat(b"x", 100))
    return await exchange(port, pieces, interval=interval, started=started)


async def large_body(
    port: int,
    path: str,
    size: int,
    *,
    chunked: bool = False,
    headers: dict[str, str] | None = None,
    started: asyncio.Event | None = None,
) -> Outcome:
    """``size`` bytes of body as fast as the server takes them, with a Content-Length or chunked."""
    piece = 64 << 10
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(size)}
    head = request_head("POST", path, {**(headers or {}), **framing})

    def body() -> Iterable[bytes]:
        for start in range(0, size, piece):
            data = b"x" * min(piece, size - start)
            yield f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data
        if chunked:
            yield b"0\r\n\r\n"

    return await exchange(port, itertools.chain([head], body()), started=started)


async def exchange(
    port: int,
    pieces: Iterable[bytes],
    *,
    interval: float = 0.0,
    started: asyncio.Event | None = None,
) -> Outcome:
    """Send ``pieces`` (``interval`` apart) until done or cut off, then read until the server closes.

    ``started`` is set once the first piece is out: the server is busy with this client.
    Reading and writing are independent, as in a client that watches for an early answer:
    a server that answers, closes and so resets the rest of the upload is still heard.
    """
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(CUT_OFF_DEADLINE):
        with socket.socket() as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            answer = asyncio.create_task(_read_until_closed(sock))
            sent, finished = 0, True
            try:
                for piece in pieces:
                    if answer.done():
                        finished = False
                        break
                    try:
                        await loop.sock_sendall(sock, piece)
                    except OSError:
                        finished = False
                        break
                    sent += len(piece)
                    if started is not None:
                        started.set()
                    if interval:
                        # The client's own pace; it stops early when the server answers or hangs up.
                        await asyncio.wait({answer}, timeout=interval)
                data = await answer
            finally:
                answer.cancel()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    answers = data.count(b"HTTP/1.1 ")
    return Outcome(status=status, answers=answers, sent=sent, finished=finished)


async def _read_until_closed(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = []
    with contextlib.suppress(ConnectionError):
        while chunk := await loop.sock_recv(sock, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)
