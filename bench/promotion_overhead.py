"""Promotion overhead: one Stage's promotion (clone → edit → commit → push, no Argo CD, no
verification) against the shell script a user would otherwise run, on the same repository,
in the same run, alternating; the median of each and their ratio.

    .venv/bin/python -m bench.promotion_overhead [--iterations 10]
    .venv/bin/python -m bench.promotion_overhead --large [--iterations 3]

The promotion is timed as its user sees it: from ``start_promotion`` to its result, on a
worker subprocess connected to a dev server with a SQLite file (as ``freightline dev``).
The shell script is ``git clone --depth 1 && sed && git commit && git push``.

``--large`` uses the generated monorepo of ``bench/gitops_repo.py`` (20,000 files in 500
application folders, 5,000 commits; on /dev/shm, as is every clone, the worker's scratch
and its repository cache): the Stage promotes one application's folder, checked out
sparsely (``sparse: [apps/app-042]``), as a Stage of a monorepo would. Each iteration
times the shell script, the same script checking out only that folder (``--filter=blob:none
--sparse``), a promotion with a *cold* repository cache (emptied just before) and one with a
*warm* cache (the mirror from the cold one, a commit behind).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType

from bench.gitops_repo import SHM, describe, gitops_repo
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

LARGE_APP = "apps/app-042"


def steps(path: str, sparse: list[str] | None = None) -> list[dict[str, Any]]:
    """The promotion: clone main (only ``sparse``, if given), annotate ``path``, push."""
    checkout: dict[str, Any] = {"branch": "main", "path": "./src"}
    if sparse:
        checkout["sparse"] = sparse
    return [
        {"uses": "git-clone", "config": {"repoURL": "REPO_URL", "checkout": [checkout]}},
        {
            "uses": "yaml-update",
            "config": {
                "path": f"./src/{path}",
                "updates": [
                    {
                        "key": "spec.template.spec.containers.0.image",
                        "value": IMAGE + ":${{ imageFrom('" + IMAGE + "').Tag }}",
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
sed -i "s/^  name: .*/&\\n  annotations: {shell-tag: \\"$TAG\\"}/;t;" "$FILE"
git commit --quiet -am "shell $TAG"
git push --quiet origin HEAD:main
"""

SHELL_SPARSE = """set -e
git clone --quiet --depth 1 --filter=blob:none --sparse "$REPO" "$WORK"
cd "$WORK"
git sparse-checkout set "$(dirname "$FILE")"
sed -i "s/^  name: .*/&\\n  annotations: {shell-tag: \\"$TAG\\"}/;t;" "$FILE"
git commit --quiet -am "shell $TAG"
git push --quiet origin HEAD:main
"""


def shell_promotion(
    repo: Path, scratch: Path, tag: str, file: str = "base/service.yaml", script: str = SHELL
) -> float:
    work = scratch / f"shell-{tag}"
    env = {
        **os.environ,
        "REPO": repo.as_uri(),
        "WORK": str(work),
        "TAG": tag,
        "FILE": file,
        "GIT_AUTHOR_NAME": "u",
        "GIT_AUTHOR_EMAIL": "u@x",
        "GIT_COMMITTER_NAME": "u",
        "GIT_COMMITTER_EMAIL": "u@x",
    }
    started = now()
    subprocess.run(["bash", "-c", script], env=env, check=True)
    elapsed = now() - started
    shutil.rmtree(work)
    return elapsed


async def promote(client: Any, freight: Any) -> tuple[float, Any]:
    started = now()
    handle = await start_promotion(client, "p", "test", freight.metadata.name)
    result: PromotionResult = await handle.result()
    elapsed = now() - started
    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    return elapsed, handle


