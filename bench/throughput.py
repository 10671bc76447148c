"""Throughput: 200 promotions over 50 Stages on one worker.

    .venv/bin/python -m bench.throughput [--stages 50] [--per-stage 4]

Each Stage runs the Kargo quickstart's steps up to git-push (clone main and the Stage's
branch, git-clear, kustomize-set-image, kustomize-build with real kustomize, commit,
push to ``stage/<name>``) on its own branch of one repository. The 50 Stages promote at
once, each its 4 Freight one after another (a Stage runs one promotion at a time, as the
Stage workflow does). One worker subprocess (default concurrency, 16 activities) on a dev
server with a SQLite file. Prints promotions/s, p50/p99 latency (start to result) and the
worker's peak resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import (
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


def seeded_repo(scratch: Path, stages: list[str]) -> Path:
    """kargo-demo with one overlay directory per Stage (copies of ``stages/test``)."""
    seed = scratch / "seed"
    shutil.copytree(KARGO_DEMO, seed)
    for stage in stages:
        shutil.copytree(KARGO_DEMO / "stages" / "test", seed / "stages" / stage)
    return create_bare_repo(scratch / "gitops.git", seed=seed)


async def main(stage_count: int, per_stage: int) -> None:
    stages = [f"s{n:02d}" for n in range(stage_count)]
    tags = [f"2.0.{n}" for n in range(per_stage)]
    freights = [freight_for(t) for t in tags]
    latencies: list[float] = []
    with workdir("throughput") as scratch:
        repo = seeded_repo(scratch, stages)
        async with dev_server(scratch) as (server, client):
            queue = queue_name("throughput")
            os.environ["FREIGHTLINE_TASK_QUEUE"] = queue
            resources = with_freight(
                single_stage_project(repo, STEPS, stages=tuple(stages)), *freights
            )
            worker = WorkerProcess(server.address, queue, scratch / "worker.log")
            idle_rss = 0
            try:
                await asyncio.wait_for(apply_project(client, resources), timeout=120)
                await asyncio.sleep(2)
                idle_rss = worker.rss()

                async def stage_line(stage: str) -> None:
                    for freight in freights:
                        started = now()
                        handle = await start_promotion(client, "p", stage, freight.metadata.name)
                        result: PromotionResult = await handle.result()
                        assert result.phase is PromotionPhase.SUCCEEDED, result.message
                        latencies.append(now() - started)

                began = now()
                await asyncio.gather(*(stage_line(s) for s in stages))
                wall = now() - began
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
    print(f"wall time: {wall:.1f} s")
    print(f"throughput: {total / wall:.2f} promotions/s")
    print(f"latency p50: {percentile(latencies, 50):.2f} s, p99: {percentile(latencies, 99):.2f} s")
    print(f"worker resident memory: idle {mib(idle_rss)}, peak {mib(peak)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=50)
    parser.add_argument("--per-stage", type=int, default=4)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.stages, arguments.per_stage))
