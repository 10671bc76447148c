"""The webhook receiver: a push somewhere becomes a ``refresh`` of the Warehouses that watch it.

Routes on Freightline's one HTTP stack (``freightline.app.http``: Starlette on
uvicorn, with its body and time limits), served by ``freightline webhooks
--port N`` or inside the worker when ``FREIGHTLINE_WEBHOOK_PORT`` is set.

**Kargo's receivers** (``ProjectConfig.spec.webhookReceivers``, see
``freightline.kargo.webhooks`` and ``docs/webhooks.md``) live at Kargo's URL
paths, ``POST /<type>/<sha256(project + receiver + secret)>``, so a sender
configured for Kargo keeps its URL. The path names the project and receiver;
:class:`ReceiverIndex` finds them from the projects' configurations and the
Secrets of the worker's credentials file (never from a workflow: a secret is
not in any history). A push or image event refreshes exactly the project's
Warehouses subscribed to the repository it names (URLs compared in Kargo's
normal form); a pull request merged or closed wakes the project's promotions
waiting for it in ``git-wait-for-pr`` (found by the ``FreightlinePullRequest``
search attribute, see ``docs/pull-requests.md``); a replayed delivery (same
delivery ID) is answered ``200`` and does nothing; an unknown path is ``404``;
a wrong signature or token ``401``.
Each refusal or ignored event is one log line naming the project, receiver
and reason, never the path (for Docker Hub, Quay, Azure and generic receivers
the path is the secret).

**The earlier routes** stay, with one worker-wide secret::

    POST /webhooks/<project>/registry   a distribution registry's notifications
                                        (``Authorization: Bearer <secret>``)
    POST /webhooks/<project>/github     GitHub ``push`` events (and ``ping``), signed:
                                        ``X-Hub-Signature-256: sha256=<HMAC-SHA256(secret, body)>``
    POST /webhooks/<project>/generic    ``{"repoURL": "..."}`` or ``{"repoURLs": [...]}`` with
                                        ``X-Freightline-Token: <secret>`` (or the Bearer header)
    GET  /healthz

Their secret is ``FREIGHTLINE_WEBHOOK_SECRET`` (``FREIGHTLINE_GITHUB_WEBHOOK_SECRET``
overrides it for GitHub); without it they refuse every request. A body over
2 MiB (Kargo's limit) gets ``413`` before it is read, a client that takes over
10 s to send its headers or its body is cut off
(``freightline.app.http.Limits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import asdict
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
from freightline.contracts.names import (
    PROJECT_WORKFLOW,
    PROMOTION_WORKFLOW,
    PULL_REQUEST_SIGNAL,
    REFRESH_SIGNAL,
    SA_PROJECT,
    SA_PULL_REQUEST,
    project_workflow_id,
    warehouse_workflow_id,
)
from freightline.contracts.pull_request_wait import PullRequestClosed
from freightline.errors import CredentialError
from freightline.kargo.credentials import CredentialStore
from freightline.kargo.mirrors import originals_of
from freightline.kargo.resources import (
    RECEIVER_TYPES,
    ClusterConfig,
    GenericReceiver,
    ProjectResources,
)
from freightline.kargo.webhooks import (
    CLUSTER_PROJECT,
    MAX_BODY_BYTES,
    BoundReceiver,
    WebhookEvent,
    bind_cluster_receivers,
    bind_receivers,
    generic_targets,
    hmac_sha256,
    matching_warehouses,
    read_event,
)
from freightline.logging import get_logger
from freightline.settings import WEBHOOK_SECRET_ENV

__all__ = [
    "DeliveryLog",
    "ReceiverIndex",
    "WebhookServer",
    "github_signature",
    "matching_warehouses",
    "registry_repositories",
]

TOKEN_HEADER = "x-freightline-token"  # noqa: S105 - a header name
RECEIVER_LIMITS = Limits(max_body=MAX_BODY_BYTES)

log = get_logger("freightline.app.webhooks")


# --- what a push names (the earlier routes) --------------------------------------------------


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


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac_sha256(secret, body)


# --- signalling -------------------------------------------------------------------------------


class Refresher:
    """Signals ``refresh`` to Warehouses, reading each project's configuration from Temporal."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def resources(self, project: str) -> ProjectResources | None:
        """The project's configuration, or None when there is no such project."""
        from freightline.app.client import project_resources

        try:
            return await project_resources(self.client, project)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def refresh(self, project: str, repo_urls: Iterable[str]) -> list[str] | None:
        """Signal the project's Warehouses that watch any of ``repo_urls``.

        The names of the Warehouses signalled, or None when there is no such project.
        """
        resources = await self.resources(project)
        if resources is None:
            return None
        return await self.signal(project, matching_warehouses(resources, repo_urls))

    async def signal(self, project: str, warehouses: Iterable[str]) -> list[str]:
        refreshed = []
        for name in warehouses:
            handle = self.client.get_workflow_handle(warehouse_workflow_id(project, name))
            try:
                await handle.signal(REFRESH_SIGNAL)
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
                continue
            refreshed.append(name)
        return refreshed

    async def cluster_config(self) -> ClusterConfig | None:
        """The ClusterConfig applied to the cluster, if any."""
        from activities.project import cluster_resources

        return (await cluster_resources(self.client)).cluster_config

    async def wake_promotions(
        self, project: str, pr_url: str, receiver: str = "", by: str | None = None
    ) -> list[str]:
        """Signal the project's promotions waiting in ``git-wait-for-pr`` for the pull request
        at ``pr_url`` (found by the ``FreightlinePullRequest`` search attribute they set
        while they wait); the IDs of those signalled. A ClusterConfig receiver
        (``project`` is ``CLUSTER_PROJECT``) wakes those of every project. Each then asks
        the forge itself, so a wrong or forged URL costs one poll, nothing more."""
        if any(c in value for value in (project, pr_url) for c in "'\\\n"):
            return []  # never part of a real name or URL; kept out of the visibility query
        query = (
            f"WorkflowType = '{PROMOTION_WORKFLOW}' AND ExecutionStatus = 'Running' "
            f"AND {SA_PULL_REQUEST.name} = '{pr_url}'"
        )
        if project != CLUSTER_PROJECT:
            query += f" AND {SA_PROJECT.name} = '{project}'"
        woken = []
        async for execution in self.client.list_workflows(query):
            handle = self.client.get_workflow_handle(execution.id, run_id=execution.run_id)
            try:
                await handle.signal(
                    PULL_REQUEST_SIGNAL,
                    PullRequestClosed(url=pr_url, receiver=receiver, by=by or ""),
                )
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
                continue  # it ended since it was listed
            woken.append(execution.id)
        return woken

    async def projects(self) -> list[str]:
        """The projects with a running configuration workflow."""
        query = f"WorkflowType = '{PROJECT_WORKFLOW}' AND ExecutionStatus = 'Running'"
        prefix = project_workflow_id("")
        names = [
            execution.id.removeprefix(prefix)
            async for execution in self.client.list_workflows(query)
            if execution.id.startswith(prefix)
        ]
        return sorted(names)


