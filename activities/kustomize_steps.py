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
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pydantic import Field

from activities.git import allowed_protocols
from activities.step_context import StepConfig, StepContext
from activities.yaml_files import dump_all, load_documents, read_yaml, write_yaml
from freightline.errors import ConfigError, PathEscapeError, StepError


class ImageUpdate(StepConfig):
    image: str
    tag: str | None = None
    digest: str | None = None
    new_name: str | None = None
    use_digest: bool = False


class SetImageConfig(StepConfig):
    path: str
    images: list[ImageUpdate] = Field(min_length=1)


def kustomize_set_image(ctx: StepContext, config: SetImageConfig) -> dict[str, Any]:
    """Set ``images:`` entries in a kustomization, like ``kustomize edit set image``.

    A tag or digest not given comes from the Freight being promoted.
    """
    directory = ctx.workspace.resolve(config.path)
    file = _kustomization_file(directory, ctx.describe())
    document = read_yaml(file)
    images = document.setdefault("images", [])
    changes: list[str] = []
    for update in config.images:
        tag, digest = update.tag, update.digest
        if tag is None and digest is None:
            tag, digest = _from_freight(ctx, update.image)
            if not update.use_digest:
                digest = None
        entry = next((e for e in images if e.get("name") == update.image), None)
        if entry is None:
            entry = {"name": update.image}
            images.append(entry)
        if update.new_name:
            entry["newName"] = update.new_name
        if digest:
            entry.pop("newTag", None)
            entry["digest"] = digest
            changes.append(f"{update.image}@{digest}")
        elif tag:
            entry.pop("digest", None)
            entry["newTag"] = tag
            changes.append(f"{update.image}:{tag}")
    write_yaml(file, document)
    relative = file.relative_to(ctx.workspace.root)
    message = f"Updated {relative} to use new image" + ("s" if len(changes) > 1 else "")
    message += "\n\n" + "\n".join(f"- {change}" for change in changes)
    return {"commitMessage": message}


def _from_freight(ctx: StepContext, image: str) -> tuple[str | None, str | None]:
    for artifact in ctx.plan.freight.images or ():
        if artifact.repo_url == image:
            return artifact.tag, artifact.digest
    raise ConfigError(f'{ctx.describe()}: the Freight has no image "{image}" and no tag was given')


def _kustomization_file(directory: Path, where: str) -> Path:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            return directory / name
    raise ConfigError(f"{where}: no kustomization.yaml in {directory.name or '.'}")


class BuildConfig(StepConfig):
    path: str
    out_path: str
    plugin: dict[str, Any] | None = None


def kustomize_build(ctx: StepContext, config: BuildConfig) -> dict[str, Any]:
    """Render a kustomization with real kustomize into a file or a directory.

    An ``outPath`` ending in .yaml/.yml gets one multi-document file;
    otherwise each resource is written to ``<kind>-<name>.yaml`` in that
    directory, as Kargo does.
    """
    source = ctx.workspace.resolve(config.path)
    out = ctx.workspace.resolve(config.out_path, field="outPath")
    _kustomization_file(source, ctx.describe())
    check_bases_inside(source, ctx.workspace.root, ctx.describe())
    rendered = render_kustomization(
        source, ctx.describe(), allow_local_repositories=ctx.allow_local_repositories
    )
    if out.suffix in (".yaml", ".yml"):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(rendered)
        return {}
    out.mkdir(parents=True, exist_ok=True)
    for document in load_documents(rendered):
        kind = str(document.get("kind", "resource")).lower()
        name = str((document.get("metadata") or {}).get("name", "unnamed"))
        filename = re.sub(r"[^a-zA-Z0-9_.-]", "_", f"{kind}-{name}") + ".yaml"
        (out / filename).write_text(dump_all([document]))
    return {}


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
        try:
            file = _kustomization_file(current, where)
        except ConfigError:
            continue  # a plain file resource or a missing one: kustomize's to judge
        document = read_yaml(file)
        if not isinstance(document, dict):
            continue
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
    directory: Path, where: str = "kustomize", *, allow_local_repositories: bool = False
) -> str:
    """Run real kustomize on a directory and return the rendered YAML.

    The git kustomize runs for remote resources gets the worker's ``GIT_ALLOW_PROTOCOL``.
    """
    protocols = allowed_protocols(allow_local=allow_local_repositories)
    result = subprocess.run(
        [*kustomize_command(), str(directory)],
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
