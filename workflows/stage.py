"""The ``Stage`` workflow: one per Stage, the entity that moves Freight into it.

It learns of Freight by the ``freight_available`` signal (from its
Warehouses, or from upstream Stages once they verified it), keeps what is
available and why, runs one ``Promotion`` child at a time with the rest
queued oldest-first, auto-promotes when the project's policies say so, and
offers Freight it verified to the Stages downstream. Soak times are durable
timers. Its whole state is one model, readable with the ``status`` query and
carried across continue-as-new (only ever taken between promotions).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.argocd import ArgoCDActivities
    from freightline.contracts.argocd import (
        ArgoCDHealthRequest,
        HealthState,
        StageHealth,
        apps_of,
        shard_unserved,
        stage_health,
    )
    from freightline.contracts.metadata import (
        FREIGHT_CHANGED_SIGNAL,
        SET_STAGE_METADATA_UPDATE,
        STAGE_METADATA_QUERY,
        StageMetadataChange,
        refresh_freight,
    )
    from freightline.contracts.names import (
        CURRENT_COLLECTION_QUERY,
        FREIGHT_AVAILABLE_SIGNAL,
        SA_FREIGHT,
        SA_PROJECT,
        SA_STAGE,
        argocd_task_queue,
        stage_workflow_id,
    )
    from freightline.contracts.notifications import NotificationEvent
    from freightline.contracts.promotion import (
        AbortMessage,
        PromotionPhase,
        PromotionRequest,
        PromotionResult,
        ended_phase,
    )
    from freightline.contracts.stage import (
        AvailableFreight,
        FreightAvailable,
        LastPromotion,
        PromotionTicket,
        StageConfig,
        StageState,
        VerificationRecord,
        auto_promotion_candidates,
        collection_freight,
        collection_summary,
        freight_details,
        is_available,
        next_ready_time,
        note_manual_choice,
        previous_of_origin,
        record_offer,
        record_promoted,
        record_verification,
    )
    from freightline.contracts.stage_requests import ApproveRequest, PromoteRequest, RetireRequest
    from freightline.contracts.verification import ended_run, verification_request
    from freightline.errors import (
        ConfigError,
        RequestRefused,
        diagnose,
        refusing,
        to_application_error,
    )
    from freightline.kargo.analysis import AnalysisPhase, AnalysisRunStatus
    from freightline.kargo.metadata import upsert_metadata
    from freightline.kargo.resources import Freight
    from workflows.notify import send_notification
    from workflows.options import health_options
    from workflows.promotion import PromotionWorkflow
    from workflows.verification import VerificationWorkflow


HEALTH_REFRESH = timedelta(minutes=5)
"""How often an idle Stage re-reads its Applications' health."""
HEALTHY_WAIT = timedelta(minutes=5)
"""How long verification waits for the Stage to become Healthy after a promotion."""
HEALTH_POLL = timedelta(seconds=5)

FREIGHT_COLLECTIONS = "freight-collections"
"""Patch: one Freight per origin decides auto-promotion, downstream offers and rollbacks
(runs started before compare with, offer and roll back only the last promoted Freight)."""


