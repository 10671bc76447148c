"""json-update, as Kargo's: set scalar values at key paths, every other byte kept.

Kargo sets each value with sjson, which edits the JSON text in place. Here the
parsed document says where each key path leads, ``json-source-map`` says where
that value's text starts and ends, and only those characters change. A key
path is Kargo's (sjson's): dots separate keys, a backslash escapes a dot
(``example\\.com/version``), a number indexes a list (``containers.0.image``),
``-1`` appends. As with sjson a missing key is added (``,"key":value`` after the
object's last member) and an existing value of any type is replaced; a value
that is not a string, number or bool is refused, as Kargo refuses it.
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
            text = _set(text, _split_key(update.key), _encode(update.value))
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


def _split_key(key: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in key:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current + ("\\" if escaped else ""))
    if any(not part for part in parts):
        raise ConfigError(f'key "{key}" has an empty part')
    return parts


def _set(text: str, parts: list[str], encoded: str) -> str:
    """``text`` with the value at ``parts`` replaced (or added) by ``encoded``."""
    document = json.loads(text)
    spans = calculate(text)
    node: Any = document
    for depth, part in enumerate(parts):
        pointer = "/" + "/".join(parts[:depth]) if depth else ""
        rest = parts[depth:]
        if isinstance(node, dict):
            if part not in node:
                return _add(text, spans[pointer], bool(node), part, rest[1:], encoded)
            node = node[part]
        elif isinstance(node, list):
            index = _index(part)
            if index < 0 or index >= len(node):
                return _append(text, spans[pointer], node, index, rest[1:], encoded)
            parts[depth] = str(index)
            node = node[index]
        else:
            raise ValueError(f'"{parts[depth - 1]}" holds a scalar, not a map or a list')
    entry = spans["/" + "/".join(parts)]
    start, end = entry.value_start.position, entry.value_end.position
    return text[:start] + encoded + text[end:]


def _index(part: str) -> int:
    if part == "-1":
        return -1
    if not part.isdigit():
        raise ValueError(f'"{part}" is not a list index')
    return int(part)


def _nested(rest: list[str], encoded: str) -> str:
    """The JSON text of a value at ``rest`` below a new key: ``{"b":{"c":value}}``."""
    for part in reversed(rest):
        encoded = f"{json.dumps(part, ensure_ascii=False)}:{encoded}"
        encoded = "{" + encoded + "}"
    return encoded


def _add(text: str, entry: Any, has_members: bool, key: str, rest: list[str], value: str) -> str:
    # After the last member (or inside an empty object), as sjson adds a key.
    close = entry.value_end.position - 1
    member = f"{json.dumps(key, ensure_ascii=False)}:{_nested(rest, value)}"
    if has_members:
        position = len(text[:close].rstrip())
        return text[:position] + "," + member + text[position:]
    return text[:close] + member + text[close:]


def _append(
    text: str, entry: Any, items: list[Any], index: int, rest: list[str], value: str
) -> str:
    padding = [] if index < 0 else ["null"] * (index - len(items))
    new = ",".join([*padding, _nested(rest, value)])
    close = entry.value_end.position - 1
    position = len(text[:close].rstrip())
    return text[:position] + ("," if items else "") + new + text[position:]
