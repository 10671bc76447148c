"""The kustomize steps: kustomize-set-image and kustomize-build (real kustomize)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pydantic import Field

from activities.step_context import StepConfig, StepContext
from activities.yaml_files import dump_all, load_documents, read_yaml, write_yaml
from freightline.errors import ConfigError, StepError


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
    rendered = render_kustomization(source, ctx.describe())
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


def render_kustomization(directory: Path, where: str = "kustomize") -> str:
    """Run real kustomize on a directory and return the rendered YAML."""
    result = subprocess.run(
        [*kustomize_command(), str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        raise StepError(f"{where}: kustomize: {reason}")
    return result.stdout
