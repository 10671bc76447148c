"""The ``oci-download`` and ``oci-push`` steps, as Kargo's (v1.11), on the registry client.

References are Kargo's: ``registry/repository:tag`` or ``@sha256:...``; an
``oci://`` prefix marks a Helm chart, whose credentials are the worker's ``helm``
ones (``image`` ones otherwise), looked up by repository as Kargo does, then by
registry host. Credentials stay in the activity.

``oci-download`` writes one layer of the artifact (the first, or the first of
``mediaType``) to ``outPath`` in the work tree, through a temporary file beside
it that replaces the target only once the whole layer arrived with its digest;
an index resolves to its linux/amd64 image, as Kargo's library does. A layer over
100 MiB is refused before it is fetched, and so is a registry sending more.

``oci-push`` copies an image, an index (with every image it lists) or a chart to
a tag: blobs the destination lacks are mounted from the source when both are
repositories of one registry, otherwise streamed through a file outside the work
tree; manifests are put unchanged (same digest) unless ``annotations`` add to them
(``index:`` keys to the index, ``manifest:`` or bare keys to each image manifest).
Across repositories the artifact may hold at most 1 GiB (Kargo's default
``MAX_OCI_PUSH_ARTIFACT_SIZE``), counted from the manifests before anything is
copied. Outputs: ``image``, ``digest``, ``tag``.

Errors: a missing artifact, layer or media type, or too large an artifact is
Errored (``RegistryError``); refused credentials ``AuthenticationError``; a
registry that times out, is unreachable or answers 5xx/429 is retried
(``RegistryUnavailableError``). Re-running a push is harmless: blobs present are
skipped and putting the same manifest again changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import Field

from activities.registry import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    ImageRepository,
    Manifest,
    RegistryClient,
    parse_repo_url,
)
from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError, RegistryError

__all__ = ["OCIDownloadConfig", "OCIPushConfig", "oci_download", "oci_push"]

REFERENCE = r"^(oci://)?[a-zA-Z0-9._-]+(:\d+)?(/[a-zA-Z0-9._-]+)*[@:][a-zA-Z0-9._:-]+$"
DESTINATION = r"^(oci://)?[a-zA-Z0-9._-]+(:\d+)?(/[a-zA-Z0-9._-]+)*[:][a-zA-Z0-9._-]+$"
MAX_LAYER_BYTES = 100 << 20
"""The largest layer ``oci-download`` fetches (Kargo's ``maxOCIArtifactSize``)."""
MAX_PUSH_BYTES = 1 << 30
"""The largest artifact ``oci-push`` copies across repositories (Kargo's default)."""
REQUEST_TIMEOUT = 60.0
DEFAULT_PLATFORM = ("linux", "amd64")
T = TypeVar("T")


class OCIDownloadConfig(StepConfig):
    image_ref: str = Field(min_length=1, pattern=REFERENCE)
    out_path: str = Field(min_length=1)
    allow_overwrite: bool = False
    media_type: str | None = Field(default=None, min_length=1)
    insecure_skip_tls_verify: bool = Field(default=False, alias="insecureSkipTLSVerify")


class OCIPushConfig(StepConfig):
    src_ref: str = Field(min_length=1, pattern=REFERENCE)
    dest_ref: str = Field(min_length=1, pattern=DESTINATION)
    annotations: dict[str, str] = Field(default_factory=dict)
    insecure_skip_tls_verify: bool = Field(default=False, alias="insecureSkipTLSVerify")


@dataclass(frozen=True)
class Reference:
    repo: ImageRepository
    reference: str
    """A tag or a digest."""
    cred_type: str
    """``helm`` for an ``oci://`` reference, else ``image``."""

    @property
    def is_digest(self) -> bool:
        return ":" in self.reference

    @property
    def repo_url(self) -> str:
        """The repository as the worker's credentials name it."""
        prefix = "oci://" if self.cred_type == "helm" else ""
        return f"{prefix}{self.repo.registry}/{self.repo.name}"


def parse_reference(text: str, field: str) -> Reference:
    cred_type = "helm" if text.startswith("oci://") else "image"
    rest = text.removeprefix("oci://")
    if "@" in rest:
        name, _, reference = rest.partition("@")
    else:
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon <= slash:
            raise ConfigError(f'{field}: "{text}" names no tag or digest')
        name, reference = rest[:colon], rest[colon + 1 :]
    try:
        repo = parse_repo_url(name)
    except ConfigError as err:
        raise ConfigError(f"{field}: {err}") from None
    return Reference(repo, reference, cred_type)


def _run(insecure: bool, work: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with httpx.AsyncClient(
            verify=not insecure, timeout=REQUEST_TIMEOUT, follow_redirects=True
        ) as http:
            return await work(http)

    return asyncio.run(main())


def _client(ctx: StepContext, http: httpx.AsyncClient, ref: Reference) -> RegistryClient:
    lookup = ctx.basic_credentials

    def provider(host: str) -> tuple[str, str] | None:
        return lookup(ref.cred_type, ref.repo_url) or lookup(ref.cred_type, host)

    return RegistryClient(http, provider)


async def _manifest(client: RegistryClient, ref: Reference, shown: str) -> Manifest:
    manifest = await client.get_manifest(ref.repo, ref.reference)
    if manifest is None:
        raise RegistryError(f'artifact "{shown}" not found')
    return manifest


# --- oci-download ------------------------------------------------------------------------------


def oci_download(ctx: StepContext, config: OCIDownloadConfig) -> dict[str, Any]:
    """Fetch one layer of an OCI artifact into a file of the work tree."""
    where = ctx.describe()
    target = ctx.workspace.resolve(config.out_path, field="outPath")
    if os.path.lexists(target) and not config.allow_overwrite:
        raise ConfigError(
            f"{where}: file already exists at {config.out_path} and overwrite is not allowed"
        )
    if target.is_dir():
        raise ConfigError(f'{where}: outPath "{config.out_path}" is a directory')
    ref = parse_reference(config.image_ref, "imageRef")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def download(http: httpx.AsyncClient) -> None:
        client = _client(ctx, http, ref)
        manifest = await _manifest(client, ref, config.image_ref)
        if manifest.is_index:
            manifest = await _platform_image(client, ref, manifest, config.image_ref)
        layer = _layer(manifest, config.media_type, config.image_ref)
        size = int(layer.get("size") or 0)
        if size > MAX_LAYER_BYTES:
            raise RegistryError(
                f"layer size {size} exceeds maximum allowed size of {MAX_LAYER_BYTES} bytes"
            )
        handle, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "w+b") as out:
                await client.fetch_blob(ref.repo, str(layer["digest"]), out, MAX_LAYER_BYTES)
            os.chmod(temporary, 0o600)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    try:
        _run(config.insecure_skip_tls_verify, download)
    except RegistryError as err:
        raise err.locate(where) from None
    return {}


async def _platform_image(
    client: RegistryClient, ref: Reference, index: Manifest, shown: str
) -> Manifest:
    for child in index.platform_manifests():
        if (child.os, child.architecture) == DEFAULT_PLATFORM:
            found = await client.get_manifest(ref.repo, child.digest)
            if found is None:
                raise RegistryError(f'artifact "{shown}": manifest {child.digest} not found')
            return found
    raise RegistryError(f'artifact "{shown}" is an index without a linux/amd64 image')


def _layer(manifest: Manifest, media_type: str | None, shown: str) -> dict[str, Any]:
    layers = [layer for layer in manifest.body.get("layers") or [] if isinstance(layer, dict)]
    if not layers:
        raise RegistryError(f'failed to find target layer: artifact "{shown}" has no layers')
    if media_type is None:
        return layers[0]
    for layer in layers:
        if layer.get("mediaType") == media_type:
            return layer
    raise RegistryError(
        f'failed to find target layer: no layer found with media type "{media_type}"'
    )


# --- oci-push ----------------------------------------------------------------------------------


def oci_push(ctx: StepContext, config: OCIPushConfig) -> dict[str, Any]:
    """Copy an artifact to a tag (another repository or registry, or the same one)."""
    where = ctx.describe()
    source = parse_reference(config.src_ref, "srcRef")
    target = parse_reference(config.dest_ref, "destRef")
    index_annotations: dict[str, str] = {}
    manifest_annotations: dict[str, str] = {}
    for key, value in config.annotations.items():
        if key.startswith("index:"):
            index_annotations[key.removeprefix("index:")] = value
        else:
            manifest_annotations[key.removeprefix("manifest:")] = value

    async def push(http: httpx.AsyncClient) -> str:
        copier = _Copier(
            ctx, _client(ctx, http, source), _client(ctx, http, target), source, target
        )
        manifest = await _manifest(copier.source, source, config.src_ref)
        if str(source.repo) != str(target.repo):
            size = await copier.size(manifest)
            if size > MAX_PUSH_BYTES:
                raise RegistryError(
                    f"compressed artifact size {size} exceeds maximum allowed size of "
                    f"{MAX_PUSH_BYTES} bytes"
                )
        if manifest.is_index:
            return await copier.index(manifest, target.reference, index_annotations,
                                      manifest_annotations)  # fmt: skip
        return await copier.image(manifest, target.reference, manifest_annotations)

    try:
        digest = _run(config.insecure_skip_tls_verify, push)
    except RegistryError as err:
        raise err.locate(where) from None
    registry = "index.docker.io" if target.repo.registry == "docker.io" else target.repo.registry
    return {
        "image": f"{registry}/{target.repo.name}:{target.reference}",
        "digest": digest,
        "tag": target.reference,
    }


@dataclass
class _Copier:
    ctx: StepContext
    source: RegistryClient
    target: RegistryClient
    source_ref: Reference
    target_ref: Reference

    async def size(self, manifest: Manifest) -> int:
        """Config plus layers, over every image of an index: from manifests, no blobs."""
        if manifest.is_index:
            total = 0
            for child in _children(manifest):
                found = await self.source.get_manifest(self.source_ref.repo, child["digest"])
                if found is None:
                    raise RegistryError(f"manifest {child['digest']} of the index not found")
                total += await self.size(found)
            return total
        return sum(int(blob.get("size") or 0) for blob in _blobs(manifest))

    async def image(self, manifest: Manifest, reference: str, annotations: dict[str, str]) -> str:
        for blob in _blobs(manifest):
            await self._blob(str(blob["digest"]), int(blob.get("size") or 0))
        data = _annotated(manifest, annotations)
        return await self.target.put_manifest(
            self.target_ref.repo, reference, manifest.media_type, data
        )

    async def index(
        self,
        manifest: Manifest,
        reference: str,
        index_annotations: dict[str, str],
        manifest_annotations: dict[str, str],
    ) -> str:
        body = json.loads(manifest.raw) if manifest.raw else dict(manifest.body)
        changed = False
        for entry in _children(manifest, body):
            child = await self.source.get_manifest(self.source_ref.repo, entry["digest"])
            if child is None:
                raise RegistryError(f"manifest {entry['digest']} of the index not found")
            if child.is_index:
                digest = await self.index(child, child.digest, {}, {})
                data_size = len(child.raw)
            else:
                data = _annotated(child, manifest_annotations)
                for blob in _blobs(child):
                    await self._blob(str(blob["digest"]), int(blob.get("size") or 0))
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                await self.target.put_manifest(self.target_ref.repo, digest, child.media_type, data)
                data_size = len(data)
            if digest != entry["digest"]:
                entry["digest"], entry["size"], changed = digest, data_size, True
        if index_annotations:
            body["annotations"] = {**(body.get("annotations") or {}), **index_annotations}
            changed = True
        data = _compact(body) if changed else manifest.raw
        return await self.target.put_manifest(
            self.target_ref.repo, reference, manifest.media_type, data
        )

    async def _blob(self, digest: str, size: int) -> None:
        target, source = self.target_ref.repo, self.source_ref.repo
        if await self.target.has_blob(target, digest):
            return
        # One registry: mount it (no bytes move), or upload if it will not.
        same_registry = (target.api_host, target.scheme) == (source.api_host, source.scheme)
        if same_registry and await self.target.mount_blob(target, digest, source.name):
            return
        with tempfile.TemporaryFile(dir=self.ctx.workspace.private) as spool:
            await self.source.fetch_blob(source, digest, spool, max(size, 0) or MAX_PUSH_BYTES)

            def body() -> AsyncIterator[bytes]:
                return _chunks(spool)

            await self.target.push_blob(target, digest, body)


async def _chunks(spool: Any) -> AsyncIterator[bytes]:
    spool.seek(0)
    while chunk := spool.read(1 << 20):
        yield chunk


def _children(manifest: Manifest, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    entries = (body if body is not None else manifest.body).get("manifests") or []
    return [
        e
        for e in entries
        if isinstance(e, dict) and e.get("mediaType") in INDEX_TYPES | MANIFEST_TYPES
    ]


def _blobs(manifest: Manifest) -> list[dict[str, Any]]:
    config = manifest.body.get("config")
    layers = manifest.body.get("layers") or []
    return [b for b in [config, *layers] if isinstance(b, dict) and b.get("digest")]


def _annotated(manifest: Manifest, annotations: dict[str, str]) -> bytes:
    """The manifest as served, or with ``annotations`` merged into its own."""
    if not annotations:
        return manifest.raw
    body = json.loads(manifest.raw) if manifest.raw else dict(manifest.body)
    body["annotations"] = {**(body.get("annotations") or {}), **annotations}
    return _compact(body)


def _compact(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
