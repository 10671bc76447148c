"""The ``Promotion`` workflow: one attempt to move one Freight into one Stage.

Phases: resolve the plan (an activity reads the project's configuration),
then run the steps in order — contiguous worktree steps (clone … push) as
one activity — and end ``Succeeded`` with every step's outputs, or fail the
workflow with type ``PromotionFailed`` (a step ran and failed) or
``PromotionErrored`` (the promotion could not run as configured, or the
infrastructure kept failing), carrying the ``PromotionResult`` as details.
Which one is the failing error's to say (``freightline.errors``: each class
knows its outcome); the step registry (``freightline.contracts.steps``) says where each
step runs. Activities are called by reference, with the option sets of
``workflows.options``.

People and calendars are signals and timers here: a ``wait-for-approval``
step waits for the ``approve`` / ``reject`` signals (or the
``approve_promotion`` / ``reject_promotion`` updates, whose validators refuse
a bad request with a reason); before its first step that changes anything the
promotion waits, on a durable timer, for its Stage's promotion windows to
open; the ``abort`` signal stops it at the next safe point (a running
activity is cancelled and its cancellation awaited) and ends it ``Aborted``
(type ``PromotionAborted``). Each ending, and each wait for approval, starts
a ``Notify`` child that outlives the promotion.

Forges are timers and a signal too: ``git-wait-for-pr`` polls the pull request
(a local activity) on a durable timer, and the ``pull_request_closed`` signal a
webhook sends ends the sleep early (``docs/pull-requests.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.workflow import ActivityHandle

with workflow.unsafe.imports_passed_through():
    from activities.argocd import ArgoCDActivities
    from activities.forge_steps import ForgeActivities, GitWaitForPRConfig
    from activities.project import ProjectActivities
    from activities.worktree import WorktreeActivities
    from freightline.contracts.approvals import signature_refusal
    from freightline.contracts.argocd import ArgoCDStepInput, shard_unserved, step_timeout
    from freightline.contracts.metadata import (
        FreightAliasRequest,
        MetadataRequest,
        SetFreightAliasConfig,
        SetMetadataConfig,
    )
    from freightline.contracts.metrics import record_promotion_finished
    from freightline.contracts.names import (
        PULL_REQUEST_SIGNAL,
        SA_FREIGHT,
        SA_PROJECT,
        SA_PULL_REQUEST,
        SA_STAGE,
        argocd_task_queue,
    )
    from freightline.contracts.notifications import EventKind, NotificationEvent
    from freightline.contracts.promotion import (
        AbortMessage,
        ApprovalDecision,
        ApprovalMessage,
        ApprovalStatus,
        PlannedStep,
        PromotionPhase,
        PromotionPlan,
        PromotionRequest,
        PromotionResult,
        PromotionStatus,
        RefusedMessage,
        StepOutcome,
        StepScope,
        StepStatus,
        WorktreeBatch,
        failure_type,
    )
    from freightline.contracts.pull_request_wait import (
        DEFAULT_POLL_INTERVAL,
        PullRequestClosed,
        PullRequestQuery,
        PullRequestWait,
        poll_interval,
    )
    from freightline.contracts.pull_requests import PullRequest
    from freightline.contracts.steps import STEPS, StepRunner, parse_config, run_inline, runner_of
    from freightline.errors import (
        ApprovalRefused,
        ConfigError,
        Diagnosis,
        ExpressionError,
        FreightlineError,
        diagnose,
        non_retryable_error_types,
        to_application_error,
    )
    from freightline.kargo.resources import ApprovalPolicy, parse_duration
    from freightline.kargo.windows import evaluate as evaluate_windows

    ArgoCDStepActivity = Callable[[ArgoCDActivities, ArgoCDStepInput], StepOutcome]
    # Resolved from the step registry here, at import, so that no run ever imports a module.
    ARGOCD_STEP_ACTIVITIES: dict[str, ArgoCDStepActivity] = {
        step.name: step.resolve_implementation()
        for step in STEPS.values()
        if step.runner is StepRunner.ARGOCD
    }
    # Inline steps likewise: their module is imported now, and run_inline finds it cached.
    INLINE_STEPS = frozenset(
        definition.name
        for definition in STEPS.values()
        if definition.inline and definition.resolve_implementation() and definition.config_model()
    )
    from workflows.notify import send_notification
    from workflows.options import (
        argocd_options,
        project_step_options,
        quick_options,
        worktree_options,
    )

LOCAL_ACTIVITY_ERRORS = (ActivityError, ApplicationError, TemporalTimeoutError)
"""What a failed (local) activity raises: a local activity's error arrives unwrapped."""
LOCAL_PLAN = "local-plan"
"""Patch: the plan is resolved in a local activity (runs started before it use an activity)."""
# Never wake for a window sooner than this (a timer cannot be shorter than its own latency).
MIN_WINDOW_WAIT = timedelta(seconds=1)

