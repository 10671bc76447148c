"""The ``helm-update-chart`` and ``helm-template`` steps, as Kargo's (v1.11).

``helm-update-chart`` does what Kargo does with Helm's dependency manager, in
Python: it sets the ``version`` of each listed dependency in ``Chart.yaml`` (the
dependency named by ``repository`` and ``name``; none matching is an error),
resolves every dependency's version (constraint) against its repository as
``helm dependency update`` does — the highest version the constraint admits, from
an HTTP repository's ``index.yaml`` or an OCI repository's tags (``_`` read as
``+``) — and fetches each archive into the chart's ``charts/`` directory (an HTTP
repository's URL, or the OCI layer of type
``application/vnd.cncf.helm.chart.content.v1.tar+gzip``), replacing older archives
of the chart's dependencies. ``Chart.lock`` is written as Helm writes it
(``dependencies``, ``digest`` — Helm's hash of the requested and locked
dependencies — and ``generated``), and, as Kargo does, left byte for byte as it
was when no locked version changed. The output ``commitMessage`` lists what
changed (``name: old -> new``); no change, no output. Credentials are the worker's
``helm`` ones, by repository (OCI: ``oci://<repository>/<name>``). A ``file://``
dependency is a chart directory of the work tree (a path leaving it, through a
link too, is refused), packaged into ``charts/`` as ``helm package`` lays it out
(``.helmignore`` honoured). A dependency without a repository must already sit
in ``charts/``.

``helm-template`` runs the ``helm`` binary (``helm template``) when the worker has
it on its PATH; without it the step ends Errored saying so. The config maps onto
``helm template``'s flags as Kargo's use of Helm's install action does: the
release name, ``--namespace`` (default: the project), values files (missing
ones skipped with ``ignoreMissingValueFiles``), ``--set`` / ``--set-literal``,
``--include-crds``, ``--no-hooks``, ``--skip-tests``, ``--kube-version``,
``--api-versions``, and ``--output-dir`` (with ``--release-name`` for
``useReleaseName``) for a directory ``outPath`` in the ``helm`` layout.
``buildDependencies`` runs ``helm dependency build`` first, as Kargo builds them
(from ``Chart.lock``); Helm fetches with its own repository settings there, not
the worker's credentials. A
``.yaml``/``.yml`` ``outPath`` gets all manifests in one file; the ``flat``
layout one file per resource, named ``[group-]kind[-namespace]-name.yaml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import httpx
from pathspec import GitIgnoreSpec
from pydantic import Field
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from activities.helm import discover_charts
from activities.http_steps import refuse_link_local
from activities.registry import RegistryClient, parse_repo_url
from activities.step_context import StepConfig, StepContext
from activities.yaml_files import read_yaml
from freightline.errors import (
    ConfigError,
    DiscoveryError,
    EndpointUnavailableError,
    FreightlineError,
    PathEscapeError,
    RegistryError,
    StepError,
)
from freightline.kargo.resources import APPLY_CHECKS, ChartSubscription
from freightline.kargo.semver import parse_constraint, try_parse_version

__all__ = [
    "HelmTemplateConfig",
    "HelmUpdateChartConfig",
    "helm_template",
    "helm_template_arguments",
    "helm_update_chart",
    "lock_digest",
]

HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
MAX_CHART_BYTES = 100 << 20
"""The largest chart archive fetched (Helm has no limit; a step keeps one)."""
REQUEST_TIMEOUT = 60.0
HELM_TIMEOUT = 300


class ChartUpdate(StepConfig):
    repository: str = Field(min_length=1)
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)


class HelmUpdateChartConfig(StepConfig):
    path: str = Field(min_length=1)
    charts: list[ChartUpdate] | None = Field(default=None, min_length=1)


@dataclass(frozen=True)
class _Locked:
    name: str
    repository: str
    version: str
    archive: str | None = None
    """Where to fetch it: an HTTP URL, or ``oci://registry/repo:tag``; None: already local."""
    local_dir: Path | None = None
    """A ``file://`` dependency's chart directory, packaged into ``charts/`` as Helm does."""


