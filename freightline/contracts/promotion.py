"""What a promotion is made of: its request, its plan, its step outcomes and result.

These models travel through Temporal as plain JSON (the pydantic data
converter), so a person can start a promotion with
``temporal workflow start --type Promotion --input '{"project": ..., "stage": ...,
"freight": ...}'`` and read every field of the result in the UI.

``plan_promotion`` turns a Stage's promotion template into a flat list of
steps (PromotionTask references expanded, aliases assigned, vars layered) —
pure code, so it can be tested without Temporal. ``StepScope`` builds the
expression environment a step sees (``ctx``, ``vars``, ``outputs``,
``task.outputs``, ``imageFrom`` ...), shared by the workflow and the
activities so both evaluate ``${{ }}`` the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from freightline.contracts.model import Contract
from freightline.contracts.steps import runner_of
from freightline.errors import ConfigError, ExpressionError, NotFoundError
from freightline.kargo import expressions
from freightline.kargo.freight import artifact_functions
from freightline.kargo.resources import Freight, ProjectResources, PromotionStep, PromotionWindow
from freightline.kargo.windows import windows_for


class PromotionRequest(Contract):
    """The input of a ``Promotion`` workflow.

    ``freight`` is a Freight ID or alias. Everything else is optional: a
    promotion started by hand only names the three.
    """

    project: str
    stage: str
    freight: str
    requested_by: str | None = None
    """Who asked for it (a user name, ``auto``, or a Stage workflow ID)."""
    override_windows: bool = False
    """Run now even when the Stage's promotion windows are closed (recorded in the result)."""


class ApprovalMessage(Contract):
    """The ``approve`` / ``reject`` signal and update input: ``{"user": ..., "comment": ...}``."""

    user: str
    comment: str = ""
    signed_at: datetime | None = None
    signature: str | None = None
    """Ed25519 over ``freightline.contracts.approvals.approval_payload``: needed when the
    project lists ``approvalKeys`` (the web UI signs for the person it authenticated)."""


class AbortMessage(Contract):
    """The ``abort`` signal input: ``{"user": ..., "reason": ...}``."""

    user: str
    reason: str = ""
    graceful: bool = False
    """Let a running clone-to-push activity finish (never stop it mid-push), then stop at the
    next step boundary; waits for approval or a window still end at once. Sent when the
    Stage is deleted."""


class ApprovalDecision(Contract):
    """One approval or rejection the promotion accepted."""

    user: str
    decision: Literal["approved", "rejected"]
    comment: str = ""
    at: datetime
    step: str
    """The alias of the ``wait-for-approval`` step it answered."""


class RefusedMessage(Contract):
    """A signal the promotion ignored (unauthorised, duplicate, nothing pending), and why."""

    user: str
    signal: str
    reason: str
    at: datetime


class Var(Contract):
    """A named value; ``value`` may hold ``${{ }}`` expressions."""

    name: str
    value: Any = None


class PlannedStep(Contract):
    """One step of a promotion, after PromotionTask expansion."""

    index: int
    uses: str
    alias: str
    """Unique within the promotion: ``step-3``, or ``<task step alias>::<alias>`` inside a task."""
    task_alias: str | None = None
    """The alias of the step that referenced the PromotionTask this step came from."""
    if_: str | None = Field(default=None, alias="if")
    continue_on_error: bool = False
    retry_timeout: str | None = None
    """The step's ``retry.timeout`` (a Go duration), for steps that wait (argocd-update)."""
    vars: tuple[Var, ...] = ()
    """Layered in order; a later var of the same name wins."""
    config: dict[str, Any] = Field(default_factory=dict)


class PromotionPlan(Contract):
    """Everything a promotion runs, resolved once at its start and kept in its history."""

    project: str
    stage: str
    promotion: str
    freight: Freight
    steps: tuple[PlannedStep, ...]
    windows: tuple[PromotionWindow, ...] = ()
    """The project's promotion windows that apply to this Stage."""
    notify: bool = False
    """Whether the worker that resolved the plan has notification targets configured."""
    shard: str | None = None
    """The Stage's ``spec.shard``: its Argo CD steps run on that shard's task queue."""
    approval_keys: tuple[str, ...] = ()
    """The ProjectConfig's ``approvalKeys``: approvals must be signed by one of them."""