T = TypeVar("T")
WAIT_FOR_PR = "git-wait-for-pr"


class _Aborted(Exception):
    """Control flow only: an ``abort`` arrived; unwind to the end of ``run``."""


@dataclass
class _PendingApproval:
    """The ``wait-for-approval`` step being waited on."""

    step: str
    policy: ApprovalPolicy
    deadline: datetime | None
    approved_by: list[str] = field(default_factory=list)
    rejected: ApprovalDecision | None = None

    @property
    def decided(self) -> bool:
        return self.rejected is not None or len(self.approved_by) >= self.policy.required

    def summary(self) -> str:
        approvers = self.policy.approvers
        text = f"{len(self.approved_by)} of {self.policy.required} approvals"
        if self.approved_by:
            text += f" ({', '.join(self.approved_by)})"
        text += f"; approvers: {', '.join(approvers) if approvers else 'anyone'}"
        if self.deadline is not None:
            text += f"; times out at {self.deadline.strftime('%Y-%m-%d %H:%M:%S UTC')}"
        return text


@workflow.defn(name="Promotion")
class PromotionWorkflow:
    """Runs a Stage's promotion steps for one Freight."""

    def __init__(self) -> None:
        self._phase = PromotionPhase.PENDING
        self._current: str = ""
        self._outcomes: list[StepOutcome] = []
        self._request: PromotionRequest | None = None
        self._plan: PromotionPlan | None = None
        self._approval: _PendingApproval | None = None
        self._decisions: list[ApprovalDecision] = []
        self._refused: list[RefusedMessage] = []
        self._abort: AbortMessage | None = None
        self._waiting_for_window = ""
        self._windows_checked = False
        self._windows_overridden_by: str | None = None
        self._current_step: str | None = None
        self._pull_request: PullRequestWait | None = None
        self._pull_request_woken = False

    @workflow.run
    async def run(self, request: PromotionRequest) -> PromotionResult:
        workflow.upsert_search_attributes(
            [
                SA_PROJECT.value_set(request.project),
                SA_STAGE.value_set(request.stage),
                SA_FREIGHT.value_set(request.freight),
            ]
        )
        self._request = request
        self._phase = PromotionPhase.RUNNING
        self._show(request, None, "resolving the promotion plan")
        options = quick_options(f"resolve {request.project}/{request.stage} for {request.freight}")
        try:
            if workflow.patched(LOCAL_PLAN):
                # Two queries to other workflows, no side effects: a local activity spares
                # a round trip through the task queue and three history events.
                plan = await workflow.execute_local_activity_method(
                    ProjectActivities.resolve_promotion, request, **options
                )
            else:
                plan = await workflow.execute_activity_method(
                    ProjectActivities.resolve_promotion, request, **options
                )
        except LOCAL_ACTIVITY_ERRORS as err:
            failure = diagnose(err)
            return await self._end(request, None, _phase(failure), failure.reason, None)
        self._plan = plan
        freight_id = plan.freight.metadata.name
        if freight_id != request.freight:
            workflow.upsert_search_attributes([SA_FREIGHT.value_set(freight_id)])
        step_alias: str | None = None
        try:
            return await self._run_steps(request, plan)
        except _Aborted:
            if self._current_step is not None:
                step_alias = self._current_step
        abort = self._abort
        assert abort is not None
        message = f"aborted by {abort.user}" + (f": {abort.reason}" if abort.reason else "")
        return await self._end(request, plan, PromotionPhase.ABORTED, message, step_alias)

    async def _run_steps(self, request: PromotionRequest, plan: PromotionPlan) -> PromotionResult:
        """Run the plan's steps in order; raises _Aborted at the first safe point after abort."""
        index = 0
        while index < len(plan.steps):
            if self._abort is not None:
                raise _Aborted
            step = plan.steps[index]
            self._current_step = step.alias
            runner = runner_of(step.uses)
            if runner is StepRunner.WORKFLOW:
                if step.uses in INLINE_STEPS:
                    outcome = self._run_inline_step(plan, step)
                    stops = not step.continue_on_error
                elif step.uses == WAIT_FOR_PR:
                    outcome = await self.wait_for_pull_request(request, plan, step)
                    stops = not step.continue_on_error
                else:  # wait-for-approval: its rejection or timeout always ends the promotion
                    outcome = await self.wait_for_approval(request, plan, step)
                    stops = True
                self._outcomes.append(outcome)
                if stops and outcome.status in (StepStatus.FAILED, StepStatus.ERRORED):
                    phase = PromotionPhase(outcome.status.value)
                    return await self._end(request, plan, phase, outcome.message, step.alias)
                index += 1
                continue
            await self._hold_for_windows(request, plan)
            if runner is StepRunner.WORKTREE:
                batch = _worktree_batch(plan, index)
                self._show(request, plan, f"running {batch[0].alias} … {batch[-1].alias}")
                try:
                    outcomes = await self._until_aborted(
                        workflow.start_activity_method(
                            WorktreeActivities.run_worktree_steps,
                            WorktreeBatch(
                                plan=plan,
                                step_indexes=tuple(s.index for s in batch),
                                previous=tuple(self._outcomes),
                            ),
                            **worktree_options(" → ".join(s.uses for s in batch)),
                        ),
                        pushes=True,
                    )
                except ActivityError as err:
                    failure = diagnose(err)
                    return await self._end(
                        request, plan, _phase(failure), failure.reason, _failed_step(failure)
                    )
                self._outcomes.extend(outcomes)
                index += len(batch)
            elif runner is StepRunner.PROJECT:
                outcome, plan = await self._run_project_step(request, plan, step)
                self._plan = plan  # later steps read the alias and metadata it wrote
                self._outcomes.append(outcome)
                failed = outcome.status in (StepStatus.FAILED, StepStatus.ERRORED)
                if failed and not step.continue_on_error:
                    phase = PromotionPhase(outcome.status.value)
                    return await self._end(request, plan, phase, outcome.message, step.alias)
                index += 1
            elif runner is StepRunner.ARGOCD:
                outcome = await self._run_argocd_step(request, plan, step)
                self._outcomes.append(outcome)
                failed = outcome.status in (StepStatus.FAILED, StepStatus.ERRORED)
                if failed and not step.continue_on_error:
                    phase = PromotionPhase(outcome.status.value)
                    return await self._end(request, plan, phase, outcome.message, step.alias)
                index += 1
            else:  # pragma: no cover - the plan only holds catalogued steps
                raise ApplicationError(f'no runner for step "{step.uses}"', non_retryable=True)
        if self._abort is not None:  # too late: every step completed
            self._ignore(self._abort.user, "abort", "every step had already completed")
            self._abort = None
        self._current_step = None
        return await self._end(request, plan, PromotionPhase.SUCCEEDED, "", None)

    async def _until_aborted(self, handle: ActivityHandle[T], *, pushes: bool = False) -> T:
        """The activity's result, unless an abort comes first: then cancel it, wait for the
        cancellation to complete, and raise _Aborted. An activity that finished despite the
        cancellation keeps its result (the caller records it, then stops). A graceful abort
        lets an activity that ``pushes`` finish; the step loop stops at the next boundary."""

        def stop_now() -> bool:
            abort = self._abort
            return abort is not None and not (abort.graceful and pushes)

        await workflow.wait_condition(lambda: handle.done() or stop_now())
        if not handle.done():
            self._show_current(f"aborting: cancelling {self._current}")
            handle.cancel()
            try:
                return await handle
            except (ActivityError, asyncio.CancelledError):
                raise _Aborted from None
        return await handle

    async def _hold_for_windows(self, request: PromotionRequest, plan: PromotionPlan) -> None:
        """Wait (a durable timer) until the Stage's promotion windows open, once per promotion,
        before its first step that changes anything."""
        if self._windows_checked or not plan.windows:
            return
        self._windows_checked = True
        if request.override_windows:
            self._windows_overridden_by = request.requested_by or "unknown"
            workflow.logger.info(
                "promotion windows overridden", extra={"by": self._windows_overridden_by}
            )
            return
        while True:
            now = workflow.now()
            gate = evaluate_windows(now, plan.windows)
            if gate.open:
                self._waiting_for_window = ""
                return
            self._waiting_for_window = gate.reason
            self._show(request, plan, f"waiting for a promotion window: {gate.reason}")
            timeout = max(gate.next_open - now, MIN_WINDOW_WAIT) if gate.next_open else None
            try:
                await workflow.wait_condition(lambda: self._abort is not None, timeout=timeout)
            except TimeoutError:
                continue
            raise _Aborted

    def _run_inline_step(self, plan: PromotionPlan, step: PlannedStep) -> StepOutcome:
        """``fail``, ``compose-output``: pure, so here, with no activity (the worktree
        activity runs them the same way when they sit between its steps)."""
        scope = StepScope(plan, self._outcomes)
        try:
            if not scope.should_run(step):
                return StepOutcome(alias=step.alias, uses=step.uses, status=StepStatus.SKIPPED)
            outputs = run_inline(step.uses, scope.render_config(step))
        except FreightlineError as err:
            err.locate(f'step "{step.alias}" ({step.uses})')
            return StepOutcome(
                alias=step.alias,
                uses=step.uses,
                status=StepStatus(err.outcome.value),
                message=str(err),
            )
        return StepOutcome(
            alias=step.alias, uses=step.uses, status=StepStatus.SUCCEEDED, outputs=outputs
        )

    async def wait_for_approval(
        self, request: PromotionRequest, plan: PromotionPlan, step: PlannedStep
    ) -> StepOutcome:
        """The ``wait-for-approval`` step (see ``freightline.contracts.steps``): hold until enough
        distinct approvers approved, someone rejected, or time ran out."""
        scope = StepScope(plan, self._outcomes)
        try:
            if not scope.should_run(step):
                return StepOutcome(alias=step.alias, uses=step.uses, status=StepStatus.SKIPPED)
            policy = ApprovalPolicy.model_validate(scope.render_config(step))
        except (ExpressionError, ConfigError, ValidationError) as err:
            return StepOutcome(
                alias=step.alias,
                uses=step.uses,
                status=StepStatus.ERRORED,
                message=f'step "{step.alias}" ({step.uses}): {_one_line(err)}',
            )
        timeout = parse_duration(policy.timeout) if policy.timeout else None
        pending = _PendingApproval(
            step=step.alias,
            policy=policy,
            deadline=workflow.now() + timeout if timeout is not None else None,
        )
        self._approval = pending
        self._show(request, plan, f"waiting for approval: {pending.summary()}")
        await self._notify(
            "promotion.waiting_for_approval", pending.summary(), request.requested_by
        )
        try:
            await workflow.wait_condition(
                lambda: pending.decided or self._abort is not None, timeout=timeout
            )
        except TimeoutError:
            return StepOutcome(
                alias=step.alias,
                uses=step.uses,
                status=StepStatus.FAILED,
                message=(
                    f'step "{step.alias}": approval timed out after {policy.timeout} '
                    f"with {len(pending.approved_by)} of {policy.required} approvals"
                    + (f" ({', '.join(pending.approved_by)})" if pending.approved_by else "")
                ),
            )
        finally:
            self._approval = None
        if pending.rejected is not None:
            rejected = pending.rejected
            return StepOutcome(
                alias=step.alias,
                uses=step.uses,
                status=StepStatus.FAILED,
                message=f"rejected by {rejected.user}"
                + (f": {rejected.comment}" if rejected.comment else ""),
                outputs={"rejectedBy": rejected.user},
            )
        if not pending.decided:
            raise _Aborted
        return StepOutcome(
            alias=step.alias,
            uses=step.uses,
            status=StepStatus.SUCCEEDED,
            message=f"approved by {', '.join(pending.approved_by)}",
            outputs={"approvedBy": list(pending.approved_by)},
        )

    async def wait_for_pull_request(
        self, request: PromotionRequest, plan: PromotionPlan, step: PlannedStep
    ) -> StepOutcome:
        """The ``git-wait-for-pr`` step: wait here, durably, until the pull request is merged
        (Succeeded, output ``commit``: the merge commit) or closed (Failed, naming who closed
        it), the step's ``retry.timeout`` passes (Errored, as Kargo's) or an abort comes.

        Each poll is a local activity that asks the forge; between polls a durable timer
        (``pollInterval``, slowing down on a long wait: ``poll_interval``), cut short by the
        ``pull_request_closed`` signal a webhook sends. The search attribute
        ``FreightlinePullRequest`` (the pull request's URL) is how the webhook finds us.
        """
        scope = StepScope(plan, self._outcomes)
        try:
            if not scope.should_run(step):
                return StepOutcome(alias=step.alias, uses=step.uses, status=StepStatus.SKIPPED)
            model = STEPS[step.uses].config_model()
            assert model is not None
            config = parse_config(model, scope.render_config(step))
            assert isinstance(config, GitWaitForPRConfig)
            configured = (
                parse_duration(config.poll_interval)
                if config.poll_interval
                else DEFAULT_POLL_INTERVAL
            )
            timeout = parse_duration(step.retry_timeout) if step.retry_timeout else None
        except (FreightlineError, ValueError) as err:
            message = _one_line(err)
            if not message.startswith("step "):
                message = f'step "{step.alias}" ({step.uses}): {message}'
            return StepOutcome(
                alias=step.alias, uses=step.uses, status=StepStatus.ERRORED, message=message
            )
        started = workflow.now()
        # Kargo: no timeout unless the step's retry.timeout sets one (0 is none, too).
        deadline = started + timeout if timeout else None
        self._pull_request = PullRequestWait(
            step=step.alias,
            number=config.pr_number,
            repo_url=config.repo_url,
            deadline=deadline.isoformat() if deadline else None,
        )
        query = PullRequestQuery(
            project=plan.project,
            repo_url=config.repo_url,
            number=config.pr_number,
            provider=config.provider,
            insecure_skip_tls_verify=config.insecure_skip_tls_verify,
        )
        indexed = False
        try:
            while True:
                self._pull_request_woken = False
                state = await self._poll_pull_request(step, query)
                if isinstance(state, StepOutcome):
                    return state
                if state is not None:
                    if not indexed:
                        workflow.upsert_search_attributes([SA_PULL_REQUEST.value_set(state.url)])
                        indexed = True
                    hint = self._pull_request.closed_by_webhook if self._pull_request else None
                    ended = _pull_request_ended(step, state, hint)
                    if ended is not None:
                        return ended
                waiting = self._pull_request
                assert waiting is not None
                self._show(request, plan, f"{step.alias}: {waiting.summary()}")
                now = workflow.now()
                if deadline is not None and now >= deadline:
                    return StepOutcome(
                        alias=step.alias,
                        uses=step.uses,
                        status=StepStatus.ERRORED,
                        message=f'step "{step.alias}" timed out after {step.retry_timeout}'
                        f" waiting for pull request #{config.pr_number}",
                        outputs=_pr_outputs(state) if state is not None else {},
                    )
                sleep = poll_interval(configured, now - started)
                if deadline is not None:
                    sleep = min(sleep, deadline - now)
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._pull_request_woken or self._abort is not None,
                        timeout=sleep,
                    )
                if self._abort is not None:
                    raise _Aborted
        finally:
            self._pull_request = None
            if indexed:
                workflow.upsert_search_attributes([SA_PULL_REQUEST.value_unset()])

    async def _poll_pull_request(
        self, step: PlannedStep, query: PullRequestQuery
    ) -> PullRequest | StepOutcome | None:
        """Ask the forge once (a local activity: six history events a poll, not eleven).
        A failure the retries could not mend ends the step Errored if retrying cannot help
        (a 401, a 404); otherwise it waits for the next poll, and the status says why."""
        waiting = self._pull_request
        assert waiting is not None
        try:
            state = await self._until_aborted(
                workflow.start_local_activity_method(
                    ForgeActivities.pull_request_state,
                    query,
                    **quick_options(f"pull request #{query.number} of {query.repo_url}"),
                )
            )
        except LOCAL_ACTIVITY_ERRORS as err:
            failure = diagnose(err)
            if failure.type in non_retryable_error_types():
                return StepOutcome(
                    alias=step.alias,
                    uses=step.uses,
                    status=StepStatus.ERRORED,
                    message=f'step "{step.alias}" ({step.uses}): error getting pull request '
                    f"#{query.number}: {failure.reason}",
                )
            workflow.logger.warning("pull request poll failed", extra={"reason": failure.reason})
            self._pull_request = waiting.model_copy(update={"polls": waiting.polls + 1})
            return None
        self._pull_request = waiting.model_copy(
            update={"polls": waiting.polls + 1, "url": state.url}
        )
        return state

    # --- approvals and abort ----------------------------------------------------------------

    @workflow.signal(name="approve")
    def approve(self, message: ApprovalMessage) -> None:
        """``{"user", "comment"}``; ignored (with the reason recorded) when not acceptable."""
        self._decide_by_signal(message, "approve")

    @workflow.signal(name="reject")
    def reject(self, message: ApprovalMessage) -> None:
        """``{"user", "comment"}``: a rejection fails the promotion."""
        self._decide_by_signal(message, "reject")

    @workflow.update(name="approve_promotion")
    def approve_promotion(self, message: ApprovalMessage) -> str:
        """Approve and get an answer (``freightline approve-promotion``)."""
        return self._decide(message, "approve")

    @approve_promotion.validator
    def validate_approve_promotion(self, message: ApprovalMessage) -> None:
        refusal = self._refusal(message, "approve")
        if refusal:
            raise to_application_error(ApprovalRefused(refusal))

    @workflow.update(name="reject_promotion")
    def reject_promotion(self, message: ApprovalMessage) -> str:
        """Reject and get an answer (``freightline reject-promotion``)."""
        return self._decide(message, "reject")

    @reject_promotion.validator
    def validate_reject_promotion(self, message: ApprovalMessage) -> None:
        refusal = self._refusal(message, "reject")
        if refusal:
            raise to_application_error(ApprovalRefused(refusal))

    @workflow.signal(name=PULL_REQUEST_SIGNAL)
    def pull_request_closed(self, message: PullRequestClosed) -> None:
        """A webhook says a pull request was merged or closed: if it is the one this promotion
        waits for, poll now (the forge's answer decides, not the webhook's word)."""
        waiting = self._pull_request
        if waiting is None or _pr_key(message.url) != _pr_key(waiting.url):
            workflow.logger.info("pull request signal ignored", extra={"url": message.url})
            return
        self._pull_request = waiting.model_copy(
            update={
                "woken_by_webhook": waiting.woken_by_webhook + 1,
                "closed_by_webhook": message.by or waiting.closed_by_webhook,
            }
        )
        self._pull_request_woken = True

    @workflow.signal(name="abort")
    def abort(self, message: AbortMessage) -> None:
        """``{"user", "reason"}``: stop at the next safe point and end Aborted."""
        if self._abort is not None:
            self._ignore(message.user, "abort", f"already aborted by {self._abort.user}")
            return
        self._abort = message
        self._show_current(f"abort requested by {message.user}")

    def _decide_by_signal(self, message: ApprovalMessage, signal: str) -> None:
        refusal = self._refusal(message, signal)
        if refusal:
            self._ignore(message.user, signal, refusal)
            return
        self._decide(message, signal)

    def _refusal(self, message: ApprovalMessage, action: str) -> str:
        """Why this approve / reject cannot be accepted now ("" when it can)."""
        pending = self._approval
        if not message.user.strip():
            return "a user is required"
        if pending is None or pending.decided or self._abort is not None:
            return f"no approval is pending (promotion is {self._phase.value}: {self._current})"
        approvers = pending.policy.approvers
        if approvers is not None and message.user not in approvers:
            return (
                f'"{message.user}" may not {action} step "{pending.step}" '
                f"(approvers: {', '.join(approvers)})"
            )
        if message.user in pending.approved_by:
            return f'"{message.user}" already approved step "{pending.step}"'
        if self._plan is not None and self._plan.approval_keys:
            return signature_refusal(
                self._plan.approval_keys,
                workflow.info().workflow_id,
                action,
                message,
                workflow.now(),
            )
        return ""

    def _decide(self, message: ApprovalMessage, action: str) -> str:
        pending = self._approval
        assert pending is not None  # _refusal (the validator) said so
        decision = ApprovalDecision(
            user=message.user,
            decision="approved" if action == "approve" else "rejected",
            comment=message.comment,
            at=workflow.now(),
            step=pending.step,
        )
        self._decisions.append(decision)
        if action == "reject":
            pending.rejected = decision
            self._show_current(f"rejected by {message.user}")
            return f"rejected by {message.user}: the promotion fails"
        pending.approved_by.append(message.user)
        self._show_current(f"waiting for approval: {pending.summary()}")
        return f"approved by {message.user}: {pending.summary()}"

    def _ignore(self, user: str, signal: str, reason: str) -> None:
        self._refused.append(
            RefusedMessage(user=user, signal=signal, reason=reason, at=workflow.now())
        )
        workflow.logger.warning("signal ignored", extra={"signal": signal, "reason": reason})
        self._show_current(self._current)

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
        queue = argocd_task_queue(workflow.info().task_queue, plan.shard)
        self._show(request, plan, f"{step.alias}: waiting for Argo CD app {apps}")
        try:
            outcome = await self._until_aborted(
                workflow.start_activity_method(
                    ARGOCD_STEP_ACTIVITIES[step.uses],
                    ArgoCDStepInput(
                        project=plan.project,
                        stage=plan.stage,
                        promotion=plan.promotion,
                        step=step.alias,
                        uses=step.uses,
                        config=config,
                        timeout_seconds=timeout.total_seconds(),
                    ),
                    **argocd_options(queue, timeout, f"{step.uses} {apps}"),
                )
            )
        except ActivityError as err:
            failure = diagnose(err)
            return StepOutcome(
                alias=step.alias,
                uses=step.uses,
                status=StepStatus(failure.outcome.value),
                message=shard_unserved(plan.shard, queue, err) or failure.reason,
            )
        return outcome

    async def _run_project_step(
        self, request: PromotionRequest, plan: PromotionPlan, step: PlannedStep
    ) -> tuple[StepOutcome, PromotionPlan]:
        """``set-freight-alias`` / ``set-metadata``: render and validate here (pure), then one
        activity sends the change to the workflows that hold the Freight or Stage; the plan
        comes back with what it wrote, for the expressions of the steps after it."""
        scope = StepScope(plan, self._outcomes)
        try:
            if not scope.should_run(step):
                skipped = StepOutcome(alias=step.alias, uses=step.uses, status=StepStatus.SKIPPED)
                return skipped, plan
            model = STEPS[step.uses].config_model()
            assert model is not None
            config = parse_config(model, scope.render_config(step))
        except FreightlineError as err:
            message = str(err)
            if not message.startswith("step "):
                message = f'step "{step.alias}" ({step.uses}): {message}'
            status = StepStatus(err.outcome.value)
            return StepOutcome(
                alias=step.alias, uses=step.uses, status=status, message=message
            ), plan
        self._show(request, plan, f"{step.alias}: {step.uses}")
        try:
            if isinstance(config, SetFreightAliasConfig):
                renamed = await self._until_aborted(
                    workflow.start_activity_method(
                        ProjectActivities.set_freight_alias,
                        FreightAliasRequest(
                            project=plan.project, freight=config.name, alias=config.alias
                        ),
                        **project_step_options(f"set-freight-alias {config.alias}"),
                    ),
                    pushes=True,
                )
                plan = plan.alias_set(renamed.freight, renamed.alias)
                message = renamed.message()
            else:
                assert isinstance(config, SetMetadataConfig)
                written = await self._until_aborted(
                    workflow.start_activity_method(
                        ProjectActivities.set_metadata,
                        MetadataRequest(project=plan.project, updates=config.updates),
                        **project_step_options(
                            "set-metadata "
                            + ", ".join(f"{u.kind}/{u.name}" for u in config.updates)
                        ),
                    ),
                    pushes=True,
                )
                for applied in written.applied:
                    plan = plan.metadata_set(applied.kind, applied.name, applied.metadata)
                message = ""
        except ActivityError as err:
            failure = diagnose(err)
            return StepOutcome(
                alias=step.alias,
                uses=step.uses,
                status=StepStatus(failure.outcome.value),
                message=f'step "{step.alias}" ({step.uses}): {failure.reason}',
            ), plan
        succeeded = StepOutcome(
            alias=step.alias, uses=step.uses, status=StepStatus.SUCCEEDED, message=message
        )
        return succeeded, plan

    @workflow.query(name="status")
    def status(self) -> PromotionStatus:
        """The phase, the current activity, and every finished step's outcome."""
        pending = self._approval
        return PromotionStatus(
            phase=self._phase,
            current=self._current,
            steps=tuple(self._outcomes),
            approval=(
                ApprovalStatus(
                    step=pending.step,
                    required=pending.policy.required,
                    approvers=pending.policy.approvers,
                    approved_by=tuple(pending.approved_by),
                    deadline=pending.deadline,
                )
                if pending is not None
                else None
            ),
            approvals=tuple(self._decisions),
            refused=tuple(self._refused),
            waiting_for_window=self._waiting_for_window,
            aborted_by=self._abort.user if self._abort else None,
            pull_request=self._pull_request,
        )

    def _show(self, request: PromotionRequest, plan: PromotionPlan | None, doing: str) -> None:
        self._current = doing
        freight = request.freight
        if plan is not None:
            freight = plan.freight.alias or plan.freight.metadata.name
        lines = [
            f"**promote freight `{freight}` into `{request.stage}`** (project `{request.project}`)",
            f"phase: {self._phase.value}" + (f" — {doing}" if doing != self._phase.value else ""),
        ]
        lines += [
            f"- {d.decision} by {d.user} at {d.at:%H:%M:%S}"
            + (f": {d.comment}" if d.comment else "")
            for d in self._decisions
        ]
        lines += [f"- ignored {r.signal} from {r.user}: {r.reason}" for r in self._refused[-5:]]
        if self._windows_overridden_by:
            lines.append(f"- promotion windows overridden by {self._windows_overridden_by}")
        if self._approval is not None and not self._approval.decided:
            lines.append(how_to_approve(workflow.info().workflow_id))
        waiting = self._pull_request
        if waiting is not None and waiting.url:
            lines.append(
                f"**waiting for [pull request #{waiting.number}]({waiting.url})** to merge"
            )
        workflow.set_current_details("\n\n".join(lines))

    def _show_current(self, doing: str) -> None:
        """Refresh the details from a message handler (before the plan, the request only)."""
        if self._request is not None:
            self._show(self._request, self._plan, doing)

    async def _notify(self, kind: EventKind, message: str, user: str | None) -> None:
        plan, request = self._plan, self._request
        if plan is None or request is None or not plan.notify:
            return
        await send_notification(
            NotificationEvent(
                event=kind,
                project=request.project,
                stage=request.stage,
                freight=plan.freight.metadata.name,
                freight_alias=plan.freight.alias,
                workflow_id=workflow.info().workflow_id,
                phase=self._phase.value,
                message=message,
                user=user,
            )
        )

    async def _end(
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
            approvals=tuple(self._decisions),
            refused=tuple(self._refused),
            aborted_by=self._abort.user
            if phase is PromotionPhase.ABORTED and self._abort
            else None,
            windows_overridden_by=self._windows_overridden_by,
        )
        self._show(request, plan, message or phase.value)
        user = result.aborted_by or next(
            (d.user for d in reversed(self._decisions) if d.decision == "rejected"),
            request.requested_by,
        )
        await self._notify(_EVENTS[phase], message, user)
        # The workflow meter is replay-safe: a replayed _end records nothing.
        elapsed = workflow.now() - workflow.info().start_time
        record_promotion_finished(
            request.project, request.stage, phase.value, elapsed.total_seconds()
        )
        if phase is PromotionPhase.SUCCEEDED:
            return result
        raise ApplicationError(message, result, type=failure_type(phase), non_retryable=True)


