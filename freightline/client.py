"""Client-side operations the CLI (and any Python caller) uses: apply, promote, read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from freightline.config import ProjectResources
from freightline.errors import ConfigError, FreightlineError
from freightline.project import ApplyResult, ProjectState
from freightline.promotion import PromotionRequest, PromotionResult, find_freight
from freightline.temporal import (
    PROJECT_WORKFLOW,
    PROMOTION_WORKFLOW,
    SA_FREIGHT,
    SA_PROJECT,
    SA_STAGE,
    project_workflow_id,
    promotion_workflow_id,
    task_queue,
)

APPLY_TIMEOUT = timedelta(seconds=30)


async def apply_project(client: Client, resources: ProjectResources) -> ApplyResult:
    """Create the project's workflow if needed and apply the resources to it (one round trip)."""
    empty = ProjectResources(name=resources.name)
    start: WithStartWorkflowOperation[Any, None] = WithStartWorkflowOperation(
        PROJECT_WORKFLOW,
        ProjectState(resources=empty),
        id=project_workflow_id(resources.name),
        task_queue=task_queue(),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([SearchAttributePair(SA_PROJECT, resources.name)]),
        static_summary=f"project `{resources.name}`: configuration",
    )
    try:
        result: ApplyResult = await client.execute_update_with_start_workflow(
            "apply",
            resources,
            start_workflow_operation=start,
            result_type=ApplyResult,
            rpc_timeout=APPLY_TIMEOUT,
        )
    except RPCError as err:
        if err.status is RPCStatusCode.DEADLINE_EXCEEDED:
            raise FreightlineError(
                f"no worker answered within {APPLY_TIMEOUT.seconds}s "
                f'on task queue "{task_queue()}": '
                "start one with `freightline worker` (or `freightline dev`)"
            ) from None
        raise
    except WorkflowUpdateFailedError as err:
        raise ConfigError(str(err.cause or err)) from None
    return result


async def project_resources(client: Client, project: str) -> ProjectResources:
    """The project's configuration as its workflow holds it."""
    handle = client.get_workflow_handle(project_workflow_id(project))
    resources: ProjectResources = await handle.query("resources", result_type=ProjectResources)
    return resources


async def start_promotion(
    client: Client, project: str, stage: str, freight: str, *, requested_by: str | None = None
) -> WorkflowHandle[object, PromotionResult]:
    """Start a ``Promotion`` workflow for Freight (ID or alias) into a Stage."""
    resources = await project_resources(client, project)
    target = find_freight(resources, freight)
    alias = target.alias or target.metadata.name[:7]
    request = PromotionRequest(
        project=project, stage=stage, freight=target.metadata.name, requested_by=requested_by
    )
    handle: WorkflowHandle[object, PromotionResult] = await client.start_workflow(
        PROMOTION_WORKFLOW,
        request,
        id=promotion_workflow_id(project, stage, alias),
        task_queue=task_queue(),
        result_type=PromotionResult,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SA_PROJECT, project),
                SearchAttributePair(SA_STAGE, stage),
                SearchAttributePair(SA_FREIGHT, target.metadata.name),
            ]
        ),
        static_summary=f"promote freight `{alias}` into `{stage}`",
        static_details=_freight_details(target),
    )
    return handle


def _freight_details(freight: object) -> str:
    from freightline.resources import Freight

    assert isinstance(freight, Freight)
    lines = [f"freight `{freight.metadata.name}` ({freight.alias})"]
    lines += [f"- image {i.repo_url}:{i.tag}" for i in freight.images or ()]
    lines += [f"- commit {c.repo_url}@{(c.id or '')[:12]}" for c in freight.commits or ()]
    lines += [f"- chart {c.repo_url}/{c.name}:{c.version}" for c in freight.charts or ()]
    return "\n".join(lines)


async def list_promotions(
    client: Client, project: str | None = None, stage: str | None = None, limit: int = 50
) -> Sequence[dict[str, str]]:
    """Recent promotions, newest first, from Temporal's visibility store."""
    query = f"WorkflowType = '{PROMOTION_WORKFLOW}'"
    if project:
        query += f" AND {SA_PROJECT.name} = '{project}'"
    if stage:
        query += f" AND {SA_STAGE.name} = '{stage}'"
    rows = []
    async for execution in client.list_workflows(query, limit=limit):
        attributes = execution.typed_search_attributes
        rows.append(
            {
                "id": execution.id,
                "status": execution.status.name if execution.status else "",
                "project": attributes.get(SA_PROJECT) or "",
                "stage": attributes.get(SA_STAGE) or "",
                "freight": attributes.get(SA_FREIGHT) or "",
                "started": execution.start_time.isoformat(timespec="seconds"),
            }
        )
    return rows
