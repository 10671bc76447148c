"""Requests a person (or script) sends to a Stage workflow: promote and approve."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from freightline.resources import Freight


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class PromoteRequest(_Model):
    """The Stage's ``promote`` update: ``{"freight": "<id or alias>", "requestedBy": "..."}``."""

    freight: str
    requested_by: str = "unknown"
    override_windows: bool = False
    """Run even while the Stage's promotion windows are closed (recorded in the result)."""


class ApproveRequest(_Model):
    """The Stage's ``approve`` update: make this Freight available without verification."""

    freight: Freight
    user: str = "unknown"
