"""Promotion overhead: one Stage's promotion (clone → edit → commit → push, no Argo CD, no
verification) against the shell script a user would otherwise run, on the same repository,
in the same run, alternating; the median of each and their ratio.

    .venv/bin/python -m bench.promotion_overhead [--iterations 10]

The promotion is timed as its user sees it: from ``start_promotion`` to its result, on a
worker subprocess connected to a dev server with a SQLite file (as ``freightline dev``).
The shell script is ``git clone --depth 1 && sed && git commit && git push``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType

from bench.harness import (
    WorkerProcess,
    dev_server,
    machine,
    median,
    now,
    queue_name,
    workdir,
)
from freightline.app.client import apply_project, start_promotion
from freightline.contracts.promotion import PromotionPhase, PromotionResult
from sandbox.gitops import commit_count, create_bare_repo
from tests.pipelines import IMAGE, freight_for, single_stage_project, with_freight

STEPS: list[dict[str, Any]] = [
    {
        "uses": "git-clone",
        "config": {"repoURL": "REPO_URL", "checkout": [{"branch": "main", "path": "./src"}]},
    },
    {
        "uses": "yaml-update",
        "config": {
            "path": "./src/base/deploy.yaml",
            "updates": [
                {
                    "key": "metadata.annotations.freightline-tag",
                    "value": "${{ imageFrom('" + IMAGE + "').Tag }}",
                }
            ],
        },
    },
    {"uses": "git-commit", "as": "commit", "config": {"path": "./src", "message": "promote"}},
    {"uses": "git-push", "config": {"path": "./src"}},
]

SHELL = """set -e
git clone --quiet --depth 1 "$REPO" "$WORK"
cd "$WORK"
sed -i "s/^  name: .*/&\\n  annotations: {shell-tag: \\"$TAG\\"}/;t;" base/service.yaml
git commit --quiet -am "shell $TAG"
git push --quiet origin HEAD:main
"""


def shell_promotion(repo: Path, scratch: Path, tag: str) -> float:
    work = scratch / f"shell-{tag}"
    env = {
        **os.environ,
        "REPO": repo.as_uri(),
        "WORK": str(work),
        "TAG": tag,
        "GIT_AUTHOR_NAME": "u",
        "GIT_AUTHOR_EMAIL": "u@x",
        "GIT_COMMITTER_NAME": "u",
        "GIT_COMMITTER_EMAIL": "u@x",
    }
    started = now()
    subprocess.run(["bash", "-c", SHELL], env=env, check=True)
    return now() - started


async def main(iterations: int) -> None:
    with workdir("overhead") as scratch:
        repo = create_bare_repo(scratch / "gitops.git")
        async with dev_server(scratch) as (server, client):
            queue = queue_name("overhead")
            os.environ["FREIGHTLINE_TASK_QUEUE"] = queue
            worker = WorkerProcess(server.address, queue, scratch / "worker.log")
            try:
                tags = [f"1.0.{n}" for n in range(iterations + 1)]
                freights = [freight_for(t) for t in tags]
                await apply_project(
                    client, with_freight(single_stage_project(repo, STEPS), *freights)
                )
                shell_times: list[float] = []
                promotion_times: list[float] = []
                activity_times: list[float] = []
                last_timeline = ""
                for index, freight in enumerate(freights):
                    shell = shell_promotion(repo, scratch, tags[index])
                    started = now()
                    handle = await start_promotion(client, "p", "test", freight.metadata.name)
                    result: PromotionResult = await handle.result()
                    elapsed = now() - started
                    assert result.phase is PromotionPhase.SUCCEEDED, result.message
                    if index == 0:
                        continue  # warm-up: first clone, first workflow task, imports
                    shell_times.append(shell)
                    promotion_times.append(elapsed)
                    activity_times.append(await activity_seconds(handle))
                    last_timeline = await timeline(handle)
                assert commit_count(repo, "main") == 1 + 2 * len(freights)
            finally:
                worker.stop()

    shell_median, promotion_median = median(shell_times), median(promotion_times)
    print(f"machine: {machine()}")
    print(f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"iterations: {len(shell_times)} (after one warm-up)")
    print(f"shell script median: {shell_median * 1000:.0f} ms")
    print(f"promotion median (start to result): {promotion_median * 1000:.0f} ms")
    activity_ms = median(activity_times) * 1000
    print(f"  of which the clone-to-push activity (scheduled to completed): {activity_ms:.0f} ms")
    print(f"one promotion's history (event type, ms from start):\n{last_timeline}")
    print(f"ratio promotion / shell: {promotion_median / shell_median:.2f}x")


async def activity_seconds(handle: Any) -> float:
    """Scheduled → completed of the clone-to-push activity (the history's event times)."""
    events = (await handle.fetch_history()).events
    scheduled = {
        e.event_id: e
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "run_worktree_steps"
    }
    completed = next(
        e
        for e in events
        if e.HasField("activity_task_completed_event_attributes")
        and e.activity_task_completed_event_attributes.scheduled_event_id in scheduled
    )
    began = scheduled[completed.activity_task_completed_event_attributes.scheduled_event_id]
    delta = completed.event_time.ToDatetime() - began.event_time.ToDatetime()
    return float(delta.total_seconds())


async def timeline(handle: Any) -> str:
    """Each event of one promotion's history, in ms from the start (for the README)."""
    events = (await handle.fetch_history()).events
    start = events[0].event_time.ToDatetime()
    return "\n".join(
        f"  {(e.event_time.ToDatetime() - start).total_seconds() * 1000:6.0f} ms  "
        f"{EventType.Name(e.event_type).removeprefix('EVENT_TYPE_')}"
        for e in events
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=10)
    asyncio.run(main(parser.parse_args().iterations))
