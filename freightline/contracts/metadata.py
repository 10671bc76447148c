"""Kargo's ``set-freight-alias`` and ``set-metadata`` steps: their configs, the requests
they send to the workflows that hold what they change, and the rules those workflows apply.

A Freight is held by the workflow that made or received it: the ``Warehouse``
workflow of its origin (discovered or assembled Freight) and the ``Project``
workflow (Freight applied from a file); a Stage's metadata by its ``Stage``
workflow. The steps change that durable state, so they run in the ``Promotion``
workflow as an activity (``activities.project``) that sends each holder an
update; the holder's validator refuses what Kargo's API would (an alias another
Freight holds, named), before anything is recorded. Both updates are upserts,
so a retried activity converges on the same state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from freightline.contracts.model import Contract
from freightline.contracts.stage import StageState
from freightline.errors import NotFoundError, RequestRefused
from freightline.kargo.metadata import FUNCTION_NAMES, upsert_metadata
from freightline.kargo.resources import Freight, FreightStatus

__all__ = [
    "FREIGHT_CHANGED_SIGNAL",
    "SET_FREIGHT_ALIAS_UPDATE",
    "SET_FREIGHT_METADATA_UPDATE",
    "SET_STAGE_METADATA_UPDATE",
    "STAGE_METADATA_QUERY",
    "FreightAliasChange",
    "FreightAliasRequest",
    "FreightAliasResult",
    "FreightMetadataChange",
    "MetadataApplied",
    "MetadataRequest",
    "MetadataResult",
    "MetadataUpdate",
    "SetFreightAliasConfig",
    "SetMetadataConfig",
    "StageMetadataChange",
    "alias_taken",
    "names_metadata_functions",
    "refresh_freight",
    "with_alias",
    "with_metadata",
]

SET_FREIGHT_ALIAS_UPDATE = "set_freight_alias"
"""Sent to a Warehouse or Project workflow: rename one Freight it holds."""
SET_FREIGHT_METADATA_UPDATE = "set_freight_metadata"
"""Sent to a Warehouse or Project workflow: upsert one Freight's ``status.metadata``."""
FREIGHT_CHANGED_SIGNAL = "freight_changed"
"""Sent to every Stage of the project after a Freight's alias or metadata changed (payload: the
Freight now), so the copies a Stage keeps (available Freight, history, queue) follow."""
SET_STAGE_METADATA_UPDATE = "set_metadata"
"""Sent to a Stage workflow: upsert its metadata."""
STAGE_METADATA_QUERY = "metadata"
"""Asked of a Stage workflow: its metadata (``stageMetadata()`` reads it)."""

# Kargo keeps the alias in a label as well: a Kubernetes label value.
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


class SetFreightAliasConfig(Contract):
    """Kargo's ``set-freight-alias``: ``name`` (the Freight; its ID, or here also its alias)
    and the new ``alias``, unique in the project."""

    name: str = Field(min_length=1)
    alias: str = Field(min_length=1)

    @field_validator("alias")
    @classmethod
    def _label_value(cls, alias: str) -> str:
        if len(alias) > 63 or not _LABEL_VALUE.fullmatch(alias):
            raise ValueError(
                f'"{alias}" is not a valid alias: at most 63 characters, alphanumeric, "-", "_" '
                'or ".", starting and ending with an alphanumeric character (a Kubernetes label '
                "value, where Kargo keeps it)"
            )
        return alias


class MetadataUpdate(Contract):
    """One entry of ``set-metadata``'s ``updates``."""

    kind: Literal["Stage", "Freight"]
    name: str = Field(min_length=1)
    values: Annotated[dict[str, Any], Field(min_length=1)]


class SetMetadataConfig(Contract):
    """Kargo's ``set-metadata``: ``updates``, at least one."""

    updates: Annotated[tuple[MetadataUpdate, ...], Field(min_length=1)]


# --- what the activity is asked, and answers ----------------------------------------------------


class FreightAliasRequest(Contract):
    """The ``set_freight_alias`` activity's input."""

    project: str
    freight: str
    """The Freight's ID (or alias)."""
    alias: str


