"""Rendering an Application source at a commit into manifests, as Argo CD's repo server does.

A source path holding a ``kustomization.yaml`` (or ``.yml``, or ``Kustomization``) is built
with ``kustomize build`` (or ``kubectl kustomize``), after applying the source's ``kustomize``
overrides (``images``, ``namePrefix``, ``nameSuffix``, ``namespace``, ``commonLabels``,
``commonAnnotations``) to the kustomization, as ``argocd`` does with ``kustomize edit``.
Any other path is a directory of YAML/JSON manifests (``directory.recurse``, ``include``,
``exclude`` honoured).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ._git import GitError, Repositories

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_KUSTOMIZE_TIMEOUT = 120.0
_CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "RuntimeClass",
        "CSIDriver",
        "APIService",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)


class RenderError(Exception):
    """Manifests could not be generated; the message reads like the repo server's."""


@dataclass
class Resource:
    """One rendered Kubernetes object."""

    group: str
    version: str
    kind: str
    namespace: str
    name: str
    manifest: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.group, self.kind, self.namespace, self.name)

    def annotation(self, name: str) -> str | None:
        annotations = self.manifest.get("metadata", {}).get("annotations") or {}
        value = annotations.get(name)
        return str(value) if value is not None else None

    def images(self) -> list[str]:
        return sorted(set(_images(self.manifest)))

    def kubectl_name(self) -> str:
        """``deployment.apps/name`` as kubectl prints it."""
        kind = self.kind.lower()
        return f"{kind}.{self.group}/{self.name}" if self.group else f"{kind}/{self.name}"


def _images(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers", "ephemeralContainers") and isinstance(
                value, list
            ):
                for container in value:
                    if isinstance(container, dict) and isinstance(container.get("image"), str):
                        yield container["image"]
            else:
                yield from _images(value)
    elif isinstance(node, list):
        for item in node:
            yield from _images(item)


@dataclass
class RenderedSource:
    source_type: str  # "Kustomize" or "Directory", as status.sourceType reports
    resources: list[Resource]


def _yaml() -> YAML:
    return YAML(typ="safe", pure=True)


def plain(value: Any) -> Any:
    """YAML data as JSON data (timestamps and other YAML-only scalars become strings)."""
    return json.loads(json.dumps(value, default=str))


def _to_resource(doc: Any, where: str, default_namespace: str) -> Resource:
    if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
        raise RenderError(f"{where}: Object 'Kind' is missing in manifest")
    metadata = doc.get("metadata") or {}
    name = metadata.get("name")
    if not name:
        raise RenderError(f"{where}: {doc['kind']} has no metadata.name")
    api_version = str(doc["apiVersion"])
    group, _, version = api_version.rpartition("/")
    kind = str(doc["kind"])
    namespace = (
        "" if kind in _CLUSTER_SCOPED else str(metadata.get("namespace") or default_namespace)
    )
    manifest = copy.deepcopy(doc)
    if namespace:
        manifest.setdefault("metadata", {})["namespace"] = namespace
    return Resource(group, version, kind, namespace, str(name), manifest)


def _documents(text: str, where: str) -> list[Any]:
    try:
        docs = list(_yaml().load_all(text))
    except YAMLError as exc:
        raise RenderError(f"{where}: failed to unmarshal manifest: {exc}") from exc
    flat: list[Any] = []
    for doc in (plain(d) for d in docs):
        if doc is None:
            continue
        if isinstance(doc, list):
            flat.extend(doc)
        elif isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            flat.extend(doc.get("items") or [])
        else:
            flat.append(doc)
    return flat


def _kustomize_command(path: Path) -> list[str]:
    if binary := shutil.which("kustomize"):
        return [binary, "build", str(path)]
    if binary := shutil.which("kubectl"):
        return [binary, "kustomize", str(path)]
    raise RenderError("kustomize is not available: neither `kustomize` nor `kubectl` is on PATH")


_IMAGE = re.compile(
    r"^(?:(?P<old>[^=]+)=)?(?P<name>[^:@=]+(?::\d+/[^:@]+)?)(?::(?P<tag>[^@]+))?(?:@(?P<digest>.+))?$"
)


def _kustomize_image(spec: str) -> dict[str, str]:
    """``[old=]name[:tag][@digest]`` as ``kustomize edit set image`` takes it."""
    match = _IMAGE.match(spec.strip())
    if not match:
        raise RenderError(f"invalid kustomize image override {spec!r}")
    old, name = match.group("old"), match.group("name")
    entry = {"name": old or name}
    if old and old != name:
        entry["newName"] = name
    if match.group("tag"):
        entry["newTag"] = match.group("tag")
    if match.group("digest"):
        entry["digest"] = match.group("digest")
    return entry


