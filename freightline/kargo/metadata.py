"""Metadata on Freight and Stages, as Kargo keeps it: the rules, no I/O.

Kargo's ``set-metadata`` step upserts key/value pairs into a Freight's or a
Stage's ``status.metadata`` (any JSON value; one key at a time, so keys it
does not name are kept), and the expression functions ``freightMetadata(name)``
and ``stageMetadata(name)`` return the whole map, or nil when the resource is
unknown or has none. Here the map lives in the workflow that holds the
resource; a promotion reads a snapshot of it taken when its plan was resolved
(with its own ``set-metadata`` steps' writes on top), so the functions are pure
lookups and a workflow evaluating them stays deterministic.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

from freightline.errors import ConfigError

__all__ = ["FUNCTION_NAMES", "metadata_functions", "upsert_metadata"]

FUNCTION_NAMES = ("freightMetadata", "stageMetadata")
"""The expression functions this module provides (a plan snapshots metadata only when a step
names one of them)."""


def upsert_metadata(
    existing: Mapping[str, Any] | None, values: Mapping[str, Any]
) -> dict[str, Any]:
    """``existing`` with each key of ``values`` inserted or replaced (Kargo's ``UpsertMetadata``):
    keys not named are kept; a value must be JSON (it is stored as JSON, as in Kargo)."""
    merged = dict(existing or {})
    for key, value in values.items():
        if not key:
            raise ConfigError("metadata key must not be empty")
        try:
            # A round trip through JSON: what is stored is exactly what Kargo would store.
            merged[key] = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise ConfigError(f'metadata value of "{key}" is not JSON: {err}') from None
    return merged


def metadata_functions(
    freight: Mapping[str, Mapping[str, Any]], stages: Mapping[str, Mapping[str, Any]]
) -> dict[str, Callable[..., Any]]:
    """``freightMetadata(freightName)`` and ``stageMetadata(stageName)`` over these maps
    (Freight by ID, Stages by name): a copy of the resource's metadata, or nil."""

    def lookup(
        kind: str, argument: str, maps: Mapping[str, Mapping[str, Any]], args: tuple[Any, ...]
    ) -> Any:
        # Kargo's checks, in Kargo's words (pkg/expressions/function).
        if len(args) != 1:
            raise ConfigError(f"expected 1 argument, got {len(args)}")
        (name,) = args
        if not isinstance(name, str):
            raise ConfigError(f"{argument} must be string, got {type(name).__name__}")
        if not name:
            raise ConfigError(f"{kind} name must not be empty")
        found = maps.get(name)
        # A copy: an expression must not change the snapshot another step reads.
        return copy.deepcopy(dict(found)) if found else None

    def freight_metadata(*args: Any) -> Any:
        return lookup("freight ref", "first argument", freight, args)

    def stage_metadata(*args: Any) -> Any:
        return lookup("stage", "argument", stages, args)

    return {"freightMetadata": freight_metadata, "stageMetadata": stage_metadata}