_EVENTS: dict[PromotionPhase, EventKind] = {
    PromotionPhase.SUCCEEDED: "promotion.succeeded",
    PromotionPhase.FAILED: "promotion.failed",
    PromotionPhase.ERRORED: "promotion.errored",
    PromotionPhase.ABORTED: "promotion.aborted",
}


def how_to_approve(promotion: str) -> str:
    """What a waiting promotion's details say: the commands that approve or reject it."""
    body = '{"user": "YOU", "comment": "why"}'
    return (
        "**to approve** (as one of the approvers):\n"
        f"`freightline approve-promotion {promotion} --user YOU --comment why`\n"
        f"or `temporal workflow update execute --workflow-id {promotion} "
        f"--name approve_promotion --input '{body}'`\n"
        f"(`freightline reject-promotion {promotion}` or `--name reject_promotion` rejects it)"
    )


def _one_line(err: Exception) -> str:
    if isinstance(err, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in err.errors()
        )
    return str(err)


def _app_names(config: dict[str, Any]) -> str:
    names = []
    for app in config.get("apps") or []:
        if isinstance(app, dict):
            names.append(str(app.get("name") or f"selector {app.get('selector')}"))
    return ", ".join(names) or "?"


def _worktree_batch(plan: PromotionPlan, start: int) -> list[PlannedStep]:
    """The worktree steps from ``start`` on, with the inline steps between them (so that a
    ``compose-output`` or ``fail`` does not cut the clone-to-push sequence in two); inline
    steps after the last worktree step are left to the workflow."""
    batch: list[PlannedStep] = []
    inline: list[PlannedStep] = []
    for step in plan.steps[start:]:
        if runner_of(step.uses) is StepRunner.WORKTREE:
            batch += [*inline, step]
            inline = []
        elif step.uses in INLINE_STEPS:
            inline.append(step)
        else:
            break
    return batch


