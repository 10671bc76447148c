"""Notification events: what a promotion or verification tells chat and webhooks.

An event is plain JSON with a Slack-compatible ``text`` (so a Slack, Mattermost
or Teams incoming-webhook URL works as is) plus structured fields for
machines. Where events go is the **worker's** configuration
(``FREIGHTLINE_NOTIFY_URLS``, comma-separated, ``freightline.settings``), held
by the ``notify`` activity only: webhook URLs often carry a secret, and
workflow history never holds one.
"""

from __future__ import annotations

from typing import Literal

from freightline.contracts.model import Contract

EventKind = Literal[
    "promotion.succeeded",
    "promotion.failed",
    "promotion.errored",
    "promotion.aborted",
    "promotion.waiting_for_approval",
    "verification.failed",
]


class NotificationEvent(Contract):
    """One event, as the workflow knows it (no URLs, no secrets)."""

    event: EventKind
    project: str
    stage: str
    freight: str
    freight_alias: str | None = None
    workflow_id: str
    """The Promotion (or Verification) workflow the event is about."""
    phase: str
    message: str = ""
    user: str | None = None
    """Who approved, rejected, aborted or requested, where that is known."""

    def text(self) -> str:
        """The one-line, Slack-flavoured summary."""
        freight = f"`{self.freight_alias or self.freight[:7]}`"
        where = f"`{self.stage}` (project `{self.project}`)"
        detail = f": {self.message}" if self.message else ""
        match self.event:
            case "promotion.succeeded":
                return f":white_check_mark: promoted freight {freight} into {where}"
            case "promotion.waiting_for_approval":
                return (
                    f":hourglass: promotion of freight {freight} into {where} is waiting for "
                    f"approval{detail} — `freightline approve-promotion {self.workflow_id}`"
                )
            case "promotion.aborted":
                return (
                    f":octagonal_sign: promotion of freight {freight} into {where} aborted{detail}"
                )
            case "verification.failed":
                return (
                    f":warning: verification of freight {freight} in {where} "
                    f"ended {self.phase}{detail}"
                )
            case _:
                return f":x: promotion of freight {freight} into {where} {self.phase}{detail}"

    def payload(self, link: str | None = None) -> dict[str, object]:
        """The JSON body POSTed to every endpoint."""
        body: dict[str, object] = {"text": self.text()}
        body.update(self.model_dump(mode="json", by_alias=True))
        if link:
            body["link"] = link
        return body


def redacted(url: str) -> str:
    """An endpoint as it may appear in history and logs: scheme, host and port only."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")
