"""The ``freightline`` command.

Every command exits non-zero with a one-line reason on bad input; no
tracebacks for errors a user can fix. A command reads the settings
(``freightline.settings``) once, the first time it needs them, and passes
them on; nothing here changes the process's environment.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from freightline.errors import FreightlineError

if TYPE_CHECKING:
    from temporalio.client import Client

    from freightline.kargo.resources import ProjectResources
    from freightline.settings import Settings

app = typer.Typer(
    name="freightline",
    help="Continuous promotion for GitOps, on Temporal, speaking Kargo's resource kinds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
get_app = typer.Typer(help="List warehouses, stages, freight or promotions.", no_args_is_help=True)
app.add_typer(get_app, name="get")
refresh_app = typer.Typer(help="Ask a Warehouse to discover now.", no_args_is_help=True)
app.add_typer(refresh_app, name="refresh")
credentials_app = typer.Typer(help="The worker's credentials.", no_args_is_help=True)
app.add_typer(credentials_app, name="credentials")

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)  # one line, however long
T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code=1)


def run_async(function: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command, turning user-fixable errors into one line and exit 1."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            settings()  # first: a bad variable is reported before anything is sent
            return asyncio.run(function(*args, **kwargs))
        except FreightlineError as err:
            raise fail(str(err)) from None
        except RPCError as err:
            raise fail(f"Temporal: {err.message}") from None
        except (ConnectionError, RuntimeError) as err:
            if "connect" in str(err).lower():
                from freightline.app.temporal import configured_address

                address = configured_address()
                raise fail(
                    f"cannot reach Temporal at {address}: start it with `freightline dev` "
                    "or set TEMPORAL_ADDRESS"
                ) from None
            raise

    return wrapper


@functools.cache
def settings() -> Settings:
    """This command's settings, read from the environment the first time they are needed.

    A bad value raises ConfigError, which every command turns into one line.
    """
    from freightline.settings import load_settings

    return load_settings()


ProjectOption = Annotated[str | None, typer.Option("--project", "-p", help="Project name.")]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="table or json.")]


@app.command()
def dev(
    db: Annotated[Path, typer.Option(help="The dev server's SQLite file (kept across runs).")] = (
        Path(".freightline/temporal.db")
    ),
    port: Annotated[int, typer.Option(help="Temporal frontend port.")] = 7233,
    ui_port: Annotated[
        int | None, typer.Option(help="Temporal UI port (default: the frontend port + 1000).")
    ] = None,
    metrics_address: Annotated[
        str,
        typer.Option(
            envvar="FREIGHTLINE_METRICS_ADDRESS",
            help="Where the worker serves Prometheus metrics (host:port; empty turns them off).",
        ),
    ] = "127.0.0.1:9464",
) -> None:
    """Start Temporal's dev server (UI, search attributes) and a worker; Ctrl-C stops both."""
    from freightline.app.devserver import DevServer
    from freightline.app.observability import worker_runtime
    from freightline.logging import configure_logging

    configure_logging()
    try:
        worker_settings = settings()
    except FreightlineError as err:
        raise fail(str(err)) from None
    try:
        # Bound before anything starts, so a busy port stops nothing half-way.
        runtime = worker_runtime(metrics_address)
    except (ValueError, FreightlineError) as err:
        raise fail(
            f"cannot serve metrics on {metrics_address!r}: {err} "
            "(choose another with --metrics-address, or '' for none)"
        ) from None
    from freightline.app.temporal import DEV_UI_PORT_OFFSET

    ui_port = ui_port or port + DEV_UI_PORT_OFFSET
    server = DevServer(db_file=db, port=port, ui_port=ui_port, log_file=db.with_suffix(".log"))
    try:
        with console.status("starting the Temporal dev server"):
            server.start()
    except FreightlineError as err:
        raise fail(str(err)) from None
    console.print(f"Temporal UI: {server.ui_url}   address: {server.address}   db: {db}")
    if ui_port != port + DEV_UI_PORT_OFFSET and not worker_settings.temporal.ui_url:
        console.print(f"other commands link to this UI with FREIGHTLINE_UI_URL={server.ui_url}")
    if runtime is not None:
        console.print(f"worker metrics: http://{metrics_address}/metrics")
    # The worker is told where this server is; the process's environment stays as it was.
    # A developer's repositories are often bare repositories on their own disk.
    worker_settings = worker_settings.replace(
        temporal={"ui_url": server.ui_url}, git={"allow_local_repositories": True}
    )
    try:
        from freightline.app.temporal import connect
        from worker import run_worker

        async def serve() -> None:
            client = await connect(server.address, runtime=runtime)
            await run_worker(client, settings=worker_settings)

        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping the Temporal dev server"):
            server.stop()


