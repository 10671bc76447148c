"""The ``Promotion`` workflow: one attempt to move one Freight into one Stage.

Phases: resolve the plan (an activity reads the project's configuration),
then run the steps in order — contiguous worktree steps (clone … push) as
one activity — and end ``Succeeded`` with every step's outputs, or fail the
workflow with type ``PromotionFailed`` (a step ran and failed) or
``PromotionErrored`` (the promotion could not run as configured, or the
infrastructure kept failing), carrying the ``PromotionResult`` as details.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from freightline.argocd import ARGOCD_ACTIVITIES, ArgoCDStepInput, step_timeout
    from freightline.errors import ConfigError, ExpressionError
    from freightline.observability import record_promotion_finished
    from freightline.promotion import (
        PlannedStep,
        PromotionPhase,
        PromotionPlan,
        PromotionRequest,
        PromotionResult,
        StepOutcome,
        StepScope,
        StepStatus,
        WorktreeBatch,
    )
    from freightline.steps import StepRunner, runner_of
    from freightline.temporal import SA_FREIGHT, SA_PROJECT, SA_STAGE

# Errors a person must fix: retrying cannot help, and the promotion is Errored.
USER_ERRORS = (
    "ConfigError",
    "ExpressionError",
    "NotFoundError",
    "PathEscapeError",
    "CredentialError",
)
# A step that ran and failed: the promotion is Failed.
STEP_FAILURES = ("StepError", "GitCommandError")

ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=[*USER_ERRORS, *STEP_FAILURES],
)
WORKTREE_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
WORKTREE_TIMEOUT = timedelta(minutes=30)
# Argo CD steps poll inside one activity that heartbeats on every poll (about every second).
ARGOCD_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
ARGOCD_TIMEOUT_MARGIN = timedelta(minutes=1)


@workflow.defn(name="Promotion")
class PromotionWorkflow:
    """Runs a Stage's promotion steps for one Freight."""

    def __init__(self) -> None:
        self._phase = PromotionPhase.PENDING
        self._current: str = ""
        self._outcomes: list[StepOutcome] = []

    @workflow.run
    async def run(self, request: PromotionRequest) -> PromotionResult:
        workflow.upsert_search_attributes(
            [
                SA_PROJECT.value_set(request.project),
                SA_STAGE.value_set(request.stage),
                SA_FREIGHT.value_set(request.freight),
            ]
        )
        self._phase = PromotionPhase.RUNNING
        self._show(request, None, "resolving the promotion plan")
        try:
            plan: PromotionPlan = await workflow.execute_activity(
                "resolve_promotion",
                request,
                result_type=PromotionPlan,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=ACTIVITY_RETRY,
                summary=f"resolve {request.project}/{request.stage} for {request.freight}",
            )
        except ActivityError as err:
            return self._end(request, None, PromotionPhase.ERRORED, _reason(err), None)
        freight_id = plan.freight.metadata.name
        if freight_id != request.freight:
            workflow.upsert_search_attributes([SA_FREIGHT.value_set(freight_id)])

        index = 0
        while index < len(plan.steps):
            step = plan.steps[index]
            if runner_of(step.uses) is StepRunner.WORKTREE:
                batch = _worktree_batch(plan, index)
                self._show(request, plan, f"running {batch[0].alias} … {batch[-1].alias}")
                try:
                    outcomes = await workflow.execute_activity(
                        "run_worktree_steps",
                        WorktreeBatch(
                            plan=plan,
                            step_indexes=tuple(s.index for s in batch),
                            previous=tuple(self._outcomes),
                        ),
                        result_type=list[StepOutcome],
                        start_to_close_timeout=WORKTREE_TIMEOUT,
                        heartbeat_timeout=WORKTREE_HEARTBEAT_TIMEOUT,
                        retry_policy=ACTIVITY_RETRY,
                        summary=" → ".join(s.uses for s in batch),
                    )
                except ActivityError as err:
                    phase = _phase_of(err)
                    return self._end(request, plan, phase, _reason(err), _failed_step(err, batch))
                self._outcomes.extend(outcomes)
                index += len(batch)
            elif runner_of(step.uses) is StepRunner.ARGOCD:
                outcome = await self._run_argocd_step(request, plan, step)
                self._outcomes.append(outcome)
                failed = outcome.status in (StepStatus.FAILED, StepStatus.ERRORED)
                if failed and not step.continue_on_error:
                    phase = (
                        PromotionPhase.FAILED
                        if outcome.status is StepStatus.FAILED
                        else PromotionPhase.ERRORED
                    )
                    return self._end(request, plan, phase, outcome.message, step.alias)
                index += 1
            else:  # pragma: no cover - the plan only holds catalogued steps
                raise ApplicationError(f'no runner for step "{step.uses}"', non_retryable=True)
        return self._end(request, plan, PromotionPhase.SUCCEEDED, "", None)

    async def _run_argocd_step(
        self, request: PromotionRequest, plan: PromotionPlan, step: PlannedStep
    ) -> StepOutcome:
        """Decide and render here (pure), then sync and wait in one heartbeating activity."""
        scope = StepScope(plan, self._outcomes)
        try:
            if not scope.should_run(step):
                return StepOutcome(alias=step.alias, uses=step.uses, status=StepStatus.SKIPPED)
            config = scope.render_config(step)
            timeout = step_timeout(config, step.retry_timeout)
        except (ExpressionError, ConfigError) as err:
            message = str(err)
            if not message.startswith("step "):
                message = f'step "{step.alias}" ({step.uses}): {message}'
            return StepOutcome(
                alias=step.alias, uses=step.uses, status=StepStatus.ERRORED, message=message
            )
        apps = _app_names(config)
        self._show(request, plan, f"{step.alias}: waiting for Argo CD app {apps}")
        try:
            outcome: StepOutcome = await workflow.execute_activity(
                ARGOCD_ACTIVITIES[step.uses],
                ArgoCDStepInput(
                    project=plan.project,
                    stage=plan.stage,
                    promotion=plan.promotion,
                    step=step.alias,
                    uses=step.uses,
                    config=config,
                    timeout_seconds=timeout.total_seconds(),
                ),
                result_type=StepOutcome,
                start_to_close_timeout=timeout + ARGOCD_TIMEOUT_MARGIN,
                heartbeat_timeout=ARGOCD_HEARTBEAT_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
                summary=f"{step.uses} {apps}",
            )
        except ActivityError as err:
            failed = _phase_of(err) is PromotionPhase.FAILED
            return StepOutcome(
                alias=step.alias,
                uses=step.uses,
                status=StepStatus.FAILED if failed else StepStatus.ERRORED,
                message=_reason(err),
            )
        return outcome

    @workflow.query(name="status")
    def status(self) -> dict[str, object]:
        """The phase, the current activity, and every finished step's outcome."""
        return {
            "phase": self._phase.value,
            "current": self._current,
            "steps": [o.model_dump(mode="json", by_alias=True) for o in self._outcomes],
        }

    def _show(self, request: PromotionRequest, plan: PromotionPlan | None, doing: str) -> None:
        self._current = doing
        freight = request.freight
        if plan is not None:
            freight = plan.freight.alias or plan.freight.metadata.name
        workflow.set_current_details(
            f"**promote freight `{freight}` into `{request.stage}`** "
            f"(project `{request.project}`)\n\nphase: {self._phase.value} — {doing}"
        )

    def _end(
        self,
        request: PromotionRequest,
        plan: PromotionPlan | None,
        phase: PromotionPhase,
        message: str,
        failed_step: str | None,
    ) -> PromotionResult:
        self._phase = phase
        result = PromotionResult(
            project=request.project,
            stage=request.stage,
            freight=plan.freight.metadata.name if plan else request.freight,
            freight_alias=plan.freight.alias if plan else None,
            phase=phase,
            message=message,
            failed_step=failed_step,
            steps=tuple(self._outcomes),
        )
        self._show(request, plan, message or phase.value)
        # The workflow meter is replay-safe: a replayed _end records nothing.
        elapsed = workflow.now() - workflow.info().start_time
        record_promotion_finished(
            request.project, request.stage, phase.value, elapsed.total_seconds()
        )
        if phase is PromotionPhase.SUCCEEDED:
            return result
        raise ApplicationError(message, result, type=f"Promotion{phase.value}", non_retryable=True)


