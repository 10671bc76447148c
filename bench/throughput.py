"""Throughput: 200 promotions over 50 Stages on one worker.

    .venv/bin/python -m bench.throughput [--stages 50] [--per-stage 4]

Each Stage runs the Kargo quickstart's steps up to git-push (clone main and the Stage's
branch, git-clear, kustomize-set-image, kustomize-build with real kustomize, commit,
push to ``stage/<name>``) on its own branch of one repository. The 50 Stages promote at
once, each its 4 Freight one after another (a Stage runs one promotion at a time, as the
Stage workflow does). One worker subprocess (default concurrency, 16 activities) on a dev
server with a SQLite file. Prints promotions/s, p50/p99 latency (start to result) and the
worker's peak resident memory.

Its baseline, in the same run on the same cores and at the same parallelism (16 at once,
the worker's activity slots; each Stage's 4 one after another): the same steps as a shell
script (two ``git clone --depth 1``, clear, set the image in ``kustomization.yaml``,
``kubectl kustomize -o``, commit, push) into a repository of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.service import RPCError

from bench.harness import (
    CpuTimes,
    WorkerProcess,
    dev_server,
    machine,
    mib,
    now,
    percentile,
    queue_name,
    workdir,
)
from freightline.app.client import apply_project, start_promotion
from freightline.contracts.promotion import PromotionPhase, PromotionResult
from sandbox.gitops import KARGO_DEMO, commit_count, create_bare_repo
from tests.pipelines import IMAGE, freight_for, single_stage_project, with_freight

STEPS: list[dict[str, Any]] = [
    {
        "uses": "git-clone",
        "config": {
            "repoURL": "REPO_URL",
            "checkout": [
                {"branch": "main", "path": "./src"},
                {"branch": "stage/${{ ctx.stage }}", "create": True, "path": "./out"},
            ],
        },
    },
    {"uses": "git-clear", "config": {"path": "./out"}},
    {
        "uses": "kustomize-set-image",
        "as": "update",
        "config": {
            "path": "./src/base",
            "images": [{"image": IMAGE, "tag": "${{ imageFrom('" + IMAGE + "').Tag }}"}],
        },
    },
    {
        "uses": "kustomize-build",
        "config": {"path": "./src/stages/${{ ctx.stage }}", "outPath": "./out"},
    },
    {
        "uses": "git-commit",
        "as": "commit",
        "config": {"path": "./out", "message": "${{ outputs.update.commitMessage }}"},
    },
    {"uses": "git-push", "config": {"path": "./out"}},
]


SHELL = """set -e
git clone --quiet --depth 1 "$REPO" src
git clone --quiet --depth 1 --branch "stage/$STAGE" "$REPO" out 2>/dev/null || {
  git init --quiet -b "stage/$STAGE" out && git -C out remote add origin "$REPO"; }
