"""yaml-merge, as Kargo's: merge YAML files in order into one.

Kargo merges with kustomize's ``merge2`` (each later file is a patch over what
came before) and writes the result with kustomize's encoder; this does what that
does for the YAML such a step merges (Helm values, plain config):

- maps merge key by key, recursively; a scalar or a list in a later file
  replaces the earlier one whole (lists are not merged);
- a key set to ``null`` in a later file removes the key; when two or more files
  merge, every ``null`` inside a map goes (kustomize drops them while it walks);
- a key holding a map in one file and a scalar or list in the other is an
  error (kustomize's "wrong node kind"), not a silent replacement;
- the first file's keys keep their order and comments; keys new to it follow in
  name order, as kustomize appends them;
- an empty input file is skipped; only a file's first document counts;
- the output has two-space indents with list dashes at their key's indentation
  (kustomize's layout); with no input left, the output file is empty.

One kustomize behaviour is not reproduced: for Kubernetes resources it knows
(``apiVersion`` and ``kind`` set), kustomize merges some lists by key
(containers by ``name``); here lists are always replaced, as Kargo's docs say.
Every failure (a missing input without ``ignoreMissingFiles``, bad YAML,
mismatched kinds, a path leaving the work tree) ends the step Errored.
"""

from __future__ import annotations

import io
from typing import Any

from pydantic import Field
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError


class YamlMergeConfig(StepConfig):
    in_files: list[str] = Field(min_length=1)
    out_file: str = Field(min_length=1)
    ignore_missing_files: bool = False


def yaml_merge(ctx: StepContext, config: YamlMergeConfig) -> dict[str, Any]:
    """Merge ``inFiles`` in order into ``outFile``; output Kargo's ``commitMessage``."""
    where = ctx.describe()
    found: list[str] = []
    merged: Any = None
    for name in config.in_files:
        file = ctx.workspace.resolve(name, field="inFiles")
        if not file.exists():
            if config.ignore_missing_files:
                continue
            raise ConfigError(f'{where}: input file "{name}" not found')
        found.append(name)
        try:
            documents = iter(_yaml().load_all(file.read_text()))
            document = next(documents, None)
        except (YAMLError, OSError) as err:
            raise ConfigError(f'{where}: error reading input file "{name}": {err}') from None
        if document is None:
            continue
        try:
            merged = document if merged is None else _merge_value(merged, document, "")
        except ValueError as err:
            raise ConfigError(f'{where}: error merging in file "{name}": {err}') from None
    target = ctx.workspace.resolve(config.out_file, field="outFile", writing=True)
    if target.is_dir():
        raise ConfigError(f'{where}: outFile "{config.out_file}" is a directory')
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        target.write_text(_dump(merged) if merged is not None else "")
    except OSError as err:
        raise ConfigError(
            f'{where}: error writing merged YAML to "{config.out_file}": {err}'
        ) from None
    if not found:
        return {}
    if len(found) == 1:
        return {"commitMessage": f"Wrote {found[0]} to {config.out_file}"}
    lines = "".join(f"\n- {name}" for name in found)
    return {"commitMessage": f"Merged {len(found)} YAML files to {config.out_file}{lines}"}


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps comments, order and quoting of what is kept
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=2, offset=0)  # kustomize's layout: "- " under the key
    yaml.width = 4096  # kustomize's encoder does not fold long lines
    return yaml


def _dump(document: Any) -> str:
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    return buffer.getvalue()


def _merge_value(dest: Any, patch: Any, path: str) -> Any:
    """``patch`` over ``dest``; None means the key goes."""
    if patch is None:
        return None
    if dest is None:
        return _without_nulls(patch)
    if _kind(dest) != _kind(patch):
        raise ValueError(
            f'wrong node kind at "{path or "."}": expected {_kind(dest)} but got {_kind(patch)}'
        )
    if not isinstance(dest, dict):
        return patch  # a scalar or a whole list
    for key in list(dest):
        value = (
            _merge_value(dest[key], patch[key], f"{path}.{key}" if path else str(key))
            if key in patch
            else _without_nulls(dest[key])
        )
        if value is None:
            del dest[key]
        elif value is not dest[key]:
            dest[key] = value
    for key in sorted((k for k in patch if k not in dest), key=str):
        value = _without_nulls(patch[key])
        if value is not None:
            dest[key] = value
    return dest


def _without_nulls(value: Any) -> Any:
    """``value`` with the null-valued keys of its maps removed (lists are left whole)."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for item in value.values():
            _without_nulls(item)
    return value


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    return "a scalar"
