"""The step registry: every promotion step, where it runs, its config model, its implementation.

Steps that share a working tree (clone, edit, render, commit, push) run
together as one activity from clone to push, so a retry on another worker
with an empty disk repeats the whole sequence and converges on the same
commit. Steps that talk to an outside system on their own (Argo CD) run as
their own activities. Steps that only decide or wait (``wait-for-approval``,
``git-wait-for-pr``, ``fail``, ``compose-output``) run in the workflow itself, on
signals and timers; those of them that neither wait nor do I/O are *inline*: between two
worktree steps they run inside the worktree activity instead, so that they do
not cut a clone-to-push sequence in two.

:data:`STEPS` is the one table. The planner (``plan_promotion``) refuses a
step it does not hold, the ``Promotion`` workflow asks it where each step
runs (and which activity runs an Argo CD step), and the worktree activity
takes from it the config model to validate a step's rendered config against
and the function to call. Adding a step is one entry here plus its
implementation (and a test).

Entries name their implementation and config model by reference, as
``"module:attribute"`` text, resolved (once, then cached) by whoever runs the
step. Why not the objects themselves: the implementations do I/O (git,
kustomize, HTTP) and live in ``activities/``, which this module must not
import, since the planner runs in the CLI and the workflow reads the table
inside Temporal's sandbox. Why not have ``activities/`` register its
functions into the table: then the names would live here and the
implementations there, and what the table held would depend on which modules
happened to be imported (the CLI and the sandbox would see a partial
catalogue). References keep the catalogue whole and importable everywhere;
``tests/test_steps.py`` resolves every one, so a typo fails a test, not a
promotion.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from freightline.errors import ConfigError

__all__ = [
    "STEPS",
    "StepDefinition",
    "StepRunner",
    "parse_config",
    "resolve",
    "resolve_all",
    "run_inline",
    "runner_of",
    "step_named",
]


class StepRunner(StrEnum):
    """Where a step's implementation runs."""

    WORKTREE = "worktree"
    """In the shared clone-to-push activity (``activities/worktree.py``)."""
    ARGOCD = "argocd"
    """In its own Argo CD activity (``activities/argocd.py``)."""
    WORKFLOW = "workflow"
    """In the ``Promotion`` workflow itself: no activity (``workflows/promotion.py``)."""
    PROJECT = "project"
    """In its own activity that changes what the project's workflows hold: a Freight's alias
    or metadata, a Stage's metadata (``activities/project.py``)."""


@dataclass(frozen=True)
class StepDefinition:
    """One step: its Kargo name, its runner, and references to its config model and code.

    ``implementation`` is, per runner: a function ``(StepContext, config) -> outputs``
    (worktree); the activity method that runs the step (Argo CD, project); the workflow
    method that runs it (workflow), or for an ``inline`` step a pure function
    ``(config) -> outputs`` that both the workflow and the worktree activity call.
    ``config`` names the pydantic model of the step's rendered config, or is None
    for a step without one.
    """

    name: str
    runner: StepRunner
    implementation: str
    config: str | None = None
    inline: bool = False
    """A workflow step without I/O or waiting: it may also run inside a worktree batch."""

    def resolve_implementation(self) -> Any:
        """The object ``implementation`` names (imports its module on first use)."""
        return resolve(self.implementation)

    def config_model(self) -> type[BaseModel] | None:
        """The pydantic model ``config`` names, or None."""
        if self.config is None:
            return None
        model = resolve(self.config)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f'step "{self.name}": {self.config} is not a pydantic model')
        return model


def _worktree(name: str, implementation: str, config: str) -> StepDefinition:
    return StepDefinition(name, StepRunner.WORKTREE, implementation, config)


def _inline(name: str, implementation: str, config: str) -> StepDefinition:
    module = "freightline.contracts.inline_steps"
    return StepDefinition(
        name, StepRunner.WORKFLOW, f"{module}:{implementation}", f"{module}:{config}", inline=True
    )


