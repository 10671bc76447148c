"""Client-side operations the CLI (and any Python caller) uses: apply, promote, read."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.project import cluster_resources, discovered_at, narrow_query, warehouse_freight
from freightline.contracts.approvals import sign_approval
from freightline.contracts.cluster import ClusterDelete, ClusterState
from freightline.contracts.names import (
    APPLIED_FREIGHT_QUERY,
    ASSEMBLE_UPDATE,
    CLUSTER_WORKFLOW,
    CLUSTER_WORKFLOW_ID,
    PROJECT_WORKFLOW,
    PROMOTION_WORKFLOW,
    REFRESH_SIGNAL,
    SA_FREIGHT,
    SA_PROJECT,
    SA_STAGE,
    project_workflow_id,
    promotion_workflow_id,
    stage_workflow_id,
    task_queue,
    warehouse_workflow_id,
)
from freightline.contracts.project import ApplyResult, DeleteRequest, ProjectState
from freightline.contracts.promotion import (
    AbortMessage,
    ApprovalMessage,
    PromotionPhase,
    PromotionRequest,
    PromotionResult,
    PromotionStatus,
    ended_phase,
    find_freight,
)
from freightline.contracts.stage import PromotionTicket, StageState, freight_details
from freightline.contracts.stage_requests import ApproveRequest, PromoteRequest
from freightline.contracts.warehouse import AssembleRequest, WarehouseStatus
from freightline.errors import ConfigError, FreightlineError, NotFoundError
from freightline.kargo.config import ProjectResources, missing_cluster_templates
from freightline.kargo.resources import CLUSTER_KINDS, ClusterResources, Freight

ACCEPT_TIMEOUT = timedelta(seconds=30)
"""How long an apply or delete waits for a worker to accept it."""
T = TypeVar("T")


async def apply_project(client: Client, resources: ProjectResources) -> ApplyResult:
    """Apply resources to the project's workflow (created if needed), in one update.

    Once the update is accepted the Project workflow owns the outcome: it brings
    every Stage and Warehouse workflow to the new configuration itself, so a caller
    that dies while waiting for the answer changes nothing. The answer comes when
    they hold it (``reconciled``) or after the workflow's answer deadline.
    """
    await _check_message_size(client, resources)
    start: WithStartWorkflowOperation[Any, None] = WithStartWorkflowOperation(
        PROJECT_WORKFLOW,
        ProjectState(resources=ProjectResources(name=resources.name)),
        id=project_workflow_id(resources.name),
        task_queue=task_queue(),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([SearchAttributePair(SA_PROJECT, resources.name)]),
        static_summary=f"project `{resources.name}`: configuration",
    )
    return await _apply_with_start(client, start, resources)


async def apply_cluster(client: Client, resources: ClusterResources) -> ApplyResult:
    """Apply cluster-scoped resources (ClusterAnalysisTemplates) to the Cluster workflow.

    Every running project is then asked to reconcile, so the Stages that name a changed
    template hold the new one for their next verification."""
    start: WithStartWorkflowOperation[Any, None] = WithStartWorkflowOperation(
        CLUSTER_WORKFLOW,
        ClusterState(),
        id=CLUSTER_WORKFLOW_ID,
        task_queue=task_queue(),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary="cluster-scoped configuration",
    )
    return await _apply_with_start(client, start, resources)


async def apply_everything(
    client: Client, cluster: ClusterResources, projects: Sequence[ProjectResources]
) -> list[ApplyResult]:
    """Apply a file's cluster-scoped resources, then its projects.

    Checked first, before anything is sent: every ClusterAnalysisTemplate a Stage names is
    applied already or among ``cluster``."""
    named = [
        group for group in projects if missing_cluster_templates(group, cluster.analysis_templates)
    ]
    if named:  # only then ask the cluster what it holds
        known = {*(await cluster_resources(client)).analysis_templates, *cluster.analysis_templates}
        problems = [line for group in named for line in missing_cluster_templates(group, known)]
        if problems:
            raise ConfigError("\n".join(problems))
    shared = cluster.analysis_templates or cluster.cluster_config is not None
    results = [await apply_cluster(client, cluster)] if shared else []
    for group in projects:
        results.append(await apply_project(client, group))
    return results


async def _apply_with_start(
    client: Client, start: WithStartWorkflowOperation[Any, None], resources: BaseModel
) -> ApplyResult:
    try:
        handle = await client.start_update_with_start_workflow(
            "apply",
            resources,
            start_workflow_operation=start,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=ApplyResult,
            rpc_timeout=ACCEPT_TIMEOUT,
        )
        result: ApplyResult = await handle.result()
    except RPCError as err:
        if err.status is RPCStatusCode.DEADLINE_EXCEEDED:
            raise FreightlineError(_no_worker(task_queue())) from None
        raise
    except WorkflowUpdateFailedError as err:
        raise ConfigError(_update_refusal(err)) from None
    return result


MAX_PAYLOAD_BYTES = 2 << 20
"""Temporal's default limit for one payload (``limit.blobSize.error``: 2 MiB), below its
gRPC limit of 4 MiB per message: an apply's resources travel as one payload."""


