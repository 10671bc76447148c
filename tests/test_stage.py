"""Stage workflows: auto-promotion through test → uat → prod, queueing, approve, re-apply."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from freightline.app.client import (
    apply_project,
    approve_freight,
    delete_resource,
    project_resources,
    promote_in_stage,
    stage_states,
)
from freightline.contracts.argocd import HealthState
from freightline.contracts.names import project_workflow_id, stage_workflow_id
from freightline.contracts.project import DeleteRequest
from freightline.contracts.stage import StageState
from freightline.contracts.stage_requests import PromoteRequest
from freightline.errors import ConfigError, FreightlineError
from sandbox.gitops import commit_count, show_file
from tests.conftest import wait_for
from tests.pipelines import IMAGE, freight_for, quickstart_auto, with_freight

pytestmark = pytest.mark.integration

PROJECT = "kargo-demo"


async def states(client: Client) -> dict[str, StageState]:
    return {s.name: s for s in await stage_states(client, PROJECT)}


async def current_freight(client: Client) -> dict[str, str | None]:
    return {
        name: (state.current.freight if state.current else None)
        for name, state in (await states(client)).items()
    }


async def test_auto_promotion_flows_freight_through_every_stage_in_order(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.1")
    await apply_project(client, with_freight(quickstart_auto(gitops_repo), freight))

    async def everywhere() -> bool:
        return set((await current_freight(client)).values()) == {freight.metadata.name}

    await wait_for(everywhere, timeout=60)
    by_stage = await states(client)
    promoted = [by_stage[s].history[0].promoted_at for s in ("test", "uat", "prod")]
    assert promoted == sorted(promoted)
    for stage in ("test", "uat", "prod"):
        rendered = show_file(gitops_repo, f"stage/{stage}", "deployment-kargo-demo.yaml")
        assert f"{IMAGE}:1.29.1" in rendered
        assert by_stage[stage].history[0].verified
        assert by_stage[stage].history[0].versions == ("nginx:1.29.1",)
        # No Argo CD step, no health checks: Healthy, as Kargo says.
        assert by_stage[stage].health is HealthState.HEALTHY, stage

    # The status view shows the same, one row per Stage, upstream first.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "freightline",
        "status",
        "-p",
        PROJECT,
        env={
            **os.environ,
            "TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "COLUMNS": "200",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    table = stdout.decode()
    rows = [line for line in table.splitlines() if freight.alias and freight.alias in line]
    assert [row.split()[1] for row in rows] == ["test", "uat", "prod"]
    assert all("nginx:1.29.1" in row and "Healthy" in row for row in rows)

    # The scriptable view: `get stages -o json` is what each Stage workflow holds.
    listing = {s["name"]: s for s in json.loads(await cli(client, "get", "stages", "-o", "json"))}
    assert list(listing) == sorted(by_stage)
    for name, state in by_stage.items():
        status = listing[name]["status"]
        current = state.current
        assert current is not None
        assert status["currentFreight"]["freight"] == current.freight == freight.metadata.name
        assert status["currentFreight"]["freightAlias"] == freight.alias
        assert datetime.fromisoformat(status["currentFreight"]["promotedAt"]) == current.promoted_at
        assert status["currentFreight"]["verified"] is True
        assert status["health"] == "Healthy" and status["running"] is None
        assert status["lastVerification"]["phase"] == "Successful"
        assert status["lastPromotion"]["phase"] == "Succeeded"
        assert status["lastPromotion"]["promotion"] == current.promotion
        assert listing[name]["spec"]["requestedFreight"][0]["origin"]["name"] == "kargo-demo"
    promotions = json.loads(await cli(client, "get", "promotions", "-o", "json"))
    ours = {p["id"]: p for p in promotions if p["project"] == PROJECT}
    for state in by_stage.values():
        assert state.current is not None
        row = ours[state.current.promotion]
        assert (row["phase"], row["status"], row["stage"], row["freight"]) == (
            "Succeeded",
            "COMPLETED",
            state.name,
            freight.metadata.name,
        )
        assert datetime.fromisoformat(row["closed"]) >= datetime.fromisoformat(row["started"])
        assert row["runId"]


async def cli(client: Client, *args: str) -> str:
    """Run ``freightline ARGS -p kargo-demo`` in a subprocess; its stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "freightline",
        *args,
        "-p",
        PROJECT,
        env={**os.environ, "TEMPORAL_ADDRESS": client.service_client.config.target_host},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_manual_promotion_needs_available_freight_and_queues(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    first, second = freight_for("1.29.1"), freight_for("1.29.2")
    await apply_project(
        client, with_freight(quickstart_auto(gitops_repo, auto=False), first, second)
    )

    with pytest.raises(FreightlineError, match="must be verified in one of test first"):
        await promote_in_stage(client, PROJECT, "uat", first.alias or "", "alice")
    with pytest.raises(
        FreightlineError, match='"no-such-freight" is not available to Stage "test"'
    ):
        await promote_in_stage(client, PROJECT, "test", "no-such-freight", "alice")

    one = await promote_in_stage(client, PROJECT, "test", first.alias or "", "alice")
    two = await promote_in_stage(client, PROJECT, "test", second.metadata.name, "bob")
    assert one.promotion != two.promotion

    async def both_done() -> bool:
        state = (await states(client))["test"]
        return len(state.history) == 2

    await wait_for(both_done, timeout=60)
    test = (await states(client))["test"]
    assert [h.freight for h in test.history] == [second.metadata.name, first.metadata.name]
    assert test.queue == [] and test.running is None
    assert commit_count(gitops_repo, "stage/test") == 2

    # Verified in test, so now available to uat.
    ticket = await promote_in_stage(client, PROJECT, "uat", first.alias or "", "alice")
    assert ticket.freight == first.metadata.name


async def test_approve_makes_freight_available_without_verification(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    freight = freight_for("1.30.0")
    await apply_project(client, with_freight(quickstart_auto(gitops_repo, auto=False), freight))
    with pytest.raises(FreightlineError):
        await promote_in_stage(client, PROJECT, "prod", freight.alias or "", "alice")

    await approve_freight(client, PROJECT, "prod", freight.alias or "", "carol")
    await promote_in_stage(client, PROJECT, "prod", freight.alias or "", "alice")

    async def in_prod() -> bool:
        return (await current_freight(client))["prod"] == freight.metadata.name

    await wait_for(in_prod, timeout=60)


async def test_reapplying_the_same_file_changes_nothing(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    resources = quickstart_auto(gitops_repo, auto=False)
    await apply_project(client, resources)
    lengths = {}
    for stage in ("test", "uat", "prod"):
        handle = client.get_workflow_handle(stage_workflow_id(PROJECT, stage))
        lengths[stage] = (await handle.describe()).raw_info.history_length

    result = await apply_project(client, resources)

    assert result.created == () and result.updated == ()
    for stage in ("test", "uat", "prod"):
        handle = client.get_workflow_handle(stage_workflow_id(PROJECT, stage))
        assert (await handle.describe()).raw_info.history_length == lengths[stage]


async def test_refusals_carry_a_named_non_retryable_type(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    await apply_project(client, quickstart_auto(gitops_repo, auto=False))
    stage = client.get_workflow_handle(stage_workflow_id(PROJECT, "test"))
    project = client.get_workflow_handle(project_workflow_id(PROJECT))
    refusals = [
        (stage, "promote", PromoteRequest(freight="nope", requested_by="a"), "RequestRefused"),
        (stage, "verify", "alice", "RequestRefused"),
        (stage, "abort_verification", "alice", "RequestRefused"),
        (project, "delete", DeleteRequest(kind="Stage", name="uat", user="a"), "ConfigError"),
        (project, "delete", DeleteRequest(kind="Nope", name="uat", user="a"), "ConfigError"),
    ]
    for handle, update, arg, kind in refusals:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(update, arg, result_type=str)
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError), (update, cause)
        assert (update, cause.type, cause.non_retryable) == (update, kind, True)
        assert "\n" not in cause.message


async def test_deleting_a_stage_is_refused_while_used_then_removes_it(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    await apply_project(client, quickstart_auto(gitops_repo, auto=False))
    with pytest.raises(ConfigError, match='Stage "uat" is still in use'):
        await delete_resource(client, PROJECT, "Stage", "uat", "alice")

    assert await delete_resource(client, PROJECT, "Stage", "prod", "alice") == "Stage/prod deleted"

    assert "prod" not in (await project_resources(client, PROJECT)).stages
    handle = client.get_workflow_handle(stage_workflow_id(PROJECT, "prod"))

    async def ended() -> bool:  # retired by the Project workflow, not terminated
        return (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED

    await wait_for(ended)
    assert [s.name for s in await stage_states(client, PROJECT)] == ["test", "uat"]