find out -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
printf 'images:\n- name: %s\n  newTag: "%s"\n' "$IMAGE" "$TAG" >> src/base/kustomization.yaml
kubectl kustomize "src/stages/$STAGE" -o out/
git -C out add --all
git -C out commit --quiet -m "$IMAGE:$TAG"
git -C out push --quiet origin "HEAD:stage/$STAGE"
"""
PARALLEL = 16  # the worker's activity slots (build_worker's max_concurrent_activities)


def seeded_repo(scratch: Path, stages: list[str], name: str = "gitops.git") -> Path:
    """kargo-demo with one overlay directory per Stage (copies of ``stages/test``)."""
    seed = scratch / f"seed-{name}"
    shutil.copytree(KARGO_DEMO, seed)
    for stage in stages:
        shutil.copytree(KARGO_DEMO / "stages" / "test", seed / "stages" / stage)
    return create_bare_repo(scratch / name, seed=seed)


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (the shell scripts and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def shell_baseline(scratch: Path, stages: list[str], tags: list[str]) -> tuple[float, float]:
    """The same promotions as shell scripts, 16 at once: their wall time and CPU seconds."""
    repo = seeded_repo(scratch, stages, "shell.git")
    slots = asyncio.Semaphore(PARALLEL)
    identity = {"GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@x"}
    identity |= {"GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@x"}

    async def stage_line(stage: str) -> None:
        for tag in tags:
            work = scratch / f"shell-{stage}-{tag}"
            work.mkdir()
            env = {**os.environ, **identity, "REPO": repo.as_uri(), "STAGE": stage}
            env |= {"TAG": tag, "IMAGE": IMAGE}
            async with slots:
                process = await asyncio.create_subprocess_exec(
                    "bash", "-c", SHELL, cwd=work, env=env
                )
                assert await process.wait() == 0, f"shell promotion {stage} {tag} failed"
            shutil.rmtree(work)

    began, cpu = now(), children_cpu()
    await asyncio.gather(*(stage_line(s) for s in stages))
    wall, cpu = now() - began, children_cpu() - cpu
    for stage in stages:
        assert commit_count(repo, f"stage/{stage}") == len(tags)
    return wall, cpu


async def start_with_retries(client: Any, stage: str, freight: str) -> Any:
    """start_promotion, again when its query of the Project workflow times out (on a
    shared, overloaded machine the worker may answer a query late; nothing was started)."""
    for _ in range(5):
        try:
            return await start_promotion(client, "p", stage, freight)
        except RPCError as err:
            if "Timeout" not in str(err):
                raise
            print(f"start of {stage}/{freight[:7]}: query timed out, again", flush=True)
    raise RuntimeError(f"could not start a promotion into {stage}")


WORK_CPU, TEMPORAL_CPU = {0}, {1}
"""``--pin``: the promotions' work (the shell scripts; the worker and its git and kustomize)
on CPU 0, the Temporal server and the clients starting promotions on CPU 1."""


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run what this process starts in the block on ``cpus`` (children inherit it)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


async def main(stage_count: int, per_stage: int, cached: bool = True, pin: bool = False) -> None:
    work_cpu, temporal_cpu = (WORK_CPU, TEMPORAL_CPU) if pin else (None, None)
    stages = [f"s{n:02d}" for n in range(stage_count)]
    tags = [f"2.0.{n}" for n in range(per_stage)]
    freights = [freight_for(t) for t in tags]
    latencies: list[float] = []
    with workdir("throughput") as scratch:
        with pinned(work_cpu):
            shell_wall, shell_cpu = await shell_baseline(scratch, stages, tags)
        repo = seeded_repo(scratch, stages)
        async with contextlib.AsyncExitStack() as stack:
            with pinned(temporal_cpu):
                server, client = await stack.enter_async_context(dev_server(scratch))
            queue = queue_name("throughput")
            os.environ["FREIGHTLINE_TASK_QUEUE"] = queue
            resources = with_freight(
                single_stage_project(repo, STEPS, stages=tuple(stages)), *freights
            )
            cache = {"FREIGHTLINE_REPOSITORY_CACHE": str(scratch / "cache") if cached else "off"}
            with pinned(work_cpu):
                worker = WorkerProcess(server.address, queue, scratch / "worker.log", cache)
            if temporal_cpu is not None:
                os.sched_setaffinity(0, temporal_cpu)  # from here on: the clients
            idle_rss = 0
            try:
                await asyncio.wait_for(apply_project(client, resources), timeout=120)
                await asyncio.sleep(2)
                idle_rss = worker.rss()

                async def stage_line(stage: str) -> None:
                    for freight in freights:
                        started = now()
                        handle = await start_with_retries(client, stage, freight.metadata.name)
                        result: PromotionResult = await handle.result()
                        assert result.phase is PromotionPhase.SUCCEEDED, result.message
                        latencies.append(now() - started)

                assert server.process is not None
                pids = {"worker": worker.process.pid, "server": server.process.pid}
                before = {name: CpuTimes.of(pid) for name, pid in pids.items()}
                began, client_cpu = now(), time.process_time()
                await asyncio.gather(*(stage_line(s) for s in stages))
                wall, client_cpu = now() - began, time.process_time() - client_cpu
                cpu = {name: CpuTimes.of(pid) - before[name] for name, pid in pids.items()}
                peak = worker.peak_rss()
            finally:
                worker.stop()
            for stage in stages:
                assert commit_count(repo, f"stage/{stage}") == per_stage

    total = len(latencies)
    print(f"machine: {machine()}")
    print(f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"promotions: {total} over {stage_count} Stages ({per_stage} each, one at a time per Stage)"
    )
    print(f"repository cache: {'on' if cached else 'off'}")
    if pin:
        print("pinned: shell scripts and the worker on CPU 0; Temporal server and clients on CPU 1")
    print(f"wall time: {wall:.1f} s")
    print(f"throughput: {total / wall:.2f} promotions/s")
    shell_rate = total / shell_wall
    print(f"shell scripts, {PARALLEL} at once: {shell_wall:.1f} s, {shell_rate:.2f} promotions/s")
    print(f"ratio Freightline / shell: {total / wall / shell_rate:.2f}x (aim >= 0.8x)")
    print(f"latency p50: {percentile(latencies, 50):.2f} s, p99: {percentile(latencies, 99):.2f} s")
    print(f"worker resident memory: idle {mib(idle_rss)}, peak {mib(peak)}")
    per = 1000 / total
    print(
        "CPU per promotion: Freightline "
        f"{(cpu['worker'].own + cpu['worker'].children + cpu['server'].own + client_cpu) * per:.0f}"
        f" ms (worker {cpu['worker'].own * per:.0f}, its git and kustomize "
        f"{cpu['worker'].children * per:.0f}, Temporal server {cpu['server'].own * per:.0f}, "
        f"client {client_cpu * per:.0f}); shell scripts {shell_cpu * per:.0f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=50)
    parser.add_argument("--per-stage", type=int, default=4)
    parser.add_argument("--no-cache", action="store_true", help="the worker's cache off")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the work (shell scripts, worker) on CPU 0; the Temporal server and clients on CPU 1",
    )
    arguments = parser.parse_args()
    asyncio.run(
        main(
            arguments.stages, arguments.per_stage, cached=not arguments.no_cache, pin=arguments.pin
        )
    )
