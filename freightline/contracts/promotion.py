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

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from freightline.contracts.model import Contract
from freightline.contracts.pull_request_wait import PullRequestWait
from freightline.contracts.steps import runner_of
from freightline.errors import ConfigError, ExpressionError, NotFoundError
from freightline.kargo import expressions
from freightline.kargo.freight import artifact_functions, requested_origins
from freightline.kargo.metadata import metadata_functions
from freightline.kargo.resources import (
    Freight,
    FreightStatus,
    ProjectResources,
    PromotionStep,
    PromotionWindow,
)
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
    collection: tuple[str, ...] | None = None
    """The IDs of the Stage's current Freight of its other origins, which the promotion keeps
    (Kargo's FreightCollection: ``freight`` replaces only its own origin's). None: read from
    the Stage when the plan is resolved (a promotion started by hand)."""


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
    freight_metadata: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Freight ID → its ``status.metadata``, for ``freightMetadata()``: read when the plan was
    resolved (only when a step names the function), then kept up to date by the promotion's
    own ``set-metadata`` steps."""
    stage_metadata: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Stage name → its metadata, for ``stageMetadata()``, likewise."""

    planned_at: datetime | None = None
    """When the plan was made: what ``now()`` returns in the promotion's expressions, the
    same in the workflow, in every activity and on replay (None in plans recorded before)."""
    actor: str | None = None
    """Who asked for the promotion: ``ctx.meta.promotion.actor``."""
    rollback: bool = False
    """Whether the promotion is an automatic rollback: ``ctx.meta.promotion.rollback``."""
    ui_base_url: str = ""
    """The worker's UI address: ``ctx.uiBaseUrl``."""
    config_maps: dict[str, dict[str, str]] = Field(default_factory=dict)
    """The data of the project's ConfigMaps the steps name, for ``configMap(name)``."""

    approval_keys: tuple[str, ...] = ()
    """The ProjectConfig's ``approvalKeys``: approvals must be signed by one of them."""

    collection: tuple[Freight, ...] = ()
    """The Stage's Freight of its other origins, kept by this promotion: with ``freight``, the
    FreightCollection the steps see (``imageFrom(url, warehouse("name"))``)."""
    origins: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Each Warehouse the Stage requests Freight from → what it subscribes to
    (``subscribed_repositories``): Kargo's rule for ``imageFrom(url)`` without an origin."""

    @property
    def freight_collection(self) -> tuple[Freight, ...]:
        """The promoted Freight and the Stage's Freight of its other origins."""
        return (self.freight, *self.collection)

    def artifact_functions(self) -> dict[str, Any]:
        """``imageFrom``, ``commitFrom``, ``chartFrom``... over the collection."""
        return artifact_functions(self.freight_collection, subscriptions=self.origins or None)

    def metadata_set(self, kind: str, name: str, metadata: dict[str, Any]) -> PromotionPlan:
        """This plan after a ``set-metadata`` step wrote ``metadata`` (the whole map now) on
        a Stage or a Freight (by ID): what the later steps' expressions read."""
        if kind == "Stage":
            return self.model_copy(
                update={"stage_metadata": {**self.stage_metadata, name: metadata}}
            )
        update: dict[str, Any] = {"freight_metadata": {**self.freight_metadata, name: metadata}}

        def with_metadata(freight: Freight) -> Freight:
            status = freight.status or FreightStatus()
            return freight.model_copy(
                update={"status": status.model_copy(update={"metadata": metadata})}
            )

        if name == self.freight.metadata.name:
            update["freight"] = with_metadata(self.freight)
        if any(f.metadata.name == name for f in self.collection):
            update["collection"] = tuple(
                with_metadata(f) if f.metadata.name == name else f for f in self.collection
            )
        return self.model_copy(update=update)

    def alias_set(self, freight: str, alias: str) -> PromotionPlan:
        """This plan after a ``set-freight-alias`` step renamed Freight ``freight`` (an ID)."""
        if freight == self.freight.metadata.name:
            return self.model_copy(
                update={"freight": self.freight.model_copy(update={"alias": alias})}
            )
        if any(f.metadata.name == freight for f in self.collection):
            renamed = tuple(
                f.model_copy(update={"alias": alias}) if f.metadata.name == freight else f
                for f in self.collection
            )
            return self.model_copy(update={"collection": renamed})
        return self


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
    pull_request: PullRequestWait | None = None
    """The pull request a ``git-wait-for-pr`` step waits for, if any."""


