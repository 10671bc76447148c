"""The kustomize steps: kustomize-set-image and kustomize-build (real kustomize).

kustomize reads more than the directory it builds: its default load restrictor
keeps *files* under each kustomization's root, but a base or component
directory (``resources: [../../elsewhere]``) may be anywhere, and a remote
resource is fetched with git. So before kustomize runs, every local base and
component the kustomizations name is checked to stay inside the work tree
(a PathEscapeError otherwise), and kustomize's git runs with the worker's
``GIT_ALLOW_PROTOCOL`` (no ``file://`` unless the worker allows local
repositories, see :mod:`activities.git`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from activities.git import allowed_protocols
from activities.step_context import StepConfig, StepContext
from activities.yaml_files import dump_all, load_documents, read_yaml, write_yaml
from freightline.errors import ConfigError, PathEscapeError, StepError


class ImageUpdate(StepConfig):
    image: str = Field(min_length=1)
    name: str | None = None
    tag: str | None = None
    digest: str | None = None
    new_name: str | None = None

    @model_validator(mode="after")
    def _tag_or_digest(self) -> ImageUpdate:
        # Kargo's schema: exactly one of tag and digest, the other empty or absent.
        if bool(self.tag) == bool(self.digest):
            raise ValueError(f'image "{self.image}": set either tag or digest (exactly one)')
        return self


class SetImageConfig(StepConfig):
    path: str = Field(min_length=1)
    images: list[ImageUpdate] | None = None


_PRESERVE = "*"
"""A newName, tag or digest of ``*`` keeps the kustomization's existing value (Kargo's rule)."""
_IMAGE_FIELDS = ("newName", "newTag", "digest")


def kustomize_set_image(ctx: StepContext, config: SetImageConfig) -> dict[str, Any]:
    """Set ``images:`` in a kustomization as Kargo does (``kustomize edit set image``).

    With ``images``, each entry names the kustomization image ``name`` (default: its
    ``image``) and its ``tag`` or ``digest``; an entry replaces the existing one of that
    name whole, except that a value of ``*`` keeps the existing value. Without
    ``images``, every image of the Freight is set, with its tag and its digest (two
    images from one repository are ambiguous). The list is written sorted by name,
    and ``commitMessage`` lists every image the kustomization then sets.
    """
    where = ctx.describe()
    file = kustomization_file(ctx.workspace.resolve(config.path), config.path, where)
    if config.images:
        targets = {
            (update.name or update.image): _image_entry(
                update.name or update.image,
                update.new_name,
                None if update.digest else update.tag,
                update.digest,
            )
            for update in config.images
        }
    else:
        targets = _images_of_freight(ctx)
    document = read_yaml(file)
    if not isinstance(document, dict):
        raise StepError(f"{where}: {config.path}: the kustomization is not a YAML mapping")
    current = document.get("images") or []
    if not isinstance(current, list):
        raise StepError(f"{where}: {config.path}: images is not a list")
    document["images"] = _merge(current, targets)
    write_yaml(file, document)
    if not targets:
        return {}
    return {"commitMessage": _commit_message(config.path, targets)}


def _image_entry(
    name: str, new_name: str | None, tag: str | None, digest: str | None
) -> dict[str, str]:
    entry = {"name": name, "newName": new_name, "newTag": tag, "digest": digest}
    return {key: value for key, value in entry.items() if value}


def _images_of_freight(ctx: StepContext) -> dict[str, dict[str, str]]:
    targets: dict[str, dict[str, str]] = {}
    # Every image of the Stage's Freight collection (one Freight per origin), as Kargo's.
    images = [i for freight in ctx.plan.freight_collection for i in freight.images or ()]
    for artifact in images:
        if not artifact.repo_url:
            continue
        if artifact.repo_url in targets:
            raise ConfigError(
                f"{ctx.describe()}: manual configuration required due to ambiguous result: "
                f"the Freight collection has more than one image from repository "
                f"{artifact.repo_url}; list the images to set under images"
            )
        targets[artifact.repo_url] = _image_entry(
            artifact.repo_url, None, artifact.tag, artifact.digest
        )
    return targets


def _merge(current: list[Any], targets: dict[str, dict[str, str]]) -> list[Any]:
    """Kargo's ``mergeImages``: ``targets`` gains the existing images (``*`` resolved from
    them, as the commit message shows them); the result is sorted by name, ``*`` dropped."""
    for existing in current:
        if not isinstance(existing, dict):
            continue
        name = str(existing.get("name", ""))
        target = targets.get(name)
        if target is None:
            targets[name] = existing
            continue
        for field in _IMAGE_FIELDS:
            if target.get(field) == _PRESERVE:
                target[field] = str(existing.get(field) or "")
        targets[name] = {key: value for key, value in target.items() if value}
    merged = [
        entry
        if not any(entry.get(field) == _PRESERVE for field in _IMAGE_FIELDS)
        else {key: value for key, value in entry.items() if value != _PRESERVE}
        for entry in targets.values()
    ]
    return sorted(merged, key=lambda entry: str(entry.get("name", "")))


def _commit_message(path: str, images: dict[str, dict[str, str]]) -> str:
    lines = []
    for name in sorted(images):
        image = images[name]
        ref = str(image.get("newName") or image.get("name") or name)
        if image.get("newTag"):
            ref += f":{image['newTag']}"
        if image.get("digest"):
            ref += f"@{image['digest']}"
        lines.append(f"\n- {ref}")
    plural = "s" if len(images) > 1 else ""
    return f"Updated {path} to use new image{plural}\n" + "".join(lines)


KUSTOMIZATION_FILE_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
"""kustomize's recognised names, in its order (``konfig.RecognizedKustomizationFileNames``)."""