# --- Kargo's receivers ------------------------------------------------------------------------


class DeliveryLog:
    """The delivery IDs taken, the newest ``capacity`` of them: a replay is refused while its
    ID is remembered, and memory stays bounded whatever a sender sends."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def claim(self, receiver: str, delivery: str) -> bool:
        """True the first time ``delivery`` reaches ``receiver``; False for a replay."""
        key = (receiver, delivery)
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def release(self, receiver: str, delivery: str) -> None:
        """Forget a delivery whose handling failed, so the sender's retry is taken."""
        self._seen.pop((receiver, delivery), None)

    def __len__(self) -> int:
        return len(self._seen)


class ReceiverIndex:
    """Which project and receiver each receiver path belongs to.

    Built from every running project's ``webhookReceivers`` and the credentials
    file's Secrets; rebuilt when a path is not found (at most once per
    ``min_interval`` seconds, so unknown paths cannot make the server query
    Temporal without end) and when older than ``max_age`` seconds (a deleted
    receiver or a rotated secret stops working within that time).
    """

    def __init__(
        self,
        refresher: Refresher,
        credentials: CredentialStore,
        *,
        min_interval: float = 1.0,
        max_age: float = 60.0,
    ) -> None:
        self.refresher = refresher
        self.credentials = credentials
        self.min_interval = min_interval
        self.max_age = max_age
        self._paths: dict[str, BoundReceiver] = {}
        self._built_at: float | None = None
        self._lock = asyncio.Lock()

    async def lookup(self, path: str) -> BoundReceiver | None:
        now = asyncio.get_running_loop().time()
        stale = self._built_at is None or now - self._built_at > self.max_age
        if stale or (path not in self._paths and now - (self._built_at or 0) >= self.min_interval):
            await self._rebuild(since=self._built_at)
        return self._paths.get(path)

    async def _rebuild(self, since: float | None) -> None:
        async with self._lock:
            if self._built_at != since:
                return  # another request rebuilt it while this one waited
            paths: dict[str, BoundReceiver] = {}
            cluster_config = await self.refresher.cluster_config()
            for project in [CLUSTER_PROJECT, *await self.refresher.projects()]:
                resources = await self.refresher.resources(project) if project else None
                if project and resources is None:
                    continue
                try:
                    bound = (
                        bind_receivers(resources, self.credentials.secret)
                        if resources is not None
                        else bind_cluster_receivers(cluster_config, self.credentials.secret)
                    )
                except CredentialError as err:
                    # No secret can be read, so no receiver can check a request; the
                    # rebuild still counts, so a broken file is not re-read per request.
                    log.error("webhook receivers: cannot read credentials", error=str(err))
                    paths = {}
                    break
                for receiver in bound:
                    if receiver.problem:
                        log.warning(
                            "webhook receiver disabled",
                            project=project or "(cluster)",
                            receiver=receiver.receiver.name,
                            reason=receiver.problem,
                        )
                    else:
                        assert receiver.path is not None
                        paths[receiver.path] = receiver
            self._paths = paths
            self._built_at = asyncio.get_running_loop().time()


