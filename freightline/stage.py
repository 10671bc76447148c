"""What Stages are told and hold: Freight offers, and (soon) the Stage's state."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from freightline.resources import Freight


class FreightAvailable(BaseModel):
    """The ``freight_available`` signal: Freight a Stage may take.

    ``source`` says why: discovered by a Warehouse the Stage requests
    directly from, or verified in an upstream Stage (``via`` names it).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    freight: Freight
    source: Literal["warehouse", "stage"]
    via: str
