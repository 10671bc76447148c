"""Eager workflow start: a promotion started by a client that is also a worker's (the web UI
a worker serves), with and without ``request_eager_start``, alternating, same run.

    .venv/bin/python -m bench.eager_start [--iterations 10]

With eager start the server answers the start with the workflow's first task, which the
in-process worker runs at once, instead of queueing it for the worker's next poll. Prints
the medians, start to result, and of the first workflow task's schedule-to-start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import datetime
from typing import Any

from bench.harness import dev_server, machine, median, now, queue_name, workdir
from bench.promotion_overhead import steps
from freightline.app.client import apply_project, start_promotion
from freightline.contracts.promotion import PromotionPhase
from freightline.settings import load_settings
from sandbox.gitops import create_bare_repo
from tests.pipelines import freight_for, single_stage_project, with_freight
from worker import build_worker


async def first_task_wait(handle: Any) -> float:
    """WORKFLOW_TASK_SCHEDULED → WORKFLOW_TASK_STARTED of the first workflow task."""
    events = (await handle.fetch_history()).events
    scheduled = next(e for e in events if e.HasField("workflow_task_scheduled_event_attributes"))
    started = next(e for e in events if e.HasField("workflow_task_started_event_attributes"))
    delta = started.event_time.ToDatetime() - scheduled.event_time.ToDatetime()
    return float(delta.total_seconds())


async def main(iterations: int) -> None:
    times: dict[bool, list[float]] = {False: [], True: []}
    waits: dict[bool, list[float]] = {False: [], True: []}
    with workdir("eager") as scratch:
        repo = create_bare_repo(scratch / "gitops.git")
        async with dev_server(scratch) as (_server, client):
            queue = queue_name("eager")
            os.environ["FREIGHTLINE_TASK_QUEUE"] = queue
            settings = load_settings().replace(
                git={"allow_local_repositories": True, "repository_cache": str(scratch / "c")}
            )
            freights = [freight_for(f"1.0.{n}") for n in range(2 * iterations + 1)]
            project = single_stage_project(repo, steps("base/deploy.yaml"))
            async with build_worker(client, settings, queue=queue):
                await apply_project(client, with_freight(project, *freights))
                for index, freight in enumerate(freights):
                    eager = index % 2 == 0
                    started = now()
                    handle = await start_promotion(
                        client, "p", "test", freight.metadata.name, eager=eager
                    )
                    result = await handle.result()
                    elapsed = now() - started
                    assert result.phase is PromotionPhase.SUCCEEDED, result.message
                    if index == 0:
                        continue  # warm-up
                    times[eager].append(elapsed)
                    waits[eager].append(await first_task_wait(handle))
    print(f"machine: {machine()}")
    print(f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"iterations: {iterations} each, alternating, after one warm-up; in-process worker")
    for eager in (False, True):
        label = "eager start" if eager else "normal start"
        print(
            f"{label}: start to result median {median(times[eager]) * 1000:.0f} ms; "
            f"first workflow task scheduled to started {median(waits[eager]) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=10)
    asyncio.run(main(parser.parse_args().iterations))