class ReceiverRoutes:
    """``POST /<type>/<hash>``: Kargo's receivers."""

    def __init__(self, refresher: Refresher, index: ReceiverIndex, deliveries: DeliveryLog) -> None:
        self.refresher = refresher
        self.index = index
        self.deliveries = deliveries

    @property
    def routes(self) -> list[BaseRoute]:
        return [Route("/{receiver_type}/{digest}", self.receive, methods=["POST"])]

    async def receive(self, request: Request) -> Response:
        receiver_type = request.path_params["receiver_type"]
        if receiver_type not in RECEIVER_TYPES:
            raise HTTPException(HTTPStatus.NOT_FOUND, "Not Found")
        # The body first: its time limit runs from the headers, and the lookup may query
        # Temporal for a while (it is at most MAX_BODY_BYTES, whoever sends it).
        body = await request.body()
        bound = await self.index.lookup(request.url.path)
        if bound is None or bound.receiver.receiver_type != receiver_type:
            log.warning("webhook refused", type=receiver_type, reason="no receiver at this path")
            raise HTTPException(HTTPStatus.NOT_FOUND, "no webhook receiver at this path")
        where = {
            "project": bound.project,
            "receiver": bound.receiver.name,
            "type": receiver_type,
        }
        headers = {k.lower(): v for k, v in request.headers.items()}
        event = read_event(bound.receiver, bound.secret, headers, body)
        if event.kind == "refused":
            log.warning("webhook refused", **where, status=event.status, reason=event.reason)
            raise HTTPException(event.status, event.reason)
        receiver_key = f"{bound.project}/{bound.receiver.name}"
        if event.delivery and not self.deliveries.claim(receiver_key, event.delivery):
            log.warning("webhook delivery replayed; ignored", **where, delivery=event.delivery)
            return JSONResponse({"msg": "delivery already received", "refreshed": []})
        try:
            return await self._act(bound, event, headers, request, where)
        except BaseException:
            if event.delivery:
                self.deliveries.release(receiver_key, event.delivery)
            raise

    async def _act(
        self,
        bound: BoundReceiver,
        event: WebhookEvent,
        headers: Mapping[str, str],
        request: Request,
        where: dict[str, str],
    ) -> Response:
        kind = event.kind
        if kind == "ping":
            log.info("webhook ping", **where)
            return JSONResponse({"msg": "ping event received, webhook is configured correctly"})
        if kind == "ignored":
            log.info("webhook ignored", **where, reason=event.reason)
            return JSONResponse({"msg": f"ignored: {event.reason}", "refreshed": []})
        if kind == "pull-request":
            assert event.pr_url is not None
            receiver_key = f"{bound.project}/{bound.receiver.name}"
            woken = await self.refresher.wake_promotions(
                bound.project, event.pr_url, receiver_key, event.sender
            )
            log.info("webhook pull request", **where, pull_request=event.pr_url, promotions=woken)
            return JSONResponse({"msg": f"refreshed {len(woken)} promotion(s)", "refreshed": woken})
        if bound.project == CLUSTER_PROJECT:
            query = dict(request.query_params)
            return await self._act_everywhere(bound, event, (headers, query), where)
        resources = await self.refresher.resources(bound.project)
        if resources is None:
            raise HTTPException(HTTPStatus.NOT_FOUND, f'no project "{bound.project}"')
        if kind == "generic":
            config = bound.receiver.config
            assert isinstance(config, GenericReceiver)
            query = dict(request.query_params)
            results = generic_targets(config, resources, headers, query, event.body)
            wanted = sorted({w for r in results for w in r.warehouses})
            refreshed = await self.refresher.signal(bound.project, wanted)
            for url in sorted({u for r in results for u in r.pull_requests}):
                refreshed += await self.refresher.wake_promotions(
                    bound.project, url, f"{bound.project}/{bound.receiver.name}"
                )
            log.info("webhook", **where, refreshed=refreshed, results=[r.result for r in results])
            failed = any(r.result == "Error" for r in results)
            return JSONResponse(
                {"results": [asdict(r) for r in results], "refreshed": refreshed},
                status_code=500 if failed else 200,
            )
        names = matching_warehouses(resources, event.repo_urls)
        if not names:
            log.info(
                "webhook names no subscribed repository; nothing refreshed",
                **where,
                repos=list(event.repo_urls),
            )
        refreshed = await self.refresher.signal(bound.project, names)
        if names:
            log.info("webhook", **where, repos=list(event.repo_urls), refreshed=refreshed)
        return JSONResponse(
            {"msg": f"refreshed {len(refreshed)} warehouse(s)", "refreshed": refreshed}
        )

    async def _act_everywhere(
        self,
        bound: BoundReceiver,
        event: WebhookEvent,
        sent: tuple[Mapping[str, str], Mapping[str, str]],
        where: dict[str, str],
    ) -> Response:
        """A ClusterConfig receiver's event: the subscribed Warehouses of every project
        (``project/warehouse`` in the answer), as Kargo's cluster receivers refresh them."""
        refreshed: list[str] = []
        for project in await self.refresher.projects():
            resources = await self.refresher.resources(project)
            if resources is None:
                continue
            if event.kind == "generic":
                config = bound.receiver.config
                assert isinstance(config, GenericReceiver)
                headers, query = sent  # a generic receiver's expressions read both
                results = generic_targets(config, resources, headers, query, event.body)
                names = sorted({w for r in results for w in r.warehouses})
            else:
                names = matching_warehouses(resources, event.repo_urls)
            refreshed += [
                f"{project}/{name}" for name in await self.refresher.signal(project, names)
            ]
        log.info("webhook", **where, repos=list(event.repo_urls), refreshed=refreshed)
        return JSONResponse(
            {"msg": f"refreshed {len(refreshed)} warehouse(s)", "refreshed": refreshed}
        )


