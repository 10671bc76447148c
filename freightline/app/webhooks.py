"""The webhook receiver: a push somewhere becomes a ``refresh`` of the Warehouses that watch it.

Routes on Freightline's one HTTP stack (``freightline.app.http``: Starlette on
uvicorn, with its body and time limits), served by ``freightline webhooks
--port N`` or inside the worker when ``FREIGHTLINE_WEBHOOK_PORT`` is set. Every
route names the project; a request refreshes every Warehouse of that project
with a subscription to the pushed repository (URLs compared in Kargo's normal
form)::

    POST /webhooks/<project>/registry   a distribution registry's notifications
                                        (``Authorization: Bearer <secret>``, set in the
                                        registry's ``notifications.endpoints[].headers``)
    POST /webhooks/<project>/github     GitHub ``push`` events (and ``ping``), signed:
                                        ``X-Hub-Signature-256: sha256=<HMAC-SHA256(secret, body)>``
    POST /webhooks/<project>/generic    ``{"repoURL": "..."}`` or ``{"repoURLs": [...]}`` with
                                        ``X-Freightline-Token: <secret>`` (or the Bearer header)
    GET  /healthz

The secret is handed in by the caller: the worker and the CLI read
``FREIGHTLINE_WEBHOOK_SECRET`` (``FREIGHTLINE_GITHUB_WEBHOOK_SECRET`` overrides
it for GitHub). Without a secret every request is refused. A forged, unsigned
or unauthenticated request gets ``401`` and signals nothing; the answer to an
accepted request lists the Warehouses refreshed: ``{"refreshed": ["images"]}``.
This endpoint faces the internet, which is why it is not a hand-written HTTP
parser any more: a body over 1 MiB gets ``413``, a client that takes over 10 s
to send its headers or its body is cut off (``freightline.app.http.Limits``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from freightline.app.http import HttpServer, Limits, build_app, serve
from freightline.contracts.names import REFRESH_SIGNAL, warehouse_workflow_id
from freightline.kargo.freight import normalize_chart_url, normalize_git_url, normalize_image_url
from freightline.kargo.mirrors import originals_of
from freightline.kargo.resources import ProjectResources, RepoSubscription
from freightline.logging import get_logger
from freightline.settings import WEBHOOK_SECRET_ENV

__all__ = [
    "WebhookReceiver",
    "WebhookServer",
    "github_signature",
    "matching_warehouses",
    "registry_repositories",
]

TOKEN_HEADER = "x-freightline-token"  # noqa: S105 - a header name

log = get_logger("freightline.app.webhooks")


# --- what a push names ------------------------------------------------------------------------


def registry_repositories(body: Any, mirrors: Mapping[str, str] | None = None) -> set[str]:
    """``host/repository`` of each manifest push in a distribution notification envelope.

    A push to a registry mirror (``mirrors``, see ``freightline.kargo.mirrors``) also
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


# --- the routes -------------------------------------------------------------------------------


class WebhookReceiver:
    """The webhook routes: check the sender, find the Warehouses, signal ``refresh``."""

    def __init__(
        self,
        client: Client,
        *,
        secret: str,
        github_secret: str | None = None,
        mirrors: Mapping[str, str] | None = None,
    ) -> None:
        self.mirrors = dict(mirrors or {})
        self.client = client
        self.secret = secret
        self.github_secret = github_secret or secret

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/webhooks/{project}/registry", self.registry, methods=["POST"]),
            Route("/webhooks/{project}/github", self.github, methods=["POST"]),
            Route("/webhooks/{project}/generic", self.generic, methods=["POST"]),
        ]

    async def registry(self, request: Request) -> Response:
        self._check_token(request)
        repos = registry_repositories(_json(await request.body()), self.mirrors)
        return await self._refresh(request, "registry", repos)

    async def github(self, request: Request) -> Response:
        body = await request.body()
        given = request.headers.get("x-hub-signature-256", "")
        expected = github_signature(self.github_secret, body)
        if not self.github_secret or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(HTTPStatus.UNAUTHORIZED, "missing or wrong X-Hub-Signature-256")
        event = request.headers.get("x-github-event", "")
        if event == "ping":
            return JSONResponse({"refreshed": []})
        if event != "push":
            return JSONResponse({"refreshed": [], "ignored": event})
        return await self._refresh(request, "github", github_repositories(_json(body)))

    async def generic(self, request: Request) -> Response:
        self._check_token(request)
        repos = generic_repositories(_json(await request.body()))
        return await self._refresh(request, "generic", repos)

    def _check_token(self, request: Request) -> None:
        given = request.headers.get(TOKEN_HEADER) or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        if not self.secret or not hmac.compare_digest(given.encode(), self.secret.encode()):
            raise HTTPException(HTTPStatus.UNAUTHORIZED, "missing or wrong webhook secret")

    async def _refresh(self, request: Request, kind: str, repos: set[str]) -> Response:
        project = request.path_params["project"]
        refreshed = await self.refresh(project, repos)
        log.info("webhook", project=project, kind=kind, repos=sorted(repos), refreshed=refreshed)
        if refreshed is None:
            if kind == "registry":
                # A registry retries a refused notification forever, holding back the
                # ones behind it: an unknown project is "nothing to refresh", not an error.
                return JSONResponse({"refreshed": [], "error": f'no project "{project}"'})
            raise HTTPException(HTTPStatus.NOT_FOUND, f'no project "{project}"')
        return JSONResponse({"refreshed": refreshed})

    async def refresh(self, project: str, repo_urls: Iterable[str]) -> list[str] | None:
        """Signal ``refresh`` to the project's Warehouses that watch any of ``repo_urls``.

        The names of the Warehouses signalled, or None when there is no such project.
        """
        from freightline.app.client import project_resources

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


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise HTTPException(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None


# --- the server -------------------------------------------------------------------------------


class WebhookServer:
    """Serves the webhook routes on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        client: Client,
        *,
        secret: str,
        github_secret: str | None = None,
        mirrors: Mapping[str, str] | None = None,
        host: str = "0.0.0.0",  # noqa: S104 - webhooks come from other machines
        port: int = 0,
        limits: Limits | None = None,
    ) -> None:
        self.receiver = WebhookReceiver(
            client, secret=secret, github_secret=github_secret, mirrors=mirrors
        )
        self.app = build_app(*self.receiver.routes)
        self.host = host
        self.limits = limits
        self._port = port
        self._stack = contextlib.AsyncExitStack()
        self._server: HttpServer | None = None

    @property
    def port(self) -> int:
        """The port bound (the one chosen, when asked for port 0)."""
        assert self._server is not None, "start() first"
        return self._server.port

    async def start(self) -> WebhookServer:
        if not self.receiver.secret:
            log.warning(f"webhooks: {WEBHOOK_SECRET_ENV} is not set; every request is refused")
        self._server = await self._stack.enter_async_context(
            serve(self.app, self.host, self._port, self.limits, name="webhooks")
        )
        return self

    async def close(self) -> None:
        self._server = None
        await self._stack.aclose()

    async def __aenter__(self) -> WebhookServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.wait()
