"""Activities that read a project's configuration from its ``Project`` workflow."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from freightline.client import with_warehouse_freight
from freightline.errors import NotFoundError
from freightline.promotion import PromotionPlan, PromotionRequest, plan_promotion
from freightline.resources import ProjectResources
from freightline.temporal import project_workflow_id


class ProjectActivities:
    """Reads configuration through a Temporal client (the worker's own)."""

    def __init__(self, client: Client, *, notifying: bool = False) -> None:
        self.client = client
        self.notifying = notifying

    async def project_resources(self, project: str) -> ProjectResources:
        handle = self.client.get_workflow_handle(project_workflow_id(project))
        try:
            resources: ProjectResources = await handle.query(
                "resources", result_type=ProjectResources
            )
            return resources
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise NotFoundError(
                    f'project "{project}" does not exist: `freightline apply -f FILE` creates it'
                ) from None
            raise

    @activity.defn(name="resolve_promotion")
    async def resolve_promotion(self, request: PromotionRequest) -> PromotionPlan:
        """Expand the Stage's steps for this Freight (kept in the promotion's history)."""
        resources = await self.project_resources(request.project)
        # Freight a Warehouse discovered lives in its workflow, not in the applied config.
        resources = await with_warehouse_freight(self.client, resources, request.freight)
        plan = plan_promotion(
            resources,
            request.stage,
            request.freight,
            promotion=activity.info().workflow_id or request.stage,
        )
        # Only whether this worker has endpoints: the URLs themselves stay out of history.
        return plan.model_copy(update={"notify": self.notifying})