# --- helm-update-chart -------------------------------------------------------------------------


def helm_update_chart(ctx: StepContext, config: HelmUpdateChartConfig) -> dict[str, Any]:
    """Update a chart's dependencies (Kargo's ``helm-update-chart``)."""
    where = ctx.describe()
    chart_dir = ctx.workspace.resolve(config.path)
    chart_file = ctx.workspace.resolve(os.path.join(config.path, "Chart.yaml"))
    if not chart_file.is_file():
        raise ConfigError(f'{where}: "{config.path}" holds no Chart.yaml')
    charts_dir = ctx.workspace.resolve(os.path.join(config.path, "charts"))
    lock_file = ctx.workspace.resolve(os.path.join(config.path, "Chart.lock"))
    text = chart_file.read_text()
    document = read_yaml(chart_file)
    dependencies = _dependencies(document, "Chart.yaml", where)
    for update in config.charts or ():
        match = next(
            (
                (i, d)
                for i, d in enumerate(dependencies)
                if d.get("name") == update.name and d.get("repository") == update.repository
            ),
            None,
        )
        if match is None:
            raise ConfigError(
                f"{where}: no dependency in Chart.yaml matches update with repository "
                f'"{update.repository}" and name "{update.name}"'
            )
        index, dependency = match
        if dependency.get("version") != update.version:
            text = _set_version(text, document["dependencies"][index], update.version, where)
            dependency["version"] = update.version
    if text != chart_file.read_text():
        chart_file.write_text(text)
    if not dependencies:
        if lock_file.exists():
            return {}
        raise ConfigError(f'{where}: "{config.path}/Chart.yaml" has no dependencies to update')
    before = _lock_versions(lock_file, where)
    if charts_dir.exists() and not charts_dir.is_dir():
        raise ConfigError(f'{where}: "{config.path}/charts" is not a directory')
    local = {
        i: _local_dependency(ctx, where, chart_dir, d)
        for i, d in enumerate(dependencies)
        if str(d.get("repository") or "").startswith("file://")
    }
    with tempfile.TemporaryDirectory(dir=ctx.workspace.private) as tmp:
        remote = [d for i, d in enumerate(dependencies) if i not in local]
        resolved, fetched = asyncio.run(_resolve_and_fetch(ctx, where, remote, Path(tmp)))
        pending = iter(resolved)
        locked = [local[i] if i in local else next(pending) for i in range(len(dependencies))]
        fetched += [_package(ctx, lock, Path(tmp), where) for lock in local.values()]
        charts_dir.mkdir(parents=True, exist_ok=True)
        _move_into(charts_dir, fetched, locked)
    after = {lock.name: lock.version for lock in locked}
    changes = _changes(before, after)
    if not changes:
        return {}  # Kargo keeps the old Chart.lock as it was: only its timestamp would change
    lock_file.write_text(_lock_text(dependencies, locked))
    lines = "".join(
        f"\n- {name}: {change or 'removed'}" for name, change in sorted(changes.items())
    )
    return {"commitMessage": f"Updated chart dependencies for {config.path}\n{lines}"}


def _set_version(text: str, dependency: Any, version: str, where: str) -> str:
    """``text`` with the dependency's ``version`` value replaced where it stands: every other
    byte of Chart.yaml stays (comments, quoting style, indentation), as Kargo's edit does."""
    if "version" not in dependency:
        raise ConfigError(f'{where}: Chart.yaml: dependency "{dependency.get("name")}" has no '
                          "version to update")  # fmt: skip
    line, column = dependency.lc.value("version")
    lines = text.splitlines(keepends=True)
    current = lines[line]
    rest = current[column:]
    quote = rest[:1]
    if quote in ("'", '"'):
        end = _closing_quote(rest, quote)
        new = quote + (version.replace("'", "''") if quote == "'" else json.dumps(version)[1:-1])
        lines[line] = current[:column] + new + quote + rest[end + 1 :]
    else:
        # A plain scalar ends at a comment or the line's end; inside {...} also at , } ].
        flow = bool(getattr(getattr(dependency, "fa", None), "flow_style", lambda: False)())
        stop = r"\s+#|\s*[,}\]]|\s*$" if flow else r"\s+#|\s*$"
        plain = re.match(rf"[^\n]*?(?={stop})", rest)
        end = plain.end() if plain else len(rest.rstrip("\r\n"))
        lines[line] = current[:column] + _scalar(version) + rest[end:]
    return "".join(lines)


