"""Scale: 1,000 idle Stage and Warehouse workflows on one worker, and history sizes.

    .venv/bin/python -m bench.scale [--projects 10] [--per-project 50]

Applies ``projects`` projects of ``per-project`` Warehouses (one image subscription each,
on a local registry, interval 1h) and as many Stages (each taking one Warehouse's Freight
directly): 10 x (50 + 50) = 1,000 workflows by default. Once every Warehouse has
discovered and made its Freight, the worker's resident memory is read with all of them
idle (the worker's sticky cache holds up to 1,000 workflows).

History sizes: events one promotion adds (the Promotion workflow's own history, and the
Stage workflow's growth as the promotion goes through it), and events one idle Warehouse
iteration adds (from a Warehouse polling every 2s), scaled to an hour at Kargo's default
5m interval and at 1m.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from bench.harness import (
    WorkerProcess,
    dev_server,
    machine,
    mib,
    now,
    queue_name,
    until,
    workdir,
)
from bench.throughput import STEPS
from freightline.app.client import apply_project, promote_in_stage, stage_states
from freightline.contracts.names import stage_workflow_id, warehouse_workflow_id
from freightline.contracts.warehouse import WarehouseStatus
from freightline.kargo.config import group_by_project, load_text
from freightline.kargo.resources import ProjectResources
from sandbox.gitops import create_bare_repo
from tests.pipelines import IMAGE, dump
from tests.registry_fixture import Pusher, start_registry


def project(
    name: str, count: int, image: str, repo: Path, interval: str = "1h"
) -> ProjectResources:
    documents: list[dict[str, Any]] = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": name}}
    ]
    # The quickstart's steps, for this project's image and repository.
    text = json.dumps(STEPS).replace(IMAGE, image).replace("REPO_URL", repo.as_uri())
    steps = json.loads(text)
    for n in range(count):
        documents.append(
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Warehouse",
                "metadata": {"name": f"w{n:02d}", "namespace": name},
                "spec": {"interval": interval, "subscriptions": [{"image": {"repoURL": image}}]},
            }
        )
        documents.append(
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Stage",
                "metadata": {"name": "test" if n == 0 else f"s{n:02d}", "namespace": name},
                "spec": {
                    "requestedFreight": [
                        {
                            "origin": {"kind": "Warehouse", "name": f"w{n:02d}"},
                            "sources": {"direct": True},
                        }
                    ],
                    "promotionTemplate": {"spec": {"steps": steps}},
                },
            }
        )
    (resources,) = group_by_project(load_text(dump(documents), source=name)).values()
    return resources


async def events(client: Client, workflow_id: str) -> int:
    return len((await client.get_workflow_handle(workflow_id).fetch_history()).events)


async def warehouse_status(client: Client, workflow_id: str) -> WarehouseStatus:
    handle = client.get_workflow_handle(workflow_id)
    status: WarehouseStatus = await handle.query("status", result_type=WarehouseStatus)
    return status


async def main(projects: int, per_project: int) -> None:
    with workdir("scale") as scratch:
        registry = start_registry(scratch / "registry")
        pusher = Pusher(registry)
        pusher.image("app", "1.0.0", salt="scale")
        pusher.close()
        image = f"{registry.host}/app"
        repo = create_bare_repo(scratch / "gitops.git")
        try:
            async with dev_server(scratch) as (server, client):
                queue = queue_name("scale")
                os.environ["FREIGHTLINE_TASK_QUEUE"] = queue
                cache = {"FREIGHTLINE_REPOSITORY_CACHE": str(scratch / "cache")}
                worker = WorkerProcess(server.address, queue, scratch / "worker.log", cache)
                try:
                    await asyncio.sleep(3)
                    before = worker.rss()
                    names = [f"scale{n:02d}" for n in range(projects)]
                    began = now()
                    await asyncio.gather(
                        *(
                            apply_project(client, project(n, per_project, image, repo))
                            for n in names
                        )
                    )
                    applied = now() - began

                    async def all_discovered() -> bool:
                        for name in names:
                            last = warehouse_workflow_id(name, f"w{per_project - 1:02d}")
                            try:
                                if (await warehouse_status(client, last)).freight_count < 1:
                                    return False
                            except RPCError as err:
                                # apply may answer before reconciliation started them all
                                if err.status is not RPCStatusCode.NOT_FOUND:
                                    raise
                                return False
                        return True

                    await until(all_discovered)
                    settled = now() - began
                    await asyncio.sleep(10)  # idle
                    idle = worker.rss()
                    peak = worker.peak_rss()

                    # Events per promotion, through the Stage workflow (test of the first project).
                    stage_id = stage_workflow_id(names[0], "test")
                    stage_before = await events(client, stage_id)
                    states = {s.name: s for s in await stage_states(client, names[0])}
                    (freight,) = states["test"].available
                    await promote_in_stage(client, names[0], "test", freight, "bench")

                    async def promoted() -> bool:
                        test = {s.name: s for s in await stage_states(client, names[0])}["test"]
                        return test.current is not None and test.running is None

                    await until(promoted)
                    test = {s.name: s for s in await stage_states(client, names[0])}["test"]
                    assert test.current is not None
                    await asyncio.sleep(1)
                    stage_growth = await events(client, stage_id) - stage_before
                    promotion_events = await events(client, test.current.promotion)

                    # Events per idle Warehouse iteration: one Warehouse polling every 2s.
                    await apply_project(client, project("poll", 1, image, repo, interval="2s"))
                    poll_id = warehouse_workflow_id("poll", "w00")

                    async def polled_twice() -> bool:
                        return (await warehouse_status(client, poll_id)).discoveries >= 2

                    await until(polled_twice)
                    first = (await warehouse_status(client, poll_id)).discoveries
                    start_events = await events(client, poll_id)
                    await asyncio.sleep(12)
                    last = (await warehouse_status(client, poll_id)).discoveries
                    per_iteration = (await events(client, poll_id) - start_events) / (last - first)
                finally:
                    worker.stop()
        finally:
            registry.stop()

    total = projects * per_project * 2
    print(f"machine: {machine()}")
    print(f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"workflows: {total} ({projects} projects x {per_project} Stages + {per_project} Warehouses)"
    )
    print(f"apply: {applied:.1f} s; every Warehouse discovered its Freight after {settled:.1f} s")
    print(
        f"worker resident memory: before {mib(before)}, all {total} idle {mib(idle)}, peak {mib(peak)}"
    )
    print(f"  per idle workflow: {(idle - before) / total / 1024:.0f} KiB")
    print(
        f"history events per promotion: Promotion workflow {promotion_events}, Stage workflow +{stage_growth}"
    )
    print(f"history events per idle Warehouse iteration: {per_iteration:.1f}")
    print(f"  per hour at interval 5m (Kargo's default): {per_iteration * 12:.0f}")
    print(f"  per hour at interval 1m: {per_iteration * 60:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--per-project", type=int, default=50)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.projects, arguments.per_project))