def kustomization_files(directory: Path) -> list[Path]:
    """The regular files (not symlinks) with a kustomization's name in ``directory``."""
    found = []
    for name in KUSTOMIZATION_FILE_NAMES:
        candidate = directory / name
        if candidate.is_file() and not candidate.is_symlink():
            found.append(candidate)
    return found


def kustomization_file(directory: Path, path: str, where: str) -> Path:
    """The one kustomization in ``directory``; none, or more than one, is a ConfigError."""
    found = kustomization_files(directory)
    if not found:
        raise ConfigError(f'{where}: could not find any Kustomization files in "{path}"')
    if len(found) > 1:
        names = ", ".join(file.name for file in found)
        raise ConfigError(
            f'{where}: ambiguous result: found multiple Kustomization files in "{path}": {names}'
        )
    return found[0]


class HelmPlugin(StepConfig):
    api_versions: list[str] | None = None
    kube_version: str | None = None


class Plugin(StepConfig):
    helm: HelmPlugin | None = None


class BuildConfig(StepConfig):
    path: str = Field(min_length=1)
    out_path: str = Field(min_length=1)
    output_format: Literal["kargo", "kustomize"] = "kargo"
    plugin: Plugin | None = None


def kustomize_build(ctx: StepContext, config: BuildConfig) -> dict[str, Any]:
    """Render a kustomization with real kustomize into a file or a directory, as Kargo does.

    An ``outPath`` ending in .yaml/.yml gets kustomize's multi-document output;
    otherwise each resource is written to its own file in that directory, named
    by ``outputFormat``: ``kargo`` (the default) ``[namespace-]kind-name.yaml``,
    ``kustomize`` as ``kustomize build -o dir/`` names them,
    ``[namespace_]group_version_kind_name.yaml`` (the namespace only when the
    resources span several). Names are lower case; a name that is not a plain
    file name (a resource named ``../x``) is refused.
    """
    where = ctx.describe()
    source = ctx.workspace.resolve(config.path)
    out = ctx.workspace.resolve(config.out_path, field="outPath")
    kustomization_file(source, config.path, where)
    check_bases_inside(source, ctx.workspace.root, where)
    helm = config.plugin.helm if config.plugin and config.plugin.helm else HelmPlugin()
    rendered = render_kustomization(
        source,
        where,
        allow_local_repositories=ctx.allow_local_repositories,
        helm=helm.api_versions or [],
        helm_kube_version=helm.kube_version or "",
    )
    if out.suffix in (".yaml", ".yml"):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(rendered)
        return {}
    out.mkdir(parents=True, exist_ok=True)
    documents = [d for d in load_documents(rendered) if isinstance(d, dict)]
    namespaces = {
        str(_metadata(d).get("namespace") or "default")
        for d in documents
        if str(d.get("kind", "")) not in CLUSTER_SCOPED_KINDS
    }
    for document in documents:
        if config.output_format == "kustomize":
            filename = _kustomize_file_name(document, multiple_namespaces=len(namespaces) > 1)
        else:
            filename = _kargo_file_name(document)
        if filename in ("", ".", "..") or "/" in filename or "\\" in filename:
            raise ConfigError(f'{where}: unsafe generated resource filename "{filename}"')
        (out / filename).write_text(_sorted_yaml(document))
    return {}


CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "ComponentStatus",
        "CSIDriver",
        "CSINode",
        "CustomResourceDefinition",
        "FlowSchema",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)
"""Kubernetes' own cluster-scoped kinds: kustomize leaves them out when it counts namespaces
(it asks its built-in OpenAPI schema; a custom resource counts as namespaced here, as there)."""