async def _check_message_size(client: Client, resources: ProjectResources) -> None:
    """Refuse, before sending, a configuration over Temporal's limit for one payload.

    ``apply`` refuses a file over its own limit; a file under it (or YAML aliases
    expanding a smaller one) can still be over this one, and Temporal would answer
    with a raw error.
    """
    (payload,) = await client.data_converter.encode([resources])
    size = payload.ByteSize()
    if size > MAX_PAYLOAD_BYTES:
        raise ConfigError(
            f'project "{resources.name}": its configuration is {size} bytes as sent, over the '
            f"limit of {MAX_PAYLOAD_BYTES >> 20} MiB (Temporal's default limit per payload); "
            "apply it in several files"
        )


def _no_worker(queue: str) -> str:
    return (
        f'no worker answered within {ACCEPT_TIMEOUT.seconds}s on task queue "{queue}": '
        "start one with `freightline worker` (or `freightline dev`)"
    )


async def delete_resource(client: Client, project: str, kind: str, name: str, user: str) -> str:
    """Remove a Stage, Warehouse, PromotionTask, AnalysisTemplate or Freight from a project
    (or a ClusterAnalysisTemplate from the cluster: ``project`` is then not used).

    The Project workflow refuses while other resources still reference it. It
    retires a deleted Stage's or Warehouse's workflow itself, gracefully: a
    running promotion stops at its next safe point (never mid-push), then the
    workflow ends.
    """
    cluster = kind in CLUSTER_KINDS
    handle = client.get_workflow_handle(
        CLUSTER_WORKFLOW_ID if cluster else project_workflow_id(project)
    )
    request = (
        ClusterDelete(kind=kind, name=name)
        if cluster
        else DeleteRequest(kind=kind, name=name, user=user)
    )
    try:
        update = await handle.start_update(
            "delete",
            request,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=str,
            rpc_timeout=ACCEPT_TIMEOUT,
        )
        answer: str = await update.result()
    except WorkflowUpdateFailedError as err:
        raise ConfigError(_update_refusal(err)) from None
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            what = (
                "no cluster-scoped resource is applied"
                if cluster
                else f'project "{project}" does not exist'
            )
            raise NotFoundError(what) from None
        if err.status is RPCStatusCode.DEADLINE_EXCEEDED:
            raise FreightlineError(_no_worker(task_queue())) from None
        raise
    return answer


async def project_resources(client: Client, project: str) -> ProjectResources:
    """The project's configuration as its workflow holds it."""
    handle = client.get_workflow_handle(project_workflow_id(project))
    resources: ProjectResources = await handle.query("resources", result_type=ProjectResources)
    return resources


async def applied_freight(client: Client, project: str, freight: str) -> Freight:
    """The project's applied Freight with this ID or alias (asks the Project workflow for
    that one only, not the whole configuration), or NotFoundError."""
    handle = client.get_workflow_handle(project_workflow_id(project))

    async def every() -> list[Freight]:
        resources = await handle.query("resources", result_type=ProjectResources)
        return list(resources.freight.values())

    found = await narrow_query(handle, APPLIED_FREIGHT_QUERY, list[Freight], every, [freight])
    # An ID wins over another Freight's alias, as in find_freight.
    return find_freight(
        ProjectResources(name=project, freight={f.metadata.name: f for f in found}), freight
    )