class FreightAliasResult(Contract):
    freight: str
    """The Freight's ID."""
    previous: str | None = None
    alias: str

    def message(self) -> str:
        """Kargo's words."""
        return (
            f'updated alias of Freight "{self.freight}" from "{self.previous or ""}" '
            f'to "{self.alias}"'
        )


class MetadataRequest(Contract):
    """The ``set_metadata`` activity's input: the step's updates, in order."""

    project: str
    updates: tuple[MetadataUpdate, ...]


class MetadataApplied(Contract):
    """One update done: the resource (a Freight by ID) and its whole metadata now."""

    kind: Literal["Stage", "Freight"]
    name: str
    metadata: dict[str, Any]


class MetadataResult(Contract):
    applied: tuple[MetadataApplied, ...] = ()


# --- what the holding workflows are sent --------------------------------------------------------


class FreightAliasChange(Contract):
    """The ``set_freight_alias`` update of a Warehouse or Project workflow."""

    freight: str
    """The Freight's ID."""
    alias: str


class FreightMetadataChange(Contract):
    """The ``set_freight_metadata`` update of a Warehouse or Project workflow."""

    freight: str
    """The Freight's ID."""
    values: dict[str, Any]


class StageMetadataChange(Contract):
    """The ``set_metadata`` update of a Stage workflow."""

    values: dict[str, Any]


def alias_taken(alias: str, holder: Freight, project: str) -> str:
    """Kargo's refusal of a duplicate alias, naming the Freight that holds it."""
    return (
        f'alias "{alias}" already used by another piece of Freight in project "{project}": '
        f"Freight {holder.metadata.name}"
    )


def with_alias(
    held: Sequence[Freight], change: FreightAliasChange, project: str
) -> tuple[tuple[Freight, ...], Freight]:
    """``held`` with one Freight renamed, and that Freight; RequestRefused when another held
    Freight has the alias, NotFoundError when ``held`` lacks the Freight."""
    target = _held(held, change.freight, project)
    for other in held:
        if other.alias == change.alias and other.metadata.name != target.metadata.name:
            raise RequestRefused(alias_taken(change.alias, other, project))
    renamed = target.model_copy(update={"alias": change.alias})
    return _replaced(held, renamed), renamed


def with_metadata(
    held: Sequence[Freight], change: FreightMetadataChange, project: str
) -> tuple[tuple[Freight, ...], Freight]:
    """``held`` with one Freight's ``status.metadata`` upserted, and that Freight."""
    target = _held(held, change.freight, project)
    status = target.status or FreightStatus()
    merged = upsert_metadata(status.metadata, change.values)
    annotated = target.model_copy(update={"status": status.model_copy(update={"metadata": merged})})
    return _replaced(held, annotated), annotated


def _held(held: Iterable[Freight], freight: str, project: str) -> Freight:
    for candidate in held:
        if candidate.metadata.name == freight:
            return candidate
    raise NotFoundError(f'Freight "{freight}" not found in project "{project}"')


def _replaced(held: Sequence[Freight], new: Freight) -> tuple[Freight, ...]:
    return tuple(new if f.metadata.name == new.metadata.name else f for f in held)


def names_metadata_functions(values: Iterable[Any]) -> frozenset[str]:
    """Which of ``freightMetadata`` / ``stageMetadata`` these step configs, vars and
    conditions name: a promotion snapshots only the metadata its steps can read."""
    text = json.dumps(list(values), default=str)
    return frozenset(name for name in FUNCTION_NAMES if name in text)


def refresh_freight(state: StageState, freight: Freight) -> bool:
    """Bring a Stage's copies of ``freight`` to it (a new alias, new metadata): the Freight it
    may take, and the alias its history, queue, promotions and verifications show. Whether
    anything changed (a Stage that never saw the Freight changes nothing)."""
    name = freight.metadata.name
    changed = False
    entry = state.available.get(name)
    if entry is not None and entry.freight != freight:
        entry.freight = freight
        changed = True
    records = [
        *state.history,
        *(ref for entry in state.history for ref in entry.collection.values()),
        *state.queue,
        *state.verifications,
        state.running,
        state.last_promotion,
        state.verifying,
    ]
    for record in records:
        if record is not None and record.freight == name and record.freight_alias != freight.alias:
            record.freight_alias = freight.alias
            changed = True
    return changed