def _app_names(config: dict[str, Any]) -> str:
    names = []
    for app in config.get("apps") or []:
        if isinstance(app, dict):
            names.append(str(app.get("name") or f"selector {app.get('selector')}"))
    return ", ".join(names) or "?"


def _worktree_batch(plan: PromotionPlan, start: int) -> list[PlannedStep]:
    batch = []
    for step in plan.steps[start:]:
        if runner_of(step.uses) is not StepRunner.WORKTREE:
            break
        batch.append(step)
    return batch


def _application_error(err: ActivityError) -> ApplicationError | None:
    cause = err.cause
    return cause if isinstance(cause, ApplicationError) else None


def _reason(err: ActivityError) -> str:
    cause = _application_error(err)
    if cause is not None:
        return cause.message
    return str(err.cause or err)


def _phase_of(err: ActivityError) -> PromotionPhase:
    cause = _application_error(err)
    if cause is not None and cause.type in STEP_FAILURES:
        return PromotionPhase.FAILED
    return PromotionPhase.ERRORED


def _failed_step(err: ActivityError, batch: list[PlannedStep]) -> str | None:
    cause = _application_error(err)
    if cause is not None and cause.details:
        details = cause.details[0]
        if isinstance(details, dict) and "step" in details:
            return str(details["step"])
    return None
