"""The webhook receiver: a push somewhere becomes a ``refresh`` of the Warehouses that watch it.

A small asyncio HTTP server (``freightline webhooks --port N``, or inside the
worker when ``FREIGHTLINE_WEBHOOK_PORT`` is set). Every route names the
project; a request refreshes every Warehouse of that project with a
subscription to the pushed repository (URLs compared in Kargo's normal form)::

    POST /webhooks/<project>/registry   a distribution registry's notifications
                                        (``Authorization: Bearer <secret>``, set in the
                                        registry's ``notifications.endpoints[].headers``)
    POST /webhooks/<project>/github     GitHub ``push`` events (and ``ping``), signed:
                                        ``X-Hub-Signature-256: sha256=<HMAC-SHA256(secret, body)>``
    POST /webhooks/<project>/generic    ``{"repoURL": "..."}`` or ``{"repoURLs": [...]}`` with
                                        ``X-Freightline-Token: <secret>`` (or the Bearer header)
    GET  /healthz

The secret is the worker's ``FREIGHTLINE_WEBHOOK_SECRET``
(``FREIGHTLINE_GITHUB_WEBHOOK_SECRET`` overrides it for GitHub). Without a
secret every request is refused. A forged, unsigned or unauthenticated
request gets ``401`` and signals nothing; the answer to an accepted request
lists the Warehouses refreshed: ``{"refreshed": ["images"]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from freightline.freight import normalize_chart_url, normalize_git_url, normalize_image_url
from freightline.logging import get_logger
from freightline.mirrors import originals_of
from freightline.resources import ProjectResources, RepoSubscription
from freightline.settings import WEBHOOK_PORT_ENV as WEBHOOK_PORT_ENV
from freightline.settings import WEBHOOK_SECRET_ENV as WEBHOOK_SECRET_ENV
from freightline.temporal import REFRESH_SIGNAL, warehouse_workflow_id

__all__ = [
    "WEBHOOK_PORT_ENV",
    "WEBHOOK_SECRET_ENV",
    "WebhookServer",
    "github_signature",
    "matching_warehouses",
    "registry_repositories",
]

TOKEN_HEADER = "x-freightline-token"  # noqa: S105 - a header name
MAX_BODY = 1 << 20
HEADER_TIMEOUT = 10.0

log = get_logger("freightline.webhooks")


# --- what a push names ------------------------------------------------------------------------


def registry_repositories(body: Any, mirrors: Mapping[str, str] | None = None) -> set[str]:
    """``host/repository`` of each manifest push in a distribution notification envelope.

    A push to a registry mirror (``mirrors``, see ``freightline.mirrors``) also
    names the repository of the registry it mirrors.
    """
    mirrors = mirrors or {}
    repositories = set()
    for event in body.get("events", []) if isinstance(body, dict) else []:
        if not isinstance(event, dict) or event.get("action") != "push":
            continue
        target = event.get("target") or {}
        media_type = str(target.get("mediaType", ""))
        # Blob pushes come first; only a manifest (or index) push makes a new version.
        if not target.get("tag") and "manifest" not in media_type and "index" not in media_type:
            continue
        host = (event.get("request") or {}).get("host") or urlsplit(str(target.get("url"))).netloc
        if host and target.get("repository"):
            for registry in [host, *originals_of(host, mirrors)]:
                repositories.add(f"{registry}/{target['repository']}")
    return repositories


def github_repositories(body: Any) -> set[str]:
    """The URLs a GitHub push event gives its repository."""
    repository = body.get("repository") if isinstance(body, dict) else None
    if not isinstance(repository, dict):
        return set()
    keys = ("clone_url", "html_url", "ssh_url", "git_url", "url")
    return {str(repository[k]) for k in keys if isinstance(repository.get(k), str)}


def generic_repositories(body: Any) -> set[str]:
    """``{"repoURL": ...}`` or ``{"repoURLs": [...]}``."""
    if not isinstance(body, dict):
        return set()
    urls = [body.get("repoURL"), *(body.get("repoURLs") or [])]
    return {u for u in urls if isinstance(u, str) and u}


def _forms(url: str) -> set[str]:
    return {normalize_image_url(url), normalize_git_url(url), normalize_chart_url(url)}


def _subscribed(subscription: RepoSubscription) -> str:
    if subscription.image is not None:
        return normalize_image_url(subscription.image.repo_url)
    if subscription.git is not None:
        return normalize_git_url(subscription.git.repo_url)
    assert subscription.chart is not None
    chart = subscription.chart
    url = chart.repo_url
    if url.startswith("oci://") and chart.name:
        url = f"{url.rstrip('/')}/{chart.name}"
    return normalize_chart_url(url)


def matching_warehouses(resources: ProjectResources, repo_urls: Iterable[str]) -> list[str]:
    """The project's Warehouses with a subscription to any of ``repo_urls``, sorted."""
    wanted = set().union(*(_forms(u) for u in repo_urls))
    return sorted(
        name
        for name, warehouse in resources.warehouses.items()
        if any(_subscribed(s) in wanted for s in warehouse.spec.subscriptions)
    )


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WebhookServer:
    """Serves the webhook routes on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        client: Client,
        *,
        secret: str = "",
        github_secret: str = "",
        mirrors: Mapping[str, str] | None = None,
        host: str = "0.0.0.0",  # noqa: S104 - webhooks come from other machines
        port: int = 0,
    ) -> None:
        self.client = client
        self.secret = secret
        self.github_secret = github_secret or secret
        self.mirrors = dict(mirrors or {})
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> WebhookServer:
        if not self.secret:
            log.warning(f"webhooks: {WEBHOOK_SECRET_ENV} is not set; every request is refused")
        self._server = await asyncio.start_server(self._connection, self.host, self._port)
        log.info("webhooks listening", host=self.host, port=self.port)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> WebhookServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    # -- HTTP --

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await asyncio.wait_for(_read_request(reader), HEADER_TIMEOUT)
                status, answer = await self.handle(request)
            except _HttpError as err:
                status, answer = err.status, {"error": err.message}
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            data = json.dumps(answer).encode()
            writer.write(
                f"HTTP/1.1 {status.value} {status.phrase}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def handle(self, request: _Request) -> tuple[HTTPStatus, dict[str, Any]]:
        """Route one request; raises _HttpError for refusals."""
        parts = [unquote(p) for p in urlsplit(request.path).path.strip("/").split("/")]
        if request.method == "GET" and parts == ["healthz"]:
            return HTTPStatus.OK, {"status": "ok"}
        if len(parts) != 3 or parts[0] != "webhooks":
            raise _HttpError(HTTPStatus.NOT_FOUND, "no such route: POST /webhooks/<project>/<kind>")
        if request.method != "POST":
            raise _HttpError(HTTPStatus.METHOD_NOT_ALLOWED, "use POST")
        _, project, kind = parts
        match kind:
            case "registry":
                self._check_token(request)
                repos = registry_repositories(_json(request.body), self.mirrors)
            case "github":
                self._check_github(request)
                event = request.headers.get("x-github-event", "")
                if event == "ping":
                    return HTTPStatus.OK, {"refreshed": []}
                if event != "push":
                    return HTTPStatus.OK, {"refreshed": [], "ignored": event}
                repos = github_repositories(_json(request.body))
            case "generic":
                self._check_token(request)
                repos = generic_repositories(_json(request.body))
            case _:
                raise _HttpError(HTTPStatus.NOT_FOUND, f"unknown webhook kind {kind!r}")
        refreshed = await self.refresh(project, repos)
        log.info("webhook", project=project, kind=kind, repos=sorted(repos), refreshed=refreshed)
        if refreshed is None:
            if kind == "registry":
                # A registry retries a refused notification forever, holding back the
                # ones behind it: an unknown project is "nothing to refresh", not an error.
                return HTTPStatus.OK, {"refreshed": [], "error": f'no project "{project}"'}
            raise _HttpError(HTTPStatus.NOT_FOUND, f'no project "{project}"')
        return HTTPStatus.OK, {"refreshed": refreshed}

    def _check_token(self, request: _Request) -> None:
        given = request.headers.get(TOKEN_HEADER) or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        if not self.secret or not hmac.compare_digest(given.encode(), self.secret.encode()):
            raise _HttpError(HTTPStatus.UNAUTHORIZED, "missing or wrong webhook secret")

    def _check_github(self, request: _Request) -> None:
        given = request.headers.get("x-hub-signature-256", "")
        expected = github_signature(self.github_secret, request.body)
        if not self.github_secret or not hmac.compare_digest(given.encode(), expected.encode()):
            raise _HttpError(HTTPStatus.UNAUTHORIZED, "missing or wrong X-Hub-Signature-256")

    async def refresh(self, project: str, repo_urls: Iterable[str]) -> list[str] | None:
        """Signal ``refresh`` to the project's Warehouses that watch any of ``repo_urls``.

        The names of the Warehouses signalled, or None when there is no such project.
        """
        from freightline.client import project_resources

        try:
            resources = await project_resources(self.client, project)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        refreshed = []
        for name in matching_warehouses(resources, repo_urls):
            handle = self.client.get_workflow_handle(warehouse_workflow_id(project, name))
            try:
                await handle.signal(REFRESH_SIGNAL)
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
                continue
            refreshed.append(name)
        return refreshed


async def _read_request(reader: asyncio.StreamReader) -> _Request:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers too large") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, path, _version = lines[0].split(" ", 2)
    except ValueError:
        raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed request line") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise _HttpError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
    if length > MAX_BODY:
        raise _HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    return _Request(method=method.upper(), path=path, headers=headers, body=body)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise _HttpError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None


async def serve(
    client: Client,
    port: int,
    host: str = "0.0.0.0",  # noqa: S104
    *,
    secret: str,
    github_secret: str = "",
    mirrors: Mapping[str, str] | None = None,
) -> None:
    """Serve webhooks until cancelled (``freightline webhooks``)."""
    async with WebhookServer(
        client, secret=secret, github_secret=github_secret, mirrors=mirrors, host=host, port=port
    ) as server:
        await server.serve_forever()