@app.command()
def worker() -> None:
    """Run a worker against TEMPORAL_ADDRESS (all workflows and activities)."""
    from worker import main as worker_main

    worker_main()


@app.command()
@run_async
async def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="YAML file of Kargo resources.")],
) -> None:
    """Create or update everything in FILE (validated first; nothing changes on error)."""
    from freightline.app.client import apply_everything
    from freightline.app.temporal import connect
    from freightline.kargo.config import group_by_project, group_cluster, load_file

    resources = load_file(file)
    cluster, projects = group_cluster(resources), group_by_project(resources)
    client = await connect()
    for result in await apply_everything(client, cluster, list(projects.values())):
        for label in result.created:
            console.print(f"{label} created")
        for label in result.updated:
            console.print(f"{label} updated")
        for label in result.unchanged:
            console.print(f"{label} unchanged")
        if not result.reconciled:
            console.print(
                f'project "{result.project}": recorded; its worker is still bringing the Stage '
                "and Warehouse workflows to it (`freightline get stages` shows their progress)"
            )
        project = projects.get(result.project)
        if project is not None:
            await _start_promotions(client, project, result.created)


async def _start_promotions(
    client: Client, resources: ProjectResources, created: Sequence[str]
) -> None:
    """A Promotion document starts its promotion when first applied, as in Kargo: through the
    Stage, as ``freightline promote`` does (re-applying it changes nothing)."""
    from freightline.app.client import promote_in_stage

    for label in created:
        kind, _, name = label.partition("/")
        promotion = resources.promotions.get(name) if kind == "Promotion" else None
        if promotion is None or promotion.spec.freight is None:
            continue
        ticket = await promote_in_stage(
            client,
            resources.name,
            promotion.spec.stage,
            promotion.spec.freight,
            f"{_user()} (Promotion/{name})",
        )
        console.print(f"promotion {ticket.promotion} queued (Promotion/{name})")


@app.command()
@run_async
async def promote(
    stage: Annotated[str, typer.Option(help="The Stage to promote into.")],
    project: ProjectOption = None,
    freight: Annotated[str | None, typer.Option(help="Freight ID.")] = None,
    freight_alias: Annotated[str | None, typer.Option(help="Freight alias.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the promotion to finish.")] = False,
    override_windows: Annotated[
        bool, typer.Option(help="Do not wait for a promotion window (recorded with your name).")
    ] = False,
) -> None:
    """Promote available Freight into a Stage (queued behind the Stage's running promotion)."""
    from freightline.app.client import promote_in_stage
    from freightline.app.temporal import connect, ui_url
    from freightline.contracts.names import workflow_ui_url

    target = freight or freight_alias
    if not target or (freight and freight_alias):
        raise fail("give exactly one of --freight or --freight-alias")
    client = await connect()
    ticket = await promote_in_stage(
        client, _project(project), stage, target, _user(), override_windows=override_windows
    )
    console.print(f"promotion {ticket.promotion} queued")
    ui = ui_url(settings().temporal.ui_url, client.service_client.config.target_host)
    console.print(f"  {workflow_ui_url(ui, client.namespace, ticket.promotion)}")
    if wait:
        await _wait_for(client, ticket.promotion)


@app.command()
@run_async
async def delete(
    kind: Annotated[
        str,
        typer.Argument(
            help="stage, warehouse, promotiontask, analysistemplate, configmap, freight or "
            "clusteranalysistemplate, clusterconfig."
        ),
    ],
    name: Annotated[str, typer.Argument(help="The resource's name.")],
    project: ProjectOption = None,
) -> None:
    """Delete a resource from a project (refused while others still use it)."""
    from freightline.app.client import delete_resource
    from freightline.app.temporal import connect
    from freightline.kargo.resources import CLUSTER_KINDS

    kinds = {
        k.lower(): k
        for k in (
            "Stage",
            "Warehouse",
            "PromotionTask",
            "AnalysisTemplate",
            "ConfigMap",
            "Freight",
            "ClusterAnalysisTemplate",
            "ClusterConfig",
        )
    }
    if kind.lower() not in kinds:
        raise fail(f'cannot delete "{kind}": one of {", ".join(kinds)}')
    chosen = kinds[kind.lower()]
    # A cluster-scoped kind belongs to no project: none need be named.
    in_project = "" if chosen in CLUSTER_KINDS else _project(project)
    answer = await delete_resource(await connect(), in_project, chosen, name, _user())
    console.print(answer)


