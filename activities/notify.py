"""The ``notify`` activity: POST one event to every configured endpoint, concurrently.

Endpoints are the worker's settings (``FREIGHTLINE_NOTIFY_URLS``, read once at
start and handed to :class:`NotifyActivities`).
Each request has a short timeout; an attempt fails (and Temporal retries it)
when any endpoint failed, and the endpoints already served are remembered in
the heartbeat details so a retry does not post to them again (best effort:
delivery is at-least-once). Error messages name endpoints by host only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import httpx
from pydantic import SecretStr
from temporalio import activity

from activities import boundary
from freightline.contracts.names import workflow_ui_url
from freightline.contracts.notifications import NotificationEvent, redacted
from freightline.errors import NotificationError

REQUEST_TIMEOUT = timedelta(seconds=3)


class NotifyActivities:
    """Delivers events to the worker's endpoints, with links into its Temporal UI."""

    def __init__(self, urls: Sequence[SecretStr], *, ui_url: str) -> None:
        self.urls = tuple(urls)
        self.ui_url = ui_url

    @boundary.defn(name="notify")
    async def notify(self, event: NotificationEvent) -> int:
        """Deliver ``event``; the number of endpoints that took it."""
        urls = [url.get_secret_value() for url in self.urls]
        details = activity.info().heartbeat_details
        done: set[int] = set(details[0]) if details else set()
        info = activity.info()
        namespace = info.workflow_namespace or "default"
        body = event.payload(workflow_ui_url(self.ui_url, namespace, event.workflow_id))
        pending = [(i, url) for i, url in enumerate(urls) if i not in done]
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT.total_seconds()) as http:
            answers = await asyncio.gather(
                *(http.post(url, json=body) for _, url in pending), return_exceptions=True
            )
        problems = []
        for (index, url), answer in zip(pending, answers, strict=True):
            if isinstance(answer, httpx.Response) and answer.is_success:
                done.add(index)
            elif isinstance(answer, httpx.Response):
                problems.append(f"{redacted(url)} answered {answer.status_code}")
            else:
                problems.append(f"{redacted(url)}: {type(answer).__name__}")
        activity.heartbeat(sorted(done))
        if problems:
            raise NotificationError("notification not delivered: " + "; ".join(problems))
        return len(done)
