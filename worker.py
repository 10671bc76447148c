"""Builds and runs the Freightline worker: every workflow and activity on one task queue.

``python worker.py`` (or ``freightline worker``) connects to ``TEMPORAL_ADDRESS``
and runs until SIGINT/SIGTERM, then drains: in-flight activities get the
graceful-shutdown window to finish before the process exits. It serves
Prometheus metrics on ``FREIGHTLINE_METRICS_ADDRESS`` (default 0.0.0.0:9464) and
``/healthz`` / ``/readyz`` on ``FREIGHTLINE_HEALTH_ADDRESS`` (default 0.0.0.0:8080);
an empty value turns either off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.argocd import ArgoCDActivities
from activities.discovery import DiscoveryActivities
from activities.metrics import measure_metric
from activities.notify import notify
from activities.project import ProjectActivities
from activities.worktree import WorktreeActivities
from freightline.credentials import worker_credentials
from freightline.logging import configure_logging, get_logger
from freightline.observability import (
    WorkerHealth,
    health_address_from_env,
    metrics_address_from_env,
    serve_health,
    worker_runtime,
)
from freightline.temporal import connect, exit_process, task_queue
from freightline.webhooks import WEBHOOK_PORT_ENV, WebhookServer
from workflows.notify import NotifyWorkflow
from workflows.project import ProjectWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.stage import StageWorkflow
from workflows.verification import VerificationWorkflow
from workflows.warehouse import WarehouseWorkflow

WORKFLOWS = [
    NotifyWorkflow,
    ProjectWorkflow,
    PromotionWorkflow,
    StageWorkflow,
    VerificationWorkflow,
    WarehouseWorkflow,
]
GRACEFUL_SHUTDOWN = timedelta(seconds=30)
HEARTBEAT_THROTTLE = timedelta(seconds=2)


def build_worker(
    client: Client, *, queue: str | None = None, max_concurrent_activities: int = 16
) -> Worker:
    """A worker with all of Freightline's workflows and activities."""
    project = ProjectActivities(client)
    worktree = WorktreeActivities(git_credentials=worker_credentials().git)
    discovery = DiscoveryActivities(worker_credentials())
    argocd = ArgoCDActivities.from_env()  # ARGOCD_SERVER, ARGOCD_AUTH_TOKEN, ARGOCD_INSECURE
    return Worker(
        client,
        task_queue=queue or task_queue(),
        workflows=WORKFLOWS,
        activities=[
            project.resolve_promotion,
            worktree.run_worktree_steps,
            argocd.argocd_update,
            argocd.argocd_wait,
            argocd.argocd_health,
            discovery.discover_warehouse,
            measure_metric,
            notify,
        ],
        activity_executor=ThreadPoolExecutor(max_workers=max_concurrent_activities),
        max_concurrent_activities=max_concurrent_activities,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # Cancellation reaches an activity only on a heartbeat's answer: keep `abort` prompt.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )


async def run_worker(
    client: Client | None = None,
    *,
    stop: asyncio.Event | None = None,
    metrics_address: str | None = None,
    health: WorkerHealth | None = None,
) -> None:
    """Run a worker until ``stop`` is set or the process gets SIGINT/SIGTERM.

    Without a ``client`` it connects, serving metrics on ``metrics_address`` when
    given. ``health`` (what ``/readyz`` reports) is ready while the worker polls
    and stops being ready the moment the drain begins.
    """
    client = client or await connect(runtime=worker_runtime(metrics_address))
    stop = stop or asyncio.Event()
    health = health or WorkerHealth()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _serve(client, stop, health)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _serve(client: Client, stop: asyncio.Event, health: WorkerHealth) -> None:
    worker = build_worker(client)
    log = get_logger("freightline.worker")
    log.info("worker started", task_queue=worker.task_queue, namespace=client.namespace)
    async with worker, _webhooks(client):
        health.serving(worker, client)
        await stop.wait()
        health.draining()
        log.info("worker draining", grace_seconds=GRACEFUL_SHUTDOWN.total_seconds())
    log.info("worker stopped")


@contextlib.asynccontextmanager
async def _webhooks(client: Client) -> AsyncIterator[None]:
    """The webhook receiver, when ``FREIGHTLINE_WEBHOOK_PORT`` asks for it."""
    port = os.environ.get(WEBHOOK_PORT_ENV)
    if not port:
        yield
        return
    async with WebhookServer(client, port=int(port)):
        yield


def main() -> None:
    configure_logging()
    # Health answers from the start, so liveness holds while the client connects.
    with serve_health(health_address_from_env()) as health:
        asyncio.run(run_worker(metrics_address=metrics_address_from_env(), health=health))
    exit_process(0)


if __name__ == "__main__":
    main()