def _closing_quote(text: str, quote: str) -> int:
    index = 1
    while index < len(text):
        char = text[index]
        if quote == '"' and char == "\\":
            index += 2
            continue
        if char == quote:
            if quote == "'" and text[index + 1 : index + 2] == "'":
                index += 2
                continue
            return index
        index += 1
    return len(text) - 1


def _dependencies(document: Any, name: str, where: str) -> list[dict[str, Any]]:
    raw = document.get("dependencies") if isinstance(document, dict) else None
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise ConfigError(f"{where}: {name}: dependencies must be a list of maps")
    return [dict(d) for d in raw]


def _lock_versions(lock_file: Path, where: str) -> dict[str, str]:
    if not lock_file.exists():
        return {}
    try:
        document = YAML(typ="safe").load(lock_file.read_text())
    except YAMLError as err:
        raise ConfigError(f"{where}: Chart.lock is not YAML: {err}") from None
    return {
        str(d.get("name")): str(d.get("version") or "")
        for d in _dependencies(document, "Chart.lock", where)
    }


def _changes(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """Kargo's comparison: ``old -> new``, a new name's version, or ``""`` for one removed."""
    changes = {}
    for name, version in after.items():
        if name not in before:
            changes[name] = version
        elif before[name] != version:
            changes[name] = f"{before[name]} -> {version}"
    changes.update({name: "" for name in before if name not in after})
    return changes


async def _resolve_and_fetch(
    ctx: StepContext, where: str, dependencies: list[dict[str, Any]], tmp: Path
) -> tuple[list[_Locked], list[Path]]:
    """Every dependency's locked version, and the archives fetched into ``tmp``."""
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, follow_redirects=True) as http:
        locked = [await _resolve(ctx, where, http, d) for d in dependencies]
        fetched = [await _fetch(ctx, where, http, lock, tmp) for lock in locked]
    return locked, [f for f in fetched if f is not None]


async def _resolve(
    ctx: StepContext, where: str, http: httpx.AsyncClient, dependency: dict[str, Any]
) -> _Locked:
    name = str(dependency.get("name") or "")
    repository = str(dependency.get("repository") or "")
    version = str(dependency.get("version") or "")
    if not name:
        raise ConfigError(f"{where}: a dependency in Chart.yaml has no name")
    if not repository:
        return _Locked(name, "", version)  # a chart already in charts/
    if not repository.startswith(("http://", "https://", "oci://")):
        raise ConfigError(
            f'{where}: dependency "{name}": repository "{repository}" must be an http(s):// '
            "or oci:// URL (Helm's repository aliases need Helm's repository settings)"
        )
    oci = repository.startswith("oci://")
    subscription = ChartSubscription.model_validate(
        {
            "repoURL": repository,
            "name": name,
            "semverConstraint": version or "*",
            "discoveryLimit": 1,
        },
        context=APPLY_CHECKS,  # Chart.yaml's version constraint was never checked before
    )
    if not oci:
        refuse_link_local(httpx.URL(repository).host, where)
    credential_url = f"{repository.rstrip('/')}/{name}" if oci else repository
    try:
        found = await discover_charts(
            subscription,
            http=http,
            registry=_registry(ctx, http, credential_url) if oci else None,
            credentials=lambda url: ctx.basic_credentials("helm", url),
        )
    except (DiscoveryError, RegistryError) as err:
        raise type(err)(f'{where}: dependency "{name}": {err}') from None
    if not found or (not oci and not found[0].url):
        raise ConfigError(
            f'{where}: can\'t get a valid version for dependency "{name}" '
            f'(repository "{repository}", version "{version}")'
        )
    chosen = found[0]
    archive = (
        f"{repository.rstrip('/')}/{name}:{chosen.version.replace('+', '_')}" if oci else chosen.url
    )
    return _Locked(name, repository, chosen.version, archive)


