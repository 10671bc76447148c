"""Loading the emulated applications: Argo CD ``Application`` manifests and ``ApplicationSet``s.

A file (or a list of already-parsed documents) may hold, in any number of YAML documents:

- ``argoproj.io/v1alpha1`` ``Application``;
- ``argoproj.io/v1alpha1`` ``ApplicationSet`` with ``list`` generators, expanded as Argo CD's
  ApplicationSet controller does: ``{{key}}`` (fasttemplate, flat string parameters, list
  elements' ``values`` map as ``values.<key>``), or ``{{ .key }}`` field references when
  ``goTemplate: true``; generated apps get the ``resources-finalizer.argocd.argoproj.io``
  finalizer unless the template sets finalizers or ``preserveResourcesOnDeletion`` is set;
- ``v1`` ``List`` of the above;
- ``emulator.freightline.dev/v1alpha1`` ``EmulatorConfig`` whose ``spec`` holds emulator
  settings (``errorRatioByTag``, ``requestsPerSecond``, ``repoMap``).

``${NAME}`` in string values is replaced from the given variables, then the environment;
unknown names are left as written (a ``repoMap`` entry can still redirect them).
"""

from __future__ import annotations

import copy
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ._errors import EmulatorConfigError
from ._render import plain

ARGO_API_VERSION = "argoproj.io/v1alpha1"
EMULATOR_API_VERSION = "emulator.freightline.dev/v1alpha1"
RESOURCES_FINALIZER = "resources-finalizer.argocd.argoproj.io"
DEFAULT_NAMESPACE = "argocd"

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FAST_TAG = re.compile(r"\{\{(.*?)\}\}")
_GO_FIELD = re.compile(r"\{\{-?\s*\.([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)\s*-?\}\}")


