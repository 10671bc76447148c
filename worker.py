"""Builds and runs the Freightline worker: every workflow and activity on one task queue.

``python worker.py`` (or ``freightline worker``) reads its settings once
(``freightline.settings``; a bad value stops it with one line naming the
variable), connects to ``TEMPORAL_ADDRESS`` and runs until SIGINT/SIGTERM, then
drains: in-flight activities get the graceful-shutdown window to finish before
the process exits. The activity classes and servers get their settings through
their constructors; nothing below reads the environment.

It serves Prometheus metrics on ``FREIGHTLINE_METRICS_ADDRESS`` (default
127.0.0.1:9464) and ``/healthz`` / ``/readyz`` on ``FREIGHTLINE_HEALTH_ADDRESS``
(default 127.0.0.1:8080); an empty value turns either off. The deployment
(``deploy/``) sets both to 0.0.0.0.

``FREIGHTLINE_WORKER_ROLE=argocd`` with ``FREIGHTLINE_SHARD=<shard>`` runs instead a
worker for one cluster's Argo CD: only the Argo CD activities, on the task queue
``<FREIGHTLINE_TASK_QUEUE>-argocd-<shard>`` where Stages with ``spec.shard: <shard>``
send them (see deploy/README.md, "One worker per cluster").
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.abc
import importlib.machinery
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import CodeType, ModuleType

from temporalio.client import Client
from temporalio.worker import Worker

from activities.argocd import ArgoCDActivities
from activities.discovery import DiscoveryActivities
from activities.forge_steps import ForgeActivities
from activities.metrics import MetricActivities
from activities.notify import NotifyActivities
from activities.project import ProjectActivities
from activities.registry_identity import RegistryLogins
from activities.repository_cache import RepositoryCache
from activities.worktree import WorktreeActivities
from freightline.app.observability import WorkerHealth, serve_health, worker_runtime
from freightline.app.temporal import connect, exit_process, ui_url
from freightline.contracts.names import argocd_task_queue
from freightline.contracts.steps import resolve_all
from freightline.errors import ConfigError
from freightline.kargo.credentials import CredentialStore
from freightline.logging import configure_logging, get_logger
from freightline.settings import (
    UI_ADDRESS_ENV,
    GitSettings,
    Settings,
    load_settings,
    parse_address,
)
from workflows.cluster import ClusterWorkflow
from workflows.notify import NotifyWorkflow
from workflows.project import ProjectWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.stage import StageWorkflow
from workflows.verification import VerificationWorkflow
from workflows.warehouse import WarehouseWorkflow

WORKFLOWS = [
    ClusterWorkflow,
    NotifyWorkflow,
    ProjectWorkflow,
    PromotionWorkflow,
    StageWorkflow,
    VerificationWorkflow,
    WarehouseWorkflow,
]
GRACEFUL_SHUTDOWN = timedelta(seconds=30)
HEARTBEAT_THROTTLE = timedelta(seconds=2)


class _SharedCodeLoader(importlib.machinery.SourceFileLoader):
    """A source loader that compiles (unmarshals) each file once per process."""

    _codes: dict[str, CodeType] = {}  # noqa: RUF012 - the one cache, shared by every instance

    def get_code(self, fullname: str) -> CodeType | None:
        code = self._codes.get(self.path) or super().get_code(fullname)
        if code is not None:
            self._codes[self.path] = code
        return code


class _SharedWorkflowCode(importlib.abc.MetaPathFinder):
    """Workflow modules' code objects shared by every workflow run's sandbox.

    Temporal's sandbox re-imports a workflow's module for each run it starts, so that
    runs share no module state; every cached run held its own unmarshalled copy of
    ``workflows/stage.py``'s or ``warehouse.py``'s code (~50 KiB a run, a third of an
    idle run's Python memory: bench/README.md, "1,000 idle workflows"). A code object
    is immutable: sharing it leaves each run its own module, globals and functions,
    and the sandbox's restrictions apply as before.
    """

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] != self.package:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _SharedCodeLoader(spec.loader.name, spec.loader.path)
        return spec


def share_workflow_code() -> None:
    """Install :class:`_SharedWorkflowCode` for the ``workflows`` package (once)."""
    if not any(isinstance(finder, _SharedWorkflowCode) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SharedWorkflowCode("workflows"))


def build_worker(
    client: Client,
    settings: Settings,
    *,
    queue: str | None = None,
    max_concurrent_activities: int = 16,
) -> Worker:
    """A worker with all of Freightline's workflows and activities, configured by ``settings``.

    ``queue`` overrides ``settings.temporal.task_queue``.
    """
    resolve_all()  # every step's implementation and config model, or fail now
    share_workflow_code()
    credentials = CredentialStore.from_settings(settings.git)
    project = ProjectActivities(
        client, notifying=bool(settings.notify.urls), ui_base_url=settings.temporal.ui_url or ""
    )
    local = settings.git.allow_local_repositories
    cache = repository_cache(settings.git)
    worktree = WorktreeActivities(
        git_credentials=credentials.git,
        author=settings.git.author,
        allow_local_repositories=local,
        # Registries (OCI charts, images) take a cloud identity's login too, as discovery does.
        basic_credentials=RegistryLogins(credentials, os.environ),
        secrets=credentials.step_secret,
        signing_key_file=settings.git.signing_key_file,
        repository_cache=cache,
        credential_store=credentials,
    )
    discovery = DiscoveryActivities(
        credentials,
        mirrors=settings.registry.mirrors,
        allow_local_repositories=local,
        environ=os.environ,  # the workload identity's variables, read as the cloud SDKs do
        repository_cache=cache,
    )
    argocd = ArgoCDActivities(settings.argocd)
    forge = ForgeActivities(credentials)
    metrics = MetricActivities(settings.metrics.plain())
    link_to = ui_url(settings.temporal.ui_url, client.service_client.config.target_host)
    notify = NotifyActivities(settings.notify.urls, ui_url=link_to)
    return Worker(
        client,
        task_queue=queue or settings.temporal.task_queue,
        workflows=WORKFLOWS,
        activities=[
            project.resolve_promotion,
            project.reconcile_project,
            project.resync_projects,
            project.set_freight_alias,
            project.set_metadata,
            worktree.run_worktree_steps,
            forge.pull_request_state,
            argocd.argocd_update,
            argocd.argocd_wait,
            argocd.argocd_health,
            discovery.discover_warehouse,
            metrics.measure_metric,
            notify.notify,
        ],
        activity_executor=ThreadPoolExecutor(max_workers=max_concurrent_activities),
        max_concurrent_activities=max_concurrent_activities,
        max_cached_workflows=settings.worker.max_cached_workflows,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # Cancellation reaches an activity only on a heartbeat's answer: keep `abort` prompt.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )


def repository_cache(settings: GitSettings) -> RepositoryCache | None:
    """The worker's repository cache, as its settings say (None: off)."""
    if settings.repository_cache is None:
        return None
    return RepositoryCache(settings.repository_cache, settings.repository_cache_mib * 1024 * 1024)


def build_argocd_worker(
    client: Client,
    settings: Settings,
    *,
    shard: str,
    queue: str | None = None,
    max_concurrent_activities: int = 16,
) -> Worker:
    """A worker for one shard's Argo CD: only the Argo CD activities, on that shard's queue.

    It runs next to the cluster whose Argo CD it reaches (``ARGOCD_SERVER`` and its
    token are that cluster's) and needs no git or registry access. Stages with
    ``spec.shard: <shard>`` send their Argo CD steps and health checks here.
    """
    argocd = ArgoCDActivities(settings.argocd)
    shard_queue = argocd_task_queue(queue or settings.temporal.task_queue, shard)
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


async def run_worker(
    client: Client | None = None,
    *,
    settings: Settings,
    stop: asyncio.Event | None = None,
    health: WorkerHealth | None = None,
) -> None:
    """Run a worker configured by ``settings`` until ``stop`` is set or SIGINT/SIGTERM.

    Without a ``client`` it connects, serving metrics on
    ``settings.listen.metrics_address``. ``health`` (what ``/readyz`` reports) is
    ready while the worker polls and stops being ready the moment the drain begins.
    """
    client = client or await connect(runtime=worker_runtime(settings.listen.metrics_address))
    stop = stop or asyncio.Event()
    health = health or WorkerHealth()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _serve(client, settings, stop, health)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _serve(
    client: Client, settings: Settings, stop: asyncio.Event, health: WorkerHealth
) -> None:
    role, shard = settings.worker.role, settings.worker.shard
    worker = (
        build_argocd_worker(client, settings, shard=shard)
        if role == "argocd" and shard
        else build_worker(client, settings)
    )
    log = get_logger("freightline.worker")
    log.info(
        "worker started",
        task_queue=worker.task_queue,
        namespace=client.namespace,
        role=role,
        shard=shard,
    )
    async with (
        worker,
        _webhooks(client, settings, serve=role == "all"),
        _ui(client, settings, serve=role == "all"),
    ):
        health.serving(worker, client)
        await stop.wait()
        health.draining()
        log.info("worker draining", grace_seconds=GRACEFUL_SHUTDOWN.total_seconds())
    log.info("worker stopped")


@contextlib.asynccontextmanager
async def _webhooks(client: Client, settings: Settings, *, serve: bool) -> AsyncIterator[None]:
    """The webhook receiver, when ``serve`` and ``FREIGHTLINE_WEBHOOK_PORT`` ask for it."""
    webhooks = settings.webhooks
    if webhooks.port is None or not serve:
        yield
        return
    # Imported here: a worker serving no webhooks (or UI, below) does not carry their web
    # stack (~8 MiB resident: starlette, uvicorn, jinja2, authlib; bench/README.md).
    from freightline.app.webhooks import WebhookServer

    async with WebhookServer(
        client,
        secret=webhooks.secret_value(),
        github_secret=webhooks.github_secret_value(),
        credentials=CredentialStore.from_settings(settings.git),
        mirrors=settings.registry.mirrors,
        host=webhooks.host,
        port=webhooks.port,
    ):
        yield


@contextlib.asynccontextmanager
async def _ui(client: Client, settings: Settings, *, serve: bool) -> AsyncIterator[None]:
    """The web UI, when ``serve`` and ``FREIGHTLINE_UI_ADDRESS`` ask for it."""
    if settings.ui.address is None or not serve:
        yield
        return
    from freightline.app.ui import UiServer
    from freightline.app.ui_auth import access_for

    host, port = parse_address(settings.ui.address, setting=UI_ADDRESS_ENV)
    server = UiServer(
        client, access_for(settings.ui), host=host, port=port, temporal_ui=settings.temporal.ui_url
    )
    async with server:
        get_logger("freightline.worker").info("web UI serving", url=server.url)
        yield


def main() -> None:
    """``python worker.py``: read the settings once, serve health, run the worker."""
    configure_logging()
    try:
        settings = load_settings()
        if settings.ui.address:
            from freightline.app.ui_auth import access_for

            access_for(settings.ui)  # a missing users file stops the worker here, in one line
    except ConfigError as err:
        get_logger("freightline.worker").error("worker not started", error=str(err))
        raise SystemExit(f"error: {err}") from None
    # Health answers from the start, so liveness holds while the client connects.
    with serve_health(settings.listen.health_address) as health:
        asyncio.run(run_worker(settings=settings, health=health))
    exit_process(0)


if __name__ == "__main__":
    main()