def _metadata(document: dict[str, Any]) -> dict[str, Any]:
    metadata = document.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _kargo_file_name(document: dict[str, Any]) -> str:
    kind, name = str(document.get("kind", "")), str(_metadata(document).get("name", ""))
    namespace = str(_metadata(document).get("namespace") or "")
    prefix = f"{namespace}-" if namespace else ""
    return f"{prefix}{kind}-{name}.yaml".lower()


def _kustomize_file_name(document: dict[str, Any], *, multiple_namespaces: bool) -> str:
    group, _, version = str(document.get("apiVersion", "")).rpartition("/")
    fields = [part for part in (group, version, str(document.get("kind", ""))) if part]
    base = f"{'_'.join(fields)}_{_metadata(document).get('name', '')}.yaml"
    namespace = str(_metadata(document).get("namespace") or "")
    if multiple_namespaces and namespace:
        base = f"{namespace}_{base}"
    return base.lower()


def _sorted_yaml(document: Any) -> str:
    """One resource as Kargo writes it per file (Go's sigs.k8s.io/yaml: keys sorted)."""

    def by_key(node: Any) -> Any:
        if isinstance(node, dict):
            return {str(k): by_key(node[k]) for k in sorted(node, key=str)}
        if isinstance(node, list):
            return [by_key(item) for item in node]
        return node

    return dump_all([by_key(document)])


def kustomize_command() -> list[str]:
    """``kustomize build``, or ``kubectl kustomize`` when only kubectl is installed."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise ConfigError(
        "kustomize-build needs kustomize: install a `kustomize` binary or `kubectl` on the worker"
    )


_DIRECTORY_FIELDS = ("resources", "bases", "components")


def check_bases_inside(directory: Path, root: Path, where: str = "kustomize") -> None:
    """Refuse a kustomization whose local bases or components (transitively) leave ``root``.

    An entry that is no local path (``https://...``, ``git@...``, ``github.com/...``) is
    kustomize's remote resource, fetched by git under the worker's ``GIT_ALLOW_PROTOCOL``.
    """
    pending, seen = [directory.resolve()], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        # Every kustomization file there is checked, symlinks too (kustomize follows them
        # and refuses two, but only after this check).
        for file in (current / name for name in KUSTOMIZATION_FILE_NAMES):
            if file.is_file():
                _check_entries(file, current, root, where, pending)


def _check_entries(file: Path, current: Path, root: Path, where: str, pending: list[Path]) -> None:
    document = read_yaml(file)
    if isinstance(document, dict):
        for field in _DIRECTORY_FIELDS:
            for entry in document.get(field) or ():
                if not isinstance(entry, str) or "://" in entry or entry.startswith("git@"):
                    continue  # remote: fetched by kustomize's git, under GIT_ALLOW_PROTOCOL
                target = (current / entry).resolve()
                if not target.exists():
                    continue  # kustomize tries it as a remote, or fails on it
                if target != root and root not in target.parents:
                    relative = os.path.relpath(file, root)
                    raise PathEscapeError(
                        f'{where}: {relative}: {field} entry "{entry}" leaves the work tree'
                    )
                if target.is_dir():
                    pending.append(target)


def render_kustomization(
    directory: Path,
    where: str = "kustomize",
    *,
    allow_local_repositories: bool = False,
    helm: list[str] | None = None,
    helm_kube_version: str = "",
) -> str:
    """Run real kustomize on a directory and return the rendered YAML.

    The git kustomize runs for remote resources gets the worker's ``GIT_ALLOW_PROTOCOL``.
    With ``helm`` (a list, maybe empty, of API versions) kustomize's Helm chart inflator
    is on, as Kargo's kustomize-build has it: a ``helmCharts`` entry runs the worker's
    ``helm`` (none installed: kustomize fails naming it).
    """
    protocols = allowed_protocols(allow_local=allow_local_repositories)
    options: list[str] = []
    if helm is not None:
        options = ["--enable-helm", *(f"--helm-api-versions={v}" for v in helm)]
        if helm_kube_version:
            options.append(f"--helm-kube-version={helm_kube_version}")
    result = subprocess.run(
        [*kustomize_command(), *options, str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "GIT_ALLOW_PROTOCOL": protocols},
    )
    if result.returncode != 0:
        raise StepError(f"{where}: kustomize: {_reason(result.stderr)}")
    return result.stdout


def _reason(stderr: str) -> str:
    # kubectl wraps a long error as `err=<` ... `>`; git's own "fatal:" line says most.
    lines = [line.strip() for line in stderr.splitlines() if line.strip() not in ("", ">")]
    fatal = [line for line in lines if "fatal:" in line]
    return (fatal or lines or ["failed"])[-1]
