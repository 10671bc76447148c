"""What a running worker shows operators: Prometheus metrics and health endpoints.

Metrics: one endpoint, served by the Temporal SDK's own runtime
(``FREIGHTLINE_METRICS_ADDRESS``, ``/metrics``). It carries the SDK's
``temporal_*`` metrics (task slots, poll and schedule-to-start latencies,
activity and workflow outcomes) and Freightline's ``freightline_*`` metrics,
which are recorded through the SDK's metric meter — in workflows
``workflow.metric_meter()``, which records nothing while a workflow is being
replayed, so a promotion counted once is not counted again when a worker
rebuilds its state from history. The runtime must exist before the client
connects (``worker_runtime`` then ``freightline.temporal.connect(runtime=...)``).

Freightline's metrics (labels besides the SDK's ``namespace``, ``task_queue``,
``workflow_type``/``activity_type`` and ``service_name``):

    freightline_promotions_total                 counter    project, stage, phase
    freightline_promotion_duration_seconds       histogram  project, stage, phase
    freightline_discovery_duration_seconds       histogram  project, warehouse
    freightline_discovery_errors_total           counter    project, warehouse
    freightline_freight_discovered_total         counter    project, warehouse
    freightline_verifications_total              counter    project, stage, phase
    freightline_verification_duration_seconds    histogram  project, stage, phase

Health: a small HTTP server on a thread of its own (``FREIGHTLINE_HEALTH_ADDRESS``).
``/healthz`` answers 200 while the process and its event loop respond;
``/readyz`` answers 200 only while the worker is polling and the Temporal
frontend answers, and 503 before that and from the moment shutdown (drain)
begins.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING

from temporalio import activity, workflow
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from freightline.settings import HEALTH_ADDRESS_ENV, METRICS_ADDRESS_ENV, parse_address

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.worker import Worker

PROMOTIONS = "freightline_promotions_total"
PROMOTION_DURATION = "freightline_promotion_duration_seconds"
DISCOVERY_DURATION = "freightline_discovery_duration_seconds"
DISCOVERY_ERRORS = "freightline_discovery_errors_total"
FREIGHT_DISCOVERED = "freightline_freight_discovered_total"
VERIFICATIONS = "freightline_verifications_total"
VERIFICATION_DURATION = "freightline_verification_duration_seconds"

# Seconds. A promotion spans a clone-to-push activity and an Argo CD sync (minutes),
# and may wait for an approval (hours); a discovery is one registry or git listing.
_LONG_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0)
_SHORT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
HISTOGRAM_BUCKETS: Mapping[str, tuple[float, ...]] = {
    PROMOTION_DURATION: _LONG_BUCKETS,
    VERIFICATION_DURATION: _LONG_BUCKETS,
    DISCOVERY_DURATION: _SHORT_BUCKETS,
}

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


def _meter() -> MetricMeter:
    # Workflow code gets the replay-safe meter; outside a worker (the CLI) nothing is recorded.
    if workflow.in_workflow():
        return workflow.metric_meter()
    if activity.in_activity():
        return activity.metric_meter()
    return MetricMeter.noop


def record_promotion_finished(project: str, stage: str, phase: str, seconds: float) -> None:
    """Count a promotion that reached a terminal phase, and how long it took."""
    labels = {"project": project, "stage": stage, "phase": phase}
    meter = _meter()
    meter.create_counter(PROMOTIONS, "Promotions that reached a terminal phase").add(1, labels)
    meter.create_histogram_float(
        PROMOTION_DURATION, "Time from a promotion's start to its terminal phase", "s"
    ).record(max(seconds, 0.0), labels)


def record_discovery(
    project: str, warehouse: str, seconds: float, *, error: bool = False, new_freight: int = 0
) -> None:
    """Record one discovery pass of a Warehouse: its latency, whether it failed, new Freight."""
    labels = {"project": project, "warehouse": warehouse}
    meter = _meter()
    meter.create_histogram_float(
        DISCOVERY_DURATION, "Time to list a Warehouse's subscriptions", "s"
    ).record(max(seconds, 0.0), labels)
    if error:
        meter.create_counter(DISCOVERY_ERRORS, "Discovery passes that failed").add(1, labels)
    if new_freight:
        meter.create_counter(FREIGHT_DISCOVERED, "New Freight produced by Warehouses").add(
            new_freight, labels
        )


def record_verification_finished(project: str, stage: str, phase: str, seconds: float) -> None:
    """Count a verification by outcome (``Successful``, ``Failed``, ``Error``, ``Inconclusive``)."""
    labels = {"project": project, "stage": stage, "phase": phase}
    meter = _meter()
    meter.create_counter(VERIFICATIONS, "Verifications that reached a terminal phase").add(
        1, labels
    )
    meter.create_histogram_float(
        VERIFICATION_DURATION, "Time from a verification's start to its outcome", "s"
    ).record(max(seconds, 0.0), labels)


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
