"""The parse steps, as Kargo's: yaml-parse, json-parse and toml-parse.

Each reads one file of the work tree and gives, for each ``outputs[]`` entry, the
value of its ``fromExpression`` (an expression without ``${{ }}``: the step
evaluates it, not the templating) as the output of that ``name``. As in Kargo,
the expression's names are the document's top-level keys (``image.tag``).
Beyond Kargo, ``ctx`` (project, Stage, promotion, target Freight) is there too
unless the document has a ``ctx`` key of its own: Kargo's own ``file-write``
example extracts ``apps[ctx.stage]``, which needs it. Every failure (no file,
not YAML/JSON/TOML, a failing expression) ends the step Errored, as in Kargo.
TOML's dates and times come out as ISO 8601 text, as the YAML ones do.
"""

from __future__ import annotations

import datetime
import json
import tomllib
from collections.abc import Callable
from typing import Any

from pydantic import Field
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from activities.step_context import StepConfig, StepContext
from freightline.contracts.promotion import StepScope
from freightline.errors import ConfigError
from freightline.kargo.expressions import evaluate


class ParseOutput(StepConfig):
    name: str = Field(min_length=1)
    from_expression: str = Field(min_length=1)


class ParseConfig(StepConfig):
    path: str = Field(min_length=1)
    outputs: list[ParseOutput] = Field(min_length=1)


class YamlParseConfig(ParseConfig):
    """Kargo's ``yaml-parse`` config."""


class JsonParseConfig(ParseConfig):
    """Kargo's ``json-parse`` config."""


class TomlParseConfig(ParseConfig):
    """Kargo's ``toml-parse`` config."""


def yaml_parse(ctx: StepContext, config: YamlParseConfig) -> dict[str, Any]:
    """Outputs extracted from a YAML file."""
    return _parse(ctx, config, "YAML", _load_yaml)


def json_parse(ctx: StepContext, config: JsonParseConfig) -> dict[str, Any]:
    """Outputs extracted from a JSON file."""
    return _parse(ctx, config, "JSON", json.loads)


def toml_parse(ctx: StepContext, config: TomlParseConfig) -> dict[str, Any]:
    """Outputs extracted from a TOML file."""
    return _parse(ctx, config, "TOML", tomllib.loads)


def _load_yaml(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def _parse(
    ctx: StepContext, config: ParseConfig, kind: str, load: Callable[[str], Any]
) -> dict[str, Any]:
    where = ctx.describe()
    file = ctx.workspace.resolve(config.path)
    if not file.is_file():
        raise ConfigError(f'{where}: error reading {kind} file "{config.path}": not a file')
    text = file.read_text()
    if not text:
        raise ConfigError(f'{where}: could not parse empty {kind} file "{config.path}"')
    try:
        document = _plain(load(text))
    except (YAMLError, ValueError) as err:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f'{where}: could not parse {kind} file "{config.path}": {err}') from None
    if not isinstance(document, dict):
        raise ConfigError(
            f'{where}: {kind} file "{config.path}" does not hold a map at its top, '
            "so its keys cannot be the expressions' names"
        )
    env = {"ctx": StepScope(ctx.plan, ()).context(), **document}
    return {output.name: evaluate(output.from_expression, env) for output in config.outputs}


def _plain(value: Any) -> Any:
    """JSON-ready data, as Go's decoders give it: string keys, timestamps as text."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    return value
