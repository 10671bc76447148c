"""What the ``git-wait-for-pr`` wait exchanges: the activity that reads a pull request's
state, the webhook's wake-up signal, and what the ``status`` query shows while waiting.

The wait itself is in the ``Promotion`` workflow (``workflows/promotion.py``): a
poll on a durable timer, cut short by :data:`~freightline.contracts.names.PULL_REQUEST_SIGNAL`
when the forge's webhook says the pull request was merged or closed. No credential
crosses this boundary: the activity finds the token in the worker's credentials by
the repository URL.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from freightline.contracts.model import Contract

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "MAX_POLL_INTERVAL",
    "MIN_POLL_INTERVAL",
    "PullRequestClosed",
    "PullRequestQuery",
    "PullRequestWait",
    "poll_interval",
]

DEFAULT_POLL_INTERVAL = timedelta(seconds=30)
"""Kargo's default ``pollInterval`` for ``git-wait-for-pr``."""
MIN_POLL_INTERVAL = timedelta(seconds=10)
"""Kargo's lower bound on any poll interval."""
MAX_POLL_INTERVAL = timedelta(minutes=10)
"""The polling fallback's slowest pace after a long wait (see :func:`poll_interval`)."""


def poll_interval(configured: timedelta, waited: timedelta) -> timedelta:
    """How long to sleep before the next poll: the configured interval (at least Kargo's
    10 s), slowing to a twelfth of the time already waited, but never past 10 minutes
    unless the configured interval is longer.

    Why slow down: each poll (a timer and a local activity) adds six events to the
    promotion's history, and Temporal caps a history at 50,000 events. At a steady
    30 s, a PR left open for ten days would exceed it; slowing down keeps a month's
    wait near 26,000 events. Kargo calls the interval a suggestion; the webhook keeps
    the wake-up prompt.
    """
    floor = max(configured, MIN_POLL_INTERVAL)
    return max(floor, min(waited / 12, MAX_POLL_INTERVAL))


class PullRequestQuery(Contract):
    """The ``pull_request_state`` activity's input: which pull request, on which forge."""

    project: str
    repo_url: str
    number: int = Field(ge=1)
    provider: str | None = None
    insecure_skip_tls_verify: bool = False


class PullRequestClosed(Contract):
    """The :data:`~freightline.contracts.names.PULL_REQUEST_SIGNAL` payload: a webhook saw the
    pull request at ``url`` merged or closed. Only a wake-up: the promotion asks the forge."""

    url: str
    receiver: str = ""
    """The project/receiver whose webhook said so (for the record)."""
    by: str = ""
    """Who merged or closed it, as the (signed) webhook's sender says ("": not said). Used
    only where the forge's API does not say (Gitea does not name who closed a pull
    request)."""


class PullRequestWait(Contract):
    """What the ``status`` query shows while a ``git-wait-for-pr`` step waits."""

    step: str
    number: int
    url: str = ""
    """The pull request's web page ("" until the first poll answered)."""
    repo_url: str
    deadline: str | None = None
    """When the step's ``retry.timeout`` ends it (ISO 8601, UTC); None: no timeout."""
    polls: int = 0
    woken_by_webhook: int = 0
    closed_by_webhook: str | None = None
    """Who the last webhook said merged or closed it (see ``PullRequestClosed.by``)."""

    def summary(self) -> str:
        """``waiting for PR #7 to merge: https://…`` (the words the status table shows)."""
        text = f"waiting for PR #{self.number} to merge"
        return f"{text}: {self.url}" if self.url else f"{text} ({self.repo_url})"
