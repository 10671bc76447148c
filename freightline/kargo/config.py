"""Loading configuration: multi-document YAML of Kargo (and Argo Rollouts) resources.

``load_file``/``load_text`` parse every document, validate each one against
its kind's model (:mod:`freightline.kargo.resources`) and report *all* problems at
once in one :class:`~freightline.errors.ConfigError`, one line per problem::

    pipeline.yaml:14: document 3 (Warehouse "kargo-demo"): spec.subscriptions[0].image.
    discoveryLimit: expected less than or equal to 100, got 500

(one line in the message; wrapped here).

The field path is spelled as in the manifest (camelCase), and the line is the
line of that field when the YAML parser knows it. Documents without
``metadata.namespace`` belong to the single Project document of the same file
(or to the ``project`` argument). ``group_by_project`` then sorts resources
into :class:`~freightline.kargo.resources.ProjectResources` and checks references
between them (tasks, Warehouses, upstream Stages, AnalysisTemplates) and
duplicate names.

Limits
------

A file is refused, with one line naming the limit and before anything is sent
to Temporal, when it is over :data:`MAX_FILE_BYTES` (4 MiB: Temporal's own gRPC
limit for one message, which an ``apply`` of a bigger file would hit raw), holds
more than :data:`MAX_DOCUMENTS` documents, or when its YAML aliases expand to
more than :data:`MAX_ALIAS_VALUES` values (a "billion laughs" file composes in
milliseconds, since an alias is one shared node, and only its expansion into
plain values would explode: the count stops it early) or, expanded, make it
larger than :data:`MAX_FILE_BYTES` (an alias of a long string).

Credentials
-----------

Kubernetes ``Secret`` documents are refused, never passed on: workflow inputs
and results are recorded in Temporal's history and shown in its UI, so
Freightline keeps credentials out of configuration entirely. The worker
reads them itself, inside activities only: the refused document moves,
unchanged, into the worker's ``FREIGHTLINE_CREDENTIALS_FILE``, or a single
git identity goes in ``FREIGHTLINE_GIT_USERNAME``/``FREIGHTLINE_GIT_PASSWORD``
(the scheme is documented once, in :mod:`freightline.kargo.credentials`).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError, YAMLFutureWarning, YAMLWarning
from ruamel.yaml.scalarbool import ScalarBoolean

from freightline.errors import ConfigError
from freightline.kargo.compatibility import refusals
from freightline.kargo.credentials import CRED_TYPE_LABEL
from freightline.kargo.resources import (
    API_VERSIONS,
    APPLY_CHECKS,
    CHART_REPO_URL_PATTERN,
    CLUSTER_CONFIG_NAME,
    CLUSTER_KINDS,
    DNS_SUBDOMAIN_PATTERN,
    GIT_REPO_URL_PATTERN,
    IMAGE_REPO_URL_PATTERN,
    RESOURCE_KINDS,
    VAR_NAME_PATTERN,
    AnalysisTemplate,
    ClusterAnalysisTemplate,
    ClusterConfig,
    ClusterResources,
    ConfigMap,
    Freight,
    Project,
    ProjectConfig,
    ProjectResources,
    Promotion,
    PromotionTask,
    Resource,
    ResourceBase,
    SourceLocation,
    Stage,
    Warehouse,
)
from freightline.settings import CREDENTIALS_FILE_ENV, GIT_PASSWORD_ENV, GIT_USERNAME_ENV

__all__ = [
    "MAX_ALIAS_VALUES",
    "MAX_DOCUMENTS",
    "MAX_FILE_BYTES",
    "ProjectResources",
    "check_references",
    "group_by_project",
    "group_cluster",
    "load_file",
    "load_text",
    "missing_cluster_templates",
    "recheck",
    "substitute_env",
]

MAX_FILE_BYTES = 4 << 20
"""Largest configuration file: Temporal's gRPC limit for one message is 4 MiB too."""
MAX_DOCUMENTS = 1000
"""Most YAML documents in one file."""
MAX_ALIAS_VALUES = 50_000
"""Most values YAML aliases may expand to in one file (alias bombs)."""

