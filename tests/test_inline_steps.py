"""fail and compose-output, as Kargo's, through real promotions on the dev server.

Each example on their Kargo reference pages runs as a PromotionTask, as there. The steps
the examples lean on and Freightline does not have yet (``http``, ``git-open-pr``) are
stood in for by a ``compose-output`` with the same alias and the outputs they would give;
the Slack request of ``compose-output``'s example becomes a ``compose-output`` of the same
body expression (``secret()`` left out: no Secrets here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from freightline.app.client import apply_project, start_promotion
from freightline.contracts.promotion import PromotionPhase, PromotionResult, StepStatus
from freightline.kargo.config import ProjectResources, group_by_project, load_text
from freightline.kargo.freight import freight_alias, freight_id
from freightline.kargo.resources import Freight
from sandbox.gitops import branch_head, show_file
from tests.pipelines import IMAGE, commit_freight, dump, single_stage_project, with_freight

pytestmark = pytest.mark.integration

CHART_REPO = "oci://example.com/my-chart"


def chart_freight(name: str) -> Freight:
    body: dict[str, Any] = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"name": "pending", "namespace": "p"},
        "origin": {"kind": "Warehouse", "name": "kargo-demo"},
        "charts": [{"repoURL": CHART_REPO, "name": name, "version": "1.0.0"}],
    }
    body["metadata"]["name"] = freight_id(Freight.model_validate(body))
    body["alias"] = freight_alias(body["metadata"]["name"])
    return Freight.model_validate(body)


def task_project(
    steps: list[dict[str, Any]], variables: list[dict[str, Any]] | None = None
) -> ProjectResources:
    """Project ``p``: Stage ``test`` runs PromotionTask ``task`` (``steps``) as ``task``."""
    spec: dict[str, Any] = {"steps": steps, **({"vars": variables} if variables else {})}
    documents: list[dict[str, Any]] = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": "p"}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Warehouse",
            "metadata": {"name": "kargo-demo", "namespace": "p"},
            "spec": {"subscriptions": [{"image": {"repoURL": IMAGE}}]},
        },
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "PromotionTask",
            "metadata": {"name": "task", "namespace": "p"},
            "spec": spec,
        },
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Stage",
            "metadata": {"name": "test", "namespace": "p"},
            "spec": {
                "requestedFreight": [
                    {
                        "origin": {"kind": "Warehouse", "name": "kargo-demo"},
                        "sources": {"direct": True},
                    }
                ],
                "promotionTemplate": {
                    "spec": {"steps": [{"task": {"name": "task"}, "as": "task"}]}
                },
            },
        },
    ]
    (resources,) = group_by_project(load_text(dump(documents), source="test")).values()
    return resources


async def promote(client: Client, resources: ProjectResources, freight: Freight) -> PromotionResult:
    await apply_project(client, with_freight(resources, freight))
    handle = await start_promotion(client, "p", "test", freight.metadata.name)
    try:
        result: PromotionResult = await handle.result()
    except WorkflowFailureError as failure:
        cause = failure.cause
        assert isinstance(cause, ApplicationError)
        (details,) = cause.details
        return PromotionResult.model_validate(details)
    return result


# Kargo's fail example, with its http step as a stand-in that gives the same output.
FAIL_EXAMPLE = [
    {"uses": "compose-output", "as": "expected-name", "config": {"name": "my-chart"}},
    {
        "uses": "fail",
        "if": "${{ task.outputs['expected-name'].name != "
        "chartFrom('oci://example.com/my-chart').Name }}",
        "config": {"message": "Expected chart name ${{ task.outputs['expected-name'].name }}"},
    },
]


async def test_fail_reference_example_fails_on_a_mismatch(client: Client, worker: Worker) -> None:
    result = await promote(client, task_project(FAIL_EXAMPLE), chart_freight("other-chart"))
    assert result.phase is PromotionPhase.FAILED
    assert result.message == 'step "task::step-1" (fail): failed: Expected chart name my-chart'
    assert result.failed_step == "task::step-1"
    assert [s.status for s in result.steps] == [StepStatus.SUCCEEDED, StepStatus.FAILED]


async def test_fail_reference_example_is_skipped_on_a_match(client: Client, worker: Worker) -> None:
    result = await promote(client, task_project(FAIL_EXAMPLE), chart_freight("my-chart"))
    assert result.phase is PromotionPhase.SUCCEEDED
    assert [s.status for s in result.steps] == [StepStatus.SUCCEEDED, StepStatus.SKIPPED]


async def test_compose_output_reference_example(client: Client, worker: Worker) -> None:
    steps = [
        # Stand-in for git-open-pr: its output ``pr.id``.
        {"uses": "compose-output", "as": "open-pr", "config": {"pr": {"id": 42}}},
        {
            "uses": "compose-output",
            "as": "pr-link",
            "config": {"url": "${{ vars.repoURL }}/pull/${{ task.outputs['open-pr'].pr.id }}"},
        },
        # Stand-in for the http step: the same body expression.
        {
            "uses": "compose-output",
            "as": "slack",
            "config": {
                "body": """${{ quote({
  "channel": "C123456",
  "blocks": [
    {
      "type": "section",
      "text": {
        "type": "mrkdwn",
        "text": "A new PR has been opened: " + task.outputs['pr-link'].url
      }
    }
  ]
}) }}
"""
            },
        },
    ]
    variables = [{"name": "repoURL", "value": "https://github.com/example/repo"}]
    result = await promote(client, task_project(steps, variables), chart_freight("my-chart"))
    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    assert result.outputs["task::pr-link"] == {"url": "https://github.com/example/repo/pull/42"}
    assert result.outputs["task::open-pr"] == {"pr": {"id": 42}}
    body = result.outputs["task::slack"]["body"]
    assert "A new PR has been opened: https://github.com/example/repo/pull/42" in body


async def test_inline_steps_between_worktree_steps_share_one_work_tree(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    clone = {
        "uses": "git-clone",
        "config": {
            "repoURL": "REPO_URL",
            "checkout": [{"branch": "stage/test", "create": True, "path": "./out"}],
        },
    }
    steps: list[dict[str, Any]] = [
        clone,
        {"uses": "compose-output", "as": "names", "config": {"file": "stage-${{ ctx.stage }}"}},
        {"uses": "fail", "if": "${{ outputs.names.file != 'stage-test' }}", "config": {}},
        {
            "uses": "file-write",
            "config": {"path": "./out/${{ outputs.names.file }}.txt", "contents": "ok\n"},
        },
        {"uses": "git-commit", "config": {"path": "./out", "message": "inline"}},
        {"uses": "git-push", "as": "push", "config": {"path": "./out"}},
        # After the last worktree step: in the workflow. A failure it tolerates still counts
        # for the steps after it (Kargo's default condition), so ``always()``.
        {"uses": "fail", "as": "tolerated", "continueOnError": True, "config": {}},
        {
            "uses": "compose-output",
            "as": "pushed",
            "if": "${{ always() }}",
            "config": {"commit": "${{ outputs.push.commit }}"},
        },
    ]
    freight = commit_freight(gitops_repo, branch_head(gitops_repo, "main") or "")
    result = await promote(client, single_stage_project(gitops_repo, steps), freight)
    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    assert show_file(gitops_repo, "stage/test", "stage-test.txt") == "ok"
    statuses = {s.alias: (s.status, s.message) for s in result.steps}
    assert statuses["step-2"] == (StepStatus.SKIPPED, "")
    assert statuses["tolerated"] == (StepStatus.FAILED, 'step "tolerated" (fail): failed')
    assert result.outputs["pushed"] == {"commit": branch_head(gitops_repo, "stage/test")}


async def test_a_fail_inside_a_worktree_sequence_stops_it_before_the_push(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    steps = [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": "REPO_URL",
                "checkout": [{"branch": "stage/test", "create": True, "path": "./out"}],
            },
        },
        {"uses": "fail", "as": "stop", "config": {"message": "not today"}},
        {"uses": "git-push", "config": {"path": "./out"}},
    ]
    freight = commit_freight(gitops_repo, branch_head(gitops_repo, "main") or "")
    result = await promote(client, single_stage_project(gitops_repo, steps), freight)
    assert result.phase is PromotionPhase.FAILED
    assert result.message == 'step "stop" (fail): failed: not today'
    assert result.failed_step == "stop"
    assert branch_head(gitops_repo, "stage/test") is None


# Recorded as tests/histories/promotion-inline.json (scripts/record-histories inline).
INLINE_SCENARIO: list[dict[str, Any]] = [
    {
        "uses": "git-clone",
        "config": {
            "repoURL": "REPO_URL",
            "checkout": [{"branch": "stage/test", "create": True, "path": "./out"}],
        },
    },
    {"uses": "compose-output", "as": "names", "config": {"file": "${{ ctx.stage }}.txt"}},
    {"uses": "file-write", "config": {"path": "./out/${{ outputs.names.file }}", "contents": ""}},
    {"uses": "git-commit", "config": {"path": "./out", "message": "inline"}},
    {"uses": "git-push", "as": "push", "config": {"path": "./out"}},
    {"uses": "compose-output", "as": "pushed", "config": {"commit": "${{ outputs.push.commit }}"}},
    {"uses": "fail", "as": "stop", "config": {"message": "pushed ${{ outputs.pushed.commit }}"}},
]


async def test_the_recorded_inline_scenario_pushes_then_fails(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    freight = commit_freight(gitops_repo, "")
    result = await promote(client, single_stage_project(gitops_repo, INLINE_SCENARIO), freight)
    assert result.phase is PromotionPhase.FAILED
    pushed = branch_head(gitops_repo, "stage/test")
    assert result.message == f'step "stop" (fail): failed: pushed {pushed}'
    assert result.outputs["pushed"] == {"commit": pushed}


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"uses": "compose-output", "config": {}}, "config: Dictionary should have at least 1"),
        ({"uses": "fail", "config": {"message": ""}}, "config.message: String should have"),
        ({"uses": "fail", "config": {"reason": "x"}}, "config.reason: Extra inputs"),
    ],
)
async def test_bad_config_is_errored(
    client: Client, worker: Worker, step: dict[str, Any], message: str
) -> None:
    result = await promote(client, task_project([step]), chart_freight("my-chart"))
    assert result.phase is PromotionPhase.ERRORED
    assert message in result.message
