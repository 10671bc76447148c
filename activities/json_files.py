"""json-update, as Kargo's: set scalar values at key paths, every other byte kept.

Kargo sets each value with sjson, which edits the JSON text in place. Here the
parsed document says where each key path leads, ``json-source-map`` says where
that value's text starts and ends, and only those characters change. A key
path is Kargo's (sjson's): dots separate keys, a backslash escapes a dot
(``example\\.com/version``), a number indexes a list (``containers.0.image``),
``-1`` appends. As sjson does, a missing key is added (``,"key":value`` just
before the closing brace), an index past the end pads the list with nulls (and
writes that list compactly), a scalar in the way becomes a new map, and an
existing value of any type is replaced; a value that is not a string, number or
bool is refused, as Kargo refuses it.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from json_source_map import calculate
from pydantic import Field

from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError
from freightline.kargo.keypaths import split_key_path


class JsonUpdate(StepConfig):
    key: str = Field(min_length=1)
    value: Any


class JsonUpdateConfig(StepConfig):
    path: str = Field(min_length=1)
    updates: list[JsonUpdate] = Field(min_length=1)


def json_update(ctx: StepContext, config: JsonUpdateConfig) -> dict[str, Any]:
    """Set each update's scalar value in one JSON file; output Kargo's ``commitMessage``."""
    where = ctx.describe()
    file = ctx.workspace.resolve(config.path)
    if not file.is_file():
        raise ConfigError(f'{where}: error reading JSON file "{config.path}": not a file')
    text = file.read_text()
    for update in config.updates:
        if not _is_scalar(update.value):
            raise ConfigError(f'{where}: value for key "{update.key}" is not a scalar type')
        try:
            text = _set(
                text,
                split_key_path(update.key, keep_trailing_backslash=True),
                _encode(update.value),
            )
        except (ValueError, LookupError) as err:
            raise ConfigError(f'{where}: error setting key "{update.key}": {err}') from None
    file.write_text(text)
    lines = "".join(f"\n- {u.key}: {_shown(u.value)}" for u in config.updates)
    return {"commitMessage": f"Updated {config.path}\n{lines}"}


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool | int) or (
        isinstance(value, float) and math.isfinite(value)
    )


def _encode(value: Any) -> str:
    """The JSON text of a scalar as sjson writes a Go value decoded from JSON (a float64)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(Decimal(repr(value)).normalize(), "f")
    return json.dumps(value, ensure_ascii=False)


def _shown(value: Any) -> str:
    """Go's ``%q`` for a string, ``%v`` otherwise (Kargo's commit message)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return _encode(value)


def _set(text: str, parts: list[str], encoded: str) -> str:
    """``text`` with the value at ``parts`` set to ``encoded``, as sjson sets it."""
    document = json.loads(text)
    spans = calculate(text)
    node: Any = document
    for depth, part in enumerate(parts):
        entry = spans["/" + "/".join(parts[:depth]) if depth else ""]
        start, end = entry.value_start.position, entry.value_end.position
        if isinstance(node, dict):
            if part in node:
                node = node[part]
                continue
            # A new member just before the closing brace (what precedes it stays).
            member = ("," if node else "") + _build(parts[depth:], encoded, in_list=False)
            return text[: end - 1] + member + text[end - 1 :]
        if isinstance(node, list):
            if part == "-1":  # append, just before the closing bracket
                item = ("," if node else "") + _build(parts[depth:], encoded, in_list=True)
                return text[: end - 1] + item + text[end - 1 :]
            if not part.isdigit():
                raise ValueError(f"cannot set array element for non-numeric key '{part}'")
            index = int(part)
            if index < len(node):
                node = node[index]
                parts[depth] = str(index)
                continue
            # Past the end: sjson writes the list anew, items compact, nulls up to the index.
            base = "/" + "/".join(parts[:depth]) if depth else ""
            items = [
                text[
                    spans[f"{base}/{i}"].value_start.position : spans[
                        f"{base}/{i}"
                    ].value_end.position
                ]
                for i in range(len(node))
            ]
            items += ["null"] * (index - len(node))
            items.append(_build(parts[depth:], encoded, in_list=True))
            return text[:start] + "[" + ",".join(items) + "]" + text[end:]
        # A scalar in the way: sjson replaces it with a new map (a list for an index).
        return text[:start] + _container(parts[depth:], encoded) + text[end:]
    entry = spans["/" + "/".join(parts)]
    return text[: entry.value_start.position] + encoded + text[entry.value_end.position :]


def _container(parts: list[str], encoded: str) -> str:
    """A new map or list holding ``encoded`` at ``parts`` (a list when the first is an index)."""
    first = parts[0]
    if first.isdigit() or first == "-1":
        padding = "null," * (int(first) if first.isdigit() else 0)
        return "[" + padding + _build(parts, encoded, in_list=True) + "]"
    return "{" + _build(parts, encoded, in_list=False) + "}"


def _build(parts: list[str], encoded: str, *, in_list: bool) -> str:
    """sjson's new member (``"key":value``) or list item for ``parts``, nesting the rest."""
    head = "" if in_list else json.dumps(parts[0], ensure_ascii=False) + ":"
    if len(parts) == 1:
        return head + encoded
    return head + _container(parts[1:], encoded)
