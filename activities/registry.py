"""Image discovery against OCI distribution registries, on httpx.

:class:`RegistryClient` speaks the distribution API: tag lists paged by
``Link``, manifests by tag or digest with an Accept list covering OCI and
Docker indexes and manifests, config blobs for build dates, and anonymous,
Basic and Bearer-token authentication. Credentials come from a provider the
worker hands in (``registry host -> (username, password) | None``) and never
leave this module.

:func:`discover_images` applies an :class:`ImageSelectionPolicy` and returns
up to ``discovery_limit`` images, newest first, each with its digest.

Requests one discovery makes (anonymous or with a cached token; P = pages of
the tag list, N = tags that pass the filters, L = images returned):

- SemVer, Lexical: P + L manifest GETs (plus one config GET per examined
  single-platform manifest when ``platform`` is set).
- Digest: 1 manifest GET, no tag list.
- NewestBuild, cold: P + N manifest GETs + one config GET per distinct
  single-platform manifest (an index without ``platform`` costs one manifest
  and one config GET per platform; with ``platform``, one of each).
- NewestBuild, warm (every digest in ``known_created``): P + N manifest GETs,
  nothing else. Manifest requests are GETs rather than HEADs because the body
  carries the annotations that :class:`DiscoveredImage` returns.

Authentication adds, per client and registry: Basic, one 401 before the
first request is retried with credentials; Bearer, one 401 and one token
request per scope, after which the cached token is sent up front until it
expires.

The ``oci-download`` and ``oci-push`` steps (``activities/oci_steps.py``) use the
same client to stream blobs into a file, upload them (mounting across
repositories of one registry where it can) and put manifests. Every response
is read up to a bound (:data:`MAX_RESPONSE_BYTES`, or the blob's own limit),
never whole whatever its size.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from activities import boundary
from freightline.errors import (
    AuthenticationError,
    ConfigError,
    RegistryError,
    RegistryUnavailableError,
)
from freightline.kargo.selection import (
    ImageSelectionPolicy,
    ImageSelectionStrategy,
    Platform,
    filter_tags,
    order_by_build_date,
    parse_created,
    select_tags,
)

__all__ = [
    "MANIFEST_ACCEPT",
    "CredentialProvider",
    "DiscoverImagesRequest",
    "DiscoveredImage",
    "ImageRepository",
    "Manifest",
    "RegistryActivities",
    "RegistryClient",
    "discover_images",
    "parse_repo_url",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
# distribution 2.8 answers 404 for OCI content unless the OCI types are accepted.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# A runaway Link chain (a registry pointing back at itself) must end.
MAX_TAG_PAGES = 10_000
# Bounded in-process memo of config summaries by manifest digest.
MAX_MEMO_ENTRIES = 50_000
# Tokens are refreshed this many seconds before they expire.
TOKEN_EXPIRY_MARGIN = 10.0
MAX_RESPONSE_BYTES = 16 << 20
"""The most a registry answer (a manifest, a tag page, a token, a config) may hold in memory;
blobs stream into files under their own limit."""

Body = Callable[[], bytes | AsyncIterator[bytes]]
"""Makes a request's body (again, when a 401 makes the client send it a second time)."""

CredentialProvider = Callable[[str], tuple[str, str] | None]
"""Registry host (as in the image reference, e.g. ``docker.io``) -> (username, password)."""

_T = TypeVar("_T")
_NAME_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


# --- references -------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRepository:
    """Where an image repository lives and how to reach its API."""

    registry: str  # as written in image references: "docker.io", "127.0.0.1:5000"
    name: str  # "library/nginx"
    scheme: str  # "https", or "http" for loopback registries
    api_host: str  # "registry-1.docker.io" for Docker Hub, else the registry

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.api_host}/v2/{self.name}"

    def __str__(self) -> str:
        return f"{self.registry}/{self.name}"