@dataclass
class AppsDocument:
    """What an apps file defines."""

    applications: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def _substitute(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _VARIABLE.sub(
            lambda m: variables.get(m.group(1), os.environ.get(m.group(1), m.group(0))), value
        )
    if isinstance(value, dict):
        return {k: _substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    return value


def load_apps_file(path: str | Path, variables: Mapping[str, str] | None = None) -> AppsDocument:
    """Read an apps file (see the module docstring)."""
    file = Path(path)
    try:
        docs = [d for d in YAML(typ="safe", pure=True).load_all(file.read_text()) if d is not None]
    except OSError as exc:
        raise EmulatorConfigError(f"{file}: cannot read apps file: {exc.strerror}") from exc
    except YAMLError as exc:
        raise EmulatorConfigError(f"{file}: not valid YAML: {exc}") from exc
    return load_documents(plain(docs), variables, origin=str(file))


def load_documents(
    documents: Iterable[Mapping[str, Any]],
    variables: Mapping[str, str] | None = None,
    origin: str = "<apps>",
) -> AppsDocument:
    """Turn parsed manifests into applications and settings."""
    result = AppsDocument()
    pending = [(f"{origin}: document {n + 1}", d) for n, d in enumerate(documents)]
    while pending:
        where, doc = pending.pop(0)
        if not isinstance(doc, Mapping):
            raise EmulatorConfigError(f"{where}: expected a mapping, got {type(doc).__name__}")
        doc = _substitute(plain(doc), variables or {})
        kind, api_version = doc.get("kind"), doc.get("apiVersion")
        if kind == "List":
            pending[:0] = [
                (f"{where} item {i + 1}", d) for i, d in enumerate(doc.get("items") or [])
            ]
        elif kind == "Application" and api_version == ARGO_API_VERSION:
            result.applications.append(_application(doc, where))
        elif kind == "ApplicationSet" and api_version == ARGO_API_VERSION:
            result.applications.extend(expand_application_set(doc, where))
        elif kind == "EmulatorConfig" and api_version == EMULATOR_API_VERSION:
            result.settings.update(doc.get("spec") or {})
        else:
            raise EmulatorConfigError(
                f"{where}: unsupported kind {api_version}/{kind} (expected {ARGO_API_VERSION} "
                f"Application or ApplicationSet, or {EMULATOR_API_VERSION} EmulatorConfig)"
            )
    names = [a["metadata"]["name"] for a in result.applications]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EmulatorConfigError(f"{origin}: duplicate application names: {', '.join(duplicates)}")
    return result


def _application(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    metadata = dict(doc.get("metadata") or {})
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise EmulatorConfigError(f"{where}: Application has no metadata.name")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise EmulatorConfigError(f"{where}: Application {name} has no spec")
    sources = spec.get("sources") or ([spec["source"]] if spec.get("source") else [])
    if not sources:
        raise EmulatorConfigError(
            f"{where}: Application {name}: spec.source or spec.sources is required"
        )
    for index, source in enumerate(sources):
        if not isinstance(source, dict) or not source.get("repoURL"):
            raise EmulatorConfigError(
                f"{where}: Application {name}: source {index + 1} has no repoURL"
            )
    if not isinstance(spec.get("destination"), dict):
        raise EmulatorConfigError(f"{where}: Application {name}: spec.destination is required")
    metadata.setdefault("namespace", DEFAULT_NAMESPACE)
    return {"metadata": metadata, "spec": copy.deepcopy(spec)}


def _fasttemplate(text: str, params: Mapping[str, Any]) -> str:
    def replace(match: re.Match[str]) -> str:
        value = params.get(match.group(1).strip())
        return value if isinstance(value, str) else match.group(0)

    return _FAST_TAG.sub(replace, text)


def _go_template(text: str, params: Mapping[str, Any], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        node: Any = params
        for part in match.group(1).split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise EmulatorConfigError(f"{where}: map has no entry for key {part!r}")
            node = node[part]
        return str(node)

    rendered = _GO_FIELD.sub(replace, text)
    if "{{" in rendered:
        raise EmulatorConfigError(
            f"{where}: only {{{{ .field }}}} references are supported in goTemplate mode: {text!r}"
        )
    return rendered


def _render(value: Any, render: Any) -> Any:
    if isinstance(value, str):
        return render(value)
    if isinstance(value, dict):
        return {k: _render(v, render) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, render) for v in value]
    return value


def _list_params(
    generator: Mapping[str, Any], go_template: bool, where: str
) -> list[dict[str, Any]]:
    elements = list(generator.get("elements") or [])
    if generator.get("elementsYaml"):
        loaded = YAML(typ="safe", pure=True).load(generator["elementsYaml"]) or []
        elements.extend(plain(loaded))
    params: list[dict[str, Any]] = []
    for index, element in enumerate(elements):
        if not isinstance(element, dict):
            raise EmulatorConfigError(f"{where}: list element {index + 1} is not a mapping")
        if go_template:
            params.append(dict(element))
            continue
        flat: dict[str, Any] = {}
        for key, value in element.items():
            if key == "values" and isinstance(value, dict):
                for k, v in value.items():
                    if not isinstance(v, str):
                        raise EmulatorConfigError(
                            f"{where}: error parsing value as string: values.{k}"
                        )
                    flat[f"values.{k}"] = v
            elif isinstance(value, str):
                flat[key] = value
            else:
                raise EmulatorConfigError(f"{where}: error parsing value as string: {key}")
        params.append(flat)
    return params


def expand_application_set(appset: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """The Applications an ApplicationSet with list generators generates."""
    metadata = appset.get("metadata") or {}
    spec = appset.get("spec") or {}
    name = metadata.get("name", "?")
    where = f"{where}: ApplicationSet {name}"
    go_template = bool(spec.get("goTemplate"))
    template = spec.get("template")
    if not isinstance(template, dict):
        raise EmulatorConfigError(f"{where}: spec.template is required")
    preserve = bool((spec.get("syncPolicy") or {}).get("preserveResourcesOnDeletion"))
    owner = {
        "apiVersion": ARGO_API_VERSION,
        "kind": "ApplicationSet",
        "name": name,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"applicationset/{name}")),
        "controller": True,
        "blockOwnerDeletion": True,
    }
    apps: list[dict[str, Any]] = []
    for index, generator in enumerate(spec.get("generators") or []):
        kinds = [k for k in generator if k not in ("selector", "values")]
        if kinds != ["list"]:
            raise EmulatorConfigError(
                f"{where}: generator {index + 1} ({', '.join(kinds) or 'empty'}) is not supported "
                "by the emulator (only the list generator is)"
            )
        if generator.get("template"):
            raise EmulatorConfigError(f"{where}: per-generator templates are not supported")
        for params in _list_params(generator["list"], go_template, where):
            if generator.get("values"):
                # Generator-level values are themselves templates over the element's params.
                for key, value in generator["values"].items():
                    rendered = (
                        _go_template(str(value), params, where)
                        if go_template
                        else _fasttemplate(str(value), params)
                    )
                    if go_template:
                        params.setdefault("values", {})[key] = rendered
                    else:
                        params[f"values.{key}"] = rendered

            def render(text: str, params: dict[str, Any] = params) -> str:
                if go_template:
                    return _go_template(text, params, where)
                return _fasttemplate(text, params)

            app = _render(copy.deepcopy(template), render)
            app_meta = app.setdefault("metadata", {})
            app_meta["namespace"] = metadata.get("namespace", DEFAULT_NAMESPACE)
            if not app_meta.get("finalizers") and not preserve:
                app_meta["finalizers"] = [RESOURCES_FINALIZER]
            app_meta["ownerReferences"] = [dict(owner)]
            apps.append(_application(app, where))
    return apps
