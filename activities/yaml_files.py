"""Comment- and order-preserving YAML editing (ruamel.yaml round-trip), and Kargo's yaml-update."""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import Field
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError, StepError
from freightline.kargo.keypaths import split_key


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps comments, order, quoting
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=2, offset=0)
    yaml.width = 4096
    return yaml


def read_yaml(path: Path) -> Any:
    try:
        return _yaml().load(path.read_text()) or {}
    except YAMLError as err:
        raise StepError(f"{path.name}: not valid YAML: {err}") from None


def write_yaml(path: Path, document: Any) -> None:
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    path.write_text(buffer.getvalue())


def load_documents(text: str) -> list[Any]:
    return [doc for doc in _yaml().load_all(text) if doc is not None]


def dump_all(documents: Iterable[Any]) -> str:
    buffer = io.StringIO()
    _yaml().dump_all(list(documents), buffer)
    return buffer.getvalue()


class YamlUpdate(StepConfig):
    key: str = Field(min_length=1)
    value: Any


class YamlUpdateConfig(StepConfig):
    path: str = Field(min_length=1)
    updates: list[YamlUpdate] = Field(min_length=1)


def yaml_update(ctx: StepContext, config: YamlUpdateConfig) -> dict[str, Any]:
    """Set scalar values at Kargo key paths in one YAML file, as Kargo's ``SetValuesInFile``.

    Only the lines holding a changed value are rewritten, from the value's first
    character to the end of that line (a comment after the value goes with it, as in
    Kargo); every other line keeps its bytes, except that each line ends with ``\\n``
    afterwards (Kargo's line scanner drops ``\\r`` and adds a final newline). A key
    that is not there, or that names a map, a list or an alias, is an error (Kargo's
    ``yaml-update`` never adds keys). Values are written as Kargo writes them: a
    string that would read as a number, a bool or JSON gets double quotes, any other
    string is written bare.
    """
    where = ctx.describe()
    file = ctx.workspace.resolve(config.path)
    if not file.is_file():
        raise ConfigError(f'{where}: error reading file "{config.path}": not a file')
    text = file.read_text()
    try:
        document = YAML().compose(text)  # only the first document, as Kargo's decoder
    except YAMLError as err:
        raise StepError(f"{where}: {config.path}: not valid YAML: {err}") from None
    changes: dict[int, tuple[int, str]] = {}
    for update in config.updates:
        if not _is_scalar(update.value):
            raise ConfigError(
                f'{where}: key "{update.key}": yaml-update sets strings, numbers and bools only'
            )
        try:
            line, column = _find_scalar(document, split_key(update.key))
        except ConfigError as err:
            raise ConfigError(f'{where}: error finding key "{update.key}": {err}') from None
        changes[line] = (column, yaml_scalar(update.value))
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    out = []
    for number, raw in enumerate(lines):
        text_line = raw.removesuffix("\r")
        if number in changes:
            column, value = changes[number]
            kept = text_line[:column]
            text_line = kept + ("" if kept.endswith(" ") else " ") + value
        out.append(text_line + "\n")
    file.write_text("".join(out))
    shown = "".join(f"\n- {u.key}: {yaml_scalar(u.value)}" for u in config.updates)
    return {"commitMessage": f"Updated {config.path}\n{shown}"}


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool | int) or (
        isinstance(value, float) and math.isfinite(value)
    )


def _find_scalar(node: Node | None, parts: list[str]) -> tuple[int, int]:
    """The 0-based line and column where the scalar at ``parts`` starts (Kargo's rules).

    An alias is a node of its own to Go's yaml, neither a map, a list nor a scalar: a
    path ending at one does not address a scalar, a path through one is not found.
    """
    alias = False
    for part in parts:
        if alias:
            raise ConfigError("key path not found")
        if isinstance(node, MappingNode):
            entry = next(
                ((k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == part),
                None,
            )
            if entry is None:
                raise ConfigError("key path not found")
            key, node = entry
            # ruamel hands back the anchored node itself, found earlier than its own key.
            alias = node.start_mark.index < key.end_mark.index
        elif isinstance(node, SequenceNode):
            if not re.fullmatch(r"[+-]?[0-9]+", part):
                raise ConfigError(f'"{part}" is not a list index')
            index = int(part)
            if not 0 <= index < len(node.value):
                raise ConfigError(f"no list item {index}: the list has {len(node.value)}")
            start = node.start_mark.index
            node = node.value[index]
            alias = node.start_mark.index < start
        else:
            raise ConfigError("key path not found")
    if alias or not isinstance(node, ScalarNode):
        raise ConfigError("key path does not address a scalar node")
    return node.start_mark.line, node.start_mark.column


_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+"
    r"|(?i:inf|infinity))|(?i:nan)"
)
_GO_BOOL = frozenset(
    {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}
)


def yaml_scalar(value: str | bool | int | float) -> str:
    """``value`` as Kargo writes it into YAML (``QuoteIfNecessary``, then Go's ``%v``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_number(value)
    if _parses_as_go_float(value) or value in _GO_BOOL or _is_json(value):
        return json.dumps(value, ensure_ascii=False)
    return value


def _parses_as_go_float(text: str) -> bool:
    if not _GO_FLOAT.fullmatch(text):
        return False
    literal = text.lstrip("+-").lower()
    # Go's ParseFloat refuses a decimal out of float64's range (it is not quoted then).
    return literal.startswith(("inf", "nan", "0x")) or math.isfinite(float(text))


def _is_json(text: str) -> bool:
    def refuse(name: str) -> None:
        raise ValueError(name)

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        return False
    return True


def _go_number(value: int | float) -> str:
    """A JSON number as Go prints the float64 it decodes to: ``42``, ``1.5``, ``1e+21``."""
    number = Decimal(repr(float(value))).normalize()
    exponent = number.adjusted()
    if -4 <= exponent < 21:
        return format(number, "f")
    digits = format(number.scaleb(-exponent), "f")
    return f"{digits}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