# --- environment substitution ------------------------------------------------------------------

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute_env(text: str, mapping: Mapping[str, str]) -> str:
    """Replace shell-style ``${NAME}`` with ``mapping[NAME]``.

    Unknown names are left as written, and ``${{ expressions }}`` are never touched.
    """
    return _ENV_REFERENCE.sub(lambda m: mapping.get(m.group(1), m.group(0)), text)


# --- loading -----------------------------------------------------------------------------------


def load_file(path: str | os.PathLike[str], project: str | None = None) -> list[Resource]:
    """Load and validate every document of a YAML file (see :func:`load_text`)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_FILE_BYTES:  # a regular file says its size: refused unread
                raise ConfigError(_too_large(name, size))
            data = handle.read(MAX_FILE_BYTES + 1)  # a pipe does not
    except OSError as err:
        raise ConfigError(f"{name}: cannot read: {err.strerror or err}") from err
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(_too_large(name, None))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{name}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    return load_text(text, source=name, project=project)


def _too_large(source: str, size: int | None) -> str:
    what = f"{size} bytes" if size is not None else "the input"
    return (
        f"{source}: {what} is over the limit of {MAX_FILE_BYTES >> 20} MiB for one file "
        f"(Temporal's own gRPC limit is {MAX_FILE_BYTES >> 20} MiB per message); "
        "split it into several files"
    )


def load_text(text: str, source: str = "<stdin>", project: str | None = None) -> list[Resource]:
    """Load and validate every document of a multi-document YAML text.

    ``project`` is the namespace for documents that give none when the text
    holds no single Project document. Raises ConfigError listing every problem,
    or one line naming the limit a text over a limit (see Limits above) breaks.
    """
    size = len(text.encode("utf-8"))
    if size > MAX_FILE_BYTES:
        raise ConfigError(_too_large(source, size))
    problems: list[str] = []
    documents: list[Any] = []
    try:
        with warnings.catch_warnings():
            # A re-used anchor is valid YAML (the later one wins), as in Kubernetes.
            warnings.simplefilter("ignore", YAMLWarning)
            warnings.simplefilter("ignore", YAMLFutureWarning)
            for document in _yaml().load_all(text):  # one at a time: stop at the limit
                documents.append(document)
                if len(documents) > MAX_DOCUMENTS:
                    raise ConfigError(
                        f"{source}: more than {MAX_DOCUMENTS} YAML documents; the limit is "
                        f"{MAX_DOCUMENTS} per file: split it into several files"
                    )
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f"{mark.line + 1}" if mark is not None else "?"
        problem = " ".join(str(p) for p in (err.context, err.problem) if p)
        problems.append(f"{source}:{line}: invalid YAML: {problem or err}")
    except (YAMLError, ValueError, TypeError, RecursionError) as err:
        # Pathological input (stray control characters, absurd nesting) surfaces
        # as assorted exceptions from the parser; all are the file's fault.
        problems.append(f"{source}: invalid YAML: {_one_line(str(err)) or type(err).__name__}")

    loaded: list[tuple[ResourceBase, int]] = []
    budget = _ExpansionBudget(MAX_ALIAS_VALUES, MAX_FILE_BYTES)
    for index, document in enumerate(documents, start=1):
        if document is None:
            continue  # an empty document, e.g. a trailing "---"
        resource = _load_document(document, source, index, problems, budget)
        if resource is not None:
            loaded.append((resource, index))

    _default_namespaces(loaded, source, project, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    return [_as_resource(resource) for resource, _ in loaded]


def _yaml() -> YAML:
    # Round-trip mode keeps line numbers on every mapping and sequence.
    return YAML(typ="rt", pure=True)


def _load_document(
    document: Any, source: str, index: int, problems: list[str], budget: _ExpansionBudget
) -> ResourceBase | None:
    line = _node_line(document)
    where = f"{source}:{line}: document {index}"
    if not isinstance(document, CommentedMap):
        problems.append(
            f"{where}: expected a mapping with apiVersion, kind and metadata, "
            f"got {_describe(document)}"
        )
        return None
    kind = document.get("kind")
    api_version = document.get("apiVersion")
    name = _document_name(document)
    label = f'{where} ({kind} "{name}")' if isinstance(kind, str) and name else where
    if not isinstance(kind, str) or not isinstance(api_version, str):
        missing = [
            key
            for key, value in (("apiVersion", api_version), ("kind", kind))
            if not isinstance(value, str)
        ]
        problems.append(f"{label}: {' and '.join(missing)} must be given as a string")
        return None
    if kind == "Secret":
        problems.append(f"{label}: {_secret_refusal(document)}")
        return None
    model = RESOURCE_KINDS.get(kind)
    if model is None:
        known = ", ".join(RESOURCE_KINDS)
        problems.append(
            f'{label}: unknown kind "{kind}" (apiVersion "{api_version}"); '
            f"Freightline reads {known}"
        )
        return None
    if api_version != API_VERSIONS[kind]:
        problems.append(
            f"{_field_where(source, index, kind, name, document, ('apiVersion',))}"
            f'apiVersion: {kind} needs "{API_VERSIONS[kind]}", got "{api_version}"'
        )
        return None
    refused: list[str] = []
    refused_at: list[tuple[Any, ...]] = []
    try:
        plain = _plain(document, (), budget)
        for loc, reason in refusals(kind, plain):
            refused_at.append(loc)
            refused.append(
                f"{_field_where(source, index, kind, name, document, loc)}{_path(loc)}: {reason}"
            )
        resource = model.model_validate(plain, by_alias=True, by_name=False, context=APPLY_CHECKS)
    except _AliasBombError:
        raise ConfigError(
            f"{label}: YAML aliases expand to more than {MAX_ALIAS_VALUES} values; the limit "
            f"is {MAX_ALIAS_VALUES} per file (against alias bombs)"
        ) from None
    except _ExpandedTooLargeError:
        raise ConfigError(
            f"{label}: with its YAML aliases expanded the file is over the limit of "
            f"{MAX_FILE_BYTES >> 20} MiB (Temporal's own gRPC limit is {MAX_FILE_BYTES >> 20} MiB "
            "per message); split it into several files"
        ) from None
    except _RecursiveAlias:
        problems.append(f"{label}: a YAML alias refers to itself; cannot load a recursive value")
        return None
    except RecursionError:
        problems.append(f"{label}: the document is nested too deeply to load")
        return None
    except ValidationError as err:
        problems.extend(refused)
        located = [
            (_line_of(document, tuple(e["loc"])), order, e)
            for order, e in enumerate(err.errors())
            if not _said_already(e, refused_at)
        ]
        for field_line, _, error in sorted(located, key=lambda item: item[:2]):
            loc = tuple(error["loc"])
            problems.append(
                f"{source}:{field_line}: document {index} ({_label(kind, name)}): "
                f"{_path(loc)}: {_explain(error)}"
            )
        return None
    if refused:
        # Kargo fields Freightline does not implement: refused by name, never ignored.
        problems.extend(refused)
        return None
    if isinstance(resource, Freight) and not resource.metadata.name:
        resource = resource.with_computed_name()
    resource.set_source(SourceLocation(source, index, line, document))
    return resource


def _said_already(error: Any, refused_at: list[tuple[Any, ...]]) -> bool:
    """Whether a model's complaint repeats a refusal (an unknown field under a refused one,
    or a model's own refusal of the object holding it)."""
    loc = tuple(error["loc"])
    for refused in refused_at:
        if error["type"] == "extra_forbidden" and loc[: len(refused)] == refused:
            return True
        if error["type"] == "value_error" and refused[:-1] == loc:
            return True
    return False


