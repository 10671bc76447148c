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

from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    QueryRejectCondition,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities import boundary
from freightline.contracts.metadata import (
    FREIGHT_CHANGED_SIGNAL,
    SET_FREIGHT_ALIAS_UPDATE,
    SET_FREIGHT_METADATA_UPDATE,
    SET_STAGE_METADATA_UPDATE,
    STAGE_METADATA_QUERY,
    FreightAliasChange,
    FreightAliasRequest,
    FreightAliasResult,
    FreightMetadataChange,
    MetadataApplied,
    MetadataRequest,
    MetadataResult,
    StageMetadataChange,
    alias_taken,
    names_metadata_functions,
)
from freightline.contracts.names import (
    CLUSTER_WORKFLOW_ID,
    CURRENT_COLLECTION_QUERY,
    FREIGHT_AVAILABLE_SIGNAL,
    FREIGHT_NAMED_QUERY,
    FREIGHT_QUERY,
    PLAN_RESOURCES_QUERY,
    PROJECT_WORKFLOW,
    RESYNC_SIGNAL,
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
from freightline.contracts.promotion import (
    PlanResourcesRequest,
    PromotionPlan,
    PromotionRequest,
    plan_promotion,
    plan_resources,
)
from freightline.contracts.stage import FreightAvailable, StageState
from freightline.contracts.stage_requests import RetireRequest
from freightline.contracts.warehouse import WarehouseInput
from freightline.errors import NotFoundError, RequestRefused, StepError, error_class
from freightline.kargo.resources import ClusterResources, Freight, ProjectResources

ConfigModel = TypeVar("ConfigModel", bound=BaseModel)
T = TypeVar("T")


async def narrow_query(
    handle: WorkflowHandle[Any, Any],
    name: str,
    result_type: type[T],
    whole: Callable[[], Awaitable[T]],
    *args: Any,
) -> T:
    """The query ``name`` (one that answers only what is asked), or ``whole()`` when the
    workflow fails it: a worker older than the query, during a rolling upgrade, has no
    handler for it, and the older query that answers everything still serves."""
    try:
        answer: T = await handle.query(name, *args, result_type=result_type)
    except WorkflowQueryFailedError:
        return await whole()
    return answer


class ProjectActivities:
    """Reads and reconciles configuration through a Temporal client (the worker's own)."""

    def __init__(self, client: Client, *, notifying: bool = False, ui_base_url: str = "") -> None:
        self.client = client
        self.notifying = notifying
        self.ui_base_url = ui_base_url

    async def project_resources(
        self, project: str, only_for: PlanResourcesRequest | None = None
    ) -> ProjectResources:
        """The project's resources; ``only_for``: only what planning that promotion reads."""
        handle = self.client.get_workflow_handle(project_workflow_id(project))
        try:
            if only_for is None:
                resources: ProjectResources = await handle.query(
                    "resources", result_type=ProjectResources
                )
            else:

                async def whole() -> ProjectResources:
                    found = await handle.query("resources", result_type=ProjectResources)
                    return plan_resources(found, only_for.stage, only_for.freight)

                resources = await narrow_query(
                    handle, PLAN_RESOURCES_QUERY, ProjectResources, whole, only_for
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
        collection = request.collection
        if collection is None:  # started by hand: the Stage's Freight of its other origins
            collection = await self._stage_collection(request.project, request.stage)
        # Only the Stage, its tasks and the Freight named: not the whole project.
        resources = await self.project_resources(
            request.project,
            PlanResourcesRequest(stage=request.stage, freight=(request.freight, *collection)),
        )
        # Freight a Warehouse discovered lives in its workflow, not in the applied config.
        resources = await with_warehouse_freight(
            self.client, resources, request.freight, *collection
        )
        known = {*resources.freight, *(f.alias for f in resources.freight.values())}
        plan = plan_promotion(
            resources,
            request.stage,
            request.freight,
            # Freight the project no longer has (deleted) is no longer part of the collection.
            collection=[name for name in collection if name in known],
            promotion=activity.info().workflow_id or request.stage,
            # now() in the promotion's expressions: this activity's result is recorded in the
            # history, so the workflow and every later activity see the same instant.
            planned_at=datetime.now(UTC),
            actor=request.requested_by,
            ui_base_url=self.ui_base_url,
        )
        plan = await self._with_metadata(request.project, plan)
        # Only whether this worker has endpoints: the URLs themselves stay out of history.
        return plan.model_copy(update={"notify": self.notifying})

    async def _stage_collection(self, project: str, stage: str) -> tuple[str, ...]:
        """The IDs of a Stage's current Freight (none when its workflow does not run)."""
        handle = self.client.get_workflow_handle(stage_workflow_id(project, stage))

        async def whole() -> list[str]:
            state = await handle.query("status", result_type=StageState)
            return [ref.freight for ref in state.current_collection.values()]

        try:
            found = await narrow_query(handle, CURRENT_COLLECTION_QUERY, list[str], whole)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            return ()
        return tuple(found)

    async def _with_metadata(self, project: str, plan: PromotionPlan) -> PromotionPlan:
        """The plan with the metadata ``freightMetadata()`` / ``stageMetadata()`` read, taken
        now (so the workflow evaluates them without I/O), only when a step names them."""
        named = names_metadata_functions(
            [step.config, step.if_, [v.value for v in step.vars]] for step in plan.steps
        )
        if not named:
            return plan
        # Every Freight and Stage of the project: the whole configuration, only here.
        resources = await self.project_resources(project)
        update: dict[str, Any] = {}
        if "freightMetadata" in named:
            update["freight_metadata"] = {
                freight.metadata.name: freight.status.metadata
                for freight in await self._all_freight(resources)
                if freight.status is not None and freight.status.metadata
            }
        if "stageMetadata" in named:
            stages: dict[str, dict[str, Any]] = {}
            for name in sorted(resources.stages):
                handle = self.client.get_workflow_handle(stage_workflow_id(resources.name, name))
                try:
                    found = await handle.query(STAGE_METADATA_QUERY, result_type=dict[str, Any])
                except RPCError as err:
                    if err.status is not RPCStatusCode.NOT_FOUND:
                        raise
                    continue  # not started yet: no metadata
                if found:
                    stages[name] = found
            update["stage_metadata"] = stages
        return plan.model_copy(update=update)

    async def _all_freight(self, resources: ProjectResources) -> list[Freight]:
        """Every Freight of the project: applied from files, then held by its Warehouses."""
        return [*resources.freight.values(), *await warehouse_freight(self.client, resources)]

    # --- set-freight-alias and set-metadata ------------------------------------------------

    async def _tell_stages(self, resources: ProjectResources, freight: Freight) -> None:
        """Every running Stage of the project keeps copies of Freight it knows: send it the
        Freight as it is now (a signal: a Stage that never saw it ignores it)."""
        for name in sorted(resources.stages):
            handle = self.client.get_workflow_handle(stage_workflow_id(resources.name, name))
            try:
                await handle.signal(FREIGHT_CHANGED_SIGNAL, freight)
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise

    @boundary.defn(name="set_freight_alias")
    async def set_freight_alias(self, request: FreightAliasRequest) -> FreightAliasResult:
        """Kargo's ``set-freight-alias``: rename a Freight in every workflow that holds it.

        Kargo's API refuses an alias another Freight of the project has; here each holder's
        update validator refuses one among its own Freight, and this checks the whole
        project first, so the refusal names the Freight that has it either way.
        Idempotent: a retry finds the alias already set and changes nothing.
        """
        resources = await self.project_resources(request.project)
        everything = await self._all_freight(resources)
        try:
            target = _find(everything, request.freight, request.project)
        except NotFoundError as err:
            raise StepError(str(err)) from None  # Kargo: a Freight not found fails the step
        for other in everything:
            if other.alias == request.alias and other.metadata.name != target.metadata.name:
                raise StepError(alias_taken(request.alias, other, request.project))
        change = FreightAliasChange(freight=target.metadata.name, alias=request.alias)
        renamed = target
        for holder in _holders(resources, everything, target):
            renamed = await _update(self.client, holder, SET_FREIGHT_ALIAS_UPDATE, change, Freight)
        await self._tell_stages(resources, renamed)
        return FreightAliasResult(
            freight=target.metadata.name, previous=target.alias, alias=request.alias
        )

    @boundary.defn(name="set_metadata")
    async def set_metadata(self, request: MetadataRequest) -> MetadataResult:
        """Kargo's ``set-metadata``: upsert each update's values into a Stage's metadata (its
        workflow) or a Freight's ``status.metadata`` (every workflow that holds it), in order.
        Upserts: a retry converges on the same metadata."""
        resources = await self.project_resources(request.project)
        everything: list[Freight] | None = None
        applied: list[MetadataApplied] = []
        for update in request.updates:
            if update.kind == "Stage":
                if update.name not in resources.stages:
                    raise NotFoundError(
                        f'Stage "{update.name}" not found in project "{request.project}"'
                    )
                metadata = await _update(
                    self.client,
                    stage_workflow_id(request.project, update.name),
                    SET_STAGE_METADATA_UPDATE,
                    StageMetadataChange(values=update.values),
                    dict[str, Any],
                )
                applied.append(MetadataApplied(kind="Stage", name=update.name, metadata=metadata))
                activity.heartbeat(f"Stage/{update.name}")
                continue
            if everything is None:
                everything = await self._all_freight(resources)
            target = _find(everything, update.name, request.project)
            change = FreightMetadataChange(freight=target.metadata.name, values=update.values)
            after = target
            for holder in _holders(resources, everything, target):
                after = await _update(
                    self.client, holder, SET_FREIGHT_METADATA_UPDATE, change, Freight
                )
            await self._tell_stages(resources, after)
            # The next update of the same Freight starts from what this one left.
            everything = [
                after if f.metadata.name == after.metadata.name else f for f in everything
            ]
            applied.append(
                MetadataApplied(
                    kind="Freight",
                    name=target.metadata.name,
                    metadata=dict(after.status.metadata or {}) if after.status else {},
                )
            )
            activity.heartbeat(f"Freight/{target.metadata.name}")
        return MetadataResult(applied=tuple(applied))

    @boundary.defn(name="resync_projects")
    async def resync_projects(self) -> int:
        """Ask every running Project workflow to reconcile now (a cluster-scoped resource
        changed); how many were asked. A resync sent twice only reconciles twice."""
        query = f'WorkflowType="{PROJECT_WORKFLOW}" AND ExecutionStatus="Running"'
        asked = 0
        async for execution in self.client.list_workflows(query):
            handle = self.client.get_workflow_handle(execution.id)
            try:
                await handle.signal(RESYNC_SIGNAL)
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:  # ended since it was listed
                    raise
            asked += 1
            activity.heartbeat(execution.id)
        return asked

    @boundary.defn(name="reconcile_project")
    async def reconcile_project(self, project: str) -> ReconcileResult:
        """Bring every Stage and Warehouse workflow of ``project`` to its applied config."""
        handle = self.client.get_workflow_handle(project_workflow_id(project))
        desired: DesiredState = await handle.query("desired", result_type=DesiredState)
        resources = desired.resources
        cluster = await cluster_resources(self.client)
        queue = activity.info().task_queue
        configured: list[str] = []
        for name, stage_config in stage_configs(resources, cluster).items():
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


async def cluster_resources(client: Client) -> ClusterResources:
    """The cluster-scoped resources (none before the first cluster-scoped apply)."""
    try:
        # Only a running Cluster workflow answers: a closed one (terminated by hand) would need
        # a worker to replay it, and holds nothing current.
        resources: ClusterResources = await client.get_workflow_handle(CLUSTER_WORKFLOW_ID).query(
            "resources",
            result_type=ClusterResources,
            reject_condition=QueryRejectCondition.NOT_OPEN,
        )
    except WorkflowQueryRejectedError:
        return ClusterResources()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return ClusterResources()
        raise
    return resources


async def warehouse_freight(
    client: Client, resources: ProjectResources, named: Collection[str] | None = None
) -> list[Freight]:
    """The Freight every Warehouse workflow of the project holds, newest first; with
    ``named``, only the Freight with those IDs or aliases (each Warehouse sends only them)."""
    found: list[Freight] = []
    for name in sorted(resources.warehouses):
        handle = client.get_workflow_handle(warehouse_workflow_id(resources.name, name))
        try:
            if named is None:
                found += await handle.query(FREIGHT_QUERY, result_type=list[Freight])
            else:

                async def every(handle: WorkflowHandle[Any, Any] = handle) -> list[Freight]:
                    held = await handle.query(FREIGHT_QUERY, result_type=list[Freight])
                    return [f for f in held if {f.metadata.name, f.alias} & set(named)]

                found += await narrow_query(
                    handle, FREIGHT_NAMED_QUERY, list[Freight], every, sorted(named)
                )
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
    return sorted(found, key=discovered_at, reverse=True)


async def with_warehouse_freight(
    client: Client, resources: ProjectResources, *freight: str
) -> ProjectResources:
    """``resources`` with the Freight named ``freight`` (IDs or aliases) merged in from the
    project's Warehouses when they are not among the applied Freight."""
    missing = {
        name
        for name in freight
        if not any(name in (f.metadata.name, f.alias) for f in resources.freight.values())
    }
    if not missing:
        return resources
    merged = dict(resources.freight)
    for candidate in await warehouse_freight(client, resources, missing):
        if missing & {candidate.metadata.name, candidate.alias}:
            merged[candidate.metadata.name] = candidate
    return resources.model_copy(update={"freight": merged})


def _find(freight: list[Freight], name: str, project: str) -> Freight:
    """The Freight named ``name``: its ID, as in Kargo, or else its alias."""
    for candidate in freight:
        if candidate.metadata.name == name:
            return candidate
    for candidate in freight:
        if candidate.alias == name:
            return candidate
    raise NotFoundError(f'Freight "{name}" not found in project "{project}"')


def _holders(resources: ProjectResources, everything: list[Freight], target: Freight) -> list[str]:
    """The workflows that hold a copy of ``target``: the Project (applied from a file) and
    the Warehouse of its origin (discovered or assembled there); one or both."""
    name = target.metadata.name
    applied = name in resources.freight
    copies = sum(1 for f in everything if f.metadata.name == name)
    holders = [project_workflow_id(resources.name)] if applied else []
    if copies > int(applied):
        holders.append(warehouse_workflow_id(resources.name, target.origin.name))
    return holders


async def _update(
    client: Client, workflow_id: str, update: str, change: BaseModel, result_type: type[T]
) -> T:
    """Send one holder its update: a refusal (a taken alias) is the step's failure, in the
    validator's words; a holder that is gone, the step's error."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        answer: T = await handle.execute_update(update, change, result_type=result_type)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        kind = error_class(cause.type) if isinstance(cause, ApplicationError) else None
        if kind is None or issubclass(kind, RequestRefused):
            raise StepError(message) from None  # Kargo's API refused the change: Failed
        raise kind(message) from None
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NotFoundError(f"workflow {workflow_id} is not running") from None
        raise
    return answer


def discovered_at(freight: Freight) -> datetime:
    """When a Warehouse made ``freight`` (the oldest possible time when unknown)."""
    return freight.discovered_at or datetime.min.replace(tzinfo=UTC)