def _local_dependency(
    ctx: StepContext, where: str, chart_dir: Path, dependency: dict[str, Any]
) -> _Locked:
    """A ``file://`` dependency: its chart directory must lie in the work tree (symlinks
    included, as Kargo checks) and its version satisfy the constraint, as Helm resolves it."""
    name = str(dependency.get("name") or "")
    repository = str(dependency["repository"])
    relative = repository.removeprefix("file://")
    if not name:
        raise ConfigError(f"{where}: a dependency in Chart.yaml has no name")
    if os.path.isabs(relative):
        raise PathEscapeError(f'{where}: dependency path "{relative}" must be relative')
    inside = os.path.relpath(os.path.normpath(chart_dir / relative), ctx.workspace.root)
    directory = ctx.workspace.resolve(inside, field=f"dependency {name}")
    chart_file = directory / "Chart.yaml"
    if not chart_file.is_file():
        raise ConfigError(f'{where}: dependency "{name}": {repository} holds no Chart.yaml')
    chart = YAML(typ="safe").load(chart_file.read_text())
    version = str(chart.get("version") or "") if isinstance(chart, dict) else ""
    wanted = str(dependency.get("version") or "*")
    parsed = try_parse_version(version, strict=False)
    if parsed is None or not parse_constraint(wanted).matches(parsed):
        raise ConfigError(
            f'{where}: can\'t get a valid version for dependency "{name}" '
            f'(repository "{repository}", version "{wanted}"): the chart there is "{version}"'
        )
    return _Locked(name, repository, version, local_dir=directory)