def _default_namespaces(
    loaded: list[tuple[ResourceBase, int]],
    source: str,
    project: str | None,
    problems: list[str],
) -> None:
    projects = [resource.name for resource, _ in loaded if isinstance(resource, Project)]
    default = projects[0] if len(projects) == 1 else project
    for resource, _index in loaded:
        if isinstance(resource, Project) or resource.metadata.namespace is not None:
            continue
        if resource.kind in CLUSTER_KINDS:
            continue  # shared by every project: no namespace
        if default is not None:
            resource.metadata.namespace = default
            continue
        reason = (
            f"this file has {len(projects)} Project documents"
            if projects
            else "this file has no Project document"
        )
        problems.append(
            f"{_where(resource, ('metadata',))}metadata.namespace: required to name the resource's "
            f"project ({reason} to take it from)"
        )


def _as_resource(resource: ResourceBase) -> Resource:
    if isinstance(
        resource,
        Project
        | ProjectConfig
        | Warehouse
        | Stage
        | PromotionTask
        | Freight
        | Promotion
        | AnalysisTemplate
        | ClusterAnalysisTemplate
        | ClusterConfig
        | ConfigMap,
    ):
        return resource
    raise TypeError(f"not a Freightline resource kind: {type(resource).__name__}")


# --- turning the parsed tree into plain data ---------------------------------------------------