# --- planning -------------------------------------------------------------------------------

APPROVAL_STEP = "wait-for-approval"


class PlanResourcesRequest(Contract):
    """The ``plan_resources`` query's input: a Stage, and the Freight (IDs or aliases) a
    promotion into it names: the promoted one and the Stage's current collection."""

    stage: str
    freight: tuple[str, ...] = ()


def plan_resources(
    resources: ProjectResources, stage: str, freight: Collection[str]
) -> ProjectResources:
    """The part of ``resources`` that :func:`plan_promotion` reads to promote ``freight``
    into ``stage``: the same plan, and the same errors, as from the whole project.

    Kept: the Project and ProjectConfig (policies, windows, approval keys), the Stage, the
    PromotionTasks its steps use, every Warehouse (a few; where discovered Freight is
    looked for), the applied Freight named by ID or alias, and the ConfigMaps (the plan
    keeps those its steps' text names). Left out: the other Stages, PromotionTasks and
    Freight, AnalysisTemplates, Promotions. An unknown Stage keeps every Stage, which the
    error lists."""
    stage_resource = resources.stages.get(stage)
    if stage_resource is None:
        return resources
    template = stage_resource.spec.promotion_template
    steps = template.spec.steps if template is not None else None
    tasks = {step.task.name for step in steps or () if step.task is not None}
    wanted = set(freight)
    return resources.model_copy(
        update={
            "stages": {stage: stage_resource},
            "promotion_tasks": {
                name: task for name, task in resources.promotion_tasks.items() if name in tasks
            },
            "freight": {
                name: applied
                for name, applied in resources.freight.items()
                if name in wanted or applied.alias in wanted
            },
            "promotions": {},
            "analysis_templates": {},
        }
    )


def find_freight(resources: ProjectResources, freight: str) -> Freight:
    """The Freight with this ID or alias, or NotFoundError."""
    if freight in resources.freight:
        return resources.freight[freight]
    for candidate in resources.freight.values():
        if candidate.alias == freight:
            return candidate
    raise NotFoundError(f'project "{resources.name}" has no Freight with ID or alias "{freight}"')


ROLLBACK_ACTOR = "auto-rollback"
"""The ``requestedBy`` of the promotions a Stage starts to roll back a failed verification."""


def plan_promotion(
    resources: ProjectResources,
    stage: str,
    freight: str,
    promotion: str,
    *,
    planned_at: datetime | None = None,
    actor: str | None = None,
    ui_base_url: str = "",
    collection: Sequence[str] = (),
) -> PromotionPlan:
    """Expand a Stage's promotion template into a flat, validated list of steps.

    ``collection`` names the Stage's current Freight of its other origins (IDs): the plan
    carries them (one of the promoted Freight's origin is replaced by it, as in Kargo)."""
    stage_resource = resources.stages.get(stage)
    if stage_resource is None:
        known = ", ".join(sorted(resources.stages)) or "none"
        raise NotFoundError(
            f'project "{resources.name}" has no Stage "{stage}" (known stages: {known})'
        )
    template = stage_resource.spec.promotion_template
    if template is None or not template.spec.steps:
        raise ConfigError(f'Stage "{stage}": spec.promotionTemplate.spec.steps is empty')
    # The Stage's own vars come first, then the template's (a later var wins), as Kargo does.
    global_vars = tuple(
        Var(name=v.name, value=v.value)
        for v in (*(stage_resource.spec.vars or ()), *(template.spec.vars or ()))
    )
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
    target = find_freight(resources, freight)
    kept = [find_freight(resources, name) for name in collection]
    return PromotionPlan(
        project=resources.name,
        stage=stage,
        promotion=promotion,
        freight=target,
        collection=tuple(f for f in kept if f.origin.name != target.origin.name),
        origins=requested_origins(resources, stage_resource),
        steps=tuple(steps),
        windows=windows_for(resources, stage),
        shard=stage_resource.spec.shard,
        planned_at=planned_at,
        actor=actor,
        rollback=actor == ROLLBACK_ACTOR,
        ui_base_url=ui_base_url,
        config_maps=_named_config_maps(resources, steps),
        approval_keys=tuple(
            resources.project_config.spec.approval_keys or ()
            if resources.project_config is not None
            else ()
        ),
    )


