"""A worker that dies like SIGKILL at a chosen point: what the crash tests start.

``python -m tests.crash_worker after-step git-push`` runs the normal worker
(``worker.run_worker``: the same settings, workflows and activities) with one
more activity interceptor, :class:`CrashInterceptor`. On an activity's first
attempt it ends the process with ``os._exit(137)`` (no cleanup, no goodbye to
the server: what SIGKILL leaves behind) at one of two points, found by watching
the heartbeats the activities send anyway:

- ``after-step STEP``: the worktree activity heartbeats the alias of each step it
  finished; the process ends right after the first step whose ``uses`` is STEP.
- ``while-waiting STEP``: an Argo CD activity running STEP heartbeats the syncs it
  started; shortly after the first heartbeat that records one (time for it to
  reach the server), while the activity waits for Argo CD, the process ends.

Production code knows nothing of this: no environment variable, no hook.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import temporalio.client
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from freightline.app.temporal import connect, exit_process
from freightline.contracts.promotion import WorktreeBatch
from freightline.logging import configure_logging, get_logger
from freightline.settings import load_settings
from worker import run_worker

CRASH_EXIT = 137
CRASH_MESSAGE = "test hook: crashing the worker"
# After the heartbeat that records a sync: long enough for it to reach the server,
# short of any sync the tests' emulators finish (they take 1.5 s and more).
SYNC_RECORDED_GRACE = 0.5

Mode = Literal["after-step", "while-waiting"]


@dataclass(frozen=True)
class CrashPoint:
    mode: Mode
    step: str


def crash_worker_args(mode: Mode, step: str) -> tuple[str, ...]:
    """The interpreter arguments that start this worker (for ``sandbox.workers.start_worker``)."""
    return ("-m", "tests.crash_worker", mode, step)


def _crash(**where: Any) -> None:
    get_logger(__name__).warning(CRASH_MESSAGE, **where)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(CRASH_EXIT)


class CrashInterceptor(temporalio.client.Interceptor, Interceptor):
    """Ends the process at ``point`` on an activity's first attempt.

    A client interceptor too, so that a worker built on that client (as
    ``worker.run_worker`` builds it) runs it without being told.
    """

    def __init__(self, point: CrashPoint) -> None:
        self.point = point

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self.point)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, point: CrashPoint) -> None:
        super().__init__(next)
        self.point = point
        self.outbound: _Outbound | None = None

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        self.outbound = _Outbound(outbound)
        super().init(self.outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if self.outbound is not None and activity.info().attempt == 1:
            self.outbound.arm(self.point, input.args)
        return await super().execute_activity(input)


class _Outbound(ActivityOutboundInterceptor):
    """Watches the heartbeats of one activity run for the crash point."""

    def __init__(self, next: ActivityOutboundInterceptor) -> None:
        super().__init__(next)
        self.after_aliases: dict[str, str] = {}
        self.waiting_step: str | None = None

    def arm(self, point: CrashPoint, args: Sequence[Any]) -> None:
        request = args[0] if args else None
        if point.mode == "after-step" and isinstance(request, WorktreeBatch):
            self.after_aliases = {
                step.alias: step.uses for step in request.plan.steps if step.uses == point.step
            }
        elif point.mode == "while-waiting" and getattr(request, "uses", None) == point.step:
            self.waiting_step = point.step

    def heartbeat(self, *details: Any) -> None:
        super().heartbeat(*details)
        first = details[0] if details else None
        if isinstance(first, str) and first in self.after_aliases:
            _crash(after_step=first)
        if self.waiting_step and isinstance(first, dict) and first.get("syncs"):
            step, self.waiting_step = self.waiting_step, None
            # Not on this thread: the heartbeat must still go out, and the wait go on.
            timer = threading.Timer(SYNC_RECORDED_GRACE, _crash, kwargs={"waiting_in": step})
            timer.daemon = True
            timer.start()


async def _run(point: CrashPoint) -> None:
    settings = load_settings()
    base = await connect()
    # A worker runs the interceptors of its client that are worker interceptors too.
    config = base.config()
    config["interceptors"] = [*config["interceptors"], CrashInterceptor(point)]
    await run_worker(Client(**config), settings=settings)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.crash_worker", description=__doc__)
    parser.add_argument("mode", choices=["after-step", "while-waiting"])
    parser.add_argument("step", help="a step's uses, e.g. git-push or argocd-update")
    args = parser.parse_args(argv)
    configure_logging()
    asyncio.run(_run(CrashPoint(args.mode, args.step)))
    exit_process(0)


if __name__ == "__main__":
    main()
