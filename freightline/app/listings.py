"""What ``freightline get ... -o json`` prints: a scriptable contract, complete and stable.

Each command prints one JSON array. Field names are camelCase, as Kargo's
resources and Freightline's workflow models are; timestamps are ISO 8601 in
UTC; IDs are whole (a Freight ID is 40 hex characters, a commit ID as git
gives it, an image with its digest). Fields are added, never renamed or
removed; an absent value is ``null`` (or an empty list), never a missing key,
except inside a Kargo resource (``spec``, a Freight), which keeps Kargo's own
shape. The table output is for people and may change.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from freightline.contracts.stage import StageState
from freightline.contracts.warehouse import WarehouseStatus
from freightline.kargo.resources import Freight, Stage, Warehouse

__all__ = ["freight_listing", "promotion_listing", "stage_listing", "warehouse_listing"]


def _kargo(model: BaseModel) -> Any:
    """A Kargo resource or spec, in Kargo's shape (unset fields left out, as Kargo does)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _json(model: BaseModel | None) -> Any:
    """Freightline's own model: every field, ``null`` when unset."""
    return model.model_dump(mode="json", by_alias=True) if model else None


def freight_listing(freight: Freight) -> dict[str, Any]:
    """Kargo's Freight resource (``metadata.name`` the ID; ``alias``; ``origin``; ``images``
    with ``repoURL``, ``tag``, ``digest``; ``commits`` with the full ``id``; ``charts``),
    with ``id``, ``discoveredAt`` and ``metadata`` at the top for scripts."""
    body = _kargo(freight)
    return {
        "id": freight.metadata.name,
        "alias": freight.alias,
        "origin": body["origin"],
        "discoveredAt": _time(freight.discovered_at),
        "images": body.get("images", []),
        "commits": body.get("commits", []),
        "charts": body.get("charts", []),
        # What set-metadata steps wrote (Kargo's status.metadata): freightMetadata() reads it.
        "metadata": (freight.status.metadata if freight.status else None) or {},
        "freight": body,
    }


def stage_listing(stage: Stage, state: StageState | None) -> dict[str, Any]:
    """A Stage: its applied spec, and what its workflow holds (``null`` while it is not running):
    current Freight, health, the last verification and promotion, the running one, the queue."""
    listing: dict[str, Any] = {"name": stage.metadata.name, "spec": _kargo(stage.spec)}
    if state is None:
        listing["status"] = None
        return listing
    listing["status"] = {
        "autoPromotion": state.config.auto_promotion,
        "autoPromotionPausedBy": state.auto_paused_by,
        "currentFreight": _json(state.current),
        "freightSummary": freight_summary(state),
        "health": state.health.value,
        "healthCheckedAt": _time(state.health_checked_at),
        "verifying": _json(state.verifying),
        "lastVerification": _json(state.verifications[0] if state.verifications else None),
        "running": _json(state.running),
        "lastPromotion": _json(state.last_promotion),
        "queue": [_json(ticket) for ticket in state.queue],
        "history": [_json(entry) for entry in state.history],
        "metadata": state.metadata,
    }
    return listing


def freight_summary(state: StageState) -> str:
    """Kargo's ``status.freightSummary``: the one Freight's name for a Stage that requests one
    origin and has it, else ``<held>/<requested> Fulfilled``."""
    requested = len(state.config.stage.spec.requested_freight)
    collection = state.current_collection
    if requested == 1 and len(collection) == 1:
        (ref,) = collection.values()
        return ref.freight
    return f"{len(collection)}/{requested} Fulfilled"


def warehouse_listing(warehouse: Warehouse, status: WarehouseStatus | None) -> dict[str, Any]:
    """A Warehouse: its applied spec, and its workflow's status (``null`` while not running)."""
    return {
        "name": warehouse.metadata.name,
        "spec": _kargo(warehouse.spec),
        "status": _json(status),
    }


def promotion_listing(row: Mapping[str, Any]) -> dict[str, Any]:
    """One promotion from Temporal's visibility: its workflow ID and run, status, where, when."""
    return {
        key: _time(value) if isinstance(value, datetime) else value for key, value in row.items()
    }


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