async def start_promotion(
    client: Client,
    project: str,
    stage: str,
    freight: str,
    *,
    requested_by: str | None = None,
    eager: bool = True,
) -> WorkflowHandle[object, PromotionResult]:
    """Start a ``Promotion`` workflow for Freight (ID or alias) into a Stage.

    ``eager``: when this client is also a worker's (the web UI served by a worker), the
    server hands the first workflow task back with the start's answer, saving a poll
    round trip (``bench/eager_start.py``); for any other client it changes nothing.
    """
    target = await applied_freight(client, project, freight)
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
        static_details=freight_details(target),
        request_eager_start=eager,
    )
    return handle


async def list_promotions(
    client: Client, project: str | None = None, stage: str | None = None, limit: int = 50
) -> Sequence[dict[str, Any]]:
    """Recent promotions, newest first, from Temporal's visibility store: ``id``, ``runId``,
    ``phase`` (Freightline's: Running, Succeeded, Failed, Errored, Aborted), ``status``
    (Temporal's: RUNNING, COMPLETED, FAILED, ...), ``project``, ``stage``, ``freight`` (the
    full ID), ``started`` and ``closed`` (datetimes; ``closed`` None while running)."""
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
                "runId": execution.run_id,
                "phase": await _promotion_phase(client, execution),
                "status": execution.status.name if execution.status else None,
                "project": attributes.get(SA_PROJECT),
                "stage": attributes.get(SA_STAGE),
                "freight": attributes.get(SA_FREIGHT),
                "started": execution.start_time,
                "closed": execution.close_time,
            }
        )
    return rows


async def list_projects(client: Client) -> list[str]:
    """The projects with a running configuration workflow, by name."""
    query = f"WorkflowType = '{PROJECT_WORKFLOW}' AND ExecutionStatus = 'Running'"
    names = set()
    async for execution in client.list_workflows(query):
        name = execution.typed_search_attributes.get(SA_PROJECT)
        names.add(name or execution.id.removeprefix("project:"))
    return sorted(names)


async def promotion_status(
    client: Client, promotion: str
) -> tuple[WorkflowExecutionDescription, PromotionStatus | None]:
    """One promotion: its execution (status, times, search attributes) and its ``status``
    query (steps, outputs, approvals; None when no worker can answer it now)."""
    handle = client.get_workflow_handle(promotion)
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NotFoundError(f'no promotion "{promotion}"') from None
        raise
    try:
        status: PromotionStatus | None = await handle.query("status", result_type=PromotionStatus)
    except (RPCError, WorkflowQueryFailedError):
        status = None
    return description, status


async def promotion_request(client: Client, promotion: str) -> PromotionRequest | None:
    """What a promotion was started with (who asked, which Freight): its first history event's
    input; None when the history does not begin with one (or the workflow is gone)."""
    handle = client.get_workflow_handle(promotion)
    try:
        async for event in handle.fetch_history_events():
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            if not payloads:
                return None
            (request,) = await client.data_converter.decode(
                payloads[:1], type_hints=[PromotionRequest]
            )
            return request if isinstance(request, PromotionRequest) else None
    except RPCError:
        return None
    return None


async def _promotion_phase(client: Client, execution: WorkflowExecution) -> str:
    """How a promotion ended, in Freightline's words. Temporal's status says FAILED for
    Failed, Errored and Aborted alike; the failure's type tells them apart (one read of a
    closed run's result). A run that could not end on its own (terminated, timed out)
    counts as Errored, as its Stage records it."""
    status = execution.status
    if status is WorkflowExecutionStatus.RUNNING:
        return PromotionPhase.RUNNING.value
    if status is WorkflowExecutionStatus.COMPLETED:
        return PromotionPhase.SUCCEEDED.value
    if status is WorkflowExecutionStatus.FAILED:
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        try:
            await handle.result(follow_runs=False)
        except WorkflowFailureError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                phase = ended_phase(cause.type)
                if phase is not None:
                    return phase.value
    return PromotionPhase.ERRORED.value


# --- Stages -------------------------------------------------------------------------------------


async def promote_in_stage(
    client: Client,
    project: str,
    stage: str,
    freight: str,
    requested_by: str,
    *,
    override_windows: bool = False,
) -> PromotionTicket:
    """Queue a promotion through the Stage workflow (refused with the reason if not available)."""
    request = PromoteRequest(
        freight=freight, requested_by=requested_by, override_windows=override_windows
    )
    return await _update_stage(client, project, stage, "promote", request, PromotionTicket)


