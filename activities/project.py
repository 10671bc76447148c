"""Activities of the ``Project`` workflow and those that read a project's configuration.

``reconcile_project`` is the Project workflow's reconciler: it reads the
desired state from the workflow (the ``desired`` query, so each attempt sees
the newest generation), starts or updates each Stage and Warehouse workflow
with update-with-start, offers Freight applied from files to the Stages that
request it directly, and retires the running Stage and Warehouse workflows the
configuration no longer names. Every part is idempotent: a workflow that
already holds its config is left alone (its history does not grow), an offer
already known changes nothing, and a retire sent twice is answered the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities import boundary
from freightline.contracts.names import (
    FREIGHT_AVAILABLE_SIGNAL,
    FREIGHT_QUERY,
    SA_PROJECT,
    SA_STAGE,
    SA_WAREHOUSE,
    STAGE_WORKFLOW,
    WAREHOUSE_WORKFLOW,
    project_workflow_id,
    stage_workflow_id,
    warehouse_workflow_id,
)
from freightline.contracts.project import (
    DesiredState,
    ReconcileResult,
    direct_requesters,
    stage_configs,
    warehouse_configs,
)
from freightline.contracts.promotion import PromotionPlan, PromotionRequest, plan_promotion
from freightline.contracts.stage import FreightAvailable, StageState
from freightline.contracts.stage_requests import RetireRequest
from freightline.contracts.warehouse import WarehouseInput
from freightline.errors import NotFoundError
from freightline.kargo.resources import Freight, ProjectResources

ConfigModel = TypeVar("ConfigModel", bound=BaseModel)


class ProjectActivities:
    """Reads and reconciles configuration through a Temporal client (the worker's own)."""

    def __init__(self, client: Client, *, notifying: bool = False, ui_base_url: str = "") -> None:
        self.client = client
        self.notifying = notifying
        self.ui_base_url = ui_base_url

    async def project_resources(self, project: str) -> ProjectResources:
        handle = self.client.get_workflow_handle(project_workflow_id(project))
        try:
            resources: ProjectResources = await handle.query(
                "resources", result_type=ProjectResources
            )
            return resources
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise NotFoundError(
                    f'project "{project}" does not exist: `freightline apply -f FILE` creates it'
                ) from None
            raise

    @boundary.defn(name="resolve_promotion")
    async def resolve_promotion(self, request: PromotionRequest) -> PromotionPlan:
        """Expand the Stage's steps for this Freight (kept in the promotion's history)."""
        resources = await self.project_resources(request.project)
        # Freight a Warehouse discovered lives in its workflow, not in the applied config.
        resources = await with_warehouse_freight(self.client, resources, request.freight)
        plan = plan_promotion(
            resources,
            request.stage,
            request.freight,
            promotion=activity.info().workflow_id or request.stage,
            # now() in the promotion's expressions: this activity's result is recorded in the
            # history, so the workflow and every later activity see the same instant.
            planned_at=datetime.now(UTC),
            actor=request.requested_by,
            ui_base_url=self.ui_base_url,
        )
        # Only whether this worker has endpoints: the URLs themselves stay out of history.
        return plan.model_copy(update={"notify": self.notifying})

    @boundary.defn(name="reconcile_project")
    async def reconcile_project(self, project: str) -> ReconcileResult:
        """Bring every Stage and Warehouse workflow of ``project`` to its applied config."""
        handle = self.client.get_workflow_handle(project_workflow_id(project))
        desired: DesiredState = await handle.query("desired", result_type=DesiredState)
        resources = desired.resources
        queue = activity.info().task_queue
        configured: list[str] = []
        for name, stage_config in stage_configs(resources).items():
            changed = await self._configure(
                queue,
                STAGE_WORKFLOW,
                stage_workflow_id(project, name),
                StageState(config=stage_config),
                "configure",
                stage_config,
                [SearchAttributePair(SA_PROJECT, project), SearchAttributePair(SA_STAGE, name)],
                f"Stage `{name}` of project `{project}`",
            )
            if changed:
                configured.append(f"Stage/{name}")
            activity.heartbeat(f"Stage/{name}")
        offered = await self._offer(resources, desired.pending_offers)
        for name, warehouse_config in warehouse_configs(resources).items():
            changed = await self._configure(
                queue,
                WAREHOUSE_WORKFLOW,
                warehouse_workflow_id(project, name),
                WarehouseInput(project=project, config=warehouse_config),
                "update_spec",
                warehouse_config,
                [
                    SearchAttributePair(SA_PROJECT, project),
                    SearchAttributePair(SA_WAREHOUSE, name),
                ],
                f"Warehouse `{name}` of project `{project}`",
            )
            if changed:
                configured.append(f"Warehouse/{name}")
            activity.heartbeat(f"Warehouse/{name}")
        retired = await self._retire_orphans(resources)
        return ReconcileResult(
            generation=desired.generation,
            offered=offered,
            configured=tuple(configured),
            retired=tuple(retired),
        )

    async def _configure(
        self,
        queue: str,
        workflow_type: str,
        workflow_id: str,
        first_input: BaseModel,
        update: str,
        config: BaseModel,
        search_attributes: list[SearchAttributePair[str]],
        summary: str,
    ) -> bool:
        """Start an entity workflow with ``first_input`` if it does not run, and send it
        ``config`` by ``update``, unless it already holds that config; whether it did."""
        if await self._running_config(workflow_id, type(config)) == config:
            return False
        start: WithStartWorkflowOperation[Any, None] = WithStartWorkflowOperation(
            workflow_type,
            first_input,
            id=workflow_id,
            task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(search_attributes),
            static_summary=summary,
        )
        await self.client.execute_update_with_start_workflow(
            update, config, start_workflow_operation=start
        )
        return True

    async def _running_config(
        self, workflow_id: str, config_type: type[ConfigModel]
    ) -> ConfigModel | None:
        """The ``config`` query's answer of a running workflow; None if it does not run."""
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            if (await handle.describe()).status is not WorkflowExecutionStatus.RUNNING:
                return None
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        config: ConfigModel = await handle.query("config", result_type=config_type)
        return config

    async def _offer(self, resources: ProjectResources, offers: tuple[str, ...]) -> tuple[str, ...]:
        """Freight applied from a file goes to the Stages that request it from its Warehouse."""
        for freight_id in offers:
            freight = resources.freight.get(freight_id)
            if freight is None:  # deleted again since
                continue
            for name in direct_requesters(resources, freight.origin.name):
                handle = self.client.get_workflow_handle(stage_workflow_id(resources.name, name))
                await handle.signal(
                    FREIGHT_AVAILABLE_SIGNAL,
                    FreightAvailable(freight=freight, source="warehouse", via=freight.origin.name),
                )
        return offers

    async def _retire_orphans(self, resources: ProjectResources) -> list[str]:
        """Ask each running Stage and Warehouse workflow of the project that its configuration
        no longer names to finish (the ``retire`` update), and list them."""
        query = (
            f"WorkflowType IN ('{STAGE_WORKFLOW}', '{WAREHOUSE_WORKFLOW}') "
            f"AND {SA_PROJECT.name} = '{resources.name}' AND ExecutionStatus = 'Running'"
        )
        retired: list[str] = []
        async for execution in self.client.list_workflows(query):
            attributes = execution.typed_search_attributes
            if execution.workflow_type == STAGE_WORKFLOW:
                kind, name, wanted = "Stage", attributes.get(SA_STAGE), set(resources.stages)
            else:
                kind, name = "Warehouse", attributes.get(SA_WAREHOUSE)
                wanted = set(resources.warehouses)
            if name is None or name in wanted:
                continue
            request = RetireRequest(
                reason=f"{kind} {name} was deleted from project {resources.name}"
            )
            try:
                await self.client.get_workflow_handle(execution.id).execute_update(
                    "retire", request, result_type=str
                )
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:  # it ended since it was listed
                    raise
            except WorkflowUpdateFailedError:
                continue  # it completed while the update was on its way
            retired.append(f"{kind}/{name}")
            activity.heartbeat(f"{kind}/{name}")
        return retired


# --- reading Freight from the Warehouse workflows (the CLI reads them too) ---


async def warehouse_freight(client: Client, resources: ProjectResources) -> list[Freight]:
    """The Freight every Warehouse workflow of the project holds, newest first."""
    found: list[Freight] = []
    for name in sorted(resources.warehouses):
        handle = client.get_workflow_handle(warehouse_workflow_id(resources.name, name))
        try:
            found += await handle.query(FREIGHT_QUERY, result_type=list[Freight])
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
    return sorted(found, key=discovered_at, reverse=True)


async def with_warehouse_freight(
    client: Client, resources: ProjectResources, freight: str
) -> ProjectResources:
    """``resources`` with the Freight named ``freight`` (ID or alias) merged in from the
    project's Warehouses when it is not among the applied Freight."""
    if any(freight in (f.metadata.name, f.alias) for f in resources.freight.values()):
        return resources
    for candidate in await warehouse_freight(client, resources):
        if freight in (candidate.metadata.name, candidate.alias):
            merged = {**resources.freight, candidate.metadata.name: candidate}
            return resources.model_copy(update={"freight": merged})
    return resources


def discovered_at(freight: Freight) -> datetime:
    """When a Warehouse made ``freight`` (the oldest possible time when unknown)."""
    return freight.discovered_at or datetime.min.replace(tzinfo=UTC)
