"""Comment- and order-preserving YAML editing (ruamel.yaml round-trip), and yaml-update."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError, StepError
from freightline.kargo.keypaths import split_key_path


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
    path: str
    updates: list[YamlUpdate] = Field(min_length=1)


def yaml_update(ctx: StepContext, config: YamlUpdateConfig) -> dict[str, Any]:
    """Set values at dotted keys (``spec.template.spec.containers.0.image``) in one YAML file."""
    file = ctx.workspace.resolve(config.path)
    if not file.is_file():
        raise ConfigError(f'{ctx.describe()}: "{config.path}" is not a file')
    document = read_yaml(file)
    for update in config.updates:
        _set(document, update.key, update.value, ctx.describe())
    write_yaml(file, document)
    lines = "\n".join(f"- {u.key}: {u.value}" for u in config.updates)
    return {"commitMessage": f"Updated {config.path}\n\n{lines}"}


def _set(document: Any, key: str, value: Any, where: str) -> None:
    parts = split_key_path(key)
    node = document
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f'{where}: key "{key}": no list item {part}')
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f'{where}: key "{key}": "{part}" is inside a scalar')