async def _update_stage(
    client: Client, project: str, stage: str, update: str, arg: object, result_type: type[T]
) -> T:
    """Send a Stage workflow an update; a refusal or a missing Stage is one clear error."""
    handle = client.get_workflow_handle(stage_workflow_id(project, stage))
    try:
        answer: T = await handle.execute_update(update, arg, result_type=result_type)
    except WorkflowUpdateFailedError as err:
        raise FreightlineError(_update_refusal(err)) from None
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NotFoundError(f'project "{project}" has no Stage "{stage}"') from None
        raise
    return answer


def _update_refusal(err: WorkflowUpdateFailedError) -> str:
    """The validator's own message, without the exception type the SDK prefixes."""
    cause = err.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or err)


async def approve_freight(client: Client, project: str, stage: str, freight: str, user: str) -> str:
    """Kargo's approve: make Freight (ID or alias) available to a Stage without verification."""
    target = await find_project_freight(client, project, freight)
    return await _update_stage(
        client, project, stage, "approve", ApproveRequest(freight=target, user=user), str
    )


async def stage_update(client: Client, project: str, stage: str, update: str, arg: str) -> str:
    """Send a Stage a one-argument update (``verify``, ``abort_verification``); its answer."""
    return await _update_stage(client, project, stage, update, arg, str)


async def decide_promotion(
    client: Client,
    promotion: str,
    decision: str,
    user: str,
    comment: str = "",
    *,
    signing_key: str | None = None,
) -> str:
    """Approve or reject a waiting promotion (``decision``: approve or reject) through its
    update, so a refusal comes back with the validator's reason. With ``signing_key`` (the web
    UI's, for the user it authenticated) the decision is signed, as a project with
    ``approvalKeys`` requires (``freightline.contracts.approvals``)."""
    handle = client.get_workflow_handle(promotion)
    message = ApprovalMessage(user=user, comment=comment)
    if signing_key:
        message = sign_approval(signing_key, promotion, decision, message, datetime.now(UTC))
    try:
        answer: str = await handle.execute_update(f"{decision}_promotion", message, result_type=str)
    except WorkflowUpdateFailedError as err:
        raise FreightlineError(f"promotion {promotion}: {_update_refusal(err)}") from None
    except RPCError as err:
        raise FreightlineError(f"promotion {promotion}: {_promotion_gone(err)}") from None
    return answer


async def abort_promotion(client: Client, promotion: str, user: str, reason: str = "") -> str:
    """Send a running promotion the ``abort`` signal."""
    handle = client.get_workflow_handle(promotion)
    try:
        status = (await handle.describe()).status
        if status is not WorkflowExecutionStatus.RUNNING:
            name = status.name.lower() if status else "not running"
            raise FreightlineError(f"promotion {promotion} is {name}: nothing to abort")
        await handle.signal("abort", AbortMessage(user=user, reason=reason))
    except RPCError as err:
        raise FreightlineError(f"promotion {promotion}: {_promotion_gone(err)}") from None
    return f"abort of {promotion} requested by {user}"


async def running_promotion(client: Client, project: str, stage: str) -> str:
    """The ID of the promotion a Stage is running (from its ``status`` query)."""
    handle = client.get_workflow_handle(stage_workflow_id(project, stage))
    try:
        state: StageState = await handle.query("status", result_type=StageState)
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NotFoundError(f'project "{project}" has no Stage "{stage}"') from None
        raise
    if state.running is None:
        raise FreightlineError(f'Stage "{stage}" has no running promotion')
    return state.running.promotion


def _promotion_gone(err: RPCError) -> str:
    if err.status is RPCStatusCode.NOT_FOUND:
        return "no such running promotion (it finished, or the ID is wrong)"
    return err.message


async def find_project_freight(client: Client, project: str, freight: str) -> Freight:
    """Freight by ID or alias, from what was applied or what the project's Stages know."""
    resources = await project_resources(client, project)
    try:
        return find_freight(resources, freight)
    except NotFoundError:
        pass
    for state in await stage_states(client, project):
        for entry in state.available.values():
            if freight in (entry.freight.metadata.name, entry.freight.alias):
                return entry.freight
    for candidate in await warehouse_freight(client, resources, [freight]):
        if freight in (candidate.metadata.name, candidate.alias):
            return candidate
    raise NotFoundError(f'project "{project}" has no Freight with ID or alias "{freight}"')


