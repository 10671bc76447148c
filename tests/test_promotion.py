"""The Promotion workflow end to end: real dev server, real bare repos, real kustomize."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from freightline.app.client import apply_project, start_promotion
from freightline.app.devserver import temporal_binary
from freightline.contracts.promotion import PromotionPhase, PromotionResult
from sandbox.gitops import branch_head, commit_count, git, show_file
from sandbox.workers import start_worker, worker_env
from tests.conftest import wait_for
from tests.crash_worker import crash_worker_args
from tests.pipelines import (
    IMAGE,
    freight_for,
    quickstart_up_to_push,
    single_stage_project,
    with_freight,
)

pytestmark = pytest.mark.integration


async def promote(client: Client, project: str, stage: str, freight: str) -> PromotionResult:
    handle = await start_promotion(client, project, stage, freight, requested_by="test")
    result: PromotionResult = await handle.result()
    return result


async def promote_expecting_failure(
    client: Client, project: str, stage: str, freight: str
) -> PromotionResult:
    handle = await start_promotion(client, project, stage, freight)
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError)
    (details,) = cause.details
    return PromotionResult.model_validate(details)


async def test_quickstart_task_renders_stage_branch(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.1")
    await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), freight))

    result = await promote(client, "kargo-demo", "test", freight.alias or "")

    assert result.phase is PromotionPhase.SUCCEEDED
    pushed = result.outputs["promo-process::step-5"]
    assert pushed["branch"] == "stage/test"
    assert pushed["commit"] == branch_head(gitops_repo, "stage/test")
    assert result.outputs["promo-process::commit"]["commit"] == pushed["commit"]
    deployment = show_file(gitops_repo, "stage/test", "deployment-kargo-demo.yaml")
    assert f"image: {IMAGE}:1.29.1" in deployment
    service = show_file(gitops_repo, "stage/test", "service-kargo-demo.yaml")
    assert "nodePort: 30081" in service
    message = git("log", "-1", "--format=%B", "refs/heads/stage/test", cwd=gitops_repo)
    assert message == f"Updated ./src/base to use new image\n\n- {IMAGE}:1.29.1"
    # Rendered output only: the source branch is untouched.
    assert commit_count(gitops_repo, "main") == 1


async def test_search_attributes_and_details_are_visible(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.2")
    await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), freight))
    handle = await start_promotion(client, "kargo-demo", "uat", freight.metadata.name)
    await handle.result()
    description = await handle.describe()
    attributes = {pair.key.name: pair.value for pair in description.typed_search_attributes}
    assert attributes["FreightlineStage"] == "uat"
    assert attributes["FreightlineFreight"] == freight.metadata.name
    assert attributes["FreightlineProject"] == "kargo-demo"
    assert await description.static_summary() == f"promote freight `{freight.alias}` into `uat`"
    assert freight.metadata.name in (await description.static_details() or "")


async def test_start_from_the_temporal_cli(
    client: Client, worker: Worker, gitops_repo: Path, task_queue: str, temporal_env: object
) -> None:
    freight = freight_for("1.29.3")
    await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), freight))
    target = client.service_client.config.target_host
    request = {"project": "kargo-demo", "stage": "test", "freight": freight.metadata.name}
    started = subprocess.run(
        [
            temporal_binary(),
            "workflow",
            "start",
            "--address",
            target,
            "--type",
            "Promotion",
            "--task-queue",
            task_queue,
            "--workflow-id",
            "cli-started-promotion",
            "--input",
            json.dumps(request),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    result = await client.get_workflow_handle(
        "cli-started-promotion", result_type=PromotionResult
    ).result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert f"{IMAGE}:1.29.3" in show_file(gitops_repo, "stage/test", "deployment-kargo-demo.yaml")


async def test_cli_promote_waits_and_reports(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.4")
    await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), freight))
    target = client.service_client.config.target_host
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "freightline",
        "promote",
        "--project",
        "kargo-demo",
        "--stage",
        "test",
        "--freight-alias",
        freight.alias or "",
        "--wait",
        env={**os.environ, "TEMPORAL_ADDRESS": target},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    head = branch_head(gitops_repo, "stage/test")
    assert head and f"promotion Succeeded: pushed {head}" in stdout.decode()


async def test_unknown_stage_is_errored_and_pushes_nothing(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.1")
    await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), freight))
    result = await promote_expecting_failure(client, "kargo-demo", "staging", freight.metadata.name)
    assert result.phase is PromotionPhase.ERRORED
    assert 'no Stage "staging"' in result.message
    assert "test, uat, prod" in result.message or "prod, test, uat" in result.message
    assert branch_head(gitops_repo, "stage/staging") is None


CLONE = {
    "uses": "git-clone",
    "config": {"repoURL": "REPO_URL", "checkout": [{"branch": "main", "path": "./src"}]},
}
COMMIT = {"uses": "git-commit", "as": "commit", "config": {"path": "./src", "message": "edit"}}
PUSH = {"uses": "git-push", "config": {"path": "./src"}}


@pytest.mark.parametrize(
    ("bad_step", "phase", "expected"),
    [
        (
            {"uses": "kubectl-apply", "config": {}},
            PromotionPhase.ERRORED,
            'unknown step "kubectl-apply"',
        ),
        (
            {
                "uses": "yaml-update",
                "config": {
                    "path": "./src/base/deploy.yaml",
                    # Parses (a syntax error is refused by apply), fails when evaluated.
                    "updates": [{"key": "spec.replicas", "value": "${{ vars.replicas + 1 }}"}],
                },
            },
            PromotionPhase.ERRORED,
            "vars.replicas + 1",
        ),
        (
            {
                "uses": "yaml-update",
                "config": {
                    "path": "./src/../../../etc/passwd",
                    "updates": [{"key": "a", "value": 1}],
                },
            },
            PromotionPhase.ERRORED,
            "leaves the work tree",
        ),
        (
            {
                "uses": "yaml-update",
                "config": {"path": "/etc/passwd", "updates": [{"key": "a", "value": 1}]},
            },
            PromotionPhase.ERRORED,
            "is absolute",
        ),
        (
            {"uses": "yaml-update", "config": {"path": "./src/base/deploy.yaml", "updatez": []}},
            PromotionPhase.ERRORED,
            "config.updatez",
        ),
        (
            # A misconfiguration found while the steps run: Errored too, as from Argo CD.
            {"uses": "git-push", "config": {"path": "./src", "tag": "v1", "force": True}},
            PromotionPhase.ERRORED,
            "tag and force are mutually exclusive",
        ),
    ],
    ids=[
        "unknown-step",
        "bad-expression",
        "path-escape",
        "absolute-path",
        "bad-config",
        "forced-tag",
    ],
)
async def test_bad_steps_fail_clearly_and_push_nothing(
    client: Client,
    worker: Worker,
    gitops_repo: Path,
    bad_step: dict[str, object],
    phase: PromotionPhase,
    expected: str,
) -> None:
    resources = single_stage_project(gitops_repo, [CLONE, bad_step, COMMIT, PUSH])
    freight = freight_for("1.0.0")
    await apply_project(client, with_freight(resources, freight))
    before = branch_head(gitops_repo, "main")

    result = await promote_expecting_failure(client, "p", "test", freight.metadata.name)

    assert result.phase is phase
    assert expected in result.message
    if bad_step["uses"] != "kubectl-apply":
        assert result.failed_step == "step-1"
    assert branch_head(gitops_repo, "main") == before


async def test_two_promotions_pushing_to_one_branch_both_land(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    stages = ("east", "west")
    steps = [
        CLONE,
        {
            "uses": "yaml-update",
            "config": {
                "path": "./src/stages/${{ ctx.stage }}.yaml",
                "updates": [{"key": "image", "value": "${{ imageFrom('" + IMAGE + "').Tag }}"}],
            },
        },
        COMMIT,
        PUSH,
    ]
    # Each stage edits its own file on the shared branch.
    work = gitops_repo.parent / "seed"
    git("clone", "--quiet", gitops_repo.as_uri(), str(work))
    for stage in stages:
        (work / "stages" / f"{stage}.yaml").write_text("image: none\n")
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", "stage files", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    resources = single_stage_project(gitops_repo, steps, stages=stages)
    freight = freight_for("2.0.0")
    await apply_project(client, with_freight(resources, freight))
    before = commit_count(gitops_repo, "main")

    results = await asyncio.gather(
        *(promote(client, "p", s, freight.metadata.name) for s in stages)
    )

    assert [r.phase for r in results] == [PromotionPhase.SUCCEEDED] * 2
    assert commit_count(gitops_repo, "main") == before + 2
    for stage in stages:
        assert show_file(gitops_repo, "main", f"stages/{stage}.yaml").strip() == "image: 2.0.0"


async def test_promoting_the_same_freight_again_adds_no_commit(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.1")
    await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), freight))
    first = await promote(client, "kargo-demo", "test", freight.metadata.name)
    second = await promote(client, "kargo-demo", "test", freight.metadata.name)
    assert first.outputs["promo-process::commit"] == second.outputs["promo-process::commit"]
    assert commit_count(gitops_repo, "stage/test") == 1


async def test_worker_killed_after_push_gives_exactly_one_commit(
    client: Client, gitops_repo: Path, task_queue: str
) -> None:
    """SIGKILL-like exit right after git-push; a fresh worker retries the activity."""
    freight = freight_for("1.29.5")
    target = client.service_client.config.target_host
    env = worker_env(target, task_queue)
    doomed = start_worker(env, args=crash_worker_args("after-step", "git-push"))
    await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), freight))
    handle = await start_promotion(client, "kargo-demo", "test", freight.metadata.name)
    await wait_for(lambda: doomed.poll() is not None, timeout=60)
    assert doomed.returncode == 137
    pushed = branch_head(gitops_repo, "stage/test")
    assert pushed is not None

    fresh = start_worker(env)
    try:
        result: PromotionResult = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        fresh.terminate()
        fresh.wait(30)
    assert result.phase is PromotionPhase.SUCCEEDED
    assert branch_head(gitops_repo, "stage/test") == pushed
    assert commit_count(gitops_repo, "stage/test") == 1
    assert result.outputs["promo-process::commit"]["commit"] == pushed