def _package(ctx: StepContext, lock: _Locked, tmp: Path, where: str) -> Path:
    """``helm package`` of a local dependency: ``<name>-<version>.tgz`` holding
    ``<name>/...``, without what its ``.helmignore`` names. Links are followed, as Helm
    does, and must stay in the work tree. Byte for byte the same on every run."""
    directory = lock.local_dir
    assert directory is not None
    chart = YAML(typ="safe").load((directory / "Chart.yaml").read_text())
    chart_name = str(chart.get("name") or lock.name)
    ignore = directory / ".helmignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    ignored = GitIgnoreSpec.from_lines(
        [line for line in lines if line.strip() and not line.startswith("#")]
    )
    target = tmp / f"{chart_name}-{lock.version}.tgz"
    root = ctx.workspace.root
    with (
        target.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        seen: set[Path] = set()
        for parent, dirs, files in os.walk(directory, followlinks=True):
            real_parent = Path(parent).resolve()
            if real_parent != root and root not in real_parent.parents:
                raise PathEscapeError(
                    f'{where}: dependency "{lock.name}": '
                    f"{Path(parent).relative_to(directory)} leads out of the work tree"
                )
            if real_parent in seen:  # a link back up: Helm would loop, this stops
                dirs.clear()
                continue
            seen.add(real_parent)
            dirs.sort()
            for name in sorted(files):
                path = Path(parent) / name
                relative = path.relative_to(directory).as_posix()
                if ignored.match_file(relative):
                    continue
                real = path.resolve()
                if root not in real.parents:
                    raise PathEscapeError(
                        f'{where}: dependency "{lock.name}": {relative} leads out of the work tree'
                    )
                data = real.read_bytes()
                info = tarfile.TarInfo(f"{chart_name}/{relative}")
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
    return target


def _registry(ctx: StepContext, http: httpx.AsyncClient, credential_url: str) -> RegistryClient:
    def provider(host: str) -> tuple[str, str] | None:
        return ctx.basic_credentials("helm", credential_url) or ctx.basic_credentials("helm", host)

    return RegistryClient(http, provider)


async def _fetch(
    ctx: StepContext, where: str, http: httpx.AsyncClient, lock: _Locked, tmp: Path
) -> Path | None:
    if lock.archive is None:
        return None
    if lock.archive.startswith("oci://"):
        reference = lock.archive.removeprefix("oci://")
        repo_text, _, tag = reference.rpartition(":")
        repo = parse_repo_url(repo_text)
        client = _registry(ctx, http, f"{lock.repository.rstrip('/')}/{lock.name}")
        manifest = await client.get_manifest(repo, tag)
        if manifest is None:
            raise RegistryError(f'{where}: chart "{lock.archive}" not found')
        layer = next(
            (
                layer
                for layer in manifest.body.get("layers") or []
                if isinstance(layer, dict) and layer.get("mediaType") == HELM_CHART_LAYER
            ),
            None,
        )
        if layer is None:
            raise RegistryError(f'{where}: "{lock.archive}" holds no Helm chart layer')
        target = tmp / f"{lock.name}-{lock.version}.tgz"
        with target.open("w+b") as out:
            await client.fetch_blob(repo, str(layer["digest"]), out, MAX_CHART_BYTES)
    else:
        url = httpx.URL(lock.archive)
        refuse_link_local(url.host, where)
        repo_url = httpx.URL(lock.repository)
        # As Helm: the repository's credentials go to its own host only.
        same_origin = (url.scheme, url.host, url.port) == (
            repo_url.scheme,
            repo_url.host,
            repo_url.port,
        )
        auth = ctx.basic_credentials("helm", lock.repository) if same_origin else None
        target = tmp / (PurePosixPath(url.path).name or f"{lock.name}-{lock.version}.tgz")
        await _download(http, url, auth, target, where)
    _check_chart(target, lock, where)
    return target


async def _download(
    http: httpx.AsyncClient,
    url: httpx.URL,
    auth: tuple[str, str] | None,
    target: Path,
    where: str,
) -> None:
    try:
        async with http.stream("GET", url, auth=auth) as response:
            status = response.status_code
            if status == 429 or status >= 500:
                raise EndpointUnavailableError(f"{where}: {url} answered {status}")
            if status in (401, 403):
                raise ConfigError(
                    f"{where}: {url} refused access ({status}): check the worker's helm credentials"
                )
            if status != 200:
                raise ConfigError(f"{where}: {url} answered {status}")
            size = 0
            with target.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_CHART_BYTES:
                        raise FreightlineError(
                            f"{where}: {url} is larger than {MAX_CHART_BYTES} bytes"
                        )
                    out.write(chunk)
    except httpx.TimeoutException as err:
        raise EndpointUnavailableError(f"{where}: {url} timed out") from err
    except httpx.TransportError as err:
        raise EndpointUnavailableError(f"{where}: {url} unreachable: {err}") from err


def _chart_of(archive: Path) -> dict[str, Any] | None:
    """The Chart.yaml of a chart archive (``<dir>/Chart.yaml`` inside a gzipped tar), or None."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if len(parts) == 2 and parts[1] == "Chart.yaml" and member.isfile():
                    data = tar.extractfile(member)
                    loaded = YAML(typ="safe").load(data.read()) if data else None
                    return loaded if isinstance(loaded, dict) else None
    except (tarfile.TarError, OSError, EOFError, YAMLError):
        return None
    return None


def _check_chart(archive: Path, lock: _Locked, where: str) -> None:
    chart = _chart_of(archive)
    if chart is None:
        raise StepError(f'{where}: what was fetched for "{lock.name}" is not a Helm chart archive')
    if chart.get("name") != lock.name:
        raise StepError(
            f'{where}: the archive fetched for "{lock.name}" holds chart "{chart.get("name")}"'
        )


def _move_into(charts_dir: Path, fetched: list[Path], locked: list[_Locked]) -> None:
    """Helm's safe move: the new archives in, older chart archives of the chart out (not
    those of dependencies without a repository, which live there on purpose)."""
    local = {lock.name for lock in locked if lock.archive is None and lock.local_dir is None}
    names = {archive.name for archive in fetched}
    for existing in sorted(charts_dir.iterdir()):
        if existing.name in names or existing.is_dir() or existing.is_symlink():
            continue
        chart = _chart_of(existing)
        if chart is not None and chart.get("name") not in local:
            existing.unlink()
    for archive in fetched:
        destination = charts_dir / archive.name
        if destination.is_symlink():
            destination.unlink()  # never write through a link
        shutil.move(archive, destination)


# --- Chart.lock, as Helm writes it -------------------------------------------------------------


def _lock_text(dependencies: list[dict[str, Any]], locked: list[_Locked]) -> str:
    lock = [{"name": x.name, "repository": x.repository, "version": x.version} for x in locked]
    digest = lock_digest(dependencies, lock)
    generated = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    out = io.StringIO()
    out.write("dependencies:\n")
    for entry in lock:
        out.write(f"- name: {_scalar(entry['name'])}\n")
        out.write(f"  repository: {_scalar(entry['repository'])}\n")
        out.write(f"  version: {_scalar(entry['version'])}\n")
    out.write(f"digest: {digest}\n")
    out.write(f"generated: {json.dumps(generated)}\n")
    return out.getvalue()


def lock_digest(requested: list[dict[str, Any]], locked: list[dict[str, Any]]) -> str:
    """Helm's ``HashReq``: the hash of Chart.yaml's and the lock's dependencies, as Go
    marshals them, which ``Chart.lock``'s ``digest`` holds."""
    hashed = _go_json([_helm_dependencies(requested), _helm_dependencies(locked)])
    return "sha256:" + hashlib.sha256(hashed).hexdigest()


