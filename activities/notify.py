"""The ``notify`` activity: POST one event to every configured endpoint, concurrently.

Endpoints come from the worker's environment (``FREIGHTLINE_NOTIFY_URLS``).
Each request has a short timeout; an attempt fails (and Temporal retries it)
when any endpoint failed, and the endpoints already served are remembered in
the heartbeat details so a retry does not post to them again (best effort:
delivery is at-least-once). Error messages name endpoints by host only.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from temporalio import activity

from activities import boundary
from freightline.errors import NotificationError
from freightline.notifications import NotificationEvent, notification_urls, redacted
from freightline.temporal import workflow_ui_url

REQUEST_TIMEOUT = timedelta(seconds=3)


@boundary.defn(name="notify")
async def notify(event: NotificationEvent) -> int:
    """Deliver ``event``; the number of endpoints that took it."""
    urls = notification_urls()
    details = activity.info().heartbeat_details
    done: set[int] = set(details[0]) if details else set()
    info = activity.info()
    body = event.payload(workflow_ui_url(info.workflow_namespace or "default", event.workflow_id))
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
