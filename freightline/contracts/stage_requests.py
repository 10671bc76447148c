"""Requests sent to a Stage workflow: promote and approve (a person or script), retire
(its Project, when the Stage is deleted)."""

from __future__ import annotations

from freightline.contracts.model import Contract
from freightline.kargo.resources import Freight


class PromoteRequest(Contract):
    """The Stage's ``promote`` update: ``{"freight": "<id or alias>", "requestedBy": "..."}``."""

    freight: str
    requested_by: str = "unknown"
    override_windows: bool = False
    """Run even while the Stage's promotion windows are closed (recorded in the result)."""


class ApproveRequest(Contract):
    """The Stage's ``approve`` update: make this Freight available without verification."""

    freight: Freight
    user: str = "unknown"


class RetireRequest(Contract):
    """The ``retire`` update of a Stage or Warehouse whose resource left its project.

    A Stage stops taking Freight, aborts its running promotion gracefully (at a
    safe point, never mid-push) and its verification, then ends; a Warehouse ends
    after its current discovery. A ``configure`` or ``update_spec`` that arrives
    before the workflow ended (the resource was applied again) cancels it.
    """

    reason: str = "deleted from its project"
    user: str = "freightline"