async def stage_states(client: Client, project: str) -> list[StageState]:
    """Every Stage workflow's state, in the project's Stage order (upstream first)."""
    resources = await project_resources(client, project)
    states = []
    for name in pipeline_order(resources):
        handle = client.get_workflow_handle(stage_workflow_id(project, name))
        try:
            states.append(await handle.query("status", result_type=StageState))
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
    return states


async def running_notes(client: Client, states: Sequence[StageState]) -> dict[str, str]:
    """What each Stage's running promotion is doing now ("waiting for approval", a step, ...)."""
    notes = {}
    for state in states:
        if state.running is None:
            continue
        try:
            status = await client.get_workflow_handle(state.running.promotion).query(
                "status", result_type=PromotionStatus
            )
        except RPCError:
            continue  # not started yet, or already finished
        if status.approval is not None:
            approval = status.approval
            who = ", ".join(approval.approvers) if approval.approvers else "anyone"
            notes[state.name] = (
                f"waiting for approval ({len(approval.approved_by)} of {approval.required}; "
                f"approvers: {who})"
            )
        elif status.pull_request is not None:
            notes[state.name] = status.pull_request.summary()
        elif status.waiting_for_window:
            notes[state.name] = f"waiting for a window: {status.waiting_for_window}"
        elif status.current:
            notes[state.name] = status.current
    return notes


def pipeline_order(resources: ProjectResources) -> list[str]:
    """Stages upstream-first (a topological order; ties by name)."""
    order: list[str] = []
    remaining = dict(resources.stages)
    while remaining:
        ready = sorted(
            name
            for name, stage in remaining.items()
            if all(
                upstream in order
                for request in stage.spec.requested_freight
                for upstream in request.sources.stages or ()
                if upstream in resources.stages
            )
        )
        if not ready:  # a cycle: config validation refuses these; show them anyway
            ready = sorted(remaining)
        for name in ready:
            order.append(name)
            del remaining[name]
    return order


# --- Warehouses ---------------------------------------------------------------------------------


async def project_freight(client: Client, project: str) -> list[Freight]:
    """All Freight of a project: its Warehouses' and the applied, newest first, no repeats."""
    resources = await project_resources(client, project)
    seen: dict[str, Freight] = {}
    for freight in [*await warehouse_freight(client, resources), *resources.freight.values()]:
        seen.setdefault(freight.metadata.name, freight)
    return sorted(seen.values(), key=discovered_at, reverse=True)


@contextlib.contextmanager
def _running_warehouse(project: str, warehouse: str) -> Iterator[None]:
    """Turn Temporal's NOT_FOUND for a Warehouse workflow into a NotFoundError that says so."""
    try:
        yield
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NotFoundError(
                f'project "{project}" has no running Warehouse "{warehouse}": '
                "`freightline apply -f FILE` starts it"
            ) from None
        raise


async def refresh_warehouse(client: Client, project: str, warehouse: str) -> None:
    """Ask a Warehouse to discover now (the ``refresh`` signal)."""
    handle = client.get_workflow_handle(warehouse_workflow_id(project, warehouse))
    with _running_warehouse(project, warehouse):
        await handle.signal(REFRESH_SIGNAL)


async def assemble_freight(
    client: Client, project: str, warehouse: str, picks: dict[str, str], user: str
) -> Freight:
    """Freight of a Warehouse's discovered artifacts (newest, or ``picks`` per repoURL).

    A bad pick is refused by the Warehouse's validator, with what there is to pick,
    and changes nothing.
    """
    handle = client.get_workflow_handle(warehouse_workflow_id(project, warehouse))
    with _running_warehouse(project, warehouse):
        try:
            freight: Freight = await handle.execute_update(
                ASSEMBLE_UPDATE, AssembleRequest(user=user, picks=picks), result_type=Freight
            )
        except WorkflowUpdateFailedError as err:
            raise FreightlineError(_update_refusal(err)) from None
    return freight


async def warehouse_statuses(client: Client, project: str) -> list[WarehouseStatus]:
    """Each Warehouse's ``status`` (last discovery, last error, counts), by name."""
    resources = await project_resources(client, project)
    statuses = []
    for name in sorted(resources.warehouses):
        handle = client.get_workflow_handle(warehouse_workflow_id(project, name))
        try:
            statuses.append(await handle.query("status", result_type=WarehouseStatus))
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
    return statuses