@app.command()
@run_async
async def approve(
    stage: Annotated[str, typer.Option(help="The Stage to make the Freight available to.")],
    project: ProjectOption = None,
    freight: Annotated[str | None, typer.Option(help="Freight ID.")] = None,
    freight_alias: Annotated[str | None, typer.Option(help="Freight alias.")] = None,
) -> None:
    """Make Freight available to a Stage without upstream verification (as Kargo's approve)."""
    from freightline.app.client import approve_freight
    from freightline.app.temporal import connect

    target = freight or freight_alias
    if not target or (freight and freight_alias):
        raise fail("give exactly one of --freight or --freight-alias")
    message = await approve_freight(await connect(), _project(project), stage, target, _user())
    console.print(message)


@app.command()
@run_async
async def assemble(
    warehouse: Annotated[str, typer.Argument(help="The Warehouse whose discoveries to use.")],
    project: ProjectOption = None,
    pick: Annotated[
        list[str] | None,
        typer.Option(
            help="REPO_URL=VERSION: an image tag or digest, a commit or tag, a chart version "
            "(repeatable; other subscriptions take their newest)."
        ),
    ] = None,
    output: OutputOption = "table",
) -> None:
    """Make Freight from what a Warehouse discovered (for freightCreationPolicy: Manual)."""
    from freightline.app.client import assemble_freight
    from freightline.app.temporal import connect

    picks: dict[str, str] = {}
    for item in pick or []:
        repo_url, sep, version = item.rpartition("=")
        if not sep or not repo_url or not version:
            raise fail(f"--pick {item!r}: expected REPO_URL=VERSION")
        picks[repo_url] = version
    freight = await assemble_freight(await connect(), _project(project), warehouse, picks, _user())
    if output == "json":
        console.print_json(freight.model_dump_json(by_alias=True, exclude_none=True))
        return
    console.print(f"Freight {freight.alias} ({freight.metadata.name}) from Warehouse/{warehouse}")
    for image in freight.images or ():
        console.print(f"  image {image.repo_url}:{image.tag}  {image.digest}")
    for commit in freight.commits or ():
        console.print(f"  git   {commit.repo_url}@{commit.tag or commit.id}")
    for chart in freight.charts or ():
        console.print(f"  chart {chart.repo_url} {chart.name or ''} {chart.version}")


@app.command()
@run_async
async def verify(
    stage: Annotated[str, typer.Argument(help="The Stage whose current Freight to verify.")],
    project: ProjectOption = None,
    abort: Annotated[bool, typer.Option("--abort", help="Abort the running verification.")] = False,
) -> None:
    """Re-run the Stage's verification of its current Freight (or abort the running one)."""
    from freightline.app.client import stage_update
    from freightline.app.temporal import connect

    update = "abort_verification" if abort else "verify"
    console.print(await stage_update(await connect(), _project(project), stage, update, _user()))


@app.command("auto-promotion")
@run_async
async def auto_promotion(
    stage: Annotated[str, typer.Argument(help="The Stage.")],
    pause: Annotated[
        bool, typer.Option("--pause/--resume", help="Pause or resume its auto-promotion.")
    ],
    project: ProjectOption = None,
) -> None:
    """Pause a Stage's auto-promotion (manual promotions still run), or resume it."""
    from freightline.app.client import stage_update
    from freightline.app.temporal import connect

    update = "pause_auto_promotion" if pause else "resume_auto_promotion"
    console.print(await stage_update(await connect(), _project(project), stage, update, _user()))


PromotionArgument = Annotated[str, typer.Argument(help="The Promotion workflow ID.")]
UserOption = Annotated[str | None, typer.Option(help="Who you are (default: $USER).")]
CommentOption = Annotated[str, typer.Option(help="A comment, recorded with the decision.")]


