"""How long each activity may take and how it is retried, as named, typed option sets.

Workflows call activities by reference and spread one of these into the call
(``**worktree_options(...)``): the keys are :class:`ActivityOptions` /
:class:`LocalActivityOptions`, so mypy checks every one against the SDK's
signature. Every retry policy comes from :func:`retry_policy`, whose
non-retryable types are derived from the error classes
(``freightline.errors.non_retryable_error_types``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from freightline.contracts.argocd import SHARD_PICKUP_TIMEOUT
    from freightline.errors import non_retryable_error_types

__all__ = [
    "ACTIVITY_RETRY",
    "ActivityOptions",
    "LocalActivityOptions",
    "argocd_options",
    "discovery_options",
    "health_options",
    "measurement_options",
    "notify_options",
    "project_step_options",
    "quick_options",
    "retry_policy",
    "worktree_options",
]


class LocalActivityOptions(TypedDict, total=False):
    """Options a local activity and an activity both take."""

    start_to_close_timeout: timedelta
    schedule_to_close_timeout: timedelta
    retry_policy: RetryPolicy
    summary: str


class ActivityOptions(LocalActivityOptions, total=False):
    """Options of an activity scheduled on a task queue."""

    task_queue: str | None
    schedule_to_start_timeout: timedelta | None
    heartbeat_timeout: timedelta
    cancellation_type: ActivityCancellationType


def retry_policy(
    *,
    maximum_attempts: int,
    initial_interval: timedelta = timedelta(seconds=1),
    maximum_interval: timedelta | None = None,
) -> RetryPolicy:
    """Exponential backoff (doubling) that never retries an error whose class says it cannot help."""
    return RetryPolicy(
        initial_interval=initial_interval,
        backoff_coefficient=2.0,
        maximum_interval=maximum_interval,
        maximum_attempts=maximum_attempts,
        non_retryable_error_types=non_retryable_error_types(),
    )


ACTIVITY_RETRY = retry_policy(maximum_attempts=6, maximum_interval=timedelta(seconds=30))
"""A promotion's activities: plan, worktree, Argo CD."""
QUICK_TIMEOUT = timedelta(seconds=30)
WORKTREE_TIMEOUT = timedelta(minutes=30)
WORKTREE_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
# Argo CD steps poll inside one activity that heartbeats on every poll (about every second).
ARGOCD_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
ARGOCD_TIMEOUT_MARGIN = timedelta(minutes=1)
HEALTH_RETRY = retry_policy(maximum_attempts=3)
DISCOVERY_TIMEOUT = timedelta(minutes=5)
DISCOVERY_RETRY = retry_policy(maximum_attempts=3, maximum_interval=timedelta(seconds=10))
# A measurement that cannot even run (no worker can reach the provider) is retried a
# little, then recorded as an Error measurement: errors count against the limits.
MEASURE_RETRY = retry_policy(maximum_attempts=3)
NOTIFY_RETRY = retry_policy(maximum_attempts=5, maximum_interval=timedelta(seconds=10))


def quick_options(summary: str, timeout: timedelta = QUICK_TIMEOUT) -> LocalActivityOptions:
    """A short activity with no side effects (resolving a promotion's plan); local or not."""
    return {"start_to_close_timeout": timeout, "retry_policy": ACTIVITY_RETRY, "summary": summary}


def project_step_options(summary: str) -> ActivityOptions:
    """``set-freight-alias`` / ``set-metadata``: a few updates to the project's workflows,
    upserts, so a retry converges; an abort lets a started one finish."""
    return {
        "start_to_close_timeout": QUICK_TIMEOUT,
        "retry_policy": ACTIVITY_RETRY,
        "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        "summary": summary,
    }


def worktree_options(summary: str) -> ActivityOptions:
    """The clone-to-push activity: heartbeats, and an abort waits for it to stop."""
    return {
        "start_to_close_timeout": WORKTREE_TIMEOUT,
        "heartbeat_timeout": WORKTREE_HEARTBEAT_TIMEOUT,
        "retry_policy": ACTIVITY_RETRY,
        "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        "summary": summary,
    }


def argocd_options(queue: str | None, timeout: timedelta, summary: str) -> ActivityOptions:
    """An Argo CD step's activity, on its shard's queue (None: the workflow's own) when the
    Stage has one; it may run the step's ``timeout`` plus a margin to report it."""
    return {
        "task_queue": queue,
        "schedule_to_start_timeout": SHARD_PICKUP_TIMEOUT if queue else None,
        "start_to_close_timeout": timeout + ARGOCD_TIMEOUT_MARGIN,
        "heartbeat_timeout": ARGOCD_HEARTBEAT_TIMEOUT,
        "retry_policy": ACTIVITY_RETRY,
        "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        "summary": summary,
    }


def health_options(queue: str | None, summary: str) -> ActivityOptions:
    """A Stage's Argo CD health check, on its shard's queue when it has one."""
    return {
        "task_queue": queue,
        "schedule_to_start_timeout": SHARD_PICKUP_TIMEOUT if queue else None,
        "start_to_close_timeout": QUICK_TIMEOUT,
        "retry_policy": HEALTH_RETRY,
        "summary": summary,
    }


def discovery_options(summary: str) -> ActivityOptions:
    """One discovery over every subscription of a Warehouse."""
    return {
        "start_to_close_timeout": DISCOVERY_TIMEOUT,
        "retry_policy": DISCOVERY_RETRY,
        "summary": summary,
    }


def measurement_options(timeout: timedelta, summary: str) -> LocalActivityOptions:
    """One measurement of one metric (a local activity since ``local-measurements``)."""
    return {"start_to_close_timeout": timeout, "retry_policy": MEASURE_RETRY, "summary": summary}


def notify_options(summary: str) -> ActivityOptions:
    """Delivering one notification: retried for two minutes at most."""
    return {
        "start_to_close_timeout": timedelta(seconds=10),
        "schedule_to_close_timeout": timedelta(minutes=2),
        "retry_policy": NOTIFY_RETRY,
        "summary": summary,
    }
