"""The ``Project`` workflow: the durable home of one project's configuration, and its
reconciler.

``freightline apply`` sends the validated resources of a project as the
``apply`` update (update-with-start, so the first apply creates it). The
update's validator checks the merged configuration before anything is
recorded, so a rejected config leaves the running one as it was. An accepted
apply bumps the project's *generation*; the workflow itself then brings every
Stage and Warehouse workflow to that configuration with the
``reconcile_project`` activity, retried until it holds, and retires the
workflows of deleted resources gracefully (a Stage lets its running
promotion reach a safe point first). The caller only waits for the answer:
a caller killed after the update was accepted changes nothing about the
outcome. A resync every ``RESYNC_INTERVAL`` repairs drift (an entity workflow
terminated by hand is started again).

Other workflows' activities read the configuration with the ``resources``
query. Long-lived: continues as new when Temporal suggests it.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    # PromotionWindow validation imports it lazily; the sandbox must get the real module.
    import freightline.kargo.windows  # noqa: F401
    from activities.project import ProjectActivities
    from freightline.contracts.metadata import (
        SET_FREIGHT_ALIAS_UPDATE,
        SET_FREIGHT_METADATA_UPDATE,
        FreightAliasChange,
        FreightMetadataChange,
        with_alias,
        with_metadata,
    )
    from freightline.contracts.names import (
        APPLIED_FREIGHT_QUERY,
        PLAN_RESOURCES_QUERY,
        RESYNC_SIGNAL,
        SA_PROJECT,
    )
    from freightline.contracts.project import (
        ApplyResult,
        DeleteRequest,
        DesiredState,
        ProjectState,
        ReconcileResult,
        merge_resources,
        remove_resource,
    )
    from freightline.contracts.promotion import PlanResourcesRequest, plan_resources
    from freightline.errors import refusing
    from freightline.kargo.config import recheck
    from freightline.kargo.resources import Freight, ProjectResources

RECONCILES = "project-reconciles"
"""Patch: the workflow reconciles its Stages and Warehouses (before it, the CLI did)."""
ANSWER_WITHIN = timedelta(minutes=2)
"""How long an ``apply`` or ``delete`` waits for reconciliation before it answers anyway."""
RESYNC_INTERVAL = timedelta(minutes=10)
"""How often a reconciled project checks its Stage and Warehouse workflows again."""
RECONCILE_TIMEOUT = timedelta(minutes=5)
RECONCILE_HEARTBEAT = timedelta(seconds=30)
RECONCILE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    # No maximum: reconciliation is retried until it holds.
)


@workflow.defn(name="Project")
class ProjectWorkflow:
    """Holds a project's Stages, Warehouses, PromotionTasks and Freight; reconciles them."""

    @workflow.init
    def __init__(self, state: ProjectState) -> None:
        self.state = state
        self._resync = False

    @workflow.run
    async def run(self, state: ProjectState) -> None:
        workflow.upsert_search_attributes([SA_PROJECT.value_set(state.resources.name)])
        self._show()
        while True:
            # A first run waits without a timer (as runs before reconciliation did); once a
            # reconcile has run, it also wakes for the periodic resync.
            timeout = RESYNC_INTERVAL if self.state.reconciled else None
            timed_out = False
            try:
                await workflow.wait_condition(
                    lambda: (
                        self._behind()
                        or self._resync
                        or workflow.info().is_continue_as_new_suggested()
                    ),
                    timeout=timeout,
                )
            except TimeoutError:
                timed_out = True
            if self._behind() or timed_out or self._resync:
                self._resync = False
                await self._reconcile()
                continue
            # Continue as new once no apply or delete is waiting (they wait for a reconcile).
            await workflow.wait_condition(
                lambda: workflow.all_handlers_finished() or self._behind()
            )
            if not self._behind():
                workflow.continue_as_new(self.state)

    @workflow.signal(name=RESYNC_SIGNAL)
    def resync(self) -> None:
        """Reconcile now: a ClusterAnalysisTemplate a Stage may use has changed."""
        self._resync = True

    @workflow.update(name="apply")
    async def apply(self, incoming: ProjectResources) -> ApplyResult:
        """Create or update the given resources; the rest of the project is untouched.

        Answers once every Stage and Warehouse workflow holds the result (or after
        ``ANSWER_WITHIN``, with ``reconciled: false``; reconciliation goes on).
        """
        merged, result = merge_resources(self.state.resources, incoming)
        if not workflow.patched(RECONCILES):
            self.state = ProjectState(resources=merged)
            self._show()
            return result
        offers = [f for f in incoming.freight if f not in self.state.pending_offers]
        generation = self._record(merged, offers=offers)
        reconciled = await self._reconciled(generation)
        return result.model_copy(update={"reconciled": reconciled})

    @apply.validator
    def validate_apply(self, incoming: ProjectResources) -> None:
        with refusing():  # a ConfigError, non-retryable, naming what is wrong
            # From `freightline apply` the loader checked them; from a client of its own
            # (plain JSON), this is where a bad expression is refused.
            recheck(incoming)
            merge_resources(self.state.resources, incoming)

    @workflow.update(name="delete")
    async def delete(self, request: DeleteRequest) -> str:
        """Remove one resource (refused while others still reference it).

        A deleted Stage's workflow finishes its running promotion at a safe point
        (an approval or window wait, a step boundary), then ends; a deleted
        Warehouse's workflow ends after its current discovery.
        """
        resources = remove_resource(self.state.resources, request.kind, request.name)
        answer = f"{request.kind}/{request.name} deleted"
        if not workflow.patched(RECONCILES):
            self.state = ProjectState(resources=resources)
            self._show()
            return answer
        generation = self._record(resources, offers=[])
        if not await self._reconciled(generation):
            answer += " (its workflow is still being retired)"
        return answer

    @delete.validator
    def validate_delete(self, request: DeleteRequest) -> None:
        with refusing():
            remove_resource(self.state.resources, request.kind, request.name)

    @workflow.update(name=SET_FREIGHT_ALIAS_UPDATE)
    def set_freight_alias(self, change: FreightAliasChange) -> Freight:
        """Kargo's ``set-freight-alias`` on Freight applied from a file; the Freight after.
        Not a configuration change: nothing is reconciled."""
        renamed = with_alias(self._applied_freight(), change, self._name)[1]
        self._keep_freight(renamed)
        return renamed

    @set_freight_alias.validator
    def validate_set_freight_alias(self, change: FreightAliasChange) -> None:
        with refusing():
            with_alias(self._applied_freight(), change, self._name)

    @workflow.update(name=SET_FREIGHT_METADATA_UPDATE)
    def set_freight_metadata(self, change: FreightMetadataChange) -> Freight:
        """Kargo's ``set-metadata`` on Freight applied from a file; the Freight after."""
        annotated = with_metadata(self._applied_freight(), change, self._name)[1]
        self._keep_freight(annotated)
        return annotated

    @set_freight_metadata.validator
    def validate_set_freight_metadata(self, change: FreightMetadataChange) -> None:
        with refusing():
            with_metadata(self._applied_freight(), change, self._name)

    @property
    def _name(self) -> str:
        return self.state.resources.name

    def _applied_freight(self) -> tuple[Freight, ...]:
        return tuple(self.state.resources.freight.values())

    def _keep_freight(self, freight: Freight) -> None:
        resources = self.state.resources
        applied = {**resources.freight, freight.metadata.name: freight}
        self.state = self.state.model_copy(
            update={"resources": resources.model_copy(update={"freight": applied})}
        )

    @workflow.query(name="resources")
    def resources(self) -> ProjectResources:
        return self.state.resources

    @workflow.query(name=PLAN_RESOURCES_QUERY)
    def plan_resources(self, request: PlanResourcesRequest) -> ProjectResources:
        """Only what planning one promotion reads (``resources`` sends everything)."""
        return plan_resources(self.state.resources, request.stage, request.freight)

    @workflow.query(name=APPLIED_FREIGHT_QUERY)
    def applied_freight(self, names: list[str]) -> list[Freight]:
        """The applied Freight with these IDs or aliases (those the project has)."""
        wanted = set(names)
        return [
            freight
            for name, freight in self.state.resources.freight.items()
            if name in wanted or freight.alias in wanted
        ]

    @workflow.query(name="desired")
    def desired(self) -> DesiredState:
        """What the reconcile activity brings the Stage and Warehouse workflows to."""
        return DesiredState(
            generation=self.state.generation,
            resources=self.state.resources,
            pending_offers=self.state.pending_offers,
        )

    @workflow.query(name="status")
    def status(self) -> ProjectState:
        """The configuration with its generation and how far reconciliation got."""
        return self.state

    # --- reconciliation ------------------------------------------------------------------

    def _record(self, resources: ProjectResources, *, offers: list[str]) -> int:
        self.state = self.state.model_copy(
            update={
                "resources": resources,
                "generation": self.state.generation + 1,
                "pending_offers": (*self.state.pending_offers, *offers),
            }
        )
        self._show()
        return self.state.generation

    def _behind(self) -> bool:
        return self.state.reconciled < self.state.generation

    async def _reconciled(self, generation: int) -> bool:
        """Wait (bounded) until ``generation`` is reconciled; whether it was."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self.state.reconciled >= generation, timeout=ANSWER_WITHIN
            )
        return self.state.reconciled >= generation

    async def _reconcile(self) -> None:
        """One reconcile: the activity reads the desired state itself, so it always brings
        the workflows to the newest generation, whichever apply woke it."""
        self._show("reconciling")
        try:
            result: ReconcileResult = await workflow.execute_activity_method(
                ProjectActivities.reconcile_project,
                self.state.resources.name,
                start_to_close_timeout=RECONCILE_TIMEOUT,
                heartbeat_timeout=RECONCILE_HEARTBEAT,
                retry_policy=RECONCILE_RETRY,
                summary=f"reconcile project {self.state.resources.name}",
            )
        except ActivityError as err:  # only a timeout: the retry policy has no maximum
            self.state = self.state.model_copy(
                update={"last_reconcile_error": str(err.cause or err)}
            )
            self._show()
            return
        offered = set(result.offered)
        self.state = self.state.model_copy(
            update={
                "reconciled": max(self.state.reconciled, result.generation),
                "pending_offers": tuple(f for f in self.state.pending_offers if f not in offered),
                "last_reconcile_error": "",
            }
        )
        self._show(result.summary() if result.configured or result.retired else "")

    def _show(self, note: str = "") -> None:
        r = self.state.resources
        details = (
            f"project `{r.name}`: {len(r.stages)} stages, {len(r.warehouses)} warehouses, "
            f"{len(r.promotion_tasks)} promotion tasks, {len(r.freight)} freight"
        )
        if self.state.generation:
            details += f"\n\ngeneration {self.state.generation}, reconciled {self.state.reconciled}"
        if self.state.last_reconcile_error:
            details += f"\n\nlast reconcile error: {self.state.last_reconcile_error}"
        if note:
            details += f"\n\n{note}"
        workflow.set_current_details(details)