@app.command("approve-promotion")
@run_async
async def approve_promotion(
    promotion: PromotionArgument, comment: CommentOption = "", user: UserOption = None
) -> None:
    """Approve a promotion waiting in a wait-for-approval step (refused with the reason)."""
    from freightline.app.client import decide_promotion
    from freightline.app.temporal import connect

    client = await connect()
    console.print(await decide_promotion(client, promotion, "approve", user or _user(), comment))


@app.command("reject-promotion")
@run_async
async def reject_promotion(
    promotion: PromotionArgument, comment: CommentOption = "", user: UserOption = None
) -> None:
    """Reject a promotion waiting for approval: it ends Failed, naming you."""
    from freightline.app.client import decide_promotion
    from freightline.app.temporal import connect

    client = await connect()
    console.print(await decide_promotion(client, promotion, "reject", user or _user(), comment))


@app.command()
@run_async
async def abort(
    promotion: Annotated[str | None, typer.Option(help="The Promotion workflow ID.")] = None,
    stage: Annotated[str | None, typer.Option(help="Abort this Stage's running promotion.")] = None,
    project: ProjectOption = None,
    reason: Annotated[str, typer.Option(help="Why, recorded in the result.")] = "",
    user: UserOption = None,
) -> None:
    """Abort a running or waiting promotion: it stops at the next safe point, ends Aborted."""
    from freightline.app.client import abort_promotion, running_promotion
    from freightline.app.temporal import connect

    if (promotion is None) == (stage is None):
        raise fail("give exactly one of --promotion or --stage")
    client = await connect()
    if stage is not None:
        promotion = await running_promotion(client, _project(project), stage)
    assert promotion is not None
    console.print(await abort_promotion(client, promotion, user or _user(), reason))


async def _wait_for(client: Any, promotion: str) -> None:
    """Wait for a queued promotion to start, then to finish."""
    from temporalio.service import RPCStatusCode

    from freightline.contracts.promotion import PromotionResult

    handle = client.get_workflow_handle(promotion, result_type=PromotionResult)
    with console.status(f"waiting for {promotion}"):
        while True:
            try:
                await handle.describe()
                break
            except RPCError as err:  # still queued behind another promotion
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(1)
        try:
            result: PromotionResult = await handle.result()
        except WorkflowFailureError as err:
            raise fail(f"promotion {promotion}: {err.cause}") from None
    commits = [o.outputs["commit"] for o in result.steps if o.uses in ("git-push", "github-push")]
    console.print(
        f"promotion {result.phase.value}" + (f": pushed {commits[-1]}" if commits else "")
    )


def _project(project: str | None) -> str:
    name = project or settings().cli.project
    if not name:
        raise fail("give --project (or set FREIGHTLINE_PROJECT)")
    return name


def _user() -> str:
    return settings().cli.user


@app.command()
@run_async
async def status(
    project: ProjectOption = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep the view live.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
) -> None:
    """The pipeline: each Stage's Freight, health, running promotion and queue."""
    from rich.live import Live

    from freightline.app.client import project_resources, running_notes, stage_states
    from freightline.app.status_view import pipeline_table
    from freightline.app.temporal import connect
    from freightline.contracts.project import stage_configs

    client = await connect()
    name = _project(project)

    async def table() -> Any:
        states = await stage_states(client, name)
        # A Stage whose workflow does not yet hold the applied config says so.
        desired = stage_configs(await project_resources(client, name))
        updating = {s.name for s in states if desired.get(s.name) != s.config}
        return pipeline_table(name, states, await running_notes(client, states), updating)

    if not watch:
        console.print(await table())
        return
    with Live(await table(), console=console, refresh_per_second=4) as live:
        while True:
            await asyncio.sleep(interval)
            live.update(await table())


@get_app.command("stages")
@run_async
async def get_stages(project: ProjectOption = None, output: OutputOption = "table") -> None:
    """Stages of a project (``-o json``: spec and state, see docs/json-output.md)."""
    from freightline.app.client import project_resources, stage_states
    from freightline.app.listings import stage_listing
    from freightline.app.temporal import connect

    client = await connect()
    resources = await project_resources(client, _project(project))
    if output == "json":
        states = {s.name: s for s in await stage_states(client, resources.name)}
        _print_json([stage_listing(s, states.get(n)) for n, s in sorted(resources.stages.items())])
        return
    rows = []
    for name, stage in sorted(resources.stages.items()):
        sources = []
        for request in stage.spec.requested_freight:
            if request.sources.direct:
                sources.append(f"{request.origin.name} (direct)")
            sources += [f"{request.origin.name} via {s}" for s in request.sources.stages or ()]
        rows.append({"name": name, "requestedFreight": ", ".join(sources)})
    _print(rows, output, f"stages of {resources.name}")


