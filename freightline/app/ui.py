"""The web UI: the pipeline as a live graph, the Freight timeline, Stages, Promotions, actions.

Server-rendered pages (Jinja2 templates, every value escaped) on Freightline's
one HTTP stack (``freightline.app.http``), served by ``freightline ui`` or by
the worker when ``FREIGHTLINE_UI_ADDRESS`` is set. It reads and acts through
the same client functions as the CLI (``freightline.app.client``) and says
what the CLI's status table says (``freightline.app.status_view``); there is
no second way to query Temporal. Scripts and styles are served from the
package (``web/static``); a Content-Security-Policy allows nothing else, so
even an unescaped value could not run a script.

Routes::

    GET  /                                  projects
    GET  /projects/{p}                      the pipeline graph, Stages, Warehouses, promotions
    GET  /projects/{p}/events               server-sent events: the pipeline, when it changes
    GET  /projects/{p}/freight              the Freight timeline
    GET  /projects/{p}/stages/{s}           a Stage: Freight, verifications, history, promotions
    GET  /promotions/{id}                   a Promotion: steps, outputs, approvals
    POST /projects/{p}/stages/{s}/promote         (promoter)  freight=ID or alias
    POST /projects/{p}/stages/{s}/verify          (promoter)
    POST /projects/{p}/stages/{s}/abort-verification  (promoter)
    POST /projects/{p}/stages/{s}/promote-downstream  (promoter)  the current Freight
    POST /projects/{p}/stages/{s}/pause-auto-promotion | resume-auto-promotion  (promoter)
    POST /projects/{p}/stages/{s}/approve-freight (approver)  freight=ID or alias
    POST /projects/{p}/warehouses/{w}/refresh     (promoter)
    POST /promotions/{id}/approve | reject        (approver)  comment=...
    POST /promotions/{id}/abort                   (promoter)  reason=...
    GET|POST /login, POST /logout
    GET  /oidc/start, /oidc/callback          (FREIGHTLINE_UI_AUTH=oidc: freightline.app.ui_oidc)

Every POST needs the CSRF token of the page it came from and a same-origin
``Origin`` (when the browser sends one); every action is checked against the
person's role in the project, and sent under their authenticated name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from rich.text import Text
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from temporalio.client import Client
from temporalio.service import RPCError

from freightline.app import client as ops
from freightline.app.http import HttpServer, Limits, build_app, serve
from freightline.app.status_view import auto_cell, promotion_cell, verification_cell
from freightline.app.temporal import ui_url
from freightline.app.ui_auth import SESSION_COOKIE, Access, Role, User, UsersAuthenticator
from freightline.app.ui_graph import GraphNode, node_keys, pipeline_edges, render_svg
from freightline.app.ui_oidc import FLOW_COOKIE, OidcAuthenticator, SignInRefused
from freightline.contracts.names import SA_FREIGHT, SA_PROJECT, SA_STAGE, workflow_ui_url
from freightline.contracts.stage import StageState, versions_of
from freightline.contracts.warehouse import WarehouseStatus
from freightline.errors import FreightlineError
from freightline.kargo.config import ProjectResources
from freightline.kargo.resources import Freight
from freightline.logging import get_logger

__all__ = ["UiServer", "build_ui"]

log = get_logger("freightline.app.ui")

WEB = Path(__file__).resolve().parent / "web"
CSRF_COOKIE = "freightline_csrf"
READ_TIMEOUT = 10.0
"""Seconds a page waits for Temporal before it says so instead of hanging."""
EVENT_INTERVAL = 1.0
"""Seconds between two looks at a watched pipeline (one look per project, however many watch)."""
KEEPALIVE_SECONDS = 15.0
"""A comment after this long without news keeps proxies from closing a quiet event stream."""
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
_COLOURS = {"green": "ok", "yellow": "warn", "red": "bad"}


class _Refused(Exception):
    """An action or page refused: the status code and the reason shown."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Ui:
    """The UI's state: the Temporal client, who may do what, where links go."""

    def __init__(
        self,
        client: Client,
        access: Access,
        *,
        temporal_ui: str | None = None,
    ) -> None:
        self.client = client
        self.access = access
        self.watches: dict[str, _Watch] = {}
        """Projects being watched live, each looked at once per interval for all watchers."""
        self.temporal_ui = ui_url(temporal_ui, client.service_client.config.target_host)
        self.templates = Environment(
            loader=FileSystemLoader(WEB / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(
            temporal_link=self.temporal_link,
            temporal_project_link=self.temporal_project_link,
            quote=_quote,
        )
        self.templates.filters.update(when=_when, short=_short_id, asjson=_as_json)

    def temporal_link(self, workflow_id: str) -> str:
        return workflow_ui_url(self.temporal_ui, self.client.namespace, workflow_id)

    def temporal_project_link(self, project: str) -> str:
        """The Temporal UI's workflow list, filtered to one project's workflows."""
        query = quote(f'{SA_PROJECT.name}="{project}"', safe="")
        return f"{self.temporal_ui}/namespaces/{self.client.namespace}/workflows?query={query}"

    # --- responses --------------------------------------------------------------------------

    def page(
        self, request: Request, template: str, code: int = 200, **context: Any
    ) -> HTMLResponse:
        nonce = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)
        user: User | None = request.scope.get("freightline.user")
        html = self.templates.get_template(template).render(
            user=user,
            csrf=self.access.signer.csrf_token(user.name if user else "", nonce),
            signs_in=self.access.authenticator.signs_in,
            **context,
        )
        response = HTMLResponse(html, status_code=code, headers=SECURITY_HEADERS)
        if CSRF_COOKIE not in request.cookies:
            _set_cookie(response, request, CSRF_COOKIE, nonce)
        return response

    def refusal(self, request: Request, refused: _Refused) -> HTMLResponse:
        return self.page(
            request, "result.html", refused.status, ok=False, message=refused.reason, back=""
        )

    # --- who ----------------------------------------------------------------------------------

    def require(self, request: Request, project: str, role: Role) -> User:
        """The signed-in user, if their role in ``project`` is at least ``role``."""
        user: User | None = request.scope.get("freightline.user")
        if user is None:
            raise _Refused(401, "sign in first")
        have = self.access.role(user, project)
        if have < role:
            held = "has no role" if have is Role.NONE else f"is {_role_name(have)}"
            raise _Refused(
                403, f'{user.name} {held} in project "{project}"; this needs {_role_name(role)}'
            )
        return user

    async def check_post(self, request: Request) -> dict[str, str]:
        """The form of a POST, after its Origin and CSRF token are checked."""
        origin = request.headers.get("origin")
        if (
            origin
            and origin != "null"
            and urlsplit(origin).netloc != request.headers.get("host", "")
        ):
            raise _Refused(403, "refused: the form was sent from another site")
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        user: User | None = request.scope.get("freightline.user")
        nonce = request.cookies.get(CSRF_COOKIE, "")
        expected = self.access.signer.csrf_token(user.name if user else "", nonce)
        if not nonce or not secrets.compare_digest(form.get("csrf", ""), expected):
            raise _Refused(403, "refused: the form's CSRF token is missing or stale; reload it")
        return form


def _set_cookie(
    response: Response,
    request: Request,
    name: str,
    value: str,
    *,
    samesite: Literal["strict", "lax"] = "strict",
    path: str = "/",
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite=samesite,
        secure=request.url.scheme == "https",
        path=path,
        max_age=max_age,
    )


def _safe_target(target: str) -> str:
    """Where to go after sign-in: a path on the UI itself, never an open redirect (browsers read
    ``/\\host`` as ``//host``)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _role_name(role: Role) -> str:
    name = role.name.lower()
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _quote(value: str) -> str:
    return quote(value, safe="")


def _when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _short_id(value: str | None) -> str:
    return (value or "")[:7]


def _cell(markup: str) -> tuple[str, str]:
    """A status_view cell (rich markup) as (plain text, CSS class)."""
    text = Text.from_markup(markup)
    colour = next((str(span.style) for span in text.spans), "")
    return text.plain, _COLOURS.get(colour, "")


# --- reading --------------------------------------------------------------------------------------


async def _read(what: Awaitable[Any]) -> Any:
    """One read from Temporal, or a refusal that says what did not answer."""
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            return await what
    except TimeoutError:
        raise _Refused(
            504, f"Temporal did not answer within {READ_TIMEOUT:g}s; the page will load again"
        ) from None
    except FreightlineError as err:
        raise _Refused(404, str(err)) from None
    except RPCError as err:
        raise _Refused(502, f"Temporal: {err.message}") from None


def _stage_row(state: StageState, note: str | None) -> dict[str, Any]:
    current = state.current
    verification = _cell(verification_cell(state))
    promotion = _cell(promotion_cell(state, note))
    row = {
        "name": state.name,
        "freight": (current.freight_alias or current.freight[:7]) if current else "",
        "freight_id": current.freight if current else "",
        "versions": ", ".join(current.versions) if current else "",
        "health": state.health.value,
        "verification": verification,
        "promotion": promotion,
        "running": state.running.promotion if state.running else "",
        "queue": ", ".join(t.freight_alias or t.freight[:7] for t in state.queue),
        "auto": auto_cell(state),
        "auto_on": state.config.auto_promotion,
        "paused": state.auto_paused_by is not None,
    }
    if len(state.current_collection) > 1:  # one Freight per origin
        refs = state.current_collection.items()
        row["freight"] = "; ".join(f"{o}: {r.freight_alias or r.freight[:7]}" for o, r in refs)
        row["versions"] = "; ".join(
            ", ".join(r.versions) for r in state.current_collection.values()
        )
    return row


async def pipeline_view(ui: Ui, project: str) -> dict[str, Any]:
    """Everything the pipeline part of a project's page shows (also what the live view sends)."""
    resources: ProjectResources = await _read(ops.project_resources(ui.client, project))
    states: list[StageState] = await _read(ops.stage_states(ui.client, project))
    notes: dict[str, str] = await _read(ops.running_notes(ui.client, states))
    warehouses: list[WarehouseStatus] = await _read(ops.warehouse_statuses(ui.client, project))
    rows = {state.name: _stage_row(state, notes.get(state.name)) for state in states}
    state_of = {state.name: state for state in states}
    nodes = []
    for key in node_keys(resources):
        kind, _, name = key.partition(":")
        if kind == "warehouse":
            status = next((w for w in warehouses if w.warehouse == name), None)
            latest = status.latest_freight if status else None
            nodes.append(
                GraphNode(
                    key=key,
                    title=f"▣ {name}",
                    lines=[
                        (f"{status.freight_count if status else 0} Freight", ""),
                        (f"latest {latest}" if latest else "no Freight yet", ""),
                        (status.last_error or "", "bad") if status else ("not running", "warn"),
                    ],
                    css="warehouse",
                )
            )
            continue
        row = rows.get(name)
        href = f"/projects/{_quote(project)}/stages/{_quote(name)}"
        if row is None:
            nodes.append(GraphNode(key=key, title=name, lines=[("not running", "warn")], href=href))
            continue
        freight = f"{row['freight']} {row['versions']}" if row["freight"] else "no Freight"
        lines = [(freight, ""), row["verification"]]
        running = state_of[name].running
        if running is not None:
            alias = running.freight_alias or running.freight[:7]
            lines += [(f"promoting {alias}", "warn"), (notes.get(name) or "starting", "warn")]
        else:
            lines.append(row["promotion"])
        nodes.append(
            GraphNode(
                key=key,
                title=f"{name} · {row['health']}",
                lines=[line for line in lines if line[0]],
                href=href,
                css=f"health-{row['health'].lower()}" + (" running" if running else ""),
            )
        )
    graph = render_svg(nodes, pipeline_edges(resources))
    return {
        "graph": graph,
        "stages": [rows[s.name] for s in states],
        "missing": sorted(set(resources.stages) - set(rows)),
    }


# --- pages ----------------------------------------------------------------------------------------


Handler = Callable[[Ui, Request], Awaitable[Response]]


def _route(ui: Ui, path: str, handler: Handler, methods: Sequence[str] = ("GET",)) -> Route:
    async def endpoint(request: Request) -> Response:
        user = ui.access.authenticator.identify(request)
        request.scope["freightline.user"] = user
        try:
            if user is None and path not in SIGN_IN_PATHS:
                authenticator = ui.access.authenticator
                if authenticator.signs_in:
                    target = quote(request.url.path, safe="/")
                    if isinstance(authenticator, OidcAuthenticator) and authenticator.expired(
                        request
                    ):
                        # Through the issuer again: silent while its own session lasts.
                        return RedirectResponse(f"/oidc/start?next={target}", status_code=303)
                    return RedirectResponse(f"/login?next={target}", status_code=303)
                raise _Refused(401, "not signed in: the authenticating proxy named no user")
            return await handler(ui, request)
        except _Refused as refused:
            return ui.refusal(request, refused)

    return Route(path, endpoint, methods=list(methods))


async def projects_page(ui: Ui, request: Request) -> Response:
    user = request.scope["freightline.user"]
    names: list[str] = await _read(ops.list_projects(ui.client))
    visible = [n for n in names if ui.access.role(user, n) >= Role.VIEWER]
    return ui.page(request, "projects.html", projects=visible)


async def project_page(ui: Ui, request: Request) -> Response:
    project = request.path_params["project"]
    user = ui.require(request, project, Role.VIEWER)
    view = await pipeline_view(ui, project)
    warehouses = await _read(ops.warehouse_statuses(ui.client, project))
    promotions = await _read(ops.list_promotions(ui.client, project, limit=15))
    return ui.page(
        request,
        "project.html",
        project=project,
        view=view,
        warehouses=warehouses,
        promotions=promotions,
        role=ui.access.role(user, project),
        Role=Role,
    )


class _Watch:
    """One look at a project's pipeline per second, shared by every browser watching it."""

    def __init__(self) -> None:
        self.html: str | None = None
        self.trouble: str | None = None
        self.version = 0
        self.changed = asyncio.Condition()
        self.watchers = 0
        self.task: asyncio.Task[None] | None = None

    def news_since(self, version: int) -> bool:
        return self.version != version

    async def publish(self, html: str | None, trouble: str | None) -> None:
        if (html or self.html, trouble) == (self.html, self.trouble):
            return
        async with self.changed:
            self.html, self.trouble = html or self.html, trouble
            self.version += 1
            self.changed.notify_all()


async def _look(ui: Ui, project: str, watch: _Watch) -> None:
    fragment = ui.templates.get_template("pipeline.html")
    while True:
        try:
            view = await pipeline_view(ui, project)
            await watch.publish(fragment.render(view=view, project=project), None)
        except _Refused as refused:
            await watch.publish(None, refused.reason)
        await asyncio.sleep(EVENT_INTERVAL)


@contextlib.asynccontextmanager
async def _watching(ui: Ui, project: str) -> AsyncIterator[_Watch]:
    """The project's shared watch: started by its first watcher, stopped after its last."""
    watch = ui.watches.setdefault(project, _Watch())
    watch.watchers += 1
    if watch.task is None:
        watch.task = asyncio.create_task(_look(ui, project, watch), name=f"ui watch {project}")
    try:
        yield watch
    finally:
        watch.watchers -= 1
        if watch.watchers == 0:
            del ui.watches[project]
            watch.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch.task


async def events(ui: Ui, request: Request) -> Response:
    project = request.path_params["project"]
    ui.require(request, project, Role.VIEWER)

    async def stream() -> AsyncIterator[str]:
        async with _watching(ui, project) as watch:
            seen = 0
            while True:
                async with watch.changed:
                    try:
                        async with asyncio.timeout(KEEPALIVE_SECONDS):
                            await watch.changed.wait_for(functools.partial(watch.news_since, seen))
                    except TimeoutError:
                        pass
                    version, html, trouble = watch.version, watch.html, watch.trouble
                if version == seen:
                    yield ": still here\n\n"
                    continue
                seen = version
                if trouble is not None:
                    yield f"event: trouble\ndata: {json.dumps({'message': trouble})}\n\n"
                elif html is not None:
                    yield f"event: pipeline\ndata: {json.dumps({'html': html})}\n\n"

    headers = {**SECURITY_HEADERS, "x-accel-buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


async def freight_page(ui: Ui, request: Request) -> Response:
    project = request.path_params["project"]
    user = ui.require(request, project, Role.VIEWER)
    freight: list[Freight] = await _read(ops.project_freight(ui.client, project))
    states: list[StageState] = await _read(ops.stage_states(ui.client, project))
    rows = []
    for item in freight:
        name = item.metadata.name
        where = {}
        for state in states:
            entry = state.available.get(name)
            held = {ref.freight for ref in state.current_collection.values()}
            if state.current and name in held:
                where[state.name] = ("current", "verified" if state.current.verified else "")
            elif any(h.freight == name for h in state.history):
                where[state.name] = ("was here", "")
            elif entry is not None and (entry.verified_in or entry.direct or entry.approved_by):
                where[state.name] = ("available", "")
            verified = [v for v in state.verifications if v.freight == name]
            if verified and state.name in where:
                where[state.name] = (where[state.name][0], f"verification {verified[0].phase}")
        rows.append({"freight": item, "versions": versions_of(item), "where": where})
    return ui.page(
        request,
        "freight.html",
        project=project,
        rows=rows,
        stages=[s.name for s in states],
        role=ui.access.role(user, project),
    )


async def stage_page(ui: Ui, request: Request) -> Response:
    project, stage = request.path_params["project"], request.path_params["stage"]
    user = ui.require(request, project, Role.VIEWER)
    states: list[StageState] = await _read(ops.stage_states(ui.client, project))
    state = next((s for s in states if s.name == stage), None)
    if state is None:
        raise _Refused(404, f'project "{project}" has no running Stage "{stage}"')
    notes = await _read(ops.running_notes(ui.client, [state]))
    promotions = await _read(ops.list_promotions(ui.client, project, stage, limit=20))
    available = sorted(
        state.available.values(),
        key=lambda e: e.freight.discovered_at or e.first_seen,
        reverse=True,
    )
    return ui.page(
        request,
        "stage.html",
        project=project,
        stage=state,
        row=_stage_row(state, notes.get(stage)),
        available=available,
        promotions=promotions,
        role=ui.access.role(user, project),
        Role=Role,
        stage_workflow=f"stage:{project}:{stage}",
    )


async def promotion_page(ui: Ui, request: Request) -> Response:
    promotion = request.path_params["promotion"]
    description, status = await _read(ops.promotion_status(ui.client, promotion))
    attributes = description.typed_search_attributes
    project = attributes.get(SA_PROJECT) or ""
    user = ui.require(request, project, Role.VIEWER)
    started_with = await _read(ops.promotion_request(ui.client, promotion))
    return ui.page(
        request,
        "promotion.html",
        promotion=promotion,
        description=description,
        status=status,
        started_with=started_with,
        project=project,
        stage=attributes.get(SA_STAGE) or "",
        freight=attributes.get(SA_FREIGHT) or "",
        running=description.status is not None and description.status.name == "RUNNING",
        role=ui.access.role(user, project),
        Role=Role,
    )


# --- actions --------------------------------------------------------------------------------------


def _action(
    role: Role,
    act: Callable[[Ui, Request, User, dict[str, str]], Awaitable[tuple[str, str]]],
    project_of: Callable[[Ui, Request], Awaitable[str]] | None = None,
) -> Handler:
    """A POST: CSRF checked, role checked, done through the client; says what happened."""

    async def handler(ui: Ui, request: Request) -> Response:
        form = await ui.check_post(request)
        project = await project_of(ui, request) if project_of else request.path_params["project"]
        user = ui.require(request, project, role)
        try:
            async with asyncio.timeout(READ_TIMEOUT * 3):
                message, back = await act(ui, request, user, form)
        except TimeoutError:
            raise _Refused(
                504, "Temporal did not answer in time; look again before retrying"
            ) from None
        except FreightlineError as err:
            log.info("ui action refused", user=user.name, path=request.url.path, reason=str(err))
            raise _Refused(409, str(err)) from None
        except RPCError as err:
            raise _Refused(502, f"Temporal: {err.message}") from None
        log.info("ui action", user=user.name, path=request.url.path, answer=message)
        return ui.page(request, "result.html", ok=True, message=message, back=back)

    return handler


async def _promotion_project(ui: Ui, request: Request) -> str:
    description, _ = await _read(ops.promotion_status(ui.client, request.path_params["promotion"]))
    project: str | None = description.typed_search_attributes.get(SA_PROJECT)
    if not project:
        raise _Refused(404, "this workflow is not a Freightline promotion")
    return project


def _stage_back(request: Request) -> str:
    p, s = request.path_params["project"], request.path_params["stage"]
    return f"/projects/{_quote(p)}/stages/{_quote(s)}"


async def _promote(ui: Ui, request: Request, user: User, form: dict[str, str]) -> tuple[str, str]:
    p, s = request.path_params["project"], request.path_params["stage"]
    freight = form.get("freight", "").strip()
    if not freight:
        raise _Refused(400, "choose the Freight to promote")
    ticket = await ops.promote_in_stage(ui.client, p, s, freight, user.name)
    back = f"/promotions/{_quote(ticket.promotion)}"
    return f"promotion {ticket.promotion} queued by {user.name}", back


async def _verify(ui: Ui, request: Request, user: User, form: dict[str, str]) -> tuple[str, str]:
    p, s = request.path_params["project"], request.path_params["stage"]
    return await ops.stage_update(ui.client, p, s, "verify", user.name), _stage_back(request)


async def _abort_verification(
    ui: Ui, request: Request, user: User, form: dict[str, str]
) -> tuple[str, str]:
    p, s = request.path_params["project"], request.path_params["stage"]
    answer = await ops.stage_update(ui.client, p, s, "abort_verification", user.name)
    return answer, _stage_back(request)


def _auto_promotion(update: str) -> Callable[..., Awaitable[tuple[str, str]]]:
    async def act(ui: Ui, request: Request, user: User, form: dict[str, str]) -> tuple[str, str]:
        p, s = request.path_params["project"], request.path_params["stage"]
        return await ops.stage_update(ui.client, p, s, update, user.name), _stage_back(request)

    return act


async def _promote_downstream(
    ui: Ui, request: Request, user: User, form: dict[str, str]
) -> tuple[str, str]:
    """Kargo's "promote downstream": the Stage's current Freight into each Stage that takes
    Freight verified here; each Stage answers for itself (queued, or why not)."""
    p, s = request.path_params["project"], request.path_params["stage"]
    states: list[StageState] = await ops.stage_states(ui.client, p)
    state = next((x for x in states if x.name == s), None)
    if state is None or state.current is None:
        raise _Refused(409, f'Stage "{s}" holds no Freight to promote downstream')
    if not state.config.downstream:
        raise _Refused(409, f'no Stage takes Freight from Stage "{s}"')
    answers = []
    for downstream in state.config.downstream:
        try:
            ticket = await ops.promote_in_stage(
                ui.client, p, downstream, state.current.freight, user.name
            )
            answers.append(f"{downstream}: promotion {ticket.promotion} queued")
        except FreightlineError as err:
            answers.append(f"{downstream}: refused: {err}")
    alias = state.current.freight_alias or state.current.freight[:7]
    return f"{alias} downstream of {s}, by {user.name}: " + "; ".join(answers), _stage_back(request)


async def _approve_freight(
    ui: Ui, request: Request, user: User, form: dict[str, str]
) -> tuple[str, str]:
    p, s = request.path_params["project"], request.path_params["stage"]
    freight = form.get("freight", "").strip()
    if not freight:
        raise _Refused(400, "name the Freight to approve")
    return await ops.approve_freight(ui.client, p, s, freight, user.name), _stage_back(request)


async def _refresh(ui: Ui, request: Request, user: User, form: dict[str, str]) -> tuple[str, str]:
    p, w = request.path_params["project"], request.path_params["warehouse"]
    await ops.refresh_warehouse(ui.client, p, w)
    return f"Warehouse/{w} refresh requested by {user.name}", f"/projects/{_quote(p)}"


def _decide(decision: str) -> Callable[..., Awaitable[tuple[str, str]]]:
    async def act(ui: Ui, request: Request, user: User, form: dict[str, str]) -> tuple[str, str]:
        promotion = request.path_params["promotion"]
        answer = await ops.decide_promotion(
            ui.client,
            promotion,
            decision,
            user.name,
            form.get("comment", ""),
            signing_key=ui.access.signing_key,
        )
        return answer, f"/promotions/{_quote(promotion)}"

    return act


async def _abort(ui: Ui, request: Request, user: User, form: dict[str, str]) -> tuple[str, str]:
    promotion = request.path_params["promotion"]
    answer = await ops.abort_promotion(ui.client, promotion, user.name, form.get("reason", ""))
    return answer, f"/promotions/{_quote(promotion)}"


# --- signing in -----------------------------------------------------------------------------------


SIGN_IN_PATHS = ("/login", "/oidc/start", "/oidc/callback")


async def login(ui: Ui, request: Request) -> Response:
    authenticator = ui.access.authenticator
    target = _safe_target(request.query_params.get("next", "/"))
    if isinstance(authenticator, OidcAuthenticator):
        if request.method != "GET":
            raise _Refused(405, "sign in at the issuer: follow the link on this page")
        issuer = urlsplit(authenticator.issuer).netloc
        return ui.page(request, "login.html", next=target, failed=False, oidc=issuer)
    if not isinstance(authenticator, UsersAuthenticator):
        raise _Refused(404, "sign-in is the authenticating proxy's")
    if request.method == "GET":
        return ui.page(request, "login.html", next=target, failed=False)
    form = await ui.check_post(request)
    user = authenticator.check_password(form.get("user", ""), form.get("password", ""))
    if user is None:
        log.info("ui sign-in refused", user=form.get("user", "")[:64])
        return ui.page(request, "login.html", code=401, next=target, failed=True)
    log.info("ui sign-in", user=user.name)
    response = RedirectResponse(target, status_code=303)
    _set_cookie(response, request, SESSION_COOKIE, authenticator.session_cookie(user))
    # A fresh CSRF cookie per session: tokens of the signed-out page stop working.
    _set_cookie(response, request, CSRF_COOKIE, secrets.token_urlsafe(16))
    return response


def _oidc(ui: Ui) -> OidcAuthenticator:
    authenticator = ui.access.authenticator
    if not isinstance(authenticator, OidcAuthenticator):
        raise _Refused(404, "this UI does not sign in with OIDC")
    return authenticator


async def oidc_start(ui: Ui, request: Request) -> Response:
    """To the issuer, with a fresh state, nonce and PKCE verifier kept in a signed cookie."""
    oidc = _oidc(ui)
    target = _safe_target(request.query_params.get("next", "/"))
    try:
        url, flow = await oidc.begin(oidc.redirect_uri(request), target)
    except SignInRefused as refused:
        log.warning("ui sign-in failed", reason=refused.reason)
        raise _Refused(502, f"cannot sign in: {refused.reason}") from None
    response = RedirectResponse(url, status_code=303)
    # Lax: it must come back with the issuer's redirect (a top-level GET from another site).
    _set_cookie(response, request, FLOW_COOKIE, flow, samesite="lax", path="/oidc")
    return response


async def oidc_callback(ui: Ui, request: Request) -> Response:
    """The issuer's answer: the code exchanged, the ID token verified, a session started."""
    oidc = _oidc(ui)
    try:
        user, target, expires = await oidc.complete(
            dict(request.query_params), request.cookies.get(FLOW_COOKIE)
        )
    except SignInRefused as refused:
        log.info("ui sign-in refused", reason=refused.reason)
        refusal = ui.page(
            request,
            "result.html",
            401,
            ok=False,
            message=f"Sign-in refused: {refused.reason}",
            back="/login",
        )
        refusal.delete_cookie(FLOW_COOKIE, path="/oidc")
        return refusal
    log.info("ui sign-in", user=user.name, groups=list(user.groups), via="oidc")
    response = RedirectResponse(_safe_target(target), status_code=303)
    # Lax, not Strict: the redirect chain began at the issuer, and a Strict cookie would not
    # come with the first page after it. Cross-site POSTs still carry no Lax cookie.
    _set_cookie(
        response,
        request,
        SESSION_COOKIE,
        oidc.session_cookie(user, expires),
        samesite="lax",
        max_age=max(0, expires - int(time.time())),
    )
    _set_cookie(response, request, CSRF_COOKIE, secrets.token_urlsafe(16))
    response.delete_cookie(FLOW_COOKIE, path="/oidc")
    return response


async def logout(ui: Ui, request: Request) -> Response:
    await ui.check_post(request)
    response = RedirectResponse("/login" if ui.access.authenticator.signs_in else "/", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


def build_ui(ui: Ui) -> list[BaseRoute]:
    """The UI's routes (for ``freightline.app.http.build_app``)."""
    stage = "/projects/{project}/stages/{stage}"
    post = ("POST",)
    return [
        Mount("/static", StaticFiles(directory=WEB / "static"), name="static"),
        _route(ui, "/login", login, ("GET", "POST")),
        _route(ui, "/logout", logout, post),
        _route(ui, "/oidc/start", oidc_start),
        _route(ui, "/oidc/callback", oidc_callback),
        _route(ui, "/", projects_page),
        _route(ui, "/projects/{project}", project_page),
        _route(ui, "/projects/{project}/events", events),
        _route(ui, "/projects/{project}/freight", freight_page),
        _route(ui, stage, stage_page),
        _route(ui, f"{stage}/promote", _action(Role.PROMOTER, _promote), post),
        _route(ui, f"{stage}/verify", _action(Role.PROMOTER, _verify), post),
        _route(ui, f"{stage}/approve-freight", _action(Role.APPROVER, _approve_freight), post),
        _route(
            ui, f"{stage}/abort-verification", _action(Role.PROMOTER, _abort_verification), post
        ),
        _route(
            ui, f"{stage}/promote-downstream", _action(Role.PROMOTER, _promote_downstream), post
        ),
        _route(
            ui,
            f"{stage}/pause-auto-promotion",
            _action(Role.PROMOTER, _auto_promotion("pause_auto_promotion")),
            post,
        ),
        _route(
            ui,
            f"{stage}/resume-auto-promotion",
            _action(Role.PROMOTER, _auto_promotion("resume_auto_promotion")),
            post,
        ),
        _route(
            ui,
            "/projects/{project}/warehouses/{warehouse}/refresh",
            _action(Role.PROMOTER, _refresh),
            post,
        ),
        _route(ui, "/promotions/{promotion}", promotion_page),
        _route(
            ui,
            "/promotions/{promotion}/approve",
            _action(Role.APPROVER, _decide("approve"), _promotion_project),
            post,
        ),
        _route(
            ui,
            "/promotions/{promotion}/reject",
            _action(Role.APPROVER, _decide("reject"), _promotion_project),
            post,
        ),
        _route(
            ui,
            "/promotions/{promotion}/abort",
            _action(Role.PROMOTER, _abort, _promotion_project),
            post,
        ),
    ]


class UiServer:
    """The web UI on its own listener (``freightline ui``, or inside the worker)."""

    def __init__(
        self,
        client: Client,
        access: Access,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        temporal_ui: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.ui = Ui(client, access, temporal_ui=temporal_ui)
        self.app = build_app(*build_ui(self.ui))
        self.host = host
        self.limits = limits
        self._port = port
        self._stack = contextlib.AsyncExitStack()
        self._server: HttpServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> UiServer:
        self._server = await self._stack.enter_async_context(
            serve(self.app, self.host, self._port, self.limits, name="ui")
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server = None
        await self._stack.aclose()

    async def serve_forever(self) -> None:
        assert self._server is not None, "enter the server first"
        await self._server.wait()
