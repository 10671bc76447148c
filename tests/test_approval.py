"""Approval gates and abort: signals from the ``temporal`` CLI, updates from Freightline's CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from freightline.app.client import (
    abort_promotion,
    apply_project,
    decide_promotion,
    promote_in_stage,
    running_promotion,
    stage_states,
    start_promotion,
)
from freightline.app.devserver import temporal_binary
from freightline.contracts.promotion import (
    ApprovalMessage,
    PromotionPhase,
    PromotionResult,
    StepStatus,
)
from freightline.errors import FreightlineError
from freightline.kargo.resources import ProjectResources
from freightline.settings import load_settings
from sandbox.argocd import ArgoCDEmulator, Timing
from sandbox.gitops import branch_head
from tests.conftest import wait_for
from tests.pipelines import (
    freight_for,
    gated_at_test,
    project_of,
    quickstart_documents,
    up_to_push_documents,
    with_freight,
)
from tests.test_windows import current_details

pytestmark = pytest.mark.integration

PROJECT = "kargo-demo"


def gated(repo: Path, approval: dict[str, Any], *, argocd: bool = False) -> ProjectResources:
    """The quickstart with a ``wait-for-approval`` step before its task (and, unless ``argocd``,
    cut after git-push)."""
    documents = (
        [d for d in quickstart_documents(repo) if d["kind"] != "Secret"]
        if argocd
        else up_to_push_documents(repo)
    )
    for document in documents:
        if document["kind"] == "Stage":
            steps = document["spec"]["promotionTemplate"]["spec"]["steps"]
            steps.insert(0, {"uses": "wait-for-approval", "as": "change-board", "config": approval})
    return project_of(documents, "approval")


async def start(client: Client, resources: ProjectResources, tag: str) -> WorkflowHandle[Any, Any]:
    freight = freight_for(tag)
    await apply_project(client, with_freight(resources, freight))
    return await start_promotion(client, PROJECT, "test", freight.alias or "", requested_by="dev")


async def waiting_for_approval(handle: WorkflowHandle[Any, Any]) -> None:
    async def waiting() -> bool:
        return (await handle.query("status"))["approval"] is not None

    await wait_for(waiting, timeout=30)


async def failure(handle: WorkflowHandle[Any, Any]) -> tuple[str, PromotionResult]:
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError)
    (details,) = cause.details
    return cause.type or "", PromotionResult.model_validate(details)


def temporal_signal(client: Client, workflow_id: str, name: str, body: dict[str, str]) -> None:
    done = subprocess.run(
        [
            temporal_binary(),
            "workflow",
            "signal",
            "--address",
            client.service_client.config.target_host,
            "--workflow-id",
            workflow_id,
            "--name",
            name,
            "--input",
            json.dumps(body),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def freightline_cli(client: Client, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a thread: this test's worker shares its event loop and must keep going."""
    target = client.service_client.config.target_host
    env = {**os.environ, "TEMPORAL_ADDRESS": target, "COLUMNS": "500"}  # one line per message
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "freightline", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