@get_app.command("warehouses")
@run_async
async def get_warehouses(project: ProjectOption = None, output: OutputOption = "table") -> None:
    """Warehouses of a project, with their last discovery and last error."""
    from freightline.app.client import project_resources, warehouse_statuses
    from freightline.app.temporal import connect

    client = await connect()
    resources = await project_resources(client, _project(project))
    statuses = {s.warehouse: s for s in await warehouse_statuses(client, resources.name)}
    if output == "json":
        from freightline.app.listings import warehouse_listing

        _print_json(
            [warehouse_listing(w, statuses.get(n)) for n, w in sorted(resources.warehouses.items())]
        )
        return
    rows = []
    for name, w in sorted(resources.warehouses.items()):
        status = statuses.get(name)
        last = status.last_discovery if status else None
        rows.append(
            {
                "name": name,
                "subscriptions": str(len(w.spec.subscriptions)),
                "interval": w.spec.interval,
                "freight": str(status.freight_count) if status else "",
                "lastDiscovery": last.isoformat(timespec="seconds") if last else "never",
                "lastError": (status.last_error or "") if status else "not running",
            }
        )
    _print(rows, output, f"warehouses of {resources.name}")


@get_app.command("freight")
@run_async
async def get_freight(project: ProjectOption = None, output: OutputOption = "table") -> None:
    """Freight known to a project: its Warehouses' and the applied, newest first."""
    from freightline.app.client import project_freight
    from freightline.app.temporal import connect

    name = _project(project)
    known = await project_freight(await connect(), name)
    if output == "json":
        from freightline.app.listings import freight_listing

        _print_json([freight_listing(f) for f in known])
        return
    rows = []
    for freight in known:
        artifacts = [f"{i.repo_url}:{i.tag}" for i in freight.images or ()]
        artifacts += [f"{c.repo_url}@{(c.id or '')[:7]}" for c in freight.commits or ()]
        artifacts += [f"{c.name}:{c.version}" for c in freight.charts or ()]
        rows.append(
            {
                "id": freight.metadata.name,
                "alias": freight.alias or "",
                "origin": freight.origin.name,
                "artifacts": ", ".join(artifacts),
                "discovered": (
                    freight.discovered_at.isoformat(timespec="seconds")
                    if freight.discovered_at
                    else ""
                ),
                # set-metadata's keys and values, compact (-o json has them whole)
                "metadata": ", ".join(
                    f"{key}={json.dumps(value, separators=(',', ':'))}"
                    for key, value in (
                        (freight.status.metadata if freight.status else None) or {}
                    ).items()
                ),
            }
        )
    _print(rows, output, f"freight of {name}")


@get_app.command("promotions")
@run_async
async def get_promotions(
    project: ProjectOption = None,
    stage: Annotated[str | None, typer.Option(help="Only this Stage.")] = None,
    output: OutputOption = "table",
) -> None:
    """Recent promotions, newest first."""
    from freightline.app.client import list_promotions
    from freightline.app.temporal import connect

    rows = await list_promotions(await connect(), project, stage)
    if output == "json":
        from freightline.app.listings import promotion_listing

        _print_json([promotion_listing(row) for row in rows])
        return
    table = [
        {
            key: value.isoformat(timespec="seconds") if isinstance(value, datetime) else value or ""
            for key, value in row.items()
            if key != "runId"
        }
        for row in rows
    ]
    _print(table, output, "promotions")


@refresh_app.command("warehouse")
@run_async
async def refresh_warehouse(
    name: Annotated[str, typer.Argument(help="The Warehouse.")],
    project: ProjectOption = None,
) -> None:
    """Ask a Warehouse to discover now (the ``refresh`` signal)."""
    from freightline.app.client import refresh_warehouse as send_refresh
    from freightline.app.temporal import connect

    await send_refresh(await connect(), _project(project), name)
    console.print(f"Warehouse/{name} refresh requested")


