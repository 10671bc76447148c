"""toml-update, as Kargo's: set existing scalar values at key paths, every other byte kept.

tomlkit keeps a document's text as it was read (comments, blank lines, quoting,
spacing, table order), so replacing one value's item changes only that value's
characters. The key path is Kargo's, as for ``json-update`` (dots separate keys,
a backslash escapes a dot, a number indexes an array or an array of tables).
As in Kargo, only a key that exists and holds a scalar (string, number, bool,
date or time) can be set: a missing key, or one holding a table or array, ends
the step Errored, and the value must be a string, number or bool.

New values are written as Kargo (go-toml) writes them: a string as a literal
string (``'v1.2.3'``) unless it holds a ``'`` or a control character, then as a
basic string with escapes; a float in plain notation (``0.0000001``, ``42.0``).
One difference, on purpose: Kargo reads every number of a step's config as a
float, so it writes ``port = 9090.0`` for ``value: 9090``, turning a TOML
integer into a float; Freightline writes an integer as an integer.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import tomlkit
from pydantic import Field
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Array, InlineTable, Item, Table
from tomlkit.toml_document import TOMLDocument

from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError
from freightline.kargo.keypaths import split_key_path


class TomlUpdate(StepConfig):
    key: str = Field(min_length=1)
    value: Any


class TomlUpdateConfig(StepConfig):
    path: str = Field(min_length=1)
    updates: list[TomlUpdate] = Field(min_length=1)


def toml_update(ctx: StepContext, config: TomlUpdateConfig) -> dict[str, Any]:
    """Set each update's scalar value in one TOML file; output Kargo's ``commitMessage``."""
    where = ctx.describe()
    file = ctx.workspace.resolve(config.path, writing=True)
    if not file.is_file():
        raise ConfigError(f'{where}: error reading TOML file "{config.path}": not a file')
    try:
        # Bytes, not text mode: text mode would turn \r\n line ends into \n.
        document = tomlkit.parse(file.read_bytes().decode())
    except (TOMLKitError, UnicodeDecodeError) as err:
        raise ConfigError(f'{where}: error parsing TOML file "{config.path}": {err}') from None
    for update in config.updates:
        try:
            _set(document, split_key_path(update.key, keep_trailing_backslash=True), update.value)
        except ValueError as err:
            raise ConfigError(f'{where}: error updating key "{update.key}": {err}') from None
    file.write_bytes(tomlkit.dumps(document).encode())
    lines = "".join(f"\n- {u.key}: {toml_text(u.value)}" for u in config.updates)
    return {"commitMessage": f"Updated {config.path}\n{lines}"}


def _set(document: TOMLDocument, parts: list[str], value: Any) -> None:
    parent: Any = document
    for depth, part in enumerate(parts):
        node = _child(parent, part)
        if node is None:
            raise ValueError("key path not found")
        if depth < len(parts) - 1:
            parent = node
            continue
        kind = "ArrayTable" if isinstance(parent, AoT) else _container_kind(node)
        if kind is not None:
            raise ValueError(f"key path addresses {kind} instead of a scalar node")
        replacement = _item(value)
        if isinstance(parent, list):
            parent[int(part)] = replacement
        else:
            parent[part] = replacement


def _child(parent: Any, part: str) -> Any:
    """What ``part`` names under ``parent``, or None (a scalar has no children)."""
    if isinstance(parent, list):  # Array, AoT
        # Kargo indexes arrays by their decimal index only ("1", not "01" or "-1").
        if part.isdigit() and str(int(part)) == part and int(part) < len(parent):
            return parent[int(part)]
        return None
    if isinstance(parent, dict):  # document, Table, InlineTable
        return parent.get(part)
    return None


def _container_kind(node: Any) -> str | None:
    """Kargo's (go-toml's) name for a node that is not a scalar, or None for a scalar."""
    if isinstance(node, AoT):
        return "ArrayTable"
    if isinstance(node, InlineTable):
        return "InlineTable"
    if isinstance(node, Table | dict):
        return "Table"
    if isinstance(node, Array | list):
        return "Array"
    return None


def _item(value: Any) -> Item:
    """The tomlkit item for a new value, its text exactly :func:`toml_text`'s."""
    item: Item = tomlkit.parse(f"v = {toml_text(value)}\n")["v"]
    return item


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _is_control(char: str) -> bool:
    return char < " " or char == "\x7f"


def _escaped(char: str) -> str:
    return f"\\u{ord(char):04X}" if _is_control(char) else char


def toml_text(value: Any) -> str:
    """A scalar's TOML text as go-toml writes it; ValueError for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value.is_integer():
            return f"{value:.1f}"
        return format(Decimal(repr(value)), "f")
    if isinstance(value, str):
        if any(c == "'" or (_is_control(c) and c != "\t") for c in value):
            return '"' + "".join(_ESCAPES.get(c) or _escaped(c) for c in value) + '"'
        return f"'{value}'"
    raise ValueError("value is not a TOML scalar type")
