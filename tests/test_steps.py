"""The step registry: every entry resolves, and the planner, workflow and worker read it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import activity

from activities.step_context import StepConfig
from freightline.contracts.promotion import plan_promotion
from freightline.contracts.steps import (
    STEPS,
    StepRunner,
    resolve,
    resolve_all,
    runner_of,
    step_named,
)
from freightline.errors import ConfigError
from freightline.kargo.resources import ApprovalPolicy
from tests.pipelines import freight_for, single_stage_project, with_freight

# Kargo's names for the steps Freightline runs; a new step joins this list with its entry.
KARGO_STEPS = {
    "git-clone": StepRunner.WORKTREE,
    "git-clear": StepRunner.WORKTREE,
    "kustomize-set-image": StepRunner.WORKTREE,
    "kustomize-build": StepRunner.WORKTREE,
    "yaml-update": StepRunner.WORKTREE,
    "copy": StepRunner.WORKTREE,
    "delete": StepRunner.WORKTREE,
    "file-write": StepRunner.WORKTREE,
    "json-update": StepRunner.WORKTREE,
    "yaml-parse": StepRunner.WORKTREE,
    "json-parse": StepRunner.WORKTREE,
    "toml-parse": StepRunner.WORKTREE,
    "toml-update": StepRunner.WORKTREE,
    "yaml-merge": StepRunner.WORKTREE,
    "tar": StepRunner.WORKTREE,
    "untar": StepRunner.WORKTREE,
    "git-tag": StepRunner.WORKTREE,
    "git-commit": StepRunner.WORKTREE,
    "git-push": StepRunner.WORKTREE,
    "github-push": StepRunner.WORKTREE,
    "git-open-pr": StepRunner.WORKTREE,
    "git-merge-pr": StepRunner.WORKTREE,
    "http": StepRunner.WORKTREE,
    "http-download": StepRunner.WORKTREE,
    "oci-download": StepRunner.WORKTREE,
    "oci-push": StepRunner.WORKTREE,
    "helm-update-chart": StepRunner.WORKTREE,
    "helm-template": StepRunner.WORKTREE,
    "argocd-update": StepRunner.ARGOCD,
    "argocd-wait": StepRunner.ARGOCD,
    "set-freight-alias": StepRunner.PROJECT,
    "set-metadata": StepRunner.PROJECT,
    "wait-for-approval": StepRunner.WORKFLOW,
    "git-wait-for-pr": StepRunner.WORKFLOW,
    "fail": StepRunner.WORKFLOW,
    "compose-output": StepRunner.WORKFLOW,
}


def test_the_registry_holds_each_step_once_with_its_runner() -> None:
    assert {name: step.runner for name, step in STEPS.items()} == KARGO_STEPS
    assert all(name == step.name for name, step in STEPS.items())
    assert runner_of("git-push") is StepRunner.WORKTREE
    assert runner_of("kubectl-apply") is None and step_named("kubectl-apply") is None


@pytest.mark.parametrize("name", sorted(KARGO_STEPS))
def test_every_reference_resolves_to_what_its_runner_calls(name: str) -> None:
    step = STEPS[name]
    implementation = step.resolve_implementation()
    model = step.config_model()
    assert model is not None and issubclass(model, BaseModel)
    if step.runner is StepRunner.WORKTREE:
        # (StepContext, config model) -> outputs: the worktree activity validates, then calls.
        parameters = list(inspect.signature(implementation).parameters.values())
        assert [p.name for p in parameters] == ["ctx", "config"]
        assert issubclass(model, StepConfig)
        assert parameters[1].annotation in (model.__name__, model)
    elif step.runner is StepRunner.PROJECT:
        # An activity that updates the project's workflows; the workflow validates first.
        definition = activity._Definition.must_from_callable(implementation)
        assert definition.name == name.replace("-", "_")
    elif step.runner is StepRunner.ARGOCD:
        # An activity, under the name recorded histories and shard workers know.
        definition = activity._Definition.must_from_callable(implementation)
        assert definition.name == name.replace("-", "_")
        assert issubclass(model, StepConfig)
    elif step.inline:
        # A pure function of the validated config, called by the workflow and the worktree
        # activity alike (freightline.contracts.steps.run_inline).
        parameters = list(inspect.signature(implementation).parameters.values())
        assert [p.name for p in parameters] == ["config"]
        assert parameters[0].annotation in (model.__name__, model)
    elif name == "git-wait-for-pr":
        # A wait in the workflow (timers, a webhook's signal); the config is Kargo's.
        assert implementation.__qualname__ == "PromotionWorkflow.wait_for_pull_request"
        assert issubclass(model, StepConfig)
    else:
        assert implementation.__qualname__ == "PromotionWorkflow.wait_for_approval"
        assert model is ApprovalPolicy


def test_the_worker_resolves_every_step_as_it_starts() -> None:
    resolve_all()
    with pytest.raises(ModuleNotFoundError):
        resolve("activities.no_such_module:step")


def test_the_promotion_workflow_takes_its_argo_cd_activities_from_the_registry() -> None:
    from workflows.promotion import ARGOCD_STEP_ACTIVITIES

    argocd_steps = {n for n, s in STEPS.items() if s.runner is StepRunner.ARGOCD}
    assert set(ARGOCD_STEP_ACTIVITIES) == argocd_steps
    for name, run in ARGOCD_STEP_ACTIVITIES.items():
        assert run is STEPS[name].resolve_implementation()


def test_the_planner_refuses_a_step_the_registry_does_not_hold(tmp_path: Path) -> None:
    freight = freight_for("1.0.0")
    known = {"uses": "git-clear", "config": {"path": "./src"}}
    unknown = {"uses": "kubectl-apply", "config": {}}
    ok = with_freight(single_stage_project(tmp_path, [known]), freight)
    assert [s.uses for s in plan_promotion(ok, "test", freight.metadata.name, "p").steps] == [
        "git-clear"
    ]
    bad = with_freight(single_stage_project(tmp_path, [known, unknown]), freight)
    with pytest.raises(ConfigError, match='unknown step "kubectl-apply"'):
        plan_promotion(bad, "test", freight.metadata.name, "p")