@app.command()
@run_async
async def webhooks(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default: FREIGHTLINE_WEBHOOK_HOST, 127.0.0.1)."),
    ] = None,
) -> None:
    """Serve the webhook receivers: Kargo's (ProjectConfig webhookReceivers) and /webhooks/<project>/..."""
    from freightline.app.temporal import connect
    from freightline.app.webhooks import WebhookServer
    from freightline.kargo.credentials import CredentialStore
    from freightline.settings import CREDENTIALS_FILE_ENV, WEBHOOK_SECRET_ENV

    hooks = settings().webhooks
    host = host or hooks.host
    credentials = CredentialStore.from_settings(settings().git)
    if not hooks.secret_value() and credentials.path is None:
        raise fail(
            f"set {CREDENTIALS_FILE_ENV} (the Secrets of Kargo's webhook receivers) or"
            f" {WEBHOOK_SECRET_ENV}: without either every webhook is refused"
        )
    client = await connect()
    server = WebhookServer(
        client,
        secret=hooks.secret_value(),
        github_secret=hooks.github_secret_value(),
        credentials=credentials,
        mirrors=settings().registry.mirrors,
        host=host,
        port=port,
    )
    try:
        await server.start()
    except OSError as err:
        raise fail(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    try:
        base = f"http://{host}:{server.port}"
        console.print(
            f"webhooks on {base}/<type>/<hash> (freightline credentials check prints them)"
        )
        if hooks.secret_value():
            console.print(f"and on {base}/webhooks/<project>/registry|github|generic")
        await server.serve_forever()
    finally:
        await server.close()


@credentials_app.command("check")
@run_async
async def credentials_check(
    project: ProjectOption = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Check the projects of this YAML file, not Temporal's."),
    ] = None,
    show_urls: Annotated[
        bool,
        typer.Option(help="Also print each webhook receiver's path (for some, itself a secret)."),
    ] = False,
    output: OutputOption = "table",
) -> None:
    """Which Warehouses, steps and webhook receivers have the credentials they need.

    Reads the worker's credentials as the worker does (FREIGHTLINE_CREDENTIALS_FILE,
    FREIGHTLINE_GIT_USERNAME, ARGOCD_*, the cloud workload identities' variables) and
    prints, for each need, the Secret or identity that serves it, never a value; the
    ClusterConfig's receivers too. Exits 1 when something is missing.
    """
    from activities.registry_identity import workload_cover
    from freightline.kargo.config import group_by_project, group_cluster, load_file
    from freightline.kargo.credential_check import check_cluster, check_project
    from freightline.kargo.credentials import CredentialStore

    if file is not None:
        loaded = load_file(file, project)
        projects = list(group_by_project(loaded).values())
        cluster_config = group_cluster(loaded).cluster_config
    else:
        from activities.project import cluster_resources
        from freightline.app.client import project_resources
        from freightline.app.temporal import connect

        client = await connect()
        projects = [await project_resources(client, _project(project))]
        cluster_config = (await cluster_resources(client)).cluster_config
    store = CredentialStore.from_settings(settings().git)
    argocd = settings().argocd
    environ = dict(os.environ)  # the variables the worker's cloud identities read
    needs = [
        (resources.name, need)
        for resources in projects
        for need in check_project(
            resources,
            store,
            argocd_configured=bool(argocd.server and argocd.token),
            receiver_urls=show_urls,
            workloads=lambda url, name: workload_cover(url, environ, name),
        )
    ]
    needs += [
        ("(cluster)", need)
        for need in check_cluster(cluster_config, store, receiver_urls=show_urls)
    ]
    rows = [
        {
            "project": where,
            "needed by": need.where,
            "kind": need.kind,
            "for": need.target,
            "status": need.status,
            "detail": need.detail,
        }
        for where, need in needs
    ]
    _print(rows, output, "credentials")
    missing = [row for row in rows if row["status"] == "missing"]
    if missing:
        raise fail(
            f"{len(missing)} credential(s) missing: {', '.join(r['needed by'] for r in missing)}"
        )