def parse_repo_url(repo_url: str, mirrors: Mapping[str, str] | None = None) -> ImageRepository:
    """Parse a Kargo image ``repoURL`` (``[registry/]name``, no tag or digest).

    A first component with a ``.`` or ``:``, or ``localhost``, is a registry;
    otherwise the image is on Docker Hub (``nginx`` is
    ``docker.io/library/nginx``). Loopback registries are spoken to over
    plain HTTP, others over HTTPS; an explicit ``http://`` or ``https://``
    prefix overrides that. A registry in ``mirrors`` is reached at its
    mirror instead. Raises ConfigError.
    """
    text = repo_url.strip()
    scheme = ""
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            scheme, text = prefix[:-3], text[len(prefix) :]
    text = text.rstrip("/")
    if "@" in text or "://" in text:
        raise ConfigError(f"invalid image repoURL {repo_url!r}: name a repository only")
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, text
    if ":" in path:
        raise ConfigError(
            f"invalid image repoURL {repo_url!r}: name a repository without a tag or digest"
        )
    components = path.split("/")
    if not path or not all(_NAME_COMPONENT.fullmatch(c) for c in components):
        raise ConfigError(
            f"invalid image repoURL {repo_url!r}: {path!r} is not a repository name "
            "(lowercase letters, digits and separators)"
        )
    api_host = registry
    if registry in (DOCKER_HUB, "index.docker.io", "registry-1.docker.io"):
        registry, api_host = DOCKER_HUB, DOCKER_HUB_API
        if len(components) == 1:
            path = f"library/{path}"
    api_host = (mirrors or {}).get(registry, api_host)
    return ImageRepository(
        registry=registry,
        name=path,
        scheme=scheme or ("http" if _is_loopback(api_host) else "https"),
        api_host=api_host,
    )


def _is_loopback(registry: str) -> bool:
    host = registry
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- results ------------------------------------------------------------------------