def _helm_dependencies(dependencies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chart.yaml's dependencies as Helm's ``chart.Dependency`` marshals to JSON: its field
    order, empty fields left out (``name`` and ``repository`` always there)."""
    result = []
    for dependency in dependencies:
        entry: dict[str, Any] = {"name": str(dependency.get("name") or "")}
        if dependency.get("version"):
            entry["version"] = str(dependency["version"])
        entry["repository"] = str(dependency.get("repository") or "")
        for key in ("condition", "tags", "enabled", "import-values", "alias"):
            if dependency.get(key):
                entry[key] = _sorted(dependency[key])
        result.append(entry)
    return result


def _sorted(value: Any) -> Any:
    """Go marshals a map with its keys sorted."""
    if isinstance(value, dict):
        return {str(k): _sorted(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _go_json(value: Any) -> bytes:
    """JSON as Go's ``encoding/json`` writes it: compact, with <, > and & escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


_PLAIN = re.compile(r"^[A-Za-z0-9_./+-][A-Za-z0-9_./:+~^=<>, *-]*$")


def _scalar(text: str) -> str:
    """A string as YAML (yaml.v2) writes it: plain when it reads back as that string."""
    if text and _PLAIN.match(text) and not text.endswith(":"):
        try:
            if YAML(typ="safe").load(text) == text:
                return text
        except YAMLError:
            pass
    return json.dumps(text)


# --- helm-template -----------------------------------------------------------------------------


class SetValue(StepConfig):
    key: str = Field(min_length=1)
    value: str
    literal: bool = False


class HelmTemplateConfig(StepConfig):
    path: str = Field(min_length=1)
    out_path: str = Field(min_length=1)
    out_layout: Literal["helm", "flat"] | None = None
    release_name: str = Field(min_length=1)
    use_release_name: bool = False
    namespace: str | None = None
    values_files: list[str] = Field(default_factory=list)
    ignore_missing_value_files: bool = False
    set_values: list[SetValue] = Field(default_factory=list)
    build_dependencies: bool = False
    include_crds: bool = Field(default=False, alias="includeCRDs")
    disable_hooks: bool = False
    skip_tests: bool = False
    kube_version: str | None = None
    api_versions: list[str] = Field(default_factory=list)


def _out_is_file(config: HelmTemplateConfig) -> bool:
    return PurePosixPath(config.out_path).suffix in (".yaml", ".yml")


def helm_template_arguments(ctx: StepContext, config: HelmTemplateConfig, out: Path) -> list[str]:
    """The ``helm template`` command line for ``config`` (paths resolved in the work tree)."""
    chart = ctx.workspace.resolve(config.path)
    args = ["helm", "template", config.release_name, str(chart)]
    args += ["--namespace", config.namespace or ctx.plan.project]
    for values in config.values_files:
        file = ctx.workspace.resolve(values, field="valuesFiles")
        if config.ignore_missing_value_files and not file.exists():
            continue
        args += ["--values", str(file)]
    for value in config.set_values:
        args += ["--set-literal" if value.literal else "--set", f"{value.key}={value.value}"]
    if config.include_crds:
        args.append("--include-crds")
    if config.disable_hooks:
        args.append("--no-hooks")
    if config.skip_tests:
        args.append("--skip-tests")
    if config.kube_version:
        args += ["--kube-version", config.kube_version]
    for api in config.api_versions:
        args += ["--api-versions", api]
    if not _out_is_file(config) and config.out_layout != "flat":
        args += ["--output-dir", str(out)]
        if config.use_release_name:
            args.append("--release-name")
    return args


def helm_template(ctx: StepContext, config: HelmTemplateConfig) -> dict[str, Any]:
    """Render a chart with ``helm template`` (Kargo's ``helm-template``)."""
    where = ctx.describe()
    if shutil.which("helm") is None:
        raise ConfigError(
            f"{where}: helm-template needs the helm binary, and the worker has no `helm` on its "
            "PATH: install Helm 3 on the worker"
        )
    out = ctx.workspace.resolve(config.out_path, field="outPath")
    args = helm_template_arguments(ctx, config, out)
    if not _out_is_file(config) and config.out_layout != "flat":
        out.mkdir(parents=True, exist_ok=True)
    if config.build_dependencies:
        chart = ctx.workspace.resolve(config.path)
        _helm(ctx, ["helm", "dependency", "build", str(chart)], where, "build chart dependencies")
    result = _helm(ctx, args, where, "render chart")
    _check_inside(ctx, out, where)
    if _out_is_file(config):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.strip() + "\n")
    elif config.out_layout == "flat":
        _write_flat(out, result, where)
    return {}