async def test_approval_by_the_temporal_cli_after_an_unauthorised_one_is_ignored(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    handle = await start(client, gated(gitops_repo, {"approvers": ["alice", "bob"]}), "1.29.1")
    await waiting_for_approval(handle)

    temporal_signal(client, handle.id, "approve", {"user": "mallory", "comment": "ship it"})

    async def refused() -> bool:
        return bool((await handle.query("status"))["refused"])

    await wait_for(refused)
    status = await handle.query("status")
    assert status["approval"]["approvedBy"] == []  # still waiting
    assert '"mallory" may not approve step "change-board"' in status["refused"][0]["reason"]
    details = await current_details(handle)
    assert "ignored approve from mallory" in details and "waiting for approval" in details
    assert branch_head(gitops_repo, "stage/test") is None

    temporal_signal(client, handle.id, "approve", {"user": "alice", "comment": "lgtm"})
    result: PromotionResult = await handle.result()

    assert result.phase is PromotionPhase.SUCCEEDED
    (approval,) = result.approvals
    assert (approval.user, approval.decision, approval.comment) == ("alice", "approved", "lgtm")
    assert approval.step == "change-board"
    assert [r.user for r in result.refused] == ["mallory"]
    gate = {o.alias: o for o in result.steps}["change-board"]
    assert gate.status is StepStatus.SUCCEEDED and gate.outputs == {"approvedBy": ["alice"]}
    assert branch_head(gitops_repo, "stage/test") is not None


async def test_freightline_cli_two_approvers_and_refusals_with_reasons(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    policy = {"approvers": ["alice", "bob", "carol"], "required": 2}
    handle = await start(client, gated(gitops_repo, policy), "1.29.2")
    await waiting_for_approval(handle)

    refused = await freightline_cli(client, "approve-promotion", handle.id, "--user", "mallory")
    assert refused.returncode == 1
    assert '"mallory" may not approve step "change-board"' in refused.stderr
    assert "approvers: alice, bob, carol" in refused.stderr

    first = await freightline_cli(
        client, "approve-promotion", handle.id, "--user", "alice", "--comment", "tested"
    )
    assert first.returncode == 0, first.stderr
    assert "1 of 2 approvals (alice)" in first.stdout
    again = await freightline_cli(client, "approve-promotion", handle.id, "--user", "alice")
    assert again.returncode == 1 and '"alice" already approved' in again.stderr
    # The same person by signal does not count twice either.
    temporal_signal(client, handle.id, "approve", {"user": "alice"})

    async def two_refused() -> bool:
        return len((await handle.query("status"))["refused"]) == 1

    await wait_for(two_refused)
    assert (await handle.query("status"))["approval"]["approvedBy"] == ["alice"]

    second = await decide_promotion(client, handle.id, "approve", "bob", "ok")
    assert "2 of 2" in second
    result: PromotionResult = await handle.result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert [(a.user, a.comment) for a in result.approvals] == [("alice", "tested"), ("bob", "ok")]

    # Nothing is pending any more.
    late = await freightline_cli(client, "approve-promotion", handle.id, "--user", "carol")
    assert late.returncode == 1 and "no such running promotion" in late.stderr


async def test_a_waiting_promotion_says_how_to_approve_and_refusals_are_named(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    handle = await start(client, gated(gitops_repo, {"approvers": ["alice"]}), "1.29.7")
    await waiting_for_approval(handle)
    details = await current_details(handle)
    assert f"`freightline approve-promotion {handle.id} --user YOU --comment why`" in details

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            "approve_promotion", ApprovalMessage(user="mallory"), result_type=str
        )
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.non_retryable) == ("ApprovalRefused", True)
    assert '"mallory" may not approve step "change-board"' in cause.message

    # The temporal CLI command the details give, run as written (as alice), approves.
    shown = re.search(r"`(temporal workflow update execute [^`]+)`", details)
    assert shown is not None
    command = shlex.split(shown.group(1).replace("YOU", "alice"))
    target = client.service_client.config.target_host
    done = await asyncio.to_thread(
        subprocess.run,
        [temporal_binary(), *command[1:], "--address", target],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: PromotionResult = await handle.result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert [a.user for a in result.approvals] == ["alice"]
    assert "to approve" not in await current_details(handle)


async def test_rejection_fails_the_promotion_naming_who(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    handle = await start(client, gated(gitops_repo, {}), "1.29.3")
    await waiting_for_approval(handle)
    rejected = await freightline_cli(
        client, "reject-promotion", handle.id, "--user", "dana", "--comment", "not today"
    )
    assert rejected.returncode == 0, rejected.stderr

    kind, result = await failure(handle)

    assert kind == "PromotionFailed"
    assert result.phase is PromotionPhase.FAILED
    assert result.message == "rejected by dana: not today"
    assert result.failed_step == "change-board"
    assert [(a.user, a.decision) for a in result.approvals] == [("dana", "rejected")]
    assert branch_head(gitops_repo, "stage/test") is None


async def test_approval_timeout_fails_with_a_clear_message(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    handle = await start(client, gated(gitops_repo, {"required": 2, "timeout": "2s"}), "1.29.4")
    await waiting_for_approval(handle)
    await decide_promotion(client, handle.id, "approve", "erin")

    kind, result = await failure(handle)

    assert kind == "PromotionFailed"
    assert result.message == (
        'step "change-board": approval timed out after 2s with 1 of 2 approvals (erin)'
    )


async def test_stage_shorthand_and_abort_while_waiting_for_approval(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    resources = gated_at_test(gitops_repo, "shorthand")
    freight = freight_for("1.29.5")
    await apply_project(client, with_freight(resources, freight))
    ticket = await promote_in_stage(client, PROJECT, "test", freight.alias or "", "dev")

    async def running() -> bool:
        try:
            return await running_promotion(client, PROJECT, "test") == ticket.promotion
        except FreightlineError:
            return False

    await wait_for(running)
    handle = client.get_workflow_handle(ticket.promotion)
    await waiting_for_approval(handle)
    assert (await handle.query("status"))["approval"]["step"] == "approval"

    aborted = await freightline_cli(
        client, "abort", "--stage", "test", "-p", PROJECT, "--user", "ops", "--reason", "wrong"
    )
    assert aborted.returncode == 0, aborted.stderr

    kind, result = await failure(handle)
    assert kind == "PromotionAborted"
    assert result.phase is PromotionPhase.ABORTED
    assert result.aborted_by == "ops"
    assert result.message == "aborted by ops: wrong"

    async def recorded() -> bool:
        last = (await stage_states(client, PROJECT))[0].last_promotion
        return last is not None and last.phase == "Aborted"

    await wait_for(recorded)
    again = await freightline_cli(client, "abort", "--promotion", ticket.promotion)
    assert again.returncode == 1 and "nothing to abort" in again.stderr
    # Temporal says FAILED; the listing says how it ended.
    listed = await freightline_cli(client, "get", "promotions", "-p", PROJECT, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["id"] == ticket.promotion]
    assert (row["phase"], row["status"]) == ("Aborted", "FAILED")


# --- abort while an activity runs ------------------------------------------------------------------

TOKEN = "argocd-token-approval-tests"


@pytest.fixture
def slow_argocd(gitops_repo: Path) -> Iterator[ArgoCDEmulator]:
    """An Argo CD whose syncs take far longer than any test: argocd-update keeps waiting."""
    from tests.test_argocd_steps import APPSET

    emulator = ArgoCDEmulator(
        APPSET,
        TOKEN,
        variables={"GITOPS_REPO_URL": gitops_repo.as_uri()},
        timing=Timing(sync_duration=600, progressing_duration=0, reconcile_interval=0),
    )
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


async def test_abort_cancels_a_running_argocd_activity_and_awaits_it(
    client: Client,
    task_queue: str,
    gitops_repo: Path,
    slow_argocd: ArgoCDEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker import build_worker

    monkeypatch.setenv("ARGOCD_SERVER", slow_argocd.base_url)
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", TOKEN)
    async with build_worker(client, load_settings(), queue=task_queue):
        handle = await start(client, gated(gitops_repo, {}, argocd=True), "1.29.6")
        await waiting_for_approval(handle)
        await decide_promotion(client, handle.id, "approve", "alice")

        async def syncing() -> bool:
            return "waiting for Argo CD" in (await handle.query("status"))["current"]

        await wait_for(syncing, timeout=60)
        pushed = branch_head(gitops_repo, "stage/test")
        assert pushed is not None  # the worktree activity completed before the abort
        await abort_promotion(client, handle.id, "ops", "sync hangs")

        kind, result = await failure(handle)

    assert kind == "PromotionAborted"
    assert result.aborted_by == "ops" and result.failed_step == "promo-process::step-6"
    # git stays at the last completed step's push; the sync Argo CD started is not undone.
    assert branch_head(gitops_repo, "stage/test") == pushed
    assert [o.status for o in result.steps if o.uses == "git-push"] == [StepStatus.SUCCEEDED]
    assert not any(o.uses == "argocd-update" for o in result.steps)
    events = (await handle.fetch_history()).to_json_dict()["events"]
    kinds = [e["eventType"] for e in events]
    assert "EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED" in kinds
    assert "EVENT_TYPE_ACTIVITY_TASK_CANCELED" in kinds  # the cancellation was awaited
