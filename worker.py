"""Builds and runs the Freightline worker: every workflow and activity on one task queue.

``python worker.py`` (or ``freightline worker``) connects to ``TEMPORAL_ADDRESS``
and runs until SIGINT/SIGTERM, then drains: in-flight activities get the
graceful-shutdown window to finish before the process exits. It serves
Prometheus metrics on ``FREIGHTLINE_METRICS_ADDRESS`` (default 0.0.0.0:9464) and
``/healthz`` / ``/readyz`` on ``FREIGHTLINE_HEALTH_ADDRESS`` (default 0.0.0.0:8080);
an empty value turns either off.

``FREIGHTLINE_WORKER_ROLE=argocd`` with ``FREIGHTLINE_SHARD=<shard>`` runs instead a
worker for one cluster's Argo CD: only the Argo CD activities, on the task queue
``<FREIGHTLINE_TASK_QUEUE>-argocd-<shard>`` where Stages with ``spec.shard: <shard>``
send them (see deploy/README.md, "One worker per cluster").
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
from freightline.errors import ConfigError
from freightline.logging import configure_logging, get_logger
from freightline.observability import (
    WorkerHealth,
    health_address_from_env,
    metrics_address_from_env,
    serve_health,
    worker_runtime,
)
from freightline.steps import resolve_all
from freightline.temporal import argocd_task_queue, connect, exit_process, task_queue
from freightline.webhooks import (
    GITHUB_SECRET_ENV,
    WEBHOOK_PORT_ENV,
    WEBHOOK_SECRET_ENV,
    WebhookServer,
)
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
WORKER_ROLE_ENV = "FREIGHTLINE_WORKER_ROLE"
SHARD_ENV = "FREIGHTLINE_SHARD"
HEARTBEAT_THROTTLE = timedelta(seconds=2)


def build_worker(
    client: Client, *, queue: str | None = None, max_concurrent_activities: int = 16
) -> Worker:
    """A worker with all of Freightline's workflows and activities."""
    resolve_all()  # every step's implementation and config model, or fail now
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
            project.reconcile_project,
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


def build_argocd_worker(
    client: Client, *, shard: str, queue: str | None = None, max_concurrent_activities: int = 16
) -> Worker:
    """A worker for one shard's Argo CD: only the Argo CD activities, on that shard's queue.

    It runs next to the cluster whose Argo CD it reaches (``ARGOCD_SERVER`` and its
    token are that cluster's) and needs no git or registry access. Stages with
    ``spec.shard: <shard>`` send their Argo CD steps and health checks here.
    """
    argocd = ArgoCDActivities.from_env()
    shard_queue = argocd_task_queue(queue or task_queue(), shard)
    assert shard_queue is not None
    return Worker(
        client,
        task_queue=shard_queue,
        activities=[argocd.argocd_update, argocd.argocd_wait, argocd.argocd_health],
        activity_executor=ThreadPoolExecutor(max_workers=max_concurrent_activities),
        max_concurrent_activities=max_concurrent_activities,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )


def worker_role() -> tuple[str, str | None]:
    """``FREIGHTLINE_WORKER_ROLE`` (``all``, the default, or ``argocd``) and its shard.

    Raises ConfigError for an unknown role or an ``argocd`` role without
    ``FREIGHTLINE_SHARD``.
    """
    role = os.environ.get(WORKER_ROLE_ENV, "").strip() or "all"
    shard = os.environ.get(SHARD_ENV, "").strip() or None
    if role == "all":
        return role, None
    if role != "argocd":
        raise ConfigError(f"{WORKER_ROLE_ENV}={role!r}: expected all or argocd")
    if shard is None:
        raise ConfigError(
            f"{WORKER_ROLE_ENV}=argocd needs {SHARD_ENV}: the Stages' spec.shard whose "
            "Argo CD this worker reaches"
        )
    return role, shard


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
    role, shard = worker_role()
    worker = build_worker(client) if shard is None else build_argocd_worker(client, shard=shard)
    log = get_logger("freightline.worker")
    log.info(
        "worker started",
        task_queue=worker.task_queue,
        namespace=client.namespace,
        role=role,
        shard=shard,
    )
    async with worker, _webhooks(client, serve=shard is None):
        health.serving(worker, client)
        await stop.wait()
        health.draining()
        log.info("worker draining", grace_seconds=GRACEFUL_SHUTDOWN.total_seconds())
    log.info("worker stopped")


@contextlib.asynccontextmanager
async def _webhooks(client: Client, *, serve: bool) -> AsyncIterator[None]:
    """The webhook receiver, when ``serve`` and ``FREIGHTLINE_WEBHOOK_PORT`` ask for it."""
    port = os.environ.get(WEBHOOK_PORT_ENV)
    if not port or not serve:
        yield
        return
    secret = os.environ.get(WEBHOOK_SECRET_ENV, "")
    github_secret = os.environ.get(GITHUB_SECRET_ENV)
    async with WebhookServer(client, secret=secret, github_secret=github_secret, port=int(port)):
        yield


def main() -> None:
    configure_logging()
    try:
        worker_role()
    except ConfigError as err:
        get_logger("freightline.worker").error("worker not started", error=str(err))
        raise SystemExit(f"error: {err}") from None
    # Health answers from the start, so liveness holds while the client connects.
    with serve_health(health_address_from_env()) as health:
        asyncio.run(run_worker(metrics_address=metrics_address_from_env(), health=health))
    exit_process(0)


if __name__ == "__main__":
    main()
