"""The one base of every model workflows and activities exchange or keep.

JSON is camelCase, the names Kargo users write and ``temporal workflow start
--input`` takes; Python code uses snake_case; input is accepted either way. A
model is a value (frozen) and refuses fields it does not know, so a typo in a
hand-written input is an error, not a silently ignored setting. The one
variant, :class:`State`, is the mutable state a long-lived workflow keeps and
carries across continue-as-new (a Stage's queue and history).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["Contract", "State"]


class Contract(BaseModel):
    """Base of inputs, results, signals, updates, queries and workflow state."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        frozen=True,
        extra="forbid",
    )


class State(Contract):
    """A workflow's own state, changed in place by its handlers."""

    model_config = ConfigDict(frozen=False)