# --- the earlier, project-named routes --------------------------------------------------------


class ProjectRoutes:
    """``/webhooks/<project>/...``: check the shared secret, find the Warehouses, signal."""

    def __init__(
        self,
        refresher: Refresher,
        *,
        secret: str,
        github_secret: str | None = None,
        mirrors: Mapping[str, str] | None = None,
    ) -> None:
        self.refresher = refresher
        self.mirrors = dict(mirrors or {})
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
            _refuse(request, "missing or wrong X-Hub-Signature-256")
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
            _refuse(request, "missing or wrong webhook secret")

    async def _refresh(self, request: Request, kind: str, repos: set[str]) -> Response:
        project = request.path_params["project"]
        refreshed = await self.refresher.refresh(project, repos)
        log.info("webhook", project=project, kind=kind, repos=sorted(repos), refreshed=refreshed)
        if refreshed is None:
            if kind == "registry":
                # A registry retries a refused notification forever, holding back the
                # ones behind it: an unknown project is "nothing to refresh", not an error.
                return JSONResponse({"refreshed": [], "error": f'no project "{project}"'})
            raise HTTPException(HTTPStatus.NOT_FOUND, f'no project "{project}"')
        return JSONResponse({"refreshed": refreshed})


def _refuse(request: Request, reason: str) -> None:
    log.warning("webhook refused", project=request.path_params.get("project"), reason=reason)
    raise HTTPException(HTTPStatus.UNAUTHORIZED, reason)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise HTTPException(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None


# --- the server -------------------------------------------------------------------------------


class WebhookServer:
    """Serves the webhook routes on ``host:port`` (port 0 picks a free one).

    ``credentials`` holds the Secrets Kargo's receivers name; ``secret`` is the
    earlier routes' shared secret; ``index_interval`` is the least time between two
    rebuilds of the receiver index that unknown paths ask for.
    """

    def __init__(
        self,
        client: Client,
        *,
        secret: str = "",
        github_secret: str | None = None,
        credentials: CredentialStore | None = None,
        mirrors: Mapping[str, str] | None = None,
        host: str = "0.0.0.0",  # noqa: S104 - webhooks come from other machines
        port: int = 0,
        limits: Limits | None = None,
        index_interval: float = 1.0,
        refresher: Refresher | None = None,
    ) -> None:
        refresher = refresher or Refresher(client)
        self.credentials = credentials or CredentialStore(None)
        self.project_routes = ProjectRoutes(
            refresher, secret=secret, github_secret=github_secret, mirrors=mirrors
        )
        self.deliveries = DeliveryLog()
        self.index = ReceiverIndex(refresher, self.credentials, min_interval=index_interval)
        self.receiver_routes = ReceiverRoutes(refresher, self.index, self.deliveries)
        self.app = build_app(*self.project_routes.routes, *self.receiver_routes.routes)
        self.host = host
        self.limits = limits or RECEIVER_LIMITS
        self._port = port
        self._stack = contextlib.AsyncExitStack()
        self._server: HttpServer | None = None

    @property
    def port(self) -> int:
        """The port bound (the one chosen, when asked for port 0)."""
        assert self._server is not None, "start() first"
        return self._server.port

    async def start(self) -> WebhookServer:
        if not self.project_routes.secret:
            log.info(f"webhooks: {WEBHOOK_SECRET_ENV} is not set; /webhooks/<project>/... refused")
        if self.credentials.path is None:
            log.info("webhooks: no credentials file; Kargo's webhook receivers have no secrets")
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
