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
``/readyz`` answers 200 only while the worker is polling and the Temporal
frontend answers, and 503 before that and from the moment shutdown (drain)
begins.
"""

from __future__ import annotations

import asyncio
import threading
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
        self._client: Client | None = None
        self._worker: Worker | None = None
        self._draining = False

    def serving(self, worker: Worker, client: Client) -> None:
        """The worker is polling: ready from now on, while its server answers."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._client, self._worker, self._draining = client, worker, False

    def draining(self) -> None:
        """Shutdown began: not ready any more (in-flight activities are finishing)."""
        with self._lock:
            self._draining = True

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
        """Whether the worker polls and Temporal answers."""
        with self._lock:
            loop, client, worker, draining = self._loop, self._client, self._worker, self._draining
        if draining:
            return False, "draining"
        if loop is None or client is None or worker is None:
            return False, "starting"
        if not worker.is_running:
            return False, "worker not running"
        try:
            asyncio.run_coroutine_threadsafe(_reach_frontend(client), loop).result(
                READINESS_TIMEOUT.total_seconds() + 1
            )
        except Exception as err:
            return (
                False,
                f"temporal unreachable at {client.service_client.config.target_host}: {err}",
            )
        return True, "ready"


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
