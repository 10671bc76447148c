"""The ``Cluster`` workflow: the durable home of the cluster-scoped resources.

``freightline apply`` sends a file's ClusterAnalysisTemplates here as the
``apply`` update (update-with-start on ``CLUSTER_WORKFLOW_ID``), before the
projects of the same file, so a Stage may name one applied with it. Each
Project's reconcile reads them (``resources`` query) and hands a Stage the ones
its verification names. A change bumps the generation; the workflow then asks
every running Project to reconcile (``resync_projects``, retried until it
holds), so a Stage runs its next verification with the new metrics.
Long-lived: continues as new when Temporal suggests it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.project import ProjectActivities
    from freightline.contracts.cluster import (
        ClusterDelete,
        ClusterState,
        merge_cluster,
        remove_cluster_resource,
    )
    from freightline.contracts.project import ApplyResult
    from freightline.errors import refusing
    from freightline.kargo.config import recheck
    from freightline.kargo.resources import ClusterResources

RESYNC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)


@workflow.defn(name="Cluster")
class ClusterWorkflow:
    """Holds the ClusterAnalysisTemplates; tells the projects when they change."""

    @workflow.init
    def __init__(self, state: ClusterState) -> None:
        self.state = state

    @workflow.run
    async def run(self, state: ClusterState) -> None:
        while True:
            await workflow.wait_condition(
                lambda: self._behind() or workflow.info().is_continue_as_new_suggested()
            )
            if self._behind():
                generation = self.state.generation
                await workflow.execute_activity_method(
                    ProjectActivities.resync_projects,
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=timedelta(seconds=30),
                    retry_policy=RESYNC_RETRY,
                    summary="ask every project to reconcile",
                )
                self.state = self.state.model_copy(update={"announced": generation})
                continue
            await workflow.wait_condition(
                lambda: workflow.all_handlers_finished() or self._behind()
            )
            if not self._behind():
                workflow.continue_as_new(self.state)

    @workflow.update(name="apply")
    def apply(self, incoming: ClusterResources) -> ApplyResult:
        """Create or update the given cluster-scoped resources; the others are untouched."""
        merged, result = merge_cluster(self.state.resources, incoming)
        if result.created or result.updated:
            self._record(merged)
        return result

    @apply.validator
    def validate_apply(self, incoming: ClusterResources) -> None:
        with refusing():
            recheck(incoming)  # apply's checks, for a client that did not load them
            merge_cluster(self.state.resources, incoming)

    @workflow.update(name="delete")
    def delete(self, request: ClusterDelete) -> str:
        """Remove one cluster-scoped resource."""
        self._record(remove_cluster_resource(self.state.resources, request.kind, request.name))
        return f"{request.kind}/{request.name} deleted"

    @delete.validator
    def validate_delete(self, request: ClusterDelete) -> None:
        with refusing():
            remove_cluster_resource(self.state.resources, request.kind, request.name)

    @workflow.query(name="resources")
    def resources(self) -> ClusterResources:
        return self.state.resources

    def _behind(self) -> bool:
        return self.state.announced < self.state.generation

    def _record(self, resources: ClusterResources) -> None:
        self.state = self.state.model_copy(
            update={"resources": resources, "generation": self.state.generation + 1}
        )
        names = ", ".join(sorted(resources.analysis_templates)) or "none"
        workflow.set_current_details(
            f"generation {self.state.generation}: ClusterAnalysisTemplates {names}"
        )
