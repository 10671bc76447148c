"""The ``Notify`` workflow: deliver one event with retries, never holding up its sender.

A promotion (or a Stage) starts it as a child with ``ParentClosePolicy.ABANDON``
and waits only for it to *start*, so a dead or hanging endpoint neither delays
nor fails the sender, and delivery keeps retrying after the sender finished.
Undelivered events end the Notify workflow with a message, not a failure.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities
    from freightline.contracts.notifications import NotificationEvent
    from freightline.errors import diagnose
    from workflows.options import notify_options


@workflow.defn(name="Notify")
class NotifyWorkflow:
    """POSTs one event to the worker's notification endpoints."""

    @workflow.run
    async def run(self, event: NotificationEvent) -> str:
        try:
            delivered = await workflow.execute_activity_method(
                NotifyActivities.notify, event, **notify_options(event.event)
            )
        except ActivityError as err:
            return f"not delivered: {diagnose(err).reason}"
        return f"delivered to {delivered} endpoint(s)"


async def send_notification(event: NotificationEvent) -> None:
    """Start a ``Notify`` child and return once it started (it outlives its parent)."""
    try:
        await workflow.start_child_workflow(
            NotifyWorkflow.run,
            event,
            id=f"{workflow.info().workflow_id}:notify:{event.event}:{workflow.uuid4().hex[:6]}",
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary=f"notify {event.event}: {event.stage} ← {event.freight_alias}",
        )
    except WorkflowAlreadyStartedError as err:  # a notification must never fail its sender
        workflow.logger.warning("cannot start notification", extra={"error": str(err)})
