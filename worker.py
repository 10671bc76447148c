"""Builds and runs the Freightline worker: every workflow and activity on one task queue.

``python worker.py`` (or ``freightline worker``) connects to ``TEMPORAL_ADDRESS``
and runs until SIGINT/SIGTERM, then drains: in-flight activities get the
graceful-shutdown window to finish before the process exits.
"""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.project import ProjectActivities
from activities.worktree import WorktreeActivities
from freightline.credentials import worker_credentials
from freightline.logging import configure_logging, get_logger
from freightline.temporal import connect, task_queue
from workflows.project import ProjectWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.stage import StageWorkflow

WORKFLOWS = [ProjectWorkflow, PromotionWorkflow, StageWorkflow]
GRACEFUL_SHUTDOWN = timedelta(seconds=30)


def build_worker(
    client: Client, *, queue: str | None = None, max_concurrent_activities: int = 16
) -> Worker:
    """A worker with all of Freightline's workflows and activities."""
    project = ProjectActivities(client)
    worktree = WorktreeActivities(git_credentials=worker_credentials().git)
    return Worker(
        client,
        task_queue=queue or task_queue(),
        workflows=WORKFLOWS,
        activities=[project.resolve_promotion, worktree.run_worktree_steps],
        activity_executor=ThreadPoolExecutor(max_workers=max_concurrent_activities),
        max_concurrent_activities=max_concurrent_activities,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )


async def run_worker(client: Client | None = None, *, stop: asyncio.Event | None = None) -> None:
    """Run a worker until ``stop`` is set or the process gets SIGINT/SIGTERM."""
    client = client or await connect()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = build_worker(client)
    log = get_logger("freightline.worker")
    log.info("worker started", task_queue=worker.task_queue, namespace=client.namespace)
    async with worker:
        await stop.wait()
        log.info("worker draining", grace_seconds=GRACEFUL_SHUTDOWN.total_seconds())
    log.info("worker stopped")


def main() -> None:
    configure_logging()
    asyncio.run(run_worker())


if __name__ == "__main__":
    main()
