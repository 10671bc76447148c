"""The narrow queries a promotion's plan is resolved from: the Project's ``plan_resources``
(only what :func:`plan_promotion` reads), its ``applied_freight`` (the Freight a promotion
started by hand names) and the Stage's ``current_collection``.

The plan from the narrow resources must be the plan from the whole project, errors
included: the plan is recorded in the promotion's history.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.project import narrow_query
from freightline.app.client import (
    applied_freight,
    apply_project,
    promote_in_stage,
    start_promotion,
)
from freightline.contracts.names import (
    CURRENT_COLLECTION_QUERY,
    PLAN_RESOURCES_QUERY,
    project_workflow_id,
    stage_workflow_id,
)
from freightline.contracts.promotion import (
    PlanResourcesRequest,
    PromotionPlan,
    plan_promotion,
    plan_resources,
)
from freightline.contracts.stage import StageState
from freightline.errors import ConfigError, FreightlineError, NotFoundError
from freightline.kargo.resources import ProjectResources
from tests.conftest import wait_for
from tests.pipelines import freight_for, gated_at_test, quickstart_up_to_push, with_freight
from tests.test_freight_collections import back, front, two_warehouse_project

NOW = datetime(2026, 12, 3, tzinfo=UTC)

Planner = Callable[[ProjectResources, str, str, tuple[str, ...]], PromotionPlan]


def whole_plan(
    resources: ProjectResources, stage: str, freight: str, collection: tuple[str, ...] = ()
) -> PromotionPlan:
    return plan_promotion(
        resources, stage, freight, "promotion:x", planned_at=NOW, collection=collection
    )


def narrow_plan(
    resources: ProjectResources, stage: str, freight: str, collection: tuple[str, ...] = ()
) -> PromotionPlan:
    narrow = plan_resources(resources, stage, (freight, *collection))
    return whole_plan(narrow, stage, freight, collection)


def refusal(planner: Planner, resources: ProjectResources, stage: str, freight: str) -> str:
    with pytest.raises(FreightlineError) as caught:
        planner(resources, stage, freight, ())
    return f"{type(caught.value).__name__}: {caught.value}"


def test_the_narrow_resources_plan_the_same(tmp_path: Path) -> None:
    f1, f2 = freight_for("1.29.1"), freight_for("1.29.2")
    # The quickstart's PromotionTask, and a policy's approval gate on test.
    resources = with_freight(gated_at_test(tmp_path), f1, f2)
    for stage in resources.stages:
        for name in (f1.metadata.name, f1.alias or ""):
            assert narrow_plan(resources, stage, name) == whole_plan(resources, stage, name)
    narrow = plan_resources(resources, "uat", [f2.alias or ""])
    assert list(narrow.stages) == ["uat"]
    assert list(narrow.freight) == [f2.metadata.name]
    assert narrow.promotion_tasks.keys() == {"demo-promo-process"}
    assert narrow.warehouses == resources.warehouses
    assert narrow.project_config == resources.project_config


def test_the_narrow_resources_plan_the_same_collection(tmp_path: Path) -> None:
    f1, f0, b1 = front("1.29.1"), front("1.0.0"), back("2.0.0")
    resources = with_freight(
        two_warehouse_project(tmp_path, verification="http://127.0.0.1:1"), f1, f0, b1
    )
    for freight, collection in (
        (b1.metadata.name, (f1.metadata.name,)),
        (f1.metadata.name, (f0.metadata.name, b1.metadata.name)),
        (b1.alias or "", ()),
    ):
        narrowed = narrow_plan(resources, "test", freight, collection)
        assert narrowed == whole_plan(resources, "test", freight, collection)
        assert narrowed.freight_collection
    assert not plan_resources(resources, "test", [b1.metadata.name]).analysis_templates


def test_the_narrow_resources_give_the_same_errors(tmp_path: Path) -> None:
    f1 = freight_for("1.29.1")
    resources = with_freight(quickstart_up_to_push(tmp_path), f1)
    # An unknown Stage: the error lists every Stage.
    unknown_stage = refusal(whole_plan, resources, "staging", f1.metadata.name)
    assert 'no Stage "staging" (known stages: prod, test, uat)' in unknown_stage
    assert refusal(narrow_plan, resources, "staging", f1.metadata.name) == unknown_stage
    # Unknown Freight, by ID or alias.
    for name in ("deadbeef", "no-such-alias"):
        unknown_freight = refusal(whole_plan, resources, "test", name)
        assert f'has no Freight with ID or alias "{name}"' in unknown_freight
        assert refusal(narrow_plan, resources, "test", name) == unknown_freight
    # A PromotionTask the project no longer has.
    taskless = resources.model_copy(update={"promotion_tasks": {}})
    missing_task = refusal(whole_plan, taskless, "test", f1.metadata.name)
    assert missing_task.startswith('ConfigError: Stage "test" step 0')
    assert 'unknown PromotionTask "demo-promo-process"' in missing_task
    assert refusal(narrow_plan, taskless, "test", f1.metadata.name) == missing_task


@pytest.mark.integration
async def test_the_narrow_queries_answer_as_the_whole_project(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    f1, f2 = freight_for("1.29.1"), freight_for("1.29.2")
    await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), f1, f2))
    project = client.get_workflow_handle(project_workflow_id("kargo-demo"))
    whole = await project.query("resources", result_type=ProjectResources)
    for request in (
        PlanResourcesRequest(stage="uat", freight=(f1.alias or "", f2.metadata.name)),
        PlanResourcesRequest(stage="nowhere", freight=(f1.metadata.name,)),
    ):
        narrow = await project.query(PLAN_RESOURCES_QUERY, request, result_type=ProjectResources)
        assert narrow == plan_resources(whole, request.stage, request.freight)

    # The Freight a promotion by hand names: by ID or alias, and the same error as before.
    assert await applied_freight(client, "kargo-demo", f1.alias or "") == f1
    assert await applied_freight(client, "kargo-demo", f2.metadata.name) == f2
    with pytest.raises(NotFoundError, match='"kargo-demo" has no Freight with ID or alias "x"'):
        await start_promotion(client, "kargo-demo", "test", "x")

    # The Stage's current collection: none, then the Freight it took.
    stage = client.get_workflow_handle(stage_workflow_id("kargo-demo", "test"))

    async def collection() -> list[str] | None:
        try:
            found: list[str] = await stage.query(CURRENT_COLLECTION_QUERY, result_type=list[str])
        except RPCError:  # the Stage's workflow is not started yet
            return None
        return found

    async def started() -> bool:
        return await collection() == []

    await wait_for(started, timeout=30)
    await promote_in_stage(client, "kargo-demo", "test", f1.alias or "", "alice")

    async def taken() -> bool:
        return await collection() == [f1.metadata.name]

    await wait_for(taken, timeout=30)
    state = await stage.query("status", result_type=StageState)
    assert [ref.freight for ref in state.current_collection.values()] == [f1.metadata.name]

    # A worker older than a narrow query (a rolling upgrade) fails it: the whole one answers.
    async def answer_of_the_whole_query() -> list[str]:
        return ["from the whole query"]

    fallback = answer_of_the_whole_query
    assert await narrow_query(stage, "a_query_from_the_future", list[str], fallback) == [
        "from the whole query"
    ]
    assert await narrow_query(stage, CURRENT_COLLECTION_QUERY, list[str], fallback) == [
        f1.metadata.name
    ]


@pytest.mark.integration
async def test_an_apply_sent_without_the_loader_is_still_checked(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    """Read back from a workflow, resources skip apply's expression checks; an ``apply``
    update from a client of its own (plain JSON, no loader) still gets them, and a refused
    one leaves the project as it was."""
    good = quickstart_up_to_push(gitops_repo)
    await apply_project(client, good)
    project = client.get_workflow_handle(project_workflow_id("kargo-demo"))
    before = await project.query("resources", result_type=ProjectResources)
    text = good.model_dump_json().replace("${{ ctx.stage }}", "${{ ctx.stage ", 1)
    assert text != good.model_dump_json()
    raw = ProjectResources.model_validate_json(text)  # as Temporal's converter reads it
    with pytest.raises(ConfigError, match=r"\$\{\{ at column \d+ is never closed"):
        await apply_project(client, raw)
    assert await project.query("resources", result_type=ProjectResources) == before
