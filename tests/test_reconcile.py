"""The Project workflow reconciles its Stages and Warehouses itself, and retires them gracefully.

A caller killed right after its apply was accepted changes nothing about the
outcome; deleting a Stage lets its running promotion reach a safe point
(a clone-to-push activity is never cancelled) before the workflow ends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.project import ProjectActivities
from freightline.app.client import (
    apply_project,
    delete_resource,
    promote_in_stage,
    running_promotion,
)
from freightline.contracts.names import (
    project_workflow_id,
    stage_workflow_id,
    warehouse_workflow_id,
)
from freightline.contracts.project import ProjectState, stage_configs, warehouse_configs
from freightline.contracts.promotion import (
    PromotionPhase,
    PromotionResult,
    StepOutcome,
    StepStatus,
    WorktreeBatch,
)
from freightline.contracts.stage import StageConfig
from freightline.contracts.warehouse import WarehouseConfig
from freightline.errors import ConfigError, FreightlineError
from freightline.kargo.config import group_by_project, load_text
from freightline.settings import load_settings
from tests.conftest import wait_for
from tests.pipelines import (
    dump,
    freight_for,
    quickstart_auto,
    quickstart_documents,
    single_stage_project,
    with_freight,
)
from worker import WORKFLOWS, build_worker

pytestmark = pytest.mark.integration

PROJECT = "kargo-demo"


async def _status(client: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    try:
        return (await client.get_workflow_handle(workflow_id).describe()).status
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return None
        raise


async def _accepted(client: Client, workflow_id: str) -> bool:
    # The session's server may hold ended runs of this ID from other tests: only a running
    # one is this test's.
    if await _status(client, workflow_id) is not WorkflowExecutionStatus.RUNNING:
        return False
    handle = client.get_workflow_handle(workflow_id)
    types = [event.event_type async for event in handle.fetch_history_events()]
    return EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED in types


async def test_apply_converges_though_the_cli_is_killed_right_after_its_update_is_accepted(
    client: Client, task_queue: str, gitops_repo: Path, tmp_path: Path
) -> None:
    documents = [d for d in quickstart_documents(gitops_repo) if d["kind"] != "Secret"]
    file = tmp_path / "kargo.yaml"
    file.write_text(dump(documents))
    expected = quickstart_auto(gitops_repo, auto=False)
    # Workflows only: the Project accepts the update, but nobody runs its reconcile yet.
    async with Worker(client, task_queue=task_queue, workflows=WORKFLOWS):
        cli = subprocess.Popen(
            [sys.executable, "-m", "freightline", "apply", "-f", str(file)],
            env={**os.environ, "TEMPORAL_ADDRESS": client.service_client.config.target_host},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_for(lambda: _accepted(client, project_workflow_id(PROJECT)), timeout=60)
        finally:
            cli.send_signal(signal.SIGKILL)
            await asyncio.to_thread(cli.wait)
        assert cli.returncode == -signal.SIGKILL
        for stage in ("test", "uat", "prod"):
            status = await _status(client, stage_workflow_id(PROJECT, stage))
            assert status is not WorkflowExecutionStatus.RUNNING

    async with build_worker(client, load_settings(), queue=task_queue):

        async def converged() -> bool:
            for name, config in stage_configs(expected).items():
                handle = client.get_workflow_handle(stage_workflow_id(PROJECT, name))
                if await _status(client, handle.id) is not WorkflowExecutionStatus.RUNNING:
                    return False
                if await handle.query("config", result_type=StageConfig) != config:
                    return False
            for name, wconfig in warehouse_configs(expected).items():
                handle = client.get_workflow_handle(warehouse_workflow_id(PROJECT, name))
                if await _status(client, handle.id) is not WorkflowExecutionStatus.RUNNING:
                    return False
                if await handle.query("config", result_type=WarehouseConfig) != wconfig:
                    return False
            return True

        await wait_for(converged, timeout=60)
        project = client.get_workflow_handle(project_workflow_id(PROJECT))

        async def recorded() -> bool:  # the reconcile's result reaches the Project after
            state: ProjectState = await project.query("status", result_type=ProjectState)
            return state.reconciled == 1

        await wait_for(recorded, timeout=30)
        state = await project.query("status", result_type=ProjectState)
        assert state.generation == 1


class _HeldWorktree:
    """A stand-in for the clone-to-push activity that holds until released, so a delete can
    arrive while it runs; it records whether it was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    @activity.defn(name="run_worktree_steps")
    async def run(self, batch: WorktreeBatch) -> list[StepOutcome]:
        self.started.set()
        try:
            while not self.release.is_set():
                activity.heartbeat()
                await asyncio.wait_for(self.release.wait(), timeout=1)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        except TimeoutError:
            pass
        return [
            StepOutcome(
                alias=batch.plan.steps[i].alias,
                uses=batch.plan.steps[i].uses,
                status=StepStatus.SUCCEEDED,
            )
            for i in batch.step_indexes
        ]