def _helm(ctx: StepContext, args: list[str], where: str, what: str) -> str:
    """Run helm in the work tree; its output, or a StepError with helm's last word."""
    try:
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            check=False,
            timeout=HELM_TIMEOUT,
            cwd=ctx.workspace.root,
        )
    except subprocess.TimeoutExpired:
        raise StepError(f"{where}: helm took more than {HELM_TIMEOUT} s to {what}") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise StepError(f"{where}: failed to {what}: {(lines or ['helm failed'])[-1]}")
    return result.stdout


def _write_flat(out: Path, manifests: str, where: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    documents = re.split(r"(?m)^---[ \t]*$", manifests)
    index = 0
    for document in documents:
        resource = document.strip()
        if not resource or all(
            line.lstrip().startswith("#") for line in resource.splitlines() if line.strip()
        ):
            continue
        name = _resource_filename(resource) or f"resource-{index}.yaml"
        if "/" in name or name in (".", "..") or "\\" in name:
            raise StepError(f'{where}: a rendered resource would be written to "{name}"')
        (out / name).write_text(resource)
        index += 1


def _resource_filename(resource: str) -> str:
    try:
        document = YAML(typ="safe").load(resource)
    except YAMLError:
        return ""
    if not isinstance(document, dict):
        return ""
    found = document.get("metadata")
    metadata: dict[str, Any] = found if isinstance(found, dict) else {}
    kind, name = str(document.get("kind") or ""), str(metadata.get("name") or "")
    if not kind or not name:
        return ""
    api_version = str(document.get("apiVersion") or "")
    group = api_version.rpartition("/")[0]
    text = kind
    if group:
        text = group.replace(".", "_") + "-" + text
    if metadata.get("namespace"):
        text += f"-{metadata['namespace']}"
    return f"{text}-{name}.yaml".lower()


def _check_inside(ctx: StepContext, out: Path, where: str) -> None:
    """What helm wrote under ``--output-dir`` must not reach outside through a link."""
    if not out.is_dir():
        return
    for parent, dirs, files in os.walk(out):
        for entry in [*dirs, *files]:
            path = Path(parent) / entry
            if path.is_symlink():
                with contextlib.suppress(OSError):
                    path.unlink()
                raise StepError(f"{where}: helm wrote a symbolic link at {path.name}")