def _named_config_maps(
    resources: ProjectResources, steps: Sequence[PlannedStep]
) -> dict[str, dict[str, str]]:
    # Only the ConfigMaps whose name the steps mention (a literal in configMap("name") or in
    # a var): the plan is in the promotion's history, which should not carry every
    # ConfigMap of the project.
    if not resources.config_maps:
        return {}
    text = "".join(step.model_dump_json(by_alias=True) for step in steps)
    return {
        name: dict(config_map.data or {})
        for name, config_map in sorted(resources.config_maps.items())
        if name in text
    }


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

    def context(self, step: PlannedStep | None = None) -> dict[str, Any]:
        """``ctx``: Kargo's promotion context (the project, Stage, promotion, target Freight,
        the UI address and ``meta``: who promoted, whether it is a rollback, the step's alias)."""
        freight = self.plan.freight
        return {
            "uiBaseUrl": self.plan.ui_base_url,
            "project": self.plan.project,
            "stage": self.plan.stage,
            "promotion": self.plan.promotion,
            "targetFreight": {
                "name": freight.metadata.name,
                "alias": freight.alias,
                "origin": {"kind": freight.origin.kind, "name": freight.origin.name},
            },
            "meta": {
                "promotion": {"actor": self.plan.actor or "", "rollback": self.plan.rollback},
                "step": {"alias": step.alias if step is not None else ""},
            },
        }

    def env(self, step: PlannedStep, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The names a step's expressions see; ``extra`` adds some (the worktree activity's
        ``secret``, which only an activity can answer)."""
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
            "ctx": self.context(step),
            "outputs": outputs,
            "task": {"outputs": task_outputs},
            **self.plan.artifact_functions(),
            **metadata_functions(self._freight_metadata(), self.plan.stage_metadata),
            "success": lambda: not self._any_failed(),
            "failure": self._any_failed,
            "always": lambda: True,
            "status": lambda alias: self._status_of(step, alias),
            "vars": {},
            **(extra or {}),
        }
        if self.plan.planned_at is not None:
            env[expressions.NOW] = self.plan.planned_at
        env[expressions.CONFIG_MAPS] = self.plan.config_maps
        rendered_vars: dict[str, Any] = {}
        for var in step.vars:
            env["vars"] = rendered_vars
            rendered_vars = {
                **rendered_vars,
                var.name: _render(var.value, env, step, f"var {var.name}"),
            }
        env["vars"] = rendered_vars
        return env

    def _freight_metadata(self) -> dict[str, dict[str, Any]]:
        """The snapshot, and the collection's own metadata even when none was taken."""
        own = {
            f.metadata.name: f.status.metadata
            for f in self.plan.freight_collection
            if f.status is not None and f.status.metadata
        }
        return {**self.plan.freight_metadata, **own}

    def should_run(self, step: PlannedStep) -> bool:
        """Kargo's default: a step runs only when no earlier step failed, unless ``if`` says.

        As in Kargo, ``if`` must render to a bool (``"false"`` renders to false, typed
        like every template); anything else is an error, not a truthiness guess."""
        if step.if_ is None or not step.if_.strip():  # Kargo: an empty if is no if
            return not self._any_failed()
        value = _render(step.if_, self.env(step), step, "if")
        if not isinstance(value, bool):
            raise ExpressionError(
                f'step "{step.alias}" ({step.uses}) if: must evaluate to a bool, '
                f"got {type(value).__name__} {value!r}"
            )
        return value

    def render_config(
        self, step: PlannedStep, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        rendered = _render(step.config, self.env(step, extra), step, "config")
        assert isinstance(rendered, dict)
        return rendered

    def _any_failed(self) -> bool:
        return any(o.status in (StepStatus.FAILED, StepStatus.ERRORED) for o in self.outcomes)

    def _status_of(self, step: PlannedStep, alias: Any) -> str:
        # Kargo: inside a PromotionTask, status("x") names the sibling step "x" of the same
        # task; outside one, a top-level step.
        if not isinstance(alias, str) or not alias:
            raise ExpressionError("status: the argument must be a non-empty step alias")
        prefix = f"{step.task_alias}::" if step.task_alias is not None else ""
        for outcome in self.outcomes:
            namespace, _, short = outcome.alias.rpartition("::")
            if (namespace + "::" if namespace else "") == prefix and short == alias:
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