STEPS: MappingProxyType[str, StepDefinition] = MappingProxyType(
    {
        step.name: step
        for step in (
            _worktree(
                "git-clone", "activities.git_steps:git_clone", "activities.git_steps:GitCloneConfig"
            ),
            _worktree(
                "git-clear", "activities.git_steps:git_clear", "activities.git_steps:GitClearConfig"
            ),
            _worktree(
                "kustomize-set-image",
                "activities.kustomize_steps:kustomize_set_image",
                "activities.kustomize_steps:SetImageConfig",
            ),
            _worktree(
                "kustomize-build",
                "activities.kustomize_steps:kustomize_build",
                "activities.kustomize_steps:BuildConfig",
            ),
            _worktree(
                "yaml-update",
                "activities.yaml_files:yaml_update",
                "activities.yaml_files:YamlUpdateConfig",
            ),
            _worktree("copy", "activities.file_steps:copy", "activities.file_steps:CopyConfig"),
            _worktree(
                "delete", "activities.file_steps:delete", "activities.file_steps:DeleteConfig"
            ),
            _worktree(
                "file-write",
                "activities.file_steps:file_write",
                "activities.file_steps:FileWriteConfig",
            ),
            _worktree(
                "json-update",
                "activities.json_files:json_update",
                "activities.json_files:JsonUpdateConfig",
            ),
            _worktree(
                "yaml-parse",
                "activities.parse_steps:yaml_parse",
                "activities.parse_steps:YamlParseConfig",
            ),
            _worktree(
                "json-parse",
                "activities.parse_steps:json_parse",
                "activities.parse_steps:JsonParseConfig",
            ),
            _worktree(
                "toml-parse",
                "activities.parse_steps:toml_parse",
                "activities.parse_steps:TomlParseConfig",
            ),
            _worktree(
                "toml-update",
                "activities.toml_files:toml_update",
                "activities.toml_files:TomlUpdateConfig",
            ),
            _worktree(
                "yaml-merge",
                "activities.yaml_merge:yaml_merge",
                "activities.yaml_merge:YamlMergeConfig",
            ),
            _worktree("tar", "activities.archive_steps:tar", "activities.archive_steps:TarConfig"),
            _worktree(
                "untar", "activities.archive_steps:untar", "activities.archive_steps:UntarConfig"
            ),
            _worktree(
                "git-tag", "activities.git_steps:git_tag", "activities.git_steps:GitTagConfig"
            ),
            _worktree(
                "git-commit",
                "activities.git_steps:git_commit",
                "activities.git_steps:GitCommitConfig",
            ),
            _worktree(
                "git-push", "activities.git_steps:git_push", "activities.git_steps:GitPushConfig"
            ),
            _worktree(
                "github-push",
                "activities.github_push:github_push",
                "activities.github_push:GitHubPushConfig",
            ),
            _worktree(
                "git-open-pr",
                "activities.forge_steps:git_open_pr",
                "activities.forge_steps:GitOpenPRConfig",
            ),
            _worktree(
                "git-merge-pr",
                "activities.forge_steps:git_merge_pr",
                "activities.forge_steps:GitMergePRConfig",
            ),
            _worktree(
                "http", "activities.http_steps:http_request", "activities.http_steps:HTTPConfig"
            ),
            _worktree(
                "http-download",
                "activities.http_steps:http_download",
                "activities.http_steps:HTTPDownloadConfig",
            ),
            _worktree(
                "oci-download",
                "activities.oci_steps:oci_download",
                "activities.oci_steps:OCIDownloadConfig",
            ),
            _worktree(
                "oci-push", "activities.oci_steps:oci_push", "activities.oci_steps:OCIPushConfig"
            ),
            _worktree(
                "helm-update-chart",
                "activities.helm_steps:helm_update_chart",
                "activities.helm_steps:HelmUpdateChartConfig",
            ),
            _worktree(
                "helm-template",
                "activities.helm_steps:helm_template",
                "activities.helm_steps:HelmTemplateConfig",
            ),
            StepDefinition(
                "argocd-update",
                StepRunner.ARGOCD,
                "activities.argocd:ArgoCDActivities.argocd_update",
                "activities.argocd:ArgoCDUpdateConfig",
            ),
            StepDefinition(
                "argocd-wait",
                StepRunner.ARGOCD,
                "activities.argocd:ArgoCDActivities.argocd_wait",
                "activities.argocd:ArgoCDWaitConfig",
            ),
            StepDefinition(
                "wait-for-approval",
                StepRunner.WORKFLOW,
                "workflows.promotion:PromotionWorkflow.wait_for_approval",
                "freightline.kargo.resources:ApprovalPolicy",
            ),
            StepDefinition(
                "git-wait-for-pr",
                StepRunner.WORKFLOW,
                "workflows.promotion:PromotionWorkflow.wait_for_pull_request",
                "activities.forge_steps:GitWaitForPRConfig",
            ),
            StepDefinition(
                "set-freight-alias",
                StepRunner.PROJECT,
                "activities.project:ProjectActivities.set_freight_alias",
                "freightline.contracts.metadata:SetFreightAliasConfig",
            ),
            StepDefinition(
                "set-metadata",
                StepRunner.PROJECT,
                "activities.project:ProjectActivities.set_metadata",
                "freightline.contracts.metadata:SetMetadataConfig",
            ),
            _inline("fail", "fail", "FailConfig"),
            _inline("compose-output", "compose_output", "ComposeOutputConfig"),
        )
    }
)
"""Every step Freightline runs, by the name a Stage's ``uses`` gives it."""


Config = TypeVar("Config", bound=BaseModel)


def parse_config(model: type[Config], config: dict[str, Any]) -> Config:
    """Validate a step's rendered config against its model; ConfigError names each field."""
    try:
        return model.model_validate(config)
    except ValidationError as err:
        problems = "; ".join(
            f"config{''.join(f'.{p}' for p in e['loc'] if p != '')}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise ConfigError(problems) from None


def run_inline(uses: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run an inline step (``fail``, ``compose-output``) on its rendered config: its outputs,
    or the ``FreightlineError`` it ends with. The workflow and the worktree activity both
    call this."""
    step = STEPS[uses]
    if not step.inline:
        raise ConfigError(f'"{uses}" is not an inline step')
    model = step.config_model()
    parsed = parse_config(model, config) if model is not None else config
    outputs: dict[str, Any] = step.resolve_implementation()(parsed)
    return outputs


def step_named(uses: str) -> StepDefinition | None:
    """The step a Stage's ``uses`` names, or None for an unknown step."""
    return STEPS.get(uses)


def runner_of(uses: str) -> StepRunner | None:
    """Where the step named ``uses`` runs, or None for an unknown step."""
    step = STEPS.get(uses)
    return step.runner if step is not None else None


def resolve_all() -> None:
    """Resolve every reference in the table (the worker does, as it starts): a step whose
    code cannot be found stops the worker, not a promotion."""
    for step in STEPS.values():
        step.resolve_implementation()
        step.config_model()


@functools.cache
def resolve(reference: str) -> Any:
    """The object a ``"package.module:Class.attribute"`` reference names."""
    module_name, _, path = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in path.split("."):
        target = getattr(target, part)
    return target