class DiscoveredImage(BaseModel):
    """One discovered image: Kargo's ``DiscoveredImageReference``.

    ``digest`` is the digest the tag points at (an index's own digest for a
    multi-platform image, as Kargo records it). ``created`` is the build date
    when discovery read it or already knew it (always for NewestBuild).
    """

    model_config = ConfigDict(frozen=True, validate_by_name=True, serialize_by_alias=True)

    tag: str
    digest: str
    created: datetime | None = Field(None, alias="createdAt")
    annotations: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class Descriptor:
    """An index entry: a manifest for one platform."""

    digest: str
    media_type: str
    os: str
    architecture: str
    variant: str


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as the registry served it."""

    digest: str
    media_type: str
    body: Mapping[str, Any]
    raw: bytes = b""
    """The bytes as served (their digest is ``digest``): what a copy pushes unchanged."""

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def annotations(self) -> dict[str, str]:
        raw = self.body.get("annotations") or {}
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    @property
    def config_digest(self) -> str:
        config = self.body.get("config")
        digest = config.get("digest") if isinstance(config, dict) else None
        if not isinstance(digest, str):
            raise RegistryError(f"manifest {self.digest} names no config blob")
        return digest

    def platform_manifests(self) -> list[Descriptor]:
        """Index entries that are images (attestations and unknown platforms skipped)."""
        entries = self.body.get("manifests")
        result = []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            platform = entry.get("platform")
            if not isinstance(platform, dict):
                continue
            os, arch = str(platform.get("os", "")), str(platform.get("architecture", ""))
            if os in ("", "unknown") or arch in ("", "unknown"):
                continue
            result.append(
                Descriptor(
                    digest=str(entry.get("digest", "")),
                    media_type=str(entry.get("mediaType", "")),
                    os=os,
                    architecture=arch,
                    variant=str(platform.get("variant", "")),
                )
            )
        return result


@dataclass(frozen=True)
class _ConfigSummary:
    os: str
    architecture: str
    variant: str
    created: datetime | None


@dataclass
class _Token:
    value: str
    expires_at: float


# --- the client -----------------------------------------------------------------------


class RegistryClient:
    """An async OCI distribution client.

    Holds an ``httpx.AsyncClient`` (its lifetime is the caller's) and a
    credential provider. Caches, for its own lifetime: bearer tokens per
    registry and scope, which registries want Basic credentials up front, and
    config summaries by (immutable) manifest digest.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: CredentialProvider | None = None,
        *,
        max_concurrency: int = 8,
        mirrors: Mapping[str, str] | None = None,
    ) -> None:
        self.http = http
        self.mirrors = dict(mirrors or {})
        self._credentials = credentials or (lambda _host: None)
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._repo_scopes: dict[tuple[str, str], str] = {}
        self._token_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._basic_registries: set[str] = set()
        self._configs: dict[str, _ConfigSummary] = {}
        self._config_locks: dict[str, asyncio.Lock] = {}
        # cacheByTag subscriptions: the manifest each tag pointed at when first read.
        self._by_tag: dict[tuple[str, str], Manifest] = {}

    # -- API calls --

    async def list_tags(self, repo: ImageRepository) -> list[str]:
        """Every tag of ``repo``, following ``Link: <...>; rel="next"`` pages.

        The order is the registry's: sort before use. A missing repository
        raises RegistryError; ``"tags": null`` (no tags) is an empty list.
        """
        url = httpx.URL(f"{repo.base_url}/tags/list")
        seen: set[str] = set()
        tags: list[str] = []
        for _ in range(MAX_TAG_PAGES):
            seen.add(str(url))
            response = await self._request("GET", repo, url, "listing tags")
            if response.status_code == 404:
                raise RegistryError(f"repository {repo} not found: {_error_detail(response)}")
            body = _json(response, repo, "listing tags")
            page = body.get("tags") if isinstance(body, dict) else None
            tags.extend(str(t) for t in page or [])
            next_url = _next_link(response)
            if next_url is None or str(next_url) in seen:
                return tags
            # Credentials go to the registry only, never to a host a Link names.
            if (next_url.scheme, next_url.host, next_url.port) != (url.scheme, url.host, url.port):
                raise RegistryError(
                    f"repository {repo}: the tag list links to another host ({next_url.host})"
                )
            url = next_url
        raise RegistryError(f"repository {repo}: more than {MAX_TAG_PAGES} pages of tags")

    async def get_manifest(self, repo: ImageRepository, reference: str) -> Manifest | None:
        """The manifest or index at ``reference`` (tag or digest); None if absent."""
        response = await self._request(
            "GET",
            repo,
            httpx.URL(f"{repo.base_url}/manifests/{reference}"),
            f"getting manifest {reference!r}",
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code == 404:
            return None
        body = _json(response, repo, f"getting manifest {reference!r}")
        if not isinstance(body, dict):
            raise RegistryError(f"repository {repo}: manifest {reference!r} is not a JSON object")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            media_type = str(body.get("mediaType") or "")
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            if "manifests" in body:
                media_type = OCI_INDEX
            elif "config" in body:
                media_type = OCI_MANIFEST
            else:
                raise RegistryError(
                    f"repository {repo}: manifest {reference!r} has unsupported type "
                    f"{media_type or 'unknown'!r}"
                )
        digest = response.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(response.content).hexdigest()
        )
        return Manifest(digest=digest, media_type=media_type, body=body, raw=response.content)

    async def head_manifest(self, repo: ImageRepository, reference: str) -> str | None:
        """The digest ``reference`` points at, from a HEAD; None if absent."""
        response = await self._request(
            "HEAD",
            repo,
            httpx.URL(f"{repo.base_url}/manifests/{reference}"),
            f"resolving {reference!r}",
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return str(digest)
        manifest = await self.get_manifest(repo, reference)
        return manifest.digest if manifest else None

    async def get_blob_json(self, repo: ImageRepository, digest: str) -> Any:
        """A JSON blob (an image config) by digest."""
        response = await self._request(
            "GET", repo, httpx.URL(f"{repo.base_url}/blobs/{digest}"), f"getting blob {digest}"
        )
        if response.status_code == 404:
            raise RegistryError(f"repository {repo}: blob {digest} not found")
        return _json(response, repo, f"getting blob {digest}")

    async def fetch_blob(
        self, repo: ImageRepository, digest: str, into: BinaryIO, limit: int
    ) -> int:
        """Stream the blob ``digest`` into ``into`` (at most ``limit`` bytes), checking that its
        content has that digest; returns its size."""
        response = await self._request(
            "GET",
            repo,
            httpx.URL(f"{repo.base_url}/blobs/{digest}"),
            f"getting blob {digest}",
            into=into,
            limit=limit,
        )
        if response.status_code == 404:
            raise RegistryError(f"repository {repo}: blob {digest} not found")
        into.flush()
        into.seek(0)
        algorithm, _, expected = digest.partition(":")
        if algorithm == "sha256":
            hasher = hashlib.sha256()
            while chunk := into.read(1 << 20):
                hasher.update(chunk)
            if hasher.hexdigest() != expected:
                raise RegistryError(f"repository {repo}: blob {digest} arrived with other content")
        return into.seek(0, 2)

    async def has_blob(self, repo: ImageRepository, digest: str) -> bool:
        response = await self._request(
            "HEAD", repo, httpx.URL(f"{repo.base_url}/blobs/{digest}"), f"checking blob {digest}"
        )
        return response.status_code != 404

    async def mount_blob(self, repo: ImageRepository, digest: str, source: str) -> bool:
        """Ask the registry to mount blob ``digest`` from its repository ``source`` (no bytes
        move); False when it would not (the caller uploads it then)."""
        uploads = httpx.URL(f"{repo.base_url}/blobs/uploads/").copy_merge_params(
            {"mount": digest, "from": source}
        )
        started = await self._request("POST", repo, uploads, f"mounting blob {digest}", push=True)
        return started.status_code == 201

    async def push_blob(self, repo: ImageRepository, digest: str, body: Body) -> None:
        """Upload a blob in one request (after the POST that opens the upload)."""
        uploads = httpx.URL(f"{repo.base_url}/blobs/uploads/")
        started = await self._request(
            "POST", repo, uploads, f"starting the upload of blob {digest}", push=True
        )
        location = started.headers.get("Location")
        if started.status_code != 202 or not location:
            raise RegistryError(
                f"registry {repo.registry} answered {started.status_code} to an upload of {repo}"
            )
        # The Location carries the upload's state in its query: extend it, never replace it.
        target = started.url.join(location).copy_merge_params({"digest": digest})
        if (target.scheme, target.host, target.port) != (
            uploads.scheme,
            uploads.host,
            uploads.port,
        ):
            raise RegistryError(f"repository {repo}: the upload location names another host")
        done = await self._request(
            "PUT",
            repo,
            target,
            f"uploading blob {digest}",
            headers={"Content-Type": "application/octet-stream"},
            body=body,
            push=True,
        )
        if done.status_code not in (201, 204):
            raise RegistryError(
                f"registry {repo.registry} answered {done.status_code} to the upload of {digest}"
            )

    async def put_manifest(
        self, repo: ImageRepository, reference: str, media_type: str, data: bytes
    ) -> str:
        """Put a manifest or index under a tag or digest; returns its digest."""
        response = await self._request(
            "PUT",
            repo,
            httpx.URL(f"{repo.base_url}/manifests/{reference}"),
            f"putting manifest {reference!r}",
            headers={"Content-Type": media_type},
            body=lambda: data,
            push=True,
        )
        if response.status_code == 404:
            raise RegistryError(f"repository {repo}: the registry refused manifest {reference!r}")
        return "sha256:" + hashlib.sha256(data).hexdigest()

    # -- image metadata --

    async def config_of(
        self, repo: ImageRepository, digest: str, manifest: Manifest | None = None
    ) -> _ConfigSummary:
        """Platform and build date of the single-platform manifest ``digest``.

        Memoised by digest (content never changes), and fetched once even
        when several tags ask for it at the same time. ``manifest`` spares
        the manifest GET when the caller already has it.
        """
        known = self._configs.get(digest)
        if known is not None:
            return known
        lock = self._config_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            known = self._configs.get(digest)
            if known is not None:
                return known
            if manifest is None:
                manifest = await self.get_manifest(repo, digest)
                if manifest is None:
                    raise RegistryError(f"repository {repo}: manifest {digest} not found")
            if manifest.is_index:
                raise RegistryError(f"repository {repo}: {digest} is an index inside an index")
            config = await self.get_blob_json(repo, manifest.config_digest)
            if not isinstance(config, dict):
                config = {}
            summary = _ConfigSummary(
                os=str(config.get("os", "")),
                architecture=str(config.get("architecture", "")),
                variant=str(config.get("variant", "")),
                created=parse_created(str(config.get("created") or "")),
            )
            if len(self._configs) >= MAX_MEMO_ENTRIES:
                self._configs.pop(next(iter(self._configs)))
            self._configs[digest] = summary
        self._config_locks.pop(digest, None)
        return summary

    async def describe(
        self,
        repo: ImageRepository,
        tag: str,
        *,
        platform: Platform | None,
        want_created: bool,
        known_created: Mapping[str, datetime | None],
        cache_by_tag: bool = False,
    ) -> DiscoveredImage | None:
        """Resolve ``tag`` to a DiscoveredImage; None if absent or not for ``platform``.

        A digest in ``known_created`` is trusted to have matched ``platform``
        before, and costs nothing beyond the manifest GET. With ``cache_by_tag``
        (Kargo's ``cacheByTag``) a tag read before costs no request at all: its
        manifest is taken as it was (with its configs memoised by digest anyway).
        """
        key = (str(repo), tag)
        manifest = self._by_tag.get(key) if cache_by_tag else None
        if manifest is None:
            manifest = await self.get_manifest(repo, tag)
            if manifest is None:
                return None
            if cache_by_tag:
                if len(self._by_tag) >= MAX_MEMO_ENTRIES:
                    self._by_tag.pop(next(iter(self._by_tag)))
                self._by_tag[key] = manifest
        known = manifest.digest in known_created
        created = known_created.get(manifest.digest)
        if manifest.is_index:
            children = manifest.platform_manifests()
            if not children:
                raise RegistryError(f"image {repo}:{tag} is an index without image manifests")
            if platform is not None:
                # Several entries can fit "linux/arm" (v6, v7): take the first, as docker does.
                children = [
                    c for c in children if platform.matches(c.os, c.architecture, c.variant)
                ][:1]
                if not children:
                    return None
            if want_created and not known:
                configs = await self.gather(self.config_of(repo, c.digest) for c in children)
                created = max((c.created for c in configs if c.created), default=None)
        elif (platform is not None or want_created) and not known:
            config = await self.config_of(repo, manifest.digest, manifest)
            if platform is not None and not platform.matches(
                config.os, config.architecture, config.variant
            ):
                return None
            created = config.created
        return DiscoveredImage(
            tag=tag, digest=manifest.digest, created=created, annotations=manifest.annotations
        )

    @staticmethod
    async def gather(calls: Iterable[Awaitable[_T]]) -> list[_T]:
        """Run ``calls`` concurrently, results in order; the first error cancels the rest.

        Concurrency towards the registry is bounded per request in ``_send``,
        not here, so nested gathers (an index's platforms) cannot deadlock.
        """

        async def run(call: Awaitable[_T]) -> _T:
            return await call

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(call)) for call in calls]
        return [task.result() for task in tasks]

    # -- HTTP and authentication --

    async def _request(
        self,
        method: str,
        repo: ImageRepository,
        url: httpx.URL,
        what: str,
        headers: Mapping[str, str] | None = None,
        *,
        body: Body | None = None,
        into: BinaryIO | None = None,
        limit: int = MAX_RESPONSE_BYTES,
        push: bool = False,
    ) -> httpx.Response:
        """Send with whatever auth is known; answer one 401 challenge; map errors.

        Returns 2xx and 404 responses; raises for everything else. A 2xx body goes to
        ``into`` when given (at most ``limit`` bytes), else into the response. ``push``
        asks a token for push as well as pull.
        """
        base_headers = dict(headers or {})
        auth = self._known_authorization(repo, push=push)
        response = await self._send(
            method, url, {**base_headers, **auth}, repo, what, body=body, into=into, limit=limit
        )
        if response.status_code == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            auth = await self._answer_challenge(repo, challenge, auth, what, push=push)
            response = await self._send(
                method, url, {**base_headers, **auth}, repo, what, body=body, into=into, limit=limit
            )
            if response.status_code == 401:
                raise AuthenticationError(
                    f"registry {repo.registry} refused the credentials for {repo} while {what}"
                )
        if response.status_code == 403:
            raise AuthenticationError(
                f"registry {repo.registry} denied access to {repo} while {what}: "
                f"{_error_detail(response)}"
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise RegistryUnavailableError(
                f"registry {repo.registry} answered {response.status_code} for {repo} "
                f"while {what}: {_error_detail(response)}"
            )
        if response.status_code >= 400 and response.status_code != 404:
            raise RegistryError(
                f"registry {repo.registry} answered {response.status_code} for {repo} "
                f"while {what}: {_error_detail(response)}"
            )
        return response

    async def _send(
        self,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        repo: ImageRepository,
        what: str,
        *,
        body: Body | None = None,
        into: BinaryIO | None = None,
        limit: int = MAX_RESPONSE_BYTES,
    ) -> httpx.Response:
        try:
            async with self._semaphore:
                request = self.http.build_request(
                    method, url, headers=headers, content=body() if body else None
                )
                response = await self.http.send(request, stream=True)
                try:
                    if into is not None and 200 <= response.status_code < 300:
                        into.seek(0)
                        into.truncate()
                        await _read_bounded(response, limit, repo, what, into)
                        response._content = b""  # the body went to ``into``
                    else:
                        response._content = await _read_bounded(
                            response, MAX_RESPONSE_BYTES, repo, what
                        )
                finally:
                    await response.aclose()
                return response
        except httpx.TimeoutException as err:
            raise RegistryUnavailableError(
                f"registry {repo.registry} timed out while {what} for {repo}"
            ) from err
        except httpx.TransportError as err:
            raise RegistryUnavailableError(
                f"registry {repo.registry} unreachable while {what} for {repo}: {err}"
            ) from err

    def _known_authorization(self, repo: ImageRepository, *, push: bool = False) -> dict[str, str]:
        scope = self._repo_scopes.get((repo.registry, repo.name))
        if push and scope is not None and "push" not in scope:
            scope = None  # a pull token: the registry's challenge asks for the push scope
        if scope is not None:
            token = self._tokens.get((repo.registry, scope))
            if token is not None and token.expires_at > time.monotonic():
                return {"Authorization": f"Bearer {token.value}"}
        if repo.registry in self._basic_registries:
            return self._basic_header(repo, "authenticating")
        return {}

    def _basic_header(self, repo: ImageRepository, what: str) -> dict[str, str]:
        credentials = self._credentials(repo.registry)
        if credentials is None:
            raise AuthenticationError(
                f"registry {repo.registry} requires credentials for {repo} while {what}, "
                "and the worker has none configured for it"
            )
        user, password = credentials
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {encoded}"}

    async def _answer_challenge(
        self,
        repo: ImageRepository,
        challenge: str,
        used: Mapping[str, str],
        what: str,
        *,
        push: bool = False,
    ) -> dict[str, str]:
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if used.get("Authorization", "").startswith("Basic "):
                raise AuthenticationError(
                    f"registry {repo.registry} refused the credentials for {repo} while {what}"
                )
            header = self._basic_header(repo, what)
            self._basic_registries.add(repo.registry)
            return header
        if scheme == "bearer" and params.get("realm"):
            scope = (
                params.get("scope") or f"repository:{repo.name}:{'pull,push' if push else 'pull'}"
            )
            key = (repo.registry, scope)
            lock = self._token_locks.setdefault(key, asyncio.Lock())
            async with lock:
                token = self._tokens.get(key)
                fresh = token is not None and token.expires_at > time.monotonic()
                # Another task may have fetched a token while this one waited.
                if not (fresh and token and f"Bearer {token.value}" != used.get("Authorization")):
                    token = await self._fetch_token(repo, params["realm"], params, scope)
                    self._tokens[key] = token
                self._repo_scopes[(repo.registry, repo.name)] = scope
            return {"Authorization": f"Bearer {token.value}"}
        raise AuthenticationError(
            f"registry {repo.registry} asked for unsupported authentication "
            f"{challenge or '(no WWW-Authenticate header)'!r} while {what} for {repo}"
        )

    async def _fetch_token(
        self, repo: ImageRepository, realm: str, params: Mapping[str, str], scope: str
    ) -> _Token:
        # A challenge may name several scopes (a push that mounts from another repository):
        # the token service takes each as a parameter of its own.
        query: dict[str, str | list[str]] = {"scope": scope.split()}
        if params.get("service"):
            query["service"] = params["service"]
        headers: dict[str, str] = {}
        if self._credentials(repo.registry) is not None:
            headers = self._basic_header(repo, "fetching a token")
        what = f"fetching a token from {realm}"
        try:
            # Merge, not replace: a realm may carry a query of its own.
            url = httpx.URL(realm).copy_merge_params(query)
            response = await self.http.get(url, headers=headers)
        except httpx.TimeoutException as err:
            raise RegistryUnavailableError(f"token service timed out while {what}") from err
        except httpx.TransportError as err:
            raise RegistryUnavailableError(
                f"token service unreachable while {what}: {err}"
            ) from err
        if response.status_code in (401, 403):
            raise AuthenticationError(
                f"token service for registry {repo.registry} refused "
                f"{'the credentials' if headers else 'anonymous access'} for scope {scope!r}"
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise RegistryUnavailableError(
                f"token service answered {response.status_code} while {what}"
            )
        if response.status_code >= 400:
            raise AuthenticationError(
                f"token service answered {response.status_code} while {what}: "
                f"{_error_detail(response)}"
            )
        body = _json(response, repo, what)
        value = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise AuthenticationError(f"token service gave no token while {what}")
        expires_in = body.get("expires_in")
        # The distribution spec's default lifetime is 60 seconds.
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 60.0
        return _Token(value, time.monotonic() + max(lifetime - TOKEN_EXPIRY_MARGIN, 1.0))


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m[1].lower(): (m[2] if m[2] is not None else m[3]).replace('\\"', '"')
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


async def _read_bounded(
    response: httpx.Response,
    limit: int,
    repo: ImageRepository,
    what: str,
    into: BinaryIO | None = None,
) -> bytes:
    """The body (or its copy into ``into``), refused beyond ``limit`` bytes."""
    data = bytearray()
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise RegistryError(
                f"registry {repo.registry} sent more than {limit} bytes for {repo} while {what}"
            )
        if into is not None:
            into.write(chunk)
        else:
            data += chunk
    return bytes(data)


def _next_link(response: httpx.Response) -> httpx.URL | None:
    for header in response.headers.get_list("Link"):
        match = _LINK_NEXT.search(header)
        if match:
            return response.url.join(match[1])
    return None


def _json(response: httpx.Response, repo: ImageRepository, what: str) -> Any:
    try:
        return response.json()
    except ValueError as err:
        raise RegistryError(f"repository {repo}: invalid JSON while {what}: {err}") from None


def _error_detail(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors")
        if errors:
            return "; ".join(str(e.get("message") or e.get("code")) for e in errors)
    except (ValueError, AttributeError):
        pass
    return response.reason_phrase or f"HTTP {response.status_code}"


# --- discovery --------------------------------------------------------------------------


async def discover_images(
    client: RegistryClient,
    repo_url: str,
    policy: ImageSelectionPolicy,
    known_created: Mapping[str, str] | None = None,
) -> list[DiscoveredImage]:
    """Up to ``policy.discovery_limit`` images of ``repo_url``, newest first.

    Every returned image has the digest its tag points at now. Tags whose
    image does not fit ``policy.platform`` are skipped. ``known_created``
    (manifest digest -> RFC 3339 build date, e.g. from earlier discoveries
    of the same subscription) spares NewestBuild every config fetch for a
    digest it already knows; see the module docstring for request counts.
    """
    repo = parse_repo_url(repo_url, client.mirrors)
    platform = policy.platform_constraint
    known = {digest: parse_created(created) for digest, created in (known_created or {}).items()}

    if policy.strategy is ImageSelectionStrategy.DIGEST:
        # A Digest subscription follows a mutable tag: never cached by tag, as in Kargo.
        image = await client.describe(
            repo, policy.constraint, platform=platform, want_created=False, known_created=known
        )
        return [image] if image is not None else []

    tags = await client.list_tags(repo)

    if policy.strategy is ImageSelectionStrategy.NEWEST_BUILD:
        candidates = await client.gather(
            client.describe(
                repo,
                tag,
                platform=platform,
                want_created=True,
                known_created=known,
                cache_by_tag=policy.cache_by_tag,
            )
            for tag in filter_tags(policy, tags)
        )
        by_tag = {image.tag: image for image in candidates if image is not None}
        ordered = order_by_build_date({tag: image.created for tag, image in by_tag.items()})
        return [by_tag[tag] for tag in ordered[: policy.discovery_limit]]

    return await _first_images(
        client,
        repo,
        select_tags(policy, tags),
        policy.discovery_limit,
        platform,
        known,
        policy.cache_by_tag,
    )


async def _first_images(
    client: RegistryClient,
    repo: ImageRepository,
    ordered_tags: Sequence[str],
    limit: int,
    platform: Platform | None,
    known: Mapping[str, datetime | None],
    cache_by_tag: bool = False,
) -> list[DiscoveredImage]:
    """Resolve tags in order until ``limit`` images fit, a window at a time."""
    found: list[DiscoveredImage] = []
    position = 0
    while len(found) < limit and position < len(ordered_tags):
        window = ordered_tags[position : position + limit - len(found)]
        position += len(window)
        images = await client.gather(
            client.describe(
                repo,
                tag,
                platform=platform,
                want_created=False,
                known_created=known,
                cache_by_tag=cache_by_tag,
            )
            for tag in window
        )
        found.extend(image for image in images if image is not None)
    return found


# --- the Temporal activity ----------------------------------------------------------------


class DiscoverImagesRequest(BaseModel):
    """Input of the ``discover_images`` activity: references only, no secrets."""

    model_config = ConfigDict(frozen=True, validate_by_name=True, serialize_by_alias=True)

    repo_url: str = Field(alias="repoURL")
    policy: ImageSelectionPolicy
    known_created: dict[str, str] = Field(default_factory=dict, alias="knownCreated")


class RegistryActivities:
    """Registry activities, holding the worker's client and credential provider."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    @boundary.defn(name="discover_images")
    async def discover_images(self, request: DiscoverImagesRequest) -> list[DiscoveredImage]:
        """Discover images for one subscription (see :func:`discover_images`)."""
        return await discover_images(
            self.client, request.repo_url, request.policy, request.known_created
        )
