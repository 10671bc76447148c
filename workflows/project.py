"""The ``Project`` workflow: the durable home of one project's configuration.

``freightline apply`` sends the validated resources of a project as the
``apply`` update (update-with-start, so the first apply creates it). The
update's validator checks the merged configuration before anything is
recorded, so a rejected config leaves the running one as it was. Other
workflows' activities read it with the ``resources`` query. Long-lived:
continues as new when Temporal suggests it.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    # PromotionWindow validation imports it lazily; the sandbox must get the real module.
    import freightline.windows  # noqa: F401
    from freightline.project import (
        ApplyResult,
        DeleteRequest,
        ProjectState,
        merge_resources,
        remove_resource,
    )
    from freightline.resources import ProjectResources
    from freightline.temporal import SA_PROJECT


@workflow.defn(name="Project")
class ProjectWorkflow:
    """Holds a project's Stages, Warehouses, PromotionTasks and Freight."""

    @workflow.init
    def __init__(self, state: ProjectState) -> None:
        self.state = state

    @workflow.run
    async def run(self, state: ProjectState) -> None:
        workflow.upsert_search_attributes([SA_PROJECT.value_set(state.resources.name)])
        self._show()
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(self.state)

    @workflow.update(name="apply")
    def apply(self, incoming: ProjectResources) -> ApplyResult:
        """Create or update the given resources; the rest of the project is untouched."""
        merged, result = merge_resources(self.state.resources, incoming)
        self.state = ProjectState(resources=merged)
        self._show()
        return result

    @apply.validator
    def validate_apply(self, incoming: ProjectResources) -> None:
        merge_resources(self.state.resources, incoming)

    @workflow.update(name="delete")
    def delete(self, request: DeleteRequest) -> str:
        """Remove one resource (refused while others still reference it)."""
        resources = remove_resource(self.state.resources, request.kind, request.name)
        self.state = ProjectState(resources=resources)
        self._show()
        return f"{request.kind}/{request.name} deleted"

    @delete.validator
    def validate_delete(self, request: DeleteRequest) -> None:
        remove_resource(self.state.resources, request.kind, request.name)

    @workflow.query(name="resources")
    def resources(self) -> ProjectResources:
        return self.state.resources

    def _show(self) -> None:
        r = self.state.resources
        workflow.set_current_details(
            f"project `{r.name}`: {len(r.stages)} stages, {len(r.warehouses)} warehouses, "
            f"{len(r.promotion_tasks)} promotion tasks, {len(r.freight)} freight"
        )
