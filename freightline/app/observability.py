"""What a running worker shows operators: Prometheus metrics and health endpoints.

Metrics: one endpoint, served by the Temporal SDK's own runtime
(``FREIGHTLINE_METRICS_ADDRESS``, ``/metrics``). It carries the SDK's
``temporal_*`` metrics (task slots, poll and schedule-to-start latencies,
activity and workflow outcomes) and Freightline's ``freightline_*`` metrics,
named and recorded in ``freightline.contracts.metrics``. The runtime must exist
before the client connects (``worker_runtime`` then
``freightline.app.temporal.connect(runtime=...)``).

Health: a small HTTP server on a thread of its own (``FREIGHTLINE_HEALTH_ADDRESS``).
``/healthz`` answers 200 while the process and its event loop respond;
``/readyz`` answers 200 while the worker can take work: it is polling and
the Temporal frontend answered within the last :data:`READINESS_STALE`; 503
before that and from the moment shutdown (drain) begins.

Readiness is cheap and keeps answering under load: a task on the worker's
event loop asks the frontend every :data:`READINESS_INTERVAL` and records the
answer, and ``/readyz`` only reads that record. Asking the frontend on each
probe (as before) made a probe wait for a busy event loop and a 3 s gRPC call,
so a probe could time out while the worker was busy refusing bad promotions.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from freightline.contracts.metrics import HISTOGRAM_BUCKETS
from freightline.settings import HEALTH_ADDRESS_ENV, METRICS_ADDRESS_ENV, parse_address

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.worker import Worker


READINESS_TIMEOUT = timedelta(seconds=3)
"""How long one frontend check may take."""
READINESS_INTERVAL = timedelta(seconds=5)
"""How often the worker checks the frontend while it serves."""
READINESS_STALE = timedelta(seconds=15)
"""An answer older than this (checks failing to run at all) is not ready."""
LIVENESS_TIMEOUT = timedelta(seconds=5)


def worker_runtime(metrics_address: str | None) -> Runtime | None:
    """A Temporal runtime serving Prometheus metrics on ``metrics_address``; None when empty.

    Create it once per process, before connecting: the SDK binds the port when
    the runtime is made, and every client and worker on it reports there.
    """
    if not metrics_address:
        return None
    host, port = parse_address(metrics_address, setting=METRICS_ADDRESS_ENV)
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                histogram_bucket_overrides={k: list(v) for k, v in HISTOGRAM_BUCKETS.items()},
            )
        )
    )


class WorkerHealth:
    """The worker's state as the probes see it; set from the event loop, read from the server thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: Worker | None = None
        self._draining = False
        self._frontend: tuple[float, bool, str] | None = None  # (when, reachable, reason)
        self._watch: asyncio.Task[None] | None = None

    def serving(self, worker: Worker, client: Client) -> None:
        """The worker is polling: ready from now on, while its server answers.

        Call it on the worker's event loop: it starts the frontend checks there.
        """
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._worker, self._draining = worker, False
            self._frontend = None
            if self._watch is None or self._watch.done():
                self._watch = self._loop.create_task(
                    self._watch_frontend(client), name="freightline-readiness"
                )

    def draining(self) -> None:
        """Shutdown began: not ready any more (in-flight activities are finishing)."""
        with self._lock:
            self._draining = True
            watch, loop = self._watch, self._loop
        if watch is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(watch.cancel)

    async def _watch_frontend(self, client: Client) -> None:
        target = client.service_client.config.target_host
        while True:
            try:
                await _reach_frontend(client)
                answer = (True, "ready")
            except asyncio.CancelledError:
                raise
            except Exception as err:
                answer = (False, f"temporal unreachable at {target}: {err}")
            with self._lock:
                self._frontend = (time.monotonic(), *answer)
            await asyncio.sleep(READINESS_INTERVAL.total_seconds())

    def live(self) -> tuple[bool, str]:
        """Whether the process can still make progress: its event loop runs callbacks."""
        with self._lock:
            loop = self._loop
        if loop is None or loop.is_closed():
            return True, "alive"
        try:
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(
                LIVENESS_TIMEOUT.total_seconds()
            )
        except Exception as err:
            return False, f"event loop unresponsive: {type(err).__name__}"
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        """Whether the worker can take work: it polls and Temporal answered lately.

        Reads what the worker recorded; never waits for the event loop or the network.
        """
        with self._lock:
            worker, draining, frontend = self._worker, self._draining, self._frontend
        if draining:
            return False, "draining"
        if worker is None:
            return False, "starting"
        if not worker.is_running:
            return False, "worker not running"
        if frontend is None:
            return False, "starting: checking the Temporal frontend"
        checked, reachable, reason = frontend
        age = time.monotonic() - checked
        if age > READINESS_STALE.total_seconds():
            return False, f"the Temporal frontend was last checked {age:.0f}s ago"
        return reachable, reason


async def _reach_frontend(client: Client) -> None:
    # GetSystemInfo is what the SDK itself calls on connect, so every server and
    # Temporal Cloud namespace (API key or mTLS) allows it.
    await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=READINESS_TIMEOUT)


class HealthServer:
    """``/healthz`` and ``/readyz`` over HTTP, on a daemon thread; a context manager."""

    def __init__(self, address: str, health: WorkerHealth | None = None) -> None:
        self.health = health or WorkerHealth()
        host, port = parse_address(address, setting=HEALTH_ADDRESS_ENV)
        self._server = ThreadingHTTPServer((host, port), _handler_for(self.health))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="freightline-health", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (useful when the address asked for port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _handler_for(health: WorkerHealth) -> type[BaseHTTPRequestHandler]:
    class HealthHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok, reason = health.live()
            elif path == "/readyz":
                ok, reason = health.ready()
            else:
                self._answer(HTTPStatus.NOT_FOUND, "not found: try /healthz or /readyz")
                return
            self._answer(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, reason)

        def _answer(self, status: HTTPStatus, text: str) -> None:
            body = f"{text}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Probes every few seconds would drown the worker's JSON log.
            return

    return HealthHandler


@contextmanager
def serve_health(address: str | None) -> Iterator[WorkerHealth]:
    """Serve ``/healthz`` and ``/readyz`` on ``address`` (if any) for the block's duration."""
    if not address:
        yield WorkerHealth()
        return
    with HealthServer(address) as server:
        yield server.health