def _apply_kustomize_overrides(directory: Path, options: Mapping[str, Any]) -> None:
    if not options:
        return
    file = next(directory / name for name in KUSTOMIZATION_FILES if (directory / name).exists())
    yaml = _yaml()
    kustomization = yaml.load(file.read_text()) or {}
    for spec in options.get("images") or []:
        entry = _kustomize_image(str(spec))
        images = [i for i in kustomization.get("images") or [] if i.get("name") != entry["name"]]
        kustomization["images"] = [*images, entry]
    for field in ("namePrefix", "nameSuffix", "namespace"):
        if options.get(field):
            kustomization[field] = options[field]
    for field in ("commonLabels", "commonAnnotations"):
        if options.get(field):
            kustomization[field] = {**(kustomization.get(field) or {}), **options[field]}
    with file.open("w") as out:
        yaml.dump(kustomization, out)


def _glob_match(rel: str, patterns: str) -> bool:
    # Argo CD's include/exclude take a glob, or {a,b} alternatives.
    alternatives = patterns.strip()
    if alternatives.startswith("{") and alternatives.endswith("}"):
        alternatives = alternatives[1:-1]
    return any(
        fnmatch.fnmatch(rel, p.strip()) or fnmatch.fnmatch(Path(rel).name, p.strip())
        for p in alternatives.split(",")
        if p.strip()
    )


class Renderer:
    """Renders sources at commits, caching by (repository, commit, path, options)."""

    def __init__(self, repositories: Repositories, work_dir: Path, cache_size: int = 256) -> None:
        self._repositories = repositories
        self._work_dir = work_dir
        self._cache: OrderedDict[str, RenderedSource] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def render(
        self, source: Mapping[str, Any], sha: str, namespace: str, *, hard: bool = False
    ) -> RenderedSource:
        """Render ``source`` at commit ``sha``; ``hard`` bypasses the manifest cache."""
        key = json.dumps(
            [
                source.get("repoURL"),
                sha,
                source.get("path"),
                source.get("kustomize"),
                source.get("directory"),
                namespace,
            ],
            sort_keys=True,
        )
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and not hard:
                self._cache.move_to_end(key)
                return copy.deepcopy(cached)
        rendered = self._render(source, sha, namespace)
        with self._lock:
            self._cache[key] = rendered
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return copy.deepcopy(rendered)

    def _render(self, source: Mapping[str, Any], sha: str, namespace: str) -> RenderedSource:
        repo = self._repositories.get(str(source.get("repoURL", "")))
        rel = str(source.get("path") or ".")
        with tempfile.TemporaryDirectory(dir=self._work_dir, prefix="render-") as tmp:
            root = Path(tmp)
            try:
                repo.export(sha, root)
            except GitError as exc:
                raise RenderError(str(exc)) from exc
            target = (root / rel).resolve()
            if not target.is_relative_to(root.resolve()) or not target.is_dir():
                raise RenderError(f"{rel}: app path does not exist")
            if any((target / name).exists() for name in KUSTOMIZATION_FILES):
                _apply_kustomize_overrides(target, source.get("kustomize") or {})
                return RenderedSource("Kustomize", self._kustomize(target, rel, namespace))
            return RenderedSource("Directory", self._directory(target, source, namespace))

    def _kustomize(self, path: Path, rel: str, namespace: str) -> list[Resource]:
        command = _kustomize_command(path)
        try:
            done = subprocess.run(
                command, capture_output=True, timeout=_KUSTOMIZE_TIMEOUT, check=False, text=True
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RenderError(f"`kustomize build {rel}` failed: {exc}") from exc
        if done.returncode != 0:
            raise RenderError(
                f"`kustomize build {rel}` failed exit status {done.returncode}: "
                f"{done.stderr.strip()}"
            )
        return [_to_resource(d, rel, namespace) for d in _documents(done.stdout, rel)]

    def _directory(self, path: Path, source: Mapping[str, Any], namespace: str) -> list[Resource]:
        options = source.get("directory") or {}
        files = sorted(path.rglob("*") if options.get("recurse") else path.glob("*"))
        resources: list[Resource] = []
        for file in files:
            if not file.is_file() or file.suffix not in (".yaml", ".yml", ".json"):
                continue
            rel = file.relative_to(path).as_posix()
            if options.get("include") and not _glob_match(rel, str(options["include"])):
                continue
            if options.get("exclude") and _glob_match(rel, str(options["exclude"])):
                continue
            text = file.read_text(errors="replace")
            if file.suffix == ".json":
                try:
                    loaded = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise RenderError(f"{rel}: failed to unmarshal manifest: {exc}") from exc
                docs = loaded if isinstance(loaded, list) else [loaded]
            else:
                docs = _documents(text, rel)
            resources.extend(_to_resource(d, rel, namespace) for d in docs)
        return resources