async def tiny(iterations: int, cached: bool = True) -> None:
    with workdir("overhead") as scratch:
        repo = create_bare_repo(scratch / "gitops.git")
        async with dev_server(scratch) as (server, client):
            queue = queue_name("overhead")
            os.environ["FREIGHTLINE_TASK_QUEUE"] = queue
            cache = {"FREIGHTLINE_REPOSITORY_CACHE": str(scratch / "cache") if cached else "off"}
            worker = WorkerProcess(server.address, queue, scratch / "worker.log", cache)
            try:
                tags = [f"1.0.{n}" for n in range(iterations + 1)]
                freights = [freight_for(t) for t in tags]
                project = single_stage_project(repo, steps("base/deploy.yaml"))
                await apply_project(client, with_freight(project, *freights))
                shell_times: list[float] = []
                promotion_times: list[float] = []
                activity_times: list[float] = []
                last_timeline = ""
                for index, freight in enumerate(freights):
                    shell = shell_promotion(repo, scratch, tags[index])
                    elapsed, handle = await promote(client, freight)
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
    header(f"tiny repository (kargo-demo), iterations: {len(shell_times)} after one warm-up")
    print(f"shell script median: {shell_median * 1000:.0f} ms")
    mode = "warm cache" if cached else "no cache"
    print(f"promotion median (start to result, {mode}): {promotion_median * 1000:.0f} ms")
    activity_ms = median(activity_times) * 1000
    print(f"  of which the clone-to-push activity (scheduled to completed): {activity_ms:.0f} ms")
    print(f"one promotion's history (event type, ms from start):\n{last_timeline}")
    print(f"ratio promotion / shell: {promotion_median / shell_median:.2f}x (aim <= 2x)")


async def large(iterations: int, cached: bool = True) -> None:
    repo_source = gitops_repo()
    with workdir("overhead-large", under=SHM) as scratch:
        repo = scratch / "gitops.git"
        shutil.copytree(repo_source, repo)
        cache_dir = scratch / "cache"
        async with dev_server(scratch) as (server, client):
            queue = queue_name("overhead-large")
            os.environ["FREIGHTLINE_TASK_QUEUE"] = queue
            where = str(cache_dir) if cached else "off"
            env = {"FREIGHTLINE_REPOSITORY_CACHE": where, "TMPDIR": str(scratch)}
            worker = WorkerProcess(server.address, queue, scratch / "worker.log", env)
            times: dict[str, list[float]] = {"shell": [], "sparse": [], "cold": [], "warm": []}
            try:
                tags = [f"1.0.{n}" for n in range(2 * iterations + 1)]
                freights = [freight_for(t) for t in tags]
                path = f"{LARGE_APP}/deployment.yaml"
                project = single_stage_project(repo, steps(path, [LARGE_APP]))
                await apply_project(client, with_freight(project, *freights))
                await promote(client, freights[0])  # warm-up: imports, first workflow task
                for n in range(iterations):
                    file = f"{LARGE_APP}/config-00.yaml"
                    times["shell"].append(shell_promotion(repo, scratch, f"s{n}", file))
                    times["sparse"].append(
                        shell_promotion(repo, scratch, f"p{n}", file, SHELL_SPARSE)
                    )
                    shutil.rmtree(cache_dir, ignore_errors=True)  # the worker is idle
                    times["cold"].append((await promote(client, freights[1 + 2 * n]))[0])
                    times["warm"].append((await promote(client, freights[2 + 2 * n]))[0])
            finally:
                worker.stop()
            shape = describe(repo_source)
    shell = median(times["shell"])
    header(f"large repository ({shape}), iterations: {iterations} after one warm-up")
    for name, label in (
        ("shell", "shell script (clone --depth 1, whole checkout)"),
        ("sparse", "shell script, sparse (--filter=blob:none --sparse, one folder)"),
        ("cold", f"promotion, {'cold cache' if cached else 'no cache'} (sparse: one folder)"),
        ("warm", f"promotion, {'warm cache' if cached else 'no cache'} (sparse: one folder)"),
    ):
        values = ", ".join(f"{t * 1000:.0f}" for t in times[name])
        ratio = median(times[name]) / shell
        print(f"{label}: median {median(times[name]) * 1000:.0f} ms ({values}); {ratio:.2f}x shell")
    print("aim: warm <= 0.5x the shell script")


def header(what: str) -> None:
    print(f"machine: {machine()}")
    print(f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(what)


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
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--large", action="store_true", help="the generated monorepo")
    parser.add_argument("--no-cache", action="store_true", help="the worker's cache off")
    arguments = parser.parse_args()
    if arguments.large:
        asyncio.run(large(arguments.iterations or 3, cached=not arguments.no_cache))
    else:
        asyncio.run(tiny(arguments.iterations or 10, cached=not arguments.no_cache))