class _RecursiveAlias(Exception):
    """A YAML anchor that contains an alias to itself."""


class _AliasBombError(Exception):
    """YAML aliases expand to more values than the budget allows."""


class _ExpandedTooLargeError(Exception):
    """The values, aliases expanded, are larger than a file may be."""


class _ExpansionBudget:
    """What expanding a file's aliases into plain values may cost.

    An alias is the anchored node itself, shared: composing costs nothing, and a
    mapping or sequence met a second time is being expanded again. Each value
    produced inside such a repeat counts against ``max_alias_values``, so a bomb
    stops early. An alias of a long string is one value but many bytes: every
    value's size (its characters, or 1) counts against ``max_size``, which a file
    without aliases stays under.
    """

    def __init__(self, max_alias_values: int, max_size: int) -> None:
        self.max_alias_values = max_alias_values
        self.max_size = max_size
        self.alias_values = 0
        self.size = 0
        self._seen: set[int] = set()

    def repeats(self, node: dict[Any, Any] | list[Any]) -> bool:
        if id(node) in self._seen:
            return True
        self._seen.add(id(node))
        return False

    def count(self, node: Any, *, via_alias: bool) -> None:
        if via_alias:
            self.alias_values += 1
            if self.alias_values > self.max_alias_values:
                raise _AliasBombError
        self.size += len(node) if isinstance(node, str) else 1
        if self.size > self.max_size:
            raise _ExpandedTooLargeError


def _plain(
    node: Any, ancestors: tuple[int, ...], budget: _ExpansionBudget, repeated: bool = False
) -> Any:
    """The ruamel tree as plain JSON-like Python values (dict, list, str, int, ...)."""
    budget.count(node, via_alias=repeated)
    if isinstance(node, dict | list):
        if id(node) in ancestors:
            raise _RecursiveAlias
        repeated = repeated or budget.repeats(node)
        inner = (*ancestors, id(node))
        if isinstance(node, dict):
            plain = {}
            for key, value in node.items():
                budget.count(key, via_alias=repeated)
                plain[_plain_key(key)] = _plain(value, inner, budget, repeated)
            return plain
        return [_plain(item, inner, budget, repeated) for item in node]
    if isinstance(node, ScalarBoolean):
        return bool(node)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime.datetime | datetime.date):
        # Kubernetes reads unquoted timestamps as strings too.
        return node.isoformat()
    return str(node)


def _plain_key(key: Any) -> Any:
    if isinstance(key, str):
        return str(key)
    if isinstance(key, bool | int | float) or key is None:
        return key
    return str(key)


# --- locating and explaining problems ----------------------------------------------------------


