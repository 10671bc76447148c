"""What resolving one promotion's plan costs in queries: CPU of the client (here the
activity's side), the worker (its query tasks) and the Temporal server, per resolution.

    .venv/bin/python -m bench.plan_queries [--stages 20] [--freight 40] [--iterations 200]

The throughput project (``bench/throughput.py``: N Stages running the quickstart's steps)
with F applied Freight, one Stage promoted twice (a history in its status). Three ways of
reading what ``plan_promotion`` needs, interleaved, in the same run:

- *before* (issue 17): the Project's whole ``resources`` and the Stage's whole ``status``,
  every expression of every Stage parsed again as each deserialisation did;
- *whole, unchecked*: the same two queries, deserialised without the apply-time checks;
- *narrow*: the Stage's ``current_collection`` and the Project's ``plan_resources``.

Each then plans the promotion (the plans are compared: they must be equal). And the lookup
``start_promotion`` makes of the Freight it names (by alias): the whole ``resources``
before, the Project's ``applied_freight`` now.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client

from bench.harness import CpuTimes, WorkerProcess, dev_server, machine, queue_name, workdir
from bench.throughput import STEPS, seeded_repo
from freightline.app.client import applied_freight, apply_project, start_promotion
from freightline.contracts.names import (
    CURRENT_COLLECTION_QUERY,
    PLAN_RESOURCES_QUERY,
    project_workflow_id,
    stage_workflow_id,
)
from freightline.contracts.promotion import (
    PlanResourcesRequest,
    PromotionPlan,
    PromotionResult,
    find_freight,
    plan_promotion,
)
from freightline.contracts.stage import StageState
from freightline.kargo.resources import APPLY_CHECKS, Freight, ProjectResources
from tests.pipelines import freight_for, single_stage_project, with_freight

PLANNED_AT = datetime(2026, 12, 3, tzinfo=UTC)
PLANS = ("before", "whole, unchecked", "narrow")
LOOKUPS = ("lookup before", "lookup now")

Resolver = Callable[[Client, str, str], Awaitable[PromotionPlan | Freight]]


def _plan(resources: ProjectResources, stage: str, freight: str, collection: Any) -> PromotionPlan:
    return plan_promotion(
        resources, stage, freight, "bench", planned_at=PLANNED_AT, collection=collection
    )


async def before(client: Client, stage: str, freight: str) -> PromotionPlan:
    project = client.get_workflow_handle(project_workflow_id("p"))
    raw = await project.query("resources", result_type=dict[str, Any])
    resources = ProjectResources.model_validate(raw, context=APPLY_CHECKS)
    status = await client.get_workflow_handle(stage_workflow_id("p", stage)).query(
        "status", result_type=dict[str, Any]
    )
    state = StageState.model_validate(status, context=APPLY_CHECKS)
    collection = [ref.freight for ref in state.current_collection.values()]
    return _plan(resources, stage, freight, collection)


async def whole(client: Client, stage: str, freight: str) -> PromotionPlan:
    project = client.get_workflow_handle(project_workflow_id("p"))
    resources = await project.query("resources", result_type=ProjectResources)
    state = await client.get_workflow_handle(stage_workflow_id("p", stage)).query(
        "status", result_type=StageState
    )
    collection = [ref.freight for ref in state.current_collection.values()]
    return _plan(resources, stage, freight, collection)


async def narrow(client: Client, stage: str, freight: str) -> PromotionPlan:
    collection = await client.get_workflow_handle(stage_workflow_id("p", stage)).query(
        CURRENT_COLLECTION_QUERY, result_type=list[str]
    )
    request = PlanResourcesRequest(stage=stage, freight=(freight, *collection))
    resources = await client.get_workflow_handle(project_workflow_id("p")).query(
        PLAN_RESOURCES_QUERY, request, result_type=ProjectResources
    )
    return _plan(resources, stage, freight, collection)


async def lookup_before(client: Client, stage: str, freight: str) -> Freight:
    raw = await client.get_workflow_handle(project_workflow_id("p")).query(
        "resources", result_type=dict[str, Any]
    )
    return find_freight(ProjectResources.model_validate(raw, context=APPLY_CHECKS), freight)


async def lookup_now(client: Client, stage: str, freight: str) -> Freight:
    return await applied_freight(client, "p", freight)


async def main(stage_count: int, freight_count: int, iterations: int) -> None:
    stages = [f"s{n:02d}" for n in range(stage_count)]
    # Aliases of their own: the generated ones of 40 Freight may collide.
    freights = [
        freight_for(f"2.0.{n}").model_copy(update={"alias": f"bench-{n}"})
        for n in range(freight_count)
    ]
    ways: dict[str, Resolver] = {"before": before, "whole, unchecked": whole, "narrow": narrow}
    ways |= {"lookup before": lookup_before, "lookup now": lookup_now}
    spent = {name: {"client": 0.0, "worker": 0.0, "server": 0.0, "wall": 0.0} for name in ways}
    with workdir("plan-queries") as scratch:
        repo = seeded_repo(scratch, stages)
        async with dev_server(scratch) as (server, client):
            queue = queue_name("plan-queries")
            os.environ["FREIGHTLINE_TASK_QUEUE"] = queue
            resources = with_freight(
                single_stage_project(repo, STEPS, stages=tuple(stages)), *freights
            )
            worker = WorkerProcess(server.address, queue, scratch / "worker.log")
            try:
                await asyncio.wait_for(apply_project(client, resources), timeout=120)
                for freight in freights[:2]:  # a history in the Stage's status
                    handle = await start_promotion(client, "p", stages[0], freight.metadata.name)
                    result: PromotionResult = await handle.result()
                    assert result.phase.value == "Succeeded", result.message
                await asyncio.sleep(2)  # the Stage records the promotion after its result
                assert server.process is not None
                pids = {"worker": worker.process.pid, "server": server.process.pid}
                target = freights[-1].metadata.name
                plans = [await ways[name](client, stages[0], target) for name in PLANS]
                assert len({p.model_dump_json() for p in plans}) == 1, "plans differ"
                found = [await ways[name](client, stages[0], "bench-3") for name in LOOKUPS]
                assert found == [freights[3], freights[3]]
                for _ in range(iterations):
                    for name, way in ways.items():
                        marks = {n: CpuTimes.of(pid) for n, pid in pids.items()}
                        began, client_cpu = time.perf_counter(), time.process_time()
                        await way(client, stages[0], target if name in PLANS else "bench-3")
                        spent[name]["wall"] += time.perf_counter() - began
                        spent[name]["client"] += time.process_time() - client_cpu
                        for n, pid in pids.items():
                            spent[name][n] += (CpuTimes.of(pid) - marks[n]).own
            finally:
                worker.stop()
    print(f"machine: {machine()}")
    print(f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"{stage_count} Stages, {freight_count} applied Freight, {iterations} resolutions each, "
        "interleaved; per resolution:"
    )
    for name, totals in spent.items():
        per = {k: v * 1000 / iterations for k, v in totals.items()}
        cpu = per["client"] + per["worker"] + per["server"]
        print(
            f"  {name:17} CPU {cpu:5.1f} ms (client {per['client']:.1f}, worker "
            f"{per['worker']:.1f}, server {per['server']:.1f}); wall {per['wall']:.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=20)
    parser.add_argument("--freight", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.stages, arguments.freight, arguments.iterations))