async def test_deleting_a_stage_lets_its_running_push_finish_then_aborts_and_ends_it(
    client: Client, task_queue: str, gitops_repo: Path
) -> None:
    steps: list[dict[str, Any]] = [
        {
            "uses": "git-clone",
            "config": {"repoURL": "REPO_URL", "checkout": [{"branch": "main", "path": "./out"}]},
        },
        {"uses": "wait-for-approval", "as": "board", "config": {}},
    ]
    freight = freight_for("1.29.5")
    resources = with_freight(single_stage_project(gitops_repo, steps), freight)
    held = _HeldWorktree()
    project = ProjectActivities(client)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[project.resolve_promotion, project.reconcile_project, held.run],
    ):
        await apply_project(client, resources)
        ticket = await promote_in_stage(client, "p", "test", freight.alias or "", "dev")
        await asyncio.wait_for(held.started.wait(), timeout=30)

        answer = await delete_resource(client, "p", "Stage", "test", "alice")

        assert answer == "Stage/test deleted"
        promotion = client.get_workflow_handle(ticket.promotion)
        assert await _status(client, promotion.id) is WorkflowExecutionStatus.RUNNING
        assert not held.cancelled
        held.release.set()
        with pytest.raises(WorkflowFailureError) as caught:
            await promotion.result()
        cause = caught.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "PromotionAborted"
        result = PromotionResult.model_validate(cause.details[0])
        assert result.phase is PromotionPhase.ABORTED
        assert "deleted from project p" in result.message
        assert [s.status for s in result.steps][:1] == [StepStatus.SUCCEEDED]
        assert not held.cancelled

        stage = stage_workflow_id("p", "test")

        async def ended() -> bool:
            return await _status(client, stage) is WorkflowExecutionStatus.COMPLETED

        await wait_for(ended, timeout=30)
        with pytest.raises(FreightlineError):
            await running_promotion(client, "p", "test")


async def test_a_configuration_over_temporals_message_limit_is_refused_before_sending(
    client: Client, task_queue: str
) -> None:
    # Built in code, past the loader's limits: the client's own check is the last guard.
    name = f"huge-{task_queue}"
    (resources,) = group_by_project(
        load_text(
            dump(
                [
                    {
                        "apiVersion": "kargo.akuity.io/v1alpha1",
                        "kind": "Project",
                        "metadata": {"name": name},
                    }
                ]
            )
        )
    ).values()
    assert resources.project is not None
    annotations = {f"a{i}": "x" * 60_000 for i in range(40)}  # about 2.4 MB
    metadata = resources.project.metadata.model_copy(update={"annotations": annotations})
    huge = resources.model_copy(
        update={"project": resources.project.model_copy(update={"metadata": metadata})}
    )
    with pytest.raises(
        ConfigError, match=r"over the limit of 2 MiB \(Temporal's default limit per payload"
    ):
        await apply_project(client, huge)
    with pytest.raises(RPCError) as missing:  # nothing was sent: no Project workflow
        await client.get_workflow_handle(project_workflow_id(name)).describe()
    assert missing.value.status is RPCStatusCode.NOT_FOUND