def _node_line(node: Any) -> int:
    lc = getattr(node, "lc", None)
    line = getattr(lc, "line", None)
    return line + 1 if isinstance(line, int) else 1


def _line_of(document: Any, loc: Sequence[Any]) -> int:
    """The 1-based line of the deepest part of ``loc`` that exists in the document."""
    line = _node_line(document)
    node = document
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            position = node.lc.key(key)
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            position = node.lc.item(key)
            node = node[key]
        else:
            break
        if position is not None and isinstance(position[0], int):
            line = position[0] + 1
    return line


def _document_name(document: Any) -> str | None:
    metadata = document.get("metadata") if isinstance(document, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _label(kind: str, name: str | None) -> str:
    return f'{kind} "{name}"' if name else kind


def _field_where(
    source: str, index: int, kind: str, name: str | None, document: Any, loc: Sequence[Any]
) -> str:
    return f"{source}:{_line_of(document, loc)}: document {index} ({_label(kind, name)}): "


def _where(resource: ResourceBase, loc: Sequence[Any] = ()) -> str:
    """``FILE:LINE: document N (Kind "name"): `` for a loaded resource, or a short label."""
    location = resource.source
    if location is None:
        return f'{resource.kind} "{resource.name}": '
    line = _line_of(location.node, loc) if location.node is not None else location.line
    label = f'{resource.kind} "{resource.name}"'
    return f"{location.file}:{line}: document {location.document} ({label}): "


def _path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


_PATTERN_NAMES = {
    DNS_SUBDOMAIN_PATTERN: "a Kubernetes name (lowercase letters, digits, '-' and '.')",
    VAR_NAME_PATTERN: "a variable name (letters, digits and '_', not starting with a digit)",
    IMAGE_REPO_URL_PATTERN: "an image repository such as ghcr.io/example/app (no scheme, no tag)",
    GIT_REPO_URL_PATTERN: "a git URL (https://, ssh://, git@host:path or file://)",
    CHART_REPO_URL_PATTERN: "a chart repository URL (https:// or oci://)",
}


def _explain(error: Any) -> str:
    kind: str = error["type"]
    loc = error["loc"]
    message: str = error["msg"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return f'unknown field "{loc[-1]}"' if loc else "unknown field"
    if kind in ("value_error", "assertion_error"):
        return _one_line(message.removeprefix("Value error, ").removeprefix("Assertion failed, "))
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        message = "expected " + _PATTERN_NAMES.get(pattern, f"a string matching {pattern}")
    elif kind in ("too_short", "too_long"):
        bound = "at least" if kind == "too_short" else "at most"
        count = ctx.get("min_length" if kind == "too_short" else "max_length")
        message = f"expected {bound} {count} item{'' if count == 1 else 's'}"
    elif kind in ("string_too_short", "string_too_long"):
        bound = "at least" if kind == "string_too_short" else "at most"
        count = ctx.get("min_length" if kind == "string_too_short" else "max_length")
        message = f"expected {bound} {count} character{'' if count == 1 else 's'}"
    elif message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    else:
        message = message[:1].lower() + message[1:]
    return f"{message}, got {_describe(error.get('input'))}"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 80 else shown[:76] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    return type(value).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _secret_refusal(document: CommentedMap) -> str:
    metadata = document.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    cred_type = labels.get(CRED_TYPE_LABEL) if isinstance(labels, dict) else None
    repo_url = _secret_repo_url(document)
    what = f"the {cred_type} credential" if isinstance(cred_type, str) else "this credential"
    if repo_url:
        what += f' for "{repo_url}"'
    message = (
        "Secret documents are refused: their values would be recorded in workflow history. "
        f"Give the worker {what} instead: move this document, unchanged, into the YAML "
        f"file named by {CREDENTIALS_FILE_ENV} on the worker"
    )
    if cred_type in (None, "git"):
        message += (
            f", or set {GIT_USERNAME_ENV} and {GIT_PASSWORD_ENV} in the worker's environment "
            "(used for every git repository)"
        )
    if not isinstance(cred_type, str):
        message += f' (label it "{CRED_TYPE_LABEL}: git|image|helm")'
    return message


def _secret_repo_url(document: CommentedMap) -> str | None:
    # Only the repository URL is read: never echo a credential value into an error.
    string_data = document.get("stringData")
    if isinstance(string_data, dict) and isinstance(string_data.get("repoURL"), str):
        return str(string_data["repoURL"])
    data = document.get("data")
    if isinstance(data, dict) and isinstance(data.get("repoURL"), str):
        try:
            return base64.b64decode(data["repoURL"], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    return None


# --- grouping and cross-references -------------------------------------------------------------


def group_by_project(resources: Iterable[ResourceBase]) -> dict[str, ProjectResources]:
    """Sort resources into projects and check the references between them.

    Raises ConfigError naming file, document and field for duplicate names,
    unknown PromotionTasks, Warehouses, upstream Stages and AnalysisTemplates.
    """
    problems: list[str] = []
    projects: dict[str, ProjectResources] = {}
    for resource in resources:
        if resource.kind in CLUSTER_KINDS:
            continue  # see group_cluster
        project_name = resource.name if isinstance(resource, Project) else resource.namespace
        if project_name is None:
            problems.append(f"{_where(resource, ('metadata',))}metadata.namespace: required")
            continue
        group = projects.setdefault(project_name, ProjectResources(name=project_name))
        _add(group, resource, problems)
    for group in projects.values():
        problems.extend(_reference_problems(group))
    if problems:
        raise ConfigError("\n".join(problems))
    return projects


def group_cluster(resources: Iterable[ResourceBase]) -> ClusterResources:
    """The cluster-scoped resources among ``resources`` (ClusterAnalysisTemplates, the
    ClusterConfig).

    Raises ConfigError for a duplicate name or a namespace on a cluster-scoped kind.
    """
    problems: list[str] = []
    cluster = ClusterResources()
    for resource in resources:
        if not isinstance(resource, ClusterAnalysisTemplate | ClusterConfig):
            continue
        if resource.namespace is not None:
            problems.append(
                f"{_where(resource, ('metadata', 'namespace'))}metadata.namespace: a "
                f"{resource.kind} is cluster-scoped (shared by every project): remove it"
            )
            continue
        if isinstance(resource, ClusterConfig):
            if resource.name != CLUSTER_CONFIG_NAME:
                problems.append(
                    f"{_where(resource, ('metadata', 'name'))}metadata.name: a ClusterConfig "
                    f'must be named "{CLUSTER_CONFIG_NAME}", as in Kargo, got "{resource.name}"'
                )
            elif cluster.cluster_config is not None:
                problems.append(f"{_where(resource)}a second ClusterConfig")
            else:
                cluster.cluster_config = resource
            continue
        if resource.name in cluster.analysis_templates:
            first = cluster.analysis_templates[resource.name].source
            at = f" (first at {first.file}:{first.line})" if first else ""
            problems.append(
                f"{_where(resource, ('metadata', 'name'))}metadata.name: duplicate "
                f'{resource.kind} "{resource.name}"{at}'
            )
        else:
            cluster.analysis_templates[resource.name] = resource
    if problems:
        raise ConfigError("\n".join(problems))
    return cluster


def missing_cluster_templates(group: ProjectResources, known: Iterable[str]) -> list[str]:
    """A line per Stage reference to a ClusterAnalysisTemplate not among ``known``."""
    names = dict.fromkeys(known)
    problems = []
    for stage in group.stages.values():
        verification = stage.spec.verification
        for i, reference in enumerate(
            verification.analysis_templates or () if verification else ()
        ):
            if reference.kind == "ClusterAnalysisTemplate" and reference.name not in names:
                path = ("spec", "verification", "analysisTemplates", i, "name")
                problems.append(
                    f"{_where(stage, path)}{_path(path)}: unknown ClusterAnalysisTemplate "
                    f'"{reference.name}"{_known(names)}'
                )
    return problems


def recheck(resources: ProjectResources | ClusterResources) -> None:
    """Apply's checks of expressions, constraints, regular expressions, path selectors and
    windows, on resources that did not come through the loader: a client of its own sending
    the Project or Cluster workflow's ``apply`` update with plain JSON. (Reading resources
    back from a workflow skips these checks: they ran when the resources were applied.)

    Raises ConfigError naming the first refused field and why.
    """
    try:
        type(resources).model_validate_json(resources.model_dump_json(), context=APPLY_CHECKS)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        reason = str(first["msg"]).removeprefix("Value error, ")
        more = len(err.errors()) - 1
        raise ConfigError(f"{where}: {reason}" + (f" (and {more} more)" if more else "")) from None


def check_references(group: ProjectResources) -> None:
    """Check one project's cross-references (tasks, Warehouses, Stages, templates, aliases).

    Raises ConfigError listing every dangling reference and Stage cycle.
    """
    problems = list(_reference_problems(group))
    if problems:
        raise ConfigError("\n".join(problems))


def _add(group: ProjectResources, resource: ResourceBase, problems: list[str]) -> None:
    def duplicate(first: ResourceBase) -> None:
        earlier = first.source
        at = f" (first at {earlier.file}:{earlier.line})" if earlier else ""
        problems.append(
            f"{_where(resource, ('metadata', 'name'))}metadata.name: duplicate "
            f'{resource.kind} "{resource.name}" in project "{group.name}"{at}'
        )

    if isinstance(resource, Project):
        if group.project is not None:
            duplicate(group.project)
        else:
            group.project = resource
        return
    if isinstance(resource, ProjectConfig):
        if group.project_config is not None:
            duplicate(group.project_config)
        elif resource.name != group.name:
            problems.append(
                f"{_where(resource, ('metadata', 'name'))}metadata.name: a ProjectConfig "
                f'must be named after its project "{group.name}", got "{resource.name}"'
            )
        else:
            group.project_config = resource
        return
    match resource:
        case Warehouse():
            _put(group.warehouses, resource, duplicate)
        case Stage():
            _put(group.stages, resource, duplicate)
        case PromotionTask():
            _put(group.promotion_tasks, resource, duplicate)
        case Freight():
            _put(group.freight, resource, duplicate)
        case Promotion():
            _put(group.promotions, resource, duplicate)
        case AnalysisTemplate():
            _put(group.analysis_templates, resource, duplicate)
        case ConfigMap():
            _put(group.config_maps, resource, duplicate)
        case _:
            problems.append(f"{_where(resource)}kind {resource.kind} cannot be grouped")


_R = TypeVar("_R", bound=ResourceBase)


def _put(table: dict[str, _R], resource: _R, duplicate: Callable[[ResourceBase], None]) -> None:
    if resource.name in table:
        duplicate(table[resource.name])
    else:
        table[resource.name] = resource


def _reference_problems(group: ProjectResources) -> Iterator[str]:
    in_project = f'in project "{group.name}"'
    aliases: dict[str, Freight] = {}
    for freight in group.freight.values():
        if freight.origin.name not in group.warehouses:
            yield (
                f"{_where(freight, ('origin', 'name'))}origin.name: unknown Warehouse "
                f'"{freight.origin.name}" {in_project}'
            )
        if freight.alias:
            if freight.alias in aliases:
                yield (
                    f'{_where(freight, ("alias",))}alias: Freight alias "{freight.alias}" is '
                    f'already used by Freight "{aliases[freight.alias].name}"'
                )
            aliases[freight.alias] = freight

    for stage in group.stages.values():
        yield from _check_stage(group, stage, in_project)
    yield from _check_cycles(group)

    for promotion in group.promotions.values():
        if promotion.spec.stage not in group.stages:
            yield (
                f"{_where(promotion, ('spec', 'stage'))}spec.stage: unknown Stage "
                f'"{promotion.spec.stage}" {in_project}'
            )


def _check_stage(group: ProjectResources, stage: Stage, in_project: str) -> Iterator[str]:
    for i, request in enumerate(stage.spec.requested_freight):
        loc: tuple[Any, ...] = ("spec", "requestedFreight", i)
        warehouse = request.origin.name
        if warehouse not in group.warehouses:
            path = (*loc, "origin", "name")
            yield (
                f"{_where(stage, path)}{_path(path)}: unknown Warehouse "
                f'"{warehouse}" {in_project}{_known(group.warehouses)}'
            )
        for j, upstream in enumerate(request.sources.stages or ()):
            path = (*loc, "sources", "stages", j)
            upstream_stage = group.stages.get(upstream)
            if upstream_stage is None:
                yield (
                    f"{_where(stage, path)}{_path(path)}: unknown upstream Stage "
                    f'"{upstream}" {in_project}{_known(group.stages)}'
                )
            elif not any(r.origin == request.origin for r in upstream_stage.spec.requested_freight):
                yield (
                    f'{_where(stage, path)}{_path(path)}: upstream Stage "{upstream}" does not '
                    f'request Freight from {request.origin.kind} "{warehouse}"'
                )
        if not request.sources.direct and not request.sources.stages:
            path = (*loc, "sources")
            yield (
                f"{_where(stage, path)}{_path(path)}: Freight must come from somewhere: "
                'set "direct: true" or list upstream "stages"'
            )

    template = stage.spec.promotion_template
    for i, step in enumerate(template.spec.steps or () if template else ()):
        if step.task is None:
            continue
        path = ("spec", "promotionTemplate", "spec", "steps", i, "task", "name")
        if step.task.kind == "ClusterPromotionTask":
            yield (
                f"{_where(stage, path)}{_path(path)}: ClusterPromotionTask "
                f'"{step.task.name}" is not available in Freightline; define a PromotionTask '
                f"{in_project}"
            )
        elif step.task.name not in group.promotion_tasks:
            yield (
                f"{_where(stage, path)}{_path(path)}: unknown PromotionTask "
                f'"{step.task.name}" {in_project}{_known(group.promotion_tasks)}'
            )

    verification = stage.spec.verification
    for i, reference in enumerate(verification.analysis_templates or () if verification else ()):
        path = ("spec", "verification", "analysisTemplates", i, "name")
        if reference.kind == "ClusterAnalysisTemplate":
            continue  # shared, kept by the Cluster workflow: checked by missing_cluster_templates
        if reference.name not in group.analysis_templates:
            yield (
                f"{_where(stage, path)}{_path(path)}: unknown AnalysisTemplate "
                f'"{reference.name}" {in_project}{_known(group.analysis_templates)}'
            )


def _check_cycles(group: ProjectResources) -> Iterator[str]:
    upstreams = {
        name: sorted({u for r in stage.spec.requested_freight for u in r.sources.stages or ()})
        for name, stage in group.stages.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    reported: set[frozenset[str]] = set()

    def visit(name: str, path: list[str]) -> Iterator[str]:
        state[name] = 1
        for upstream in upstreams.get(name, ()):
            if upstream not in upstreams:
                continue
            if state.get(upstream) == 1:
                cycle = [*path[path.index(upstream) :], upstream]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    stage = group.stages[name]
                    yield (
                        f"{_where(stage, ('spec', 'requestedFreight'))}spec.requestedFreight: "
                        f"Stages request Freight from each other in a cycle: "
                        f"{' <- '.join(cycle)}"
                    )
            elif upstream not in state:
                yield from visit(upstream, [*path, upstream])
        state[name] = 2

    for name in sorted(upstreams):
        if name not in state:
            yield from visit(name, [name])


def _known(table: Mapping[str, Any]) -> str:
    return f" (known: {', '.join(sorted(table))})" if table else ""