class StepStatus(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERRORED = "Errored"
    SKIPPED = "Skipped"


class StepOutcome(Contract):
    """What one step did."""

    alias: str
    uses: str
    status: StepStatus
    message: str = ""
    outputs: dict[str, Any] = Field(default_factory=dict)


class WorktreeBatch(Contract):
    """The input of ``run_worktree_steps``: which steps of the plan, and what ran before."""

    plan: PromotionPlan
    step_indexes: tuple[int, ...]
    previous: tuple[StepOutcome, ...] = ()


class PromotionPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERRORED = "Errored"
    ABORTED = "Aborted"


def failure_type(phase: PromotionPhase) -> str:
    """The ``ApplicationError`` type of a Promotion that ends ``phase`` (``PromotionFailed``)."""
    return f"Promotion{phase.value}"


def ended_phase(failure_type: str | None) -> PromotionPhase | None:
    """The phase a Promotion's failure type names (``PromotionFailed``: Failed), else None."""
    name = (failure_type or "").removeprefix("Promotion")
    if failure_type == name or name not in set(PromotionPhase):
        return None
    return PromotionPhase(name)


class PromotionResult(Contract):
    """The end of a promotion: its phase, the failing step if any, and every step's outcome."""

    project: str
    stage: str
    freight: str
    freight_alias: str | None = None
    phase: PromotionPhase
    message: str = ""
    failed_step: str | None = None
    steps: tuple[StepOutcome, ...] = ()
    approvals: tuple[ApprovalDecision, ...] = ()
    """Who approved or rejected, when, with what comment."""
    refused: tuple[RefusedMessage, ...] = ()
    """Approve / reject / abort signals that were ignored, with the reason."""
    aborted_by: str | None = None
    windows_overridden_by: str | None = None
    """Who started the promotion with ``overrideWindows`` (it did not wait for a window)."""

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {step.alias: step.outputs for step in self.steps}


class ApprovalStatus(Contract):
    """The approval a promotion waits for, as its ``status`` query shows it."""

    step: str
    """The alias of the ``wait-for-approval`` step."""
    required: int
    approvers: list[str] | None = None
    """Who may approve (None: anyone)."""
    approved_by: tuple[str, ...] = ()
    deadline: datetime | None = None


class PromotionStatus(Contract):
    """The ``status`` query of a ``Promotion``: where it is, and every finished step."""

    phase: PromotionPhase
    current: str = ""
    """What it does now (a step, a wait), in words."""
    steps: tuple[StepOutcome, ...] = ()
    approval: ApprovalStatus | None = None
    """The approval it waits for, if any."""
    approvals: tuple[ApprovalDecision, ...] = ()
    refused: tuple[RefusedMessage, ...] = ()
    waiting_for_window: str = ""
    """Why it waits for a promotion window ("" when it does not)."""
    aborted_by: str | None = None


# --- planning -------------------------------------------------------------------------------

APPROVAL_STEP = "wait-for-approval"


def find_freight(resources: ProjectResources, freight: str) -> Freight:
    """The Freight with this ID or alias, or NotFoundError."""
    if freight in resources.freight:
        return resources.freight[freight]
    for candidate in resources.freight.values():
        if candidate.alias == freight:
            return candidate
    raise NotFoundError(f'project "{resources.name}" has no Freight with ID or alias "{freight}"')


def plan_promotion(
    resources: ProjectResources, stage: str, freight: str, promotion: str
) -> PromotionPlan:
    """Expand a Stage's promotion template into a flat, validated list of steps."""
    stage_resource = resources.stages.get(stage)
    if stage_resource is None:
        known = ", ".join(sorted(resources.stages)) or "none"
        raise NotFoundError(
            f'project "{resources.name}" has no Stage "{stage}" (known stages: {known})'
        )
    template = stage_resource.spec.promotion_template
    if template is None or not template.spec.steps:
        raise ConfigError(f'Stage "{stage}": spec.promotionTemplate.spec.steps is empty')
    global_vars = tuple(Var(name=v.name, value=v.value) for v in template.spec.vars or ())
    steps: list[PlannedStep] = []
    policy = resources.policy_for(stage)
    if policy is not None and policy.approval is not None:
        # The Stage-level shorthand: an approval gate before the Stage's own steps.
        steps.append(
            PlannedStep(
                index=0,
                uses=APPROVAL_STEP,
                alias="approval",
                config=policy.approval.model_dump(mode="json", by_alias=True, exclude_none=True),
            )
        )
    for index, step in enumerate(template.spec.steps):
        alias = step.as_ or f"step-{index}"
        where = f'Stage "{stage}" step {index} ("{alias}")'
        if step.task is not None:
            steps.extend(_expand_task(resources, step, alias, global_vars, where, len(steps)))
        else:
            steps.append(_planned(step, len(steps), alias, None, global_vars, where))
    aliases = [s.alias for s in steps]
    duplicates = sorted({a for a in aliases if aliases.count(a) > 1})
    if duplicates:
        raise ConfigError(f'Stage "{stage}": step aliases are not unique: {", ".join(duplicates)}')
    return PromotionPlan(
        project=resources.name,
        stage=stage,
        promotion=promotion,
        freight=find_freight(resources, freight),
        steps=tuple(steps),
        windows=windows_for(resources, stage),
        shard=stage_resource.spec.shard,
        approval_keys=tuple(
            resources.project_config.spec.approval_keys or ()
            if resources.project_config is not None
            else ()
        ),
    )


def _planned(
    step: PromotionStep,
    index: int,
    alias: str,
    task_alias: str | None,
    inherited: tuple[Var, ...],
    where: str,
) -> PlannedStep:
    uses = step.uses or ""
    if runner_of(uses) is None:
        raise ConfigError(f'{where}: unknown step "{uses}"')
    own = tuple(Var(name=v.name, value=v.value) for v in step.vars or ())
    return PlannedStep(
        index=index,
        uses=uses,
        alias=alias,
        task_alias=task_alias,
        if_=step.if_,
        continue_on_error=bool(step.continue_on_error),
        retry_timeout=step.retry.timeout if step.retry else None,
        vars=inherited + own,
        config=dict(step.config or {}),
    )


def _expand_task(
    resources: ProjectResources,
    step: PromotionStep,
    task_alias: str,
    global_vars: tuple[Var, ...],
    where: str,
    first_index: int,
) -> list[PlannedStep]:
    assert step.task is not None
    task = resources.promotion_tasks.get(step.task.name)
    if task is None:
        raise ConfigError(f'{where}: unknown PromotionTask "{step.task.name}"')
    given = {v.name: v.value for v in step.vars or ()}
    task_vars: list[Var] = []
    for var in task.spec.vars or ():
        if var.name in given:
            task_vars.append(Var(name=var.name, value=given.pop(var.name)))
        elif var.value is not None:
            task_vars.append(Var(name=var.name, value=var.value))
        else:
            raise ConfigError(
                f'{where}: PromotionTask "{task.metadata.name}" needs var "{var.name}"'
            )
    if given:
        raise ConfigError(
            f'{where}: PromotionTask "{task.metadata.name}" has no vars named '
            + ", ".join(sorted(given))
        )
    inherited = global_vars + tuple(task_vars)
    expanded = []
    for inner_index, inner in enumerate(task.spec.steps):
        if inner.task is not None:
            raise ConfigError(f'{where}: PromotionTask "{task.metadata.name}" may not nest tasks')
        inner_alias = inner.as_ or f"step-{inner_index}"
        inner_where = f'{where} → PromotionTask "{task.metadata.name}" step {inner_index}'
        expanded.append(
            _planned(
                inner,
                first_index + inner_index,
                f"{task_alias}::{inner_alias}",
                task_alias,
                inherited,
                inner_where,
            )
        )
    return expanded


# --- expression scope -----------------------------------------------------------------------


class StepScope:
    """The names a step's ``${{ }}`` expressions can see.

    Built from the plan and the outcomes so far; cheap, pure, and the same
    in the workflow and in activities.
    """

    def __init__(self, plan: PromotionPlan, outcomes: Sequence[StepOutcome]) -> None:
        self.plan = plan
        self.outcomes = list(outcomes)

    def record(self, outcome: StepOutcome) -> None:
        self.outcomes.append(outcome)

    def context(self) -> dict[str, Any]:
        """``ctx``: the project, Stage, promotion and target Freight."""
        freight = self.plan.freight
        return {
            "project": self.plan.project,
            "stage": self.plan.stage,
            "promotion": self.plan.promotion,
            "targetFreight": {
                "name": freight.metadata.name,
                "alias": freight.alias,
                "origin": {"kind": freight.origin.kind, "name": freight.origin.name},
            },
        }

    def env(self, step: PlannedStep) -> dict[str, Any]:
        freight = self.plan.freight
        outputs = {o.alias: o.outputs for o in self.outcomes}
        task_outputs: dict[str, Any] = {}
        if step.task_alias is not None:
            prefix = f"{step.task_alias}::"
            task_outputs = {
                alias.removeprefix(prefix): value
                for alias, value in outputs.items()
                if alias.startswith(prefix)
            }
        env: dict[str, Any] = {
            "ctx": self.context(),
            "outputs": outputs,
            "task": {"outputs": task_outputs},
            **artifact_functions(freight),
            "success": lambda: not self._any_failed(),
            "failure": self._any_failed,
            "always": lambda: True,
            "status": self._status_of,
            "vars": {},
        }
        rendered_vars: dict[str, Any] = {}
        for var in step.vars:
            env["vars"] = rendered_vars
            rendered_vars = {
                **rendered_vars,
                var.name: _render(var.value, env, step, f"var {var.name}"),
            }
        env["vars"] = rendered_vars
        return env

    def should_run(self, step: PlannedStep) -> bool:
        """Kargo's default: a step runs only when no earlier step failed, unless ``if`` says."""
        if step.if_ is None:
            return not self._any_failed()
        return bool(_render(step.if_, self.env(step), step, "if"))

    def render_config(self, step: PlannedStep) -> dict[str, Any]:
        rendered = _render(step.config, self.env(step), step, "config")
        assert isinstance(rendered, dict)
        return rendered

    def _any_failed(self) -> bool:
        return any(o.status in (StepStatus.FAILED, StepStatus.ERRORED) for o in self.outcomes)

    def _status_of(self, alias: str) -> str:
        for outcome in self.outcomes:
            if outcome.alias == alias:
                return outcome.status.value
        return ""


def _render(value: Any, env: Mapping[str, Any], step: PlannedStep, what: str) -> Any:
    if isinstance(value, str) and "${{" not in value:
        text = value.strip()
        if what == "if":
            # `if` holds a bare expression, with or without ${{ }} around it.
            value = "${{ " + text + " }}"
    try:
        return expressions.render(value, env)
    except ExpressionError as err:
        raise ExpressionError(f'step "{step.alias}" ({step.uses}) {what}: {err}') from err