@app.command()
@run_async
async def ui(
    address: Annotated[
        str | None,
        typer.Option(
            help="host:port to serve on (default: FREIGHTLINE_UI_ADDRESS, else 127.0.0.1:8088)."
        ),
    ] = None,
) -> None:
    """Serve the web UI: the pipeline graph, Freight, Stages, Promotions, actions (docs/ui.md)."""
    from freightline.app.temporal import connect
    from freightline.app.ui import UiServer
    from freightline.app.ui_auth import access_for
    from freightline.settings import UI_ADDRESS_ENV, parse_address

    ui_settings = settings().ui
    host, port = parse_address(
        address or ui_settings.address or "127.0.0.1:8088", setting=f"--address ({UI_ADDRESS_ENV})"
    )
    access = access_for(ui_settings)
    client = await connect()
    server = UiServer(client, access, host=host, port=port, temporal_ui=settings().temporal.ui_url)
    try:
        await server.__aenter__()
    except OSError as err:
        raise fail(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    try:
        console.print(f"Freightline UI on {server.url} (sign-in: {ui_settings.auth})")
        await server.serve_forever()
    finally:
        await server.__aexit__()


@app.command("ui-keygen")
def ui_keygen() -> None:
    """Print a new approval signing key pair: FREIGHTLINE_UI_SIGNING_KEY and the ProjectConfig's
    approvalKeys entry (a project listing it accepts only approvals the UI signed)."""
    from freightline.contracts.approvals import new_signing_key, public_key_of

    private = new_signing_key()
    print(f"FREIGHTLINE_UI_SIGNING_KEY={private}")
    print(f"approvalKeys: [{public_key_of(private)}]   # in the ProjectConfig's spec")


@app.command("ui-password")
def ui_password(
    user: Annotated[str, typer.Argument(help="The user name the line is for.")],
) -> None:
    """Print a users-file entry for USER with a password hash (the password is prompted for)."""
    from freightline.app.ui_auth import hash_password

    password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    print(f'  {user}: {{password: "{hash_password(password)}"}}')


def _print_json(listing: list[dict[str, Any]]) -> None:
    """The scriptable output (``freightline.app.listings``): one JSON array."""
    print(json.dumps(listing, indent=2))


def _print(rows: list[dict[str, str]], output: str, title: str) -> None:
    if output == "json":
        print(json.dumps(rows, indent=2))
        return
    if output != "table":
        raise fail(f'--output must be table or json, not "{output}"')
    table = Table(title=title)
    for column in rows[0] if rows else ["(none)"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    console.print(table)


@app.command()
def demo(
    once: Annotated[
        bool, typer.Option(help="Run unattended, check the end state, stop everything, exit 0.")
    ] = False,
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps its state.")] = Path(
        ".freightline/demo"
    ),
    port: Annotated[int, typer.Option(help="Temporal frontend port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port.")] = 8233,
    metrics_provider: Annotated[
        str,
        typer.Option(
            help="Where uat's verification reads the error ratio: prometheus or graphite "
            "(a real Graphite from Debian's graphite-carbon and graphite-web)."
        ),
    ] = "prometheus",
    sign_in: Annotated[
        str,
        typer.Option(
            help="How people sign in to the web UI: oidc (at the sandbox OIDC issuer) "
            "or password (a users file)."
        ),
    ] = "oidc",
    pr: Annotated[
        bool,
        typer.Option(
            help="Promote prod through a pull request on a GitHub emulator "
            "(merged by the demo with --once)."
        ),
    ] = False,
) -> None:
    """The main job: a Temporal dev server, a worker and a promotion into a local GitOps repo."""
    # The sandbox is not part of the package: in a checkout (an editable install, as
    # scripts/demo makes) it sits next to freightline/, whatever the current directory.
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "sandbox" / "demo" / "run.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        from sandbox.demo.run import run_demo
    except ImportError:  # an installed package: the sandbox stays in the checkout
        raise fail(
            "freightline demo runs from a checkout (it starts the sandbox's stand-ins): "
            "clone the repository and run scripts/demo"
        ) from None

    try:
        ok = run_demo(
            workdir=workdir,
            once=once,
            port=port,
            ui_port=ui_port,
            console=console,
            metrics_provider=metrics_provider,
            sign_in=sign_in,
            pr=pr,
        )
    except FreightlineError as err:
        raise fail(str(err)) from None
    if not ok:
        raise typer.Exit(code=1)


def main() -> None:
    """Console-script entry point: runs the command, then leaves by ``exit_process``."""
    from freightline.app.temporal import exit_process

    code = 0
    try:
        app()
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            errors.print(str(done.code), highlight=False, markup=False)
            code = 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    exit_process(code)