@workflow.defn(name="Stage")
class StageWorkflow:
    """Holds a Stage's Freight, queue and history; runs its promotions one at a time."""

    @workflow.init
    def __init__(self, state: StageState) -> None:
        self.state = state
        self._wake = False
        self._verify_requested_by: str | None = None
        self._promotion: workflow.ChildWorkflowHandle[PromotionWorkflow, PromotionResult] | None = (
            None
        )
        self._collections = True

    @workflow.run
    async def run(self, state: StageState) -> None:
        self._collections = workflow.patched(FREIGHT_COLLECTIONS)
        workflow.upsert_search_attributes(
            [SA_PROJECT.value_set(self.state.config.project), SA_STAGE.value_set(self.state.name)]
        )
        if self.state.current is not None and not self.state.health_apps:
            self._record_health(stage_health(()))  # state carried from before this rule
        while True:
            self._show()
            timeout = self._next_timeout()
            # A timeout means a soak time ended: some Freight may have become available.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        bool(self.state.queue)
                        or self._wake
                        or self._may_continue_as_new()
                        or self._may_end()
                    ),
                    timeout=timeout,
                )
            self._wake = False
            if self._may_end():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._may_end():
                    workflow.logger.info("stage retired", extra={"stage": self.state.name})
                    return
                continue
            if self._health_due():
                await self._check_health()
            if self._verify_requested_by is not None:
                await self._reverify()
            self._enqueue_auto_promotions()
            if self.state.queue:
                ticket = self.state.queue.pop(0)
                await self._promote(ticket)
            elif self._may_continue_as_new():
                workflow.continue_as_new(self.state)

    # --- messages ------------------------------------------------------------------------

    @workflow.update(name="configure")
    def configure(self, config: StageConfig) -> str:
        """Take a new spec (from ``freightline apply``); it applies from the next promotion on."""
        if self.state.retiring is not None:  # applied again before it ended
            self.state.retiring = None
            self._wake = True
        if config == self.state.config:
            return "unchanged"
        self.state.config = config
        self._wake = True
        return "updated"

    @configure.validator
    def validate_configure(self, config: StageConfig) -> None:
        if (config.project, config.stage.metadata.name) != (
            self.state.config.project,
            self.state.name,
        ):
            raise _refused(
                f"configuration for {config.project}/{config.stage.metadata.name} "
                f"sent to Stage {self.state.config.project}/{self.state.name}"
            )

    @workflow.update(name="retire")
    async def retire(self, request: RetireRequest) -> str:
        """The Stage left its project: take no more Freight, stop the running promotion at a
        safe point (never mid-push) and the verification, then end."""
        if self.state.retiring is None:
            self.state.retiring = request
            self.state.queue.clear()
            self._wake = True
            self._show()
            await self._stop_running(request)
        return f'Stage "{self.state.name}" retiring: {request.reason}'

    async def _stop_running(self, request: RetireRequest) -> None:
        if self._promotion is not None:
            await self._promotion.signal(
                "abort", AbortMessage(user=request.user, reason=request.reason, graceful=True)
            )
        verifying = self.state.verifying
        if verifying is not None:
            await workflow.get_external_workflow_handle(verifying.verification).signal(
                "abort", request.user
            )

    def _may_end(self) -> bool:
        return (
            self.state.retiring is not None
            and self.state.running is None
            and self.state.verifying is None
        )

    @workflow.query(name="config")
    def config(self) -> StageConfig:
        return self.state.config

    @workflow.signal(name=FREIGHT_AVAILABLE_SIGNAL)
    def freight_available(self, offer: FreightAvailable) -> None:
        """Freight this Stage may take: from a Warehouse, or verified upstream."""
        if record_offer(self.state, offer, workflow.now()):
            self._wake = True

    @workflow.update(name="promote")
    def promote(self, request: PromoteRequest) -> PromotionTicket:
        """Queue a promotion of available Freight (ID or alias); returns its ticket."""
        entry = self._find_available(request.freight)
        assert entry is not None  # the validator refused anything else
        note_manual_choice(self.state, entry.freight, workflow.now())
        ticket = self._enqueue(entry.freight, request.requested_by, auto=False)
        if request.override_windows:
            ticket = ticket.model_copy(update={"override_windows": True})
            self.state.queue[-1] = ticket
        return ticket

    @promote.validator
    def validate_promote(self, request: PromoteRequest) -> None:
        if self.state.retiring is not None:
            raise _refused(f'Stage "{self.state.name}" is being deleted from its project')
        if self._find_available(request.freight) is None:
            raise _refused(
                f'Freight "{request.freight}" is not available to Stage "{self.state.name}": '
                f"{self._availability_rule()}; `freightline approve` makes Freight available by hand"
            )

    @workflow.update(name="approve")
    def approve(self, request: ApproveRequest) -> str:
        """Make Freight available to this Stage without upstream verification (Kargo's approve)."""
        freight = request.freight
        entry = self.state.available.get(freight.metadata.name)
        if entry is None:
            entry = AvailableFreight(freight=freight, first_seen=workflow.now())
            self.state.available[freight.metadata.name] = entry
        entry.approved_by = request.user
        self._wake = True
        return (
            f'Freight "{freight.alias or freight.metadata.name}" approved for "{self.state.name}"'
        )

    @approve.validator
    def validate_approve(self, request: ApproveRequest) -> None:
        origin = request.freight.origin.name
        origins = {r.origin.name for r in self.state.config.stage.spec.requested_freight}
        if origin not in origins:
            raise _refused(
                f'Stage "{self.state.name}" does not request Freight from Warehouse "{origin}"'
            )

    @workflow.update(name="verify")
    def verify(self, user: str) -> str:
        """Re-run verification of the current Freight (``freightline verify STAGE``)."""
        self._verify_requested_by = user or "unknown"
        self._wake = True
        current = self.state.current
        assert current is not None
        return f'verification of "{current.freight_alias or current.freight[:7]}" requested'

    @verify.validator
    def validate_verify(self, user: str) -> None:
        if self.state.current is None:
            raise _refused(f'Stage "{self.state.name}" has no Freight to verify')
        if self.state.verifying is not None or self.state.running is not None:
            raise _refused(f'Stage "{self.state.name}" is busy: a promotion or verification runs')

    @workflow.update(name="abort_verification")
    async def abort_verification(self, user: str) -> str:
        """Abort the running verification (``freightline verify STAGE --abort``)."""
        verifying = self.state.verifying
        assert verifying is not None
        await workflow.get_external_workflow_handle(verifying.verification).signal("abort", user)
        return f"verification {verifying.verification} aborted by {user}"

    @abort_verification.validator
    def validate_abort_verification(self, user: str) -> None:
        if self.state.verifying is None:
            raise _refused(f'Stage "{self.state.name}" has no verification running')

    @workflow.update(name="pause_auto_promotion")
    def pause_auto_promotion(self, user: str) -> str:
        """Stop promoting new Freight automatically until resumed (manual promotions still run)."""
        self.state.auto_paused_by = user or "unknown"
        return f'auto-promotion of Stage "{self.state.name}" paused by {user}'

    @pause_auto_promotion.validator
    def validate_pause_auto_promotion(self, user: str) -> None:
        if not self.state.config.auto_promotion:
            raise _refused(f'Stage "{self.state.name}" does not promote automatically')
        if self.state.auto_paused_by is not None:
            raise _refused(
                f'auto-promotion of Stage "{self.state.name}" is already paused '
                f"(by {self.state.auto_paused_by})"
            )

    @workflow.update(name="resume_auto_promotion")
    def resume_auto_promotion(self, user: str) -> str:
        """Promote automatically again: the newest available Freight goes in now."""
        self.state.auto_paused_by = None
        self._wake = True
        return f'auto-promotion of Stage "{self.state.name}" resumed by {user}'

    @resume_auto_promotion.validator
    def validate_resume_auto_promotion(self, user: str) -> None:
        if self.state.auto_paused_by is None:
            raise _refused(f'auto-promotion of Stage "{self.state.name}" is not paused')

    @workflow.query(name="status")
    def status(self) -> StageState:
        return self.state

    @workflow.update(name=SET_STAGE_METADATA_UPDATE)
    def set_metadata(self, change: StageMetadataChange) -> dict[str, Any]:
        """Kargo's ``set-metadata`` on this Stage: upsert the keys; the whole metadata after."""
        self.state.metadata = upsert_metadata(self.state.metadata, change.values)
        self._show()
        return self.state.metadata

    @set_metadata.validator
    def validate_set_metadata(self, change: StageMetadataChange) -> None:
        with refusing():  # an empty key, a value that is not JSON
            upsert_metadata(self.state.metadata, change.values)

    @workflow.signal(name=FREIGHT_CHANGED_SIGNAL)
    def freight_changed(self, freight: Freight) -> None:
        """A Freight's alias or metadata changed where it is held: follow it in the copies."""
        if refresh_freight(self.state, freight):
            self._show()

    @workflow.query(name=CURRENT_COLLECTION_QUERY)
    def current_collection(self) -> list[str]:
        """The IDs of this Stage's current Freight, one per origin (``status`` carries its
        whole history too): what a promotion started by hand keeps."""
        return [ref.freight for ref in self.state.current_collection.values()]

    @workflow.query(name=STAGE_METADATA_QUERY)
    def metadata(self) -> dict[str, Any]:
        """What ``stageMetadata()`` returns for this Stage."""
        return self.state.metadata

    # --- promotion -----------------------------------------------------------------------

    def _enqueue(self, freight: Freight, requested_by: str, *, auto: bool) -> PromotionTicket:
        alias = freight.alias or freight.metadata.name[:7]
        ticket = PromotionTicket(
            promotion=(
                f"promotion:{self.state.config.project}:{self.state.name}:{alias}:"
                f"{workflow.uuid4().hex[:8]}"
            ),
            freight=freight.metadata.name,
            freight_alias=freight.alias,
            requested_by=requested_by,
            requested_at=workflow.now(),
            auto=auto,
        )
        self.state.queue.append(ticket)
        return ticket

    def _enqueue_auto_promotions(self) -> None:
        if self.state.retiring is not None:
            return
        candidates = auto_promotion_candidates(
            self.state, workflow.now(), per_origin=self._collections
        )
        for candidate in candidates:
            self._enqueue(candidate.freight, "auto-promotion", auto=True)

    async def _promote(self, ticket: PromotionTicket) -> None:
        self.state.running = ticket
        self._show()
        phase, message = PromotionPhase.SUCCEEDED, ""
        result: PromotionResult | None = None
        try:
            self._promotion = await workflow.start_child_workflow(
                PromotionWorkflow.run,
                PromotionRequest(
                    project=self.state.config.project,
                    stage=self.state.name,
                    freight=ticket.freight,
                    requested_by=ticket.requested_by,
                    override_windows=ticket.override_windows,
                    # The Stage's Freight of its other origins: the promotion keeps them.
                    collection=tuple(
                        ref.freight
                        for ref in self.state.current_collection.values()
                        if ref.freight != ticket.freight
                    ),
                ),
                id=ticket.promotion,
                static_summary=(
                    f"promote freight `{ticket.freight_alias or ticket.freight[:7]}` "
                    f"into `{self.state.name}`"
                ),
                static_details=self._details_of(ticket),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
            if self.state.retiring is not None:  # retired while the child was starting
                await self._stop_running(self.state.retiring)
            result = await self._promotion
        except ChildWorkflowError as err:
            # The Promotion says how it ended in its failure type; a child that could not
            # end on its own (terminated, timed out) counts as Errored.
            failure = diagnose(err)
            phase = ended_phase(failure.type) or PromotionPhase(failure.outcome.value)
            message = failure.reason
        self._promotion = None
        now = workflow.now()
        self.state.running = None
        self.state.last_promotion = LastPromotion(
            promotion=ticket.promotion,
            freight=ticket.freight,
            freight_alias=ticket.freight_alias,
            phase=phase,
            message=message,
            finished_at=now,
        )
        if phase is not PromotionPhase.SUCCEEDED:
            workflow.logger.warning("promotion did not succeed", extra={"phase": phase.value})
            if (
                phase in self.state.config.rollback_on_promotion
                and ticket.rollback_of is None
                and self.state.retiring is None
            ):
                # The failed promotion never became the Stage's Freight: the current one,
                # if verified, is the last known-good (no config before it, no new commands).
                back = self._roll_back(ticket, since=0)
                failed = self.state.available.get(ticket.freight)
                if back is not None and failed is not None:
                    # Hold auto-promotion of this origin on the known-good Freight, as after a
                    # manual choice, or it would promote the failing Freight again at once.
                    self.state.auto_hold[failed.freight.origin.name] = back.freight
            return
        record_promoted(self.state, ticket, now)
        if result is not None:
            self.state.health_apps = apps_of(result)
        if not self.state.health_apps:
            # Nothing to check is Healthy, as Kargo's aggregating checker starts from Healthy.
            self._record_health(stage_health(()))
        if not ticket.auto and ticket.rollback_of is None:
            entry = self.state.available.get(ticket.freight)
            if entry is not None:
                note_manual_choice(self.state, entry.freight, now)
        if self.state.retiring is not None:
            return  # no verification nor offers downstream from a Stage that left its project
        verified = await self._verify(ticket.freight)
        if verified == "Successful":
            await self._offer_downstream(ticket.freight)
        elif verified in self.state.config.rollback_on_verification and ticket.rollback_of is None:
            self._roll_back(ticket)

    async def _check_health(self) -> StageHealth:
        shard = self.state.config.stage.spec.shard
        queue = argocd_task_queue(workflow.info().task_queue, shard)
        try:
            health = await workflow.execute_activity_method(
                ArgoCDActivities.argocd_health,
                ArgoCDHealthRequest(apps=tuple(self.state.health_apps)),
                **health_options(queue, f"health of {len(self.state.health_apps)} Argo CD apps"),
            )
        except ActivityError as err:
            # Only a sharded queue nobody polls gets here: the activity itself never fails.
            issue = shard_unserved(shard, queue, err) or diagnose(err).reason
            health = StageHealth(status=HealthState.UNKNOWN, issues=(issue,))
        self._record_health(health)
        return health

    def _record_health(self, health: StageHealth) -> None:
        self.state.health = health.status
        self.state.health_detail = health
        self.state.health_checked_at = workflow.now()

    async def _wait_until_healthy(self) -> str | None:
        """None once the Stage is Healthy; else why it is not, after ``HEALTHY_WAIT``.

        A Stage whose promotion touched no Argo CD app has nothing to wait for.
        """
        if not self.state.health_apps:
            return None
        deadline = workflow.now() + HEALTHY_WAIT
        while True:
            health = await self._check_health()
            if health.status is HealthState.HEALTHY:
                return None
            if workflow.now() >= deadline:
                reasons = "; ".join(health.issues) or health.status.value
                return f"the Stage did not become Healthy within {HEALTHY_WAIT}: {reasons}"
            await workflow.sleep(HEALTH_POLL)

    def _health_due(self) -> bool:
        checked = self.state.health_checked_at
        return bool(self.state.health_apps) and (
            checked is None or workflow.now() - checked >= HEALTH_REFRESH
        )

    def _next_timeout(self) -> timedelta | None:
        candidates = [t for t in (self._until_next_ready(),) if t is not None]
        if self.state.health_apps and self.state.health_checked_at is not None:
            due = self.state.health_checked_at + HEALTH_REFRESH - workflow.now()
            candidates.append(max(due, timedelta(seconds=1)))
        return min(candidates) if candidates else None

    async def _verify(self, freight_id: str) -> AnalysisPhase:
        """Run the Stage's verification for its current Freight; its phase (Successful if none).

        Verification starts only once the Stage is Healthy, as in Kargo.
        """
        entry = self.state.available.get(freight_id)
        started = workflow.now()
        alias = entry.freight.alias if entry else None
        unhealthy = await self._wait_until_healthy()
        if unhealthy is not None:
            record_verification(
                self.state,
                VerificationRecord(
                    verification="",
                    freight=freight_id,
                    freight_alias=alias,
                    phase="Error",
                    message=unhealthy,
                    started_at=started,
                    finished_at=workflow.now(),
                ),
            )
            return "Error"
        try:
            request = (
                verification_request(
                    self.state.config.project,
                    self.state.config.stage,
                    entry.freight,
                    self.state.config.analysis_templates,
                    [known.freight for known in self.state.available.values()],
                    self.state.metadata,
                    now=started,
                    cluster_templates=self.state.config.cluster_analysis_templates,
                    collection=collection_freight(self.state),
                    subscriptions=self.state.config.origins or None,
                )
                if entry
                else None
            )
        except ConfigError as err:
            record = VerificationRecord(
                verification="",
                freight=freight_id,
                freight_alias=alias,
                phase="Error",
                message=str(err),
                started_at=started,
                finished_at=started,
            )
            record_verification(self.state, record)
            return record.phase
        if request is None:  # no verification block: verified at once, as in Kargo
            record_verification(
                self.state,
                VerificationRecord(
                    verification="",
                    freight=freight_id,
                    freight_alias=alias,
                    phase="Successful",
                    message="no verification configured",
                    started_at=started,
                    finished_at=started,
                ),
            )
            return "Successful"
        workflow_id = (
            f"verification:{self.state.config.project}:{self.state.name}:"
            f"{alias or freight_id[:7]}:{workflow.uuid4().hex[:8]}"
        )
        self.state.verifying = VerificationRecord(
            verification=workflow_id,
            freight=freight_id,
            freight_alias=alias,
            phase="Running",
            started_at=started,
        )
        self._show()
        result: AnalysisRunStatus | None = None
        phase: AnalysisPhase
        try:
            result = await workflow.execute_child_workflow(
                VerificationWorkflow.run,
                request,
                id=workflow_id,
                static_summary=f"verify freight `{alias or freight_id[:7]}` in `{self.state.name}`",
                search_attributes=workflow.info().typed_search_attributes.updated(
                    SearchAttributePair(SA_FREIGHT, freight_id)
                ),
            )
            phase, message = result.phase, result.message
        except ChildWorkflowError as err:
            # A run that did not end Successful fails its workflow and carries the run.
            result = ended_run(err)
            if result is not None:
                phase, message = result.phase, result.message
            else:
                phase, message = "Error", diagnose(err).reason
        record = self.state.verifying.model_copy(
            update={
                "phase": phase,
                "message": message,
                "finished_at": workflow.now(),
                "result": result,
            }
        )
        self.state.verifying = None
        record_verification(self.state, record)
        if phase in ("Failed", "Error"):
            await self._notify_verification_failed(record)
        return phase

    async def _notify_verification_failed(self, record: VerificationRecord) -> None:
        """A ``verification.failed`` event (a Notify child: it never delays the Stage)."""
        await send_notification(
            NotificationEvent(
                event="verification.failed",
                project=self.state.config.project,
                stage=self.state.name,
                freight=record.freight,
                freight_alias=record.freight_alias,
                workflow_id=record.verification,
                phase=record.phase,
                message=record.message or "",
            )
        )

    async def _reverify(self) -> None:
        self._verify_requested_by = None
        current = self.state.current
        if current is None:
            return
        if await self._verify(current.freight) == "Successful":
            await self._offer_downstream(current.freight)

    def _roll_back(self, failed: PromotionTicket, since: int = 1) -> PromotionTicket | None:
        """Promote the Freight the Stage had before, as an ordinary (marked) promotion: the
        newest verified one from ``history[since:]`` (after a failed verification the failed
        Freight is ``history[0]``; after a failed promotion it is not in the history). With
        Freight collections, of the failed Freight's origin (the other origins' stay)."""
        if self._collections:
            failed_entry = self.state.available.get(failed.freight)
            origin = failed_entry.freight.origin.name if failed_entry is not None else ""
            previous_id = previous_of_origin(self.state, failed.freight, origin, since)
        else:
            previous = next(
                (
                    h
                    for h in self.state.history[since:]
                    if h.verified and h.freight != failed.freight
                ),
                None,
            )
            previous_id = previous.freight if previous else None
        entry = self.state.available.get(previous_id) if previous_id else None
        if entry is None:
            workflow.logger.warning("nothing verified to roll back to")
            return None
        ticket = self._enqueue(entry.freight, "auto-rollback", auto=False)
        self.state.queue.remove(ticket)
        ticket = ticket.model_copy(update={"rollback_of": failed.freight})
        self.state.queue.insert(0, ticket)
        return ticket

    async def _offer_downstream(self, freight_id: str) -> None:
        """Each Freight of the verified collection becomes available downstream (Kargo marks
        each verified in this Stage); runs before collections offer the promoted one."""
        entry = self.state.available.get(freight_id)
        offered = [entry.freight] if entry is not None else []
        if self._collections:
            offered += [f for f in collection_freight(self.state) if f.metadata.name != freight_id]
        for freight in offered:
            await self._offer(freight)

    async def _offer(self, freight: Freight) -> None:
        offer = FreightAvailable(
            freight=freight, source="stage", via=self.state.name, verified_at=workflow.now()
        )
        for downstream in self.state.config.downstream:
            handle = workflow.get_external_workflow_handle(
                stage_workflow_id(self.state.config.project, downstream)
            )
            try:
                await handle.signal(FREIGHT_AVAILABLE_SIGNAL, offer)
            except Exception as err:
                workflow.logger.warning(
                    "cannot offer freight downstream",
                    extra={"stage": downstream, "error": str(err)},
                )

    # --- helpers -------------------------------------------------------------------------

    def _find_available(self, name: str) -> AvailableFreight | None:
        now = workflow.now()
        for entry in self.state.available.values():
            if name in (entry.freight.metadata.name, entry.freight.alias) and is_available(
                self.state.config.stage, entry, now
            ):
                return entry
        return None

    def _details_of(self, ticket: PromotionTicket) -> str:
        entry = self.state.available.get(ticket.freight)
        details = freight_details(entry.freight) if entry else f"freight `{ticket.freight}`"
        reason = (
            f"rollback of `{ticket.rollback_of}`" if ticket.rollback_of else ticket.requested_by
        )
        origin = entry.freight.origin.name if entry else None
        kept = {o: r for o, r in self.state.current_collection.items() if o != origin}
        if kept and origin is not None:  # the other origins' Freight the promotion keeps
            details += f"\n\nkeeps {collection_summary(kept)}"
        return f"{details}\n\nrequested by {reason}"

    def _availability_rule(self) -> str:
        rules = []
        for request in self.state.config.stage.spec.requested_freight:
            sources = request.sources
            if sources.direct:
                rules.append(f'Freight comes straight from Warehouse "{request.origin.name}"')
            if sources.stages:
                needed = "all of" if sources.availability_strategy == "All" else "one of"
                soak = (
                    f" and soaked {sources.required_soak_time}"
                    if sources.required_soak_time
                    else ""
                )
                rules.append(
                    f"Freight must be verified in {needed} {', '.join(sources.stages)}{soak} first"
                )
        return "; ".join(rules) or "it requests no Freight"

    def _until_next_ready(self) -> timedelta | None:
        when = next_ready_time(self.state, workflow.now())
        if when is None:
            return None
        return max(when - workflow.now(), timedelta(seconds=1))

    def _may_continue_as_new(self) -> bool:
        return (
            workflow.info().is_continue_as_new_suggested()
            and self.state.running is None
            and self.state.verifying is None
            and not self.state.queue
            and workflow.all_handlers_finished()
        )

    def _show(self) -> None:
        state = self.state
        current = state.current
        lines = [f"**Stage `{state.name}`** (project `{state.config.project}`)"]
        if state.retiring:
            lines.append(f"retiring: {state.retiring.reason}")
        if len(state.current_collection) > 1:
            lines.append(f"current freight: {collection_summary(state.current_collection)}")
        else:
            lines.append(
                f"current freight: `{current.freight_alias or current.freight[:7]}` "
                f"({', '.join(current.versions)})"
                if current
                else "current freight: none"
            )
        if state.running:
            lines.append(f"promoting: `{state.running.freight_alias}` ({state.running.promotion})")
        if state.verifying:
            lines.append(
                f"verifying: `{state.verifying.freight_alias}` ({state.verifying.verification})"
            )
        if state.queue:
            lines.append("queued: " + ", ".join(f"`{t.freight_alias}`" for t in state.queue))
        last_run = state.verifications[0] if state.verifications else None
        if (
            current is not None
            and state.verifying is None
            and last_run is not None
            and last_run.freight == current.freight
        ):
            lines.append(
                f"verification {'Verified' if last_run.phase == 'Successful' else last_run.phase}"
                + (f": {last_run.message}" if last_run.message else "")
            )
        if state.last_promotion and state.last_promotion.phase is not PromotionPhase.SUCCEEDED:
            lines.append(
                f"last promotion {state.last_promotion.phase.value}: {state.last_promotion.message}"
            )
        auto = "on" if state.config.auto_promotion else "off"
        if state.config.auto_promotion and state.auto_paused_by:
            auto = f"paused by {state.auto_paused_by}"
        lines.append(f"auto-promotion: {auto}")
        if state.metadata:
            lines.append("metadata: " + ", ".join(f"`{key}`" for key in state.metadata))
        workflow.set_current_details("\n\n".join(lines))


def _refused(reason: str) -> ApplicationError:
    """A validator's refusal: a named, non-retryable type for the caller (not ValueError)."""
    return to_application_error(RequestRefused(reason))