def _pr_key(url: str) -> str:
    return url.strip().rstrip("/").lower()


def _pr_outputs(state: PullRequest) -> dict[str, Any]:
    """Kargo's ``git-wait-for-pr`` outputs: ``pr`` always, ``commit`` once merged."""
    outputs: dict[str, Any] = {
        "pr": {
            "id": state.number,
            "url": state.url,
            "open": state.state == "open",
            "merged": state.state == "merged",
        }
    }
    if state.merge_commit:
        outputs["commit"] = state.merge_commit
    return outputs


def _pull_request_ended(
    step: PlannedStep, state: PullRequest, closed_by_webhook: str | None
) -> StepOutcome | None:
    """The step's outcome once the pull request is merged or closed; None while open. Who
    closed it is the forge's word, else the webhook's (``closed_by_webhook``)."""
    if state.state == "open":
        return None
    if state.state == "merged":
        return StepOutcome(
            alias=step.alias,
            uses=step.uses,
            status=StepStatus.SUCCEEDED,
            message=f"pull request #{state.number} merged",
            outputs=_pr_outputs(state),
        )
    who = state.closed_by or closed_by_webhook
    closer = f" by {who}" if who else ""
    return StepOutcome(
        alias=step.alias,
        uses=step.uses,
        status=StepStatus.FAILED,
        message=f"pull request #{state.number} was closed without being merged{closer}",
        outputs=_pr_outputs(state),
    )


def _phase(failure: Diagnosis) -> PromotionPhase:
    return PromotionPhase(failure.outcome.value)


def _failed_step(failure: Diagnosis) -> str | None:
    step = failure.details.get("step")
    return str(step) if step is not None else None
