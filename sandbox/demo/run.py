"""The main job: the whole pipeline on loopback, a good image and a bad one, watched live.

``freightline demo`` (the README's first command) brings up, each on a free
loopback port: Temporal's dev server with its UI, Debian's docker-registry,
a local GitOps repository seeded from the kargo-demo fixture, the Argo CD
API emulator (the quickstart's ApplicationSet), a worker (with the webhook
receiver, the web UI and its metrics endpoint), and Prometheus scraping the emulator
and the worker. It applies ``sandbox/demo/kargo.yaml`` and then:

1. pushes a good image tag: the registry's webhook refreshes the Warehouse,
   the Freight is auto-promoted into test and uat, verified in uat with
   Prometheus, and its promotion into prod waits for a person's approval;
2. pushes a bad tag (the emulator gives it a 50% error ratio): it reaches
   uat, fails verification there, and uat rolls back to the good Freight.

The live status view shows each step. The demo prints the web UI's address
with its users' logins (an approver, a promoter, a viewer; fresh passwords each
run): by default they sign in at the sandbox OIDC issuer (``sandbox/oidc.py``,
authorization code with PKCE; alice is an approver by her groups claim),
``--sign-in password`` gives the UI a users file instead. Then the Temporal UI
links and the command that approves prod. ``--once``
runs the same script unattended, approves prod itself (signed in to the web UI
as alice), checks the end state and exits 0 (the test suite runs it). Ctrl-C
stops everything the demo started. State lives in
``--workdir`` (default ``.freightline/demo``) and is started afresh each run.

``--pr`` hosts the GitOps repository on the forge emulator (GitHub's API, real git
over smart HTTP) and promotes prod through a pull request (``demo-pr-process``:
push to ``kargo/promotion/<id>``, ``git-open-pr`` into ``stage/prod``,
``git-wait-for-pr``); the web UI shows prod waiting for it, with its link. With
``--once`` the demo merges it as alice, and the forge's webhook wakes the promotion.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table
from temporalio.client import Client

from freightline.app.client import apply_project, running_notes, stage_states
from freightline.app.devserver import DevServer
from freightline.app.observability import worker_runtime
from freightline.app.status_view import pipeline_table
from freightline.app.temporal import connect
from freightline.app.ui_auth import hash_password
from freightline.contracts.argocd import HealthState
from freightline.contracts.names import stage_workflow_id, workflow_ui_url
from freightline.contracts.promotion import PromotionStatus
from freightline.contracts.stage import StageState
from freightline.errors import ConfigError, FreightlineError
from freightline.kargo.config import group_by_project, load_text, substitute_env
from freightline.kargo.webhooks import receiver_path
from freightline.logging import configure_logging
from freightline.settings import Settings, load_settings
from sandbox.argocd import ArgoCDEmulator
from sandbox.forge import ForgeEmulator
from sandbox.gitops import KARGO_QUICKSTART, create_bare_repo
from sandbox.graphite import GraphiteServer
from sandbox.oidc import IssuerClient, IssuerUser, OidcIssuer
from sandbox.prometheus import PrometheusServer
from sandbox.registry import Pusher, Registry, free_port, start_registry, webhook_notifications

DEMO_PIPELINE = Path(__file__).resolve().parent / "kargo.yaml"
GRAPHITE_TEMPLATE = DEMO_PIPELINE.with_name("graphite.yaml")
METRICS_PROVIDERS = ("prometheus", "graphite")
PROJECT = "kargo-demo"
IMAGE_PATH = "demo/nginx"
GOOD_TAG, BAD_TAG = "1.0.0", "1.0.1"
FORGE_REPO = "demo/gitops"
"""The GitOps repository on the forge emulator (``--pr``)."""
STEP_TIMEOUT = 240.0


@dataclass
class Demo:
    """Everything the demo started, for the script to use."""

    workdir: Path
    server: DevServer
    registry: Registry
    emulator: ArgoCDEmulator
    prometheus: PrometheusServer
    repo: Path
    metrics_port: int
    console: Console
    settings: Settings
    """The in-process worker's settings: the environment's, pointed at the demo's services."""
    ui_url: str = ""
    """The web UI the worker serves."""
    graphite: GraphiteServer | None = None
    """With ``--metrics-provider graphite``: uat's verification reads this Graphite."""
    logins: tuple[tuple[str, str, str], ...] = ()
    """(user, password, role) of each web UI user."""
    issuer: OidcIssuer | None = None
    """The sandbox OIDC issuer people sign in at (``--sign-in oidc``); None: passwords."""
    forge: ForgeEmulator | None = None
    """``--pr``: the GitHub emulator that hosts the GitOps repository; prod promotes through
    a pull request on it."""

    @property
    def repo_url(self) -> str:
        return self.forge.repo_url(FORGE_REPO) if self.forge else self.repo.as_uri()

    @property
    def image_repo(self) -> str:
        return f"{self.registry.host}/{IMAGE_PATH}"


def run_demo(
    *,
    workdir: Path,
    once: bool,
    port: int,
    ui_port: int,
    console: Console,
    metrics_provider: str = "prometheus",
    sign_in: str = "oidc",
    pr: bool = False,
) -> bool:
    """Run the demo; with ``once``, True when the end state checks out. ``metrics_provider``
    ``graphite`` verifies uat against a real Graphite fed from the emulator's error ratios;
    ``sign_in`` ``oidc`` signs people in at the sandbox OIDC issuer, ``password`` from a file;
    ``pr`` promotes prod through a pull request on a GitHub emulator."""
    if metrics_provider not in METRICS_PROVIDERS:
        raise FreightlineError(
            f'--metrics-provider "{metrics_provider}": one of {", ".join(METRICS_PROVIDERS)}'
        )
    settings = load_settings()  # first: a bad variable stops the demo before anything starts
    workdir = workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    configure_logging("INFO", path=workdir / "worker.log")
    console.print(f"state and logs in {workdir}")
    with ExitStack() as stack:
        server = DevServer(
            db_file=workdir / "temporal.db",
            port=port,
            ui_port=ui_port,
            log_file=workdir / "temporal.log",
        )
        with console.status("starting Temporal's dev server (UI on)"):
            server.start()
        stack.callback(server.stop)
        repo = create_bare_repo(workdir / "gitops.git")
        webhook_port, webhook_secret = free_port(), secrets.token_hex(16)
        forge, repo_url, credentials_file = None, repo.as_uri(), None
        if pr:
            forge, credentials_file = _start_forge(workdir, webhook_port)
            stack.callback(forge.stop)
            repo = forge.store.repos[FORGE_REPO]
            repo_url = forge.repo_url(FORGE_REPO)
        with console.status("starting docker-registry"):
            registry = start_registry(
                workdir / "registry",
                notifications=webhook_notifications(
                    f"http://127.0.0.1:{webhook_port}/webhooks/{PROJECT}/registry", webhook_secret
                ),
            )
        stack.callback(registry.stop)
        token = secrets.token_hex(16)
        emulator = ArgoCDEmulator(
            KARGO_QUICKSTART / "argocd-applicationset.yaml",
            token,
            variables={"GITOPS_REPO_URL": repo_url},
            error_ratio_by_tag={BAD_TAG: 0.5},
        )
        emulator.start()
        stack.callback(emulator.stop)
        metrics_port = free_port()
        ui_address = f"127.0.0.1:{free_port()}"
        logins = [(user, secrets.token_urlsafe(9), role) for user, role in DEMO_USERS]
        issuer, ui_auth = _sign_in_settings(sign_in, logins, ui_address, workdir / "ui-users.yaml")
        prometheus = PrometheusServer(
            workdir / "prometheus",
            targets=[emulator.base_url.removeprefix("http://"), f"127.0.0.1:{metrics_port}"],
        )
        stack.callback(prometheus.stop)
        graphite = None
        if metrics_provider == "graphite":
            graphite = GraphiteServer(workdir / "graphite")
            with console.status("starting Graphite (carbon-cache, graphite-web)"):
                graphite.start()
            stack.callback(graphite.stop)
            stop_feeding = threading.Event()
            feeder = threading.Thread(
                target=_feed_graphite, args=(emulator.base_url, graphite, stop_feeding), daemon=True
            )
            feeder.start()
            stack.callback(stop_feeding.set)
        # The worker gets the demo's services through its settings; the environment is untouched.
        settings = settings.replace(
            temporal={"ui_url": server.ui_url},
            # The GitOps repo is a bare repo on disk (or, with --pr, on the forge emulator,
            # whose token the credentials file holds).
            git={"allow_local_repositories": True, "credentials_file": credentials_file},
            argocd={"server": emulator.base_url, "token": token},
            webhooks={"host": "127.0.0.1", "port": webhook_port, "secret": webhook_secret},
            ui={"address": ui_address, "secret": secrets.token_hex(16), **ui_auth},
        )
        console.print(
            f"Temporal UI {server.ui_url} · registry {registry.url} · Argo CD emulator "
            f"{emulator.base_url} · GitOps repo {repo}"
        )
        console.print(
            f"Freightline UI http://{ui_address} · sign in as "
            + ", ".join(f"{user} / {password} ({role})" for user, password, role in logins)
            + (f" · at the sandbox OIDC issuer {ui_auth['oidc_issuer_url']}" if issuer else "")
        )
        demo = Demo(
            workdir,
            server,
            registry,
            emulator,
            prometheus,
            repo,
            metrics_port,
            console,
            settings,
            ui_url=f"http://{ui_address}",
            logins=tuple(logins),
            graphite=graphite,
            issuer=issuer,
            forge=forge,
        )
        try:
            return asyncio.run(_main(demo, once))
        except KeyboardInterrupt:
            console.print("stopping everything the demo started")
            return True


def _start_forge(workdir: Path, webhook_port: int) -> tuple[ForgeEmulator, Path]:
    """``--pr``: a GitHub emulator holding the GitOps repository (``stage/prod`` exists, as a
    pull request needs its target), posting its pull request events to the project's Kargo
    receiver; the worker's credentials file (the forge token, the receiver's secret)."""
    token, hook_secret = secrets.token_hex(16), secrets.token_hex(16)
    hook = f"http://127.0.0.1:{webhook_port}" + receiver_path(
        PROJECT, "github", "forge", hook_secret
    )
    forge = ForgeEmulator(
        "github", workdir / "forge", token=token, webhook_url=hook, webhook_secret=hook_secret
    )
    forge.add_repo(FORGE_REPO)
    forge.commit_to(FORGE_REPO, "stage/prod", {"README.md": "prod, promoted by pull requests\n"})
    path = workdir / "credentials.yaml"
    path.write_text(
        f"""apiVersion: v1
kind: Secret
metadata:
  name: gitops
  labels:
    kargo.akuity.io/cred-type: git
stringData:
  repoURL: {forge.repo_url(FORGE_REPO)}
  username: freightline
  password: {token}
---
apiVersion: v1
kind: Secret
metadata:
  name: forge-hooks
  namespace: {PROJECT}
stringData:
  secret: {hook_secret}
"""
    )
    path.chmod(0o600)
    return forge, path


DEMO_USERS = (("alice", "approver"), ("bob", "promoter"), ("victor", "viewer"))


DEMO_CLIENT = "freightline-demo"


def _sign_in_settings(
    sign_in: str, logins: list[tuple[str, str, str]], ui_address: str, users_file: Path
) -> tuple[OidcIssuer | None, dict[str, Any]]:
    """How the demo's people sign in to the web UI: at the sandbox OIDC issuer (the default;
    their groups claim makes alice an approver) or with a password from a users file. One
    user per role, fresh passwords each run."""
    if sign_in == "password":
        lines = ["users:"]
        lines += [f'  {user}: {{password: "{hash_password(pw)}"}}' for user, pw, _ in logins]
        lines += ["roles:", f"  {PROJECT}:"]
        lines += [f"    {role}: [{user}]" for user, _, role in logins]
        users_file.write_text("\n".join(lines) + "\n")
        return None, {"auth": "users", "users_file": users_file}
    if sign_in != "oidc":
        raise ConfigError(f'--sign-in must be oidc or password, not "{sign_in}"')
    groups = {"approver": ("release-managers",), "promoter": ("developers",)}
    port = free_port()
    issuer = OidcIssuer(
        users=[IssuerUser(user, pw, groups.get(role, ())) for user, pw, role in logins],
        clients=[IssuerClient(DEMO_CLIENT, (f"http://{ui_address}/oidc/callback",))],
        port=port,
    )
    # Roles by group claim (the approver and the promoter) and by user name (the viewer).
    users_file.write_text(
        f"roles:\n  {PROJECT}:\n    approver: [group:release-managers]\n"
        "    promoter: [group:developers]\n    viewer: [victor]\n"
    )
    return issuer, {
        "auth": "oidc",
        "users_file": users_file,
        "oidc_issuer_url": f"http://127.0.0.1:{port}",
        "oidc_client_id": DEMO_CLIENT,
        "oidc_username_claim": "preferred_username",  # alice, not alice@example.com
    }


async def _main(demo: Demo, once: bool) -> bool:
    from worker import run_worker

    runtime = worker_runtime(f"127.0.0.1:{demo.metrics_port}")
    client = await connect(demo.server.address, runtime=runtime)
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as services:
        if demo.issuer is not None:
            await services.enter_async_context(demo.issuer)
        worker = asyncio.create_task(run_worker(client, settings=demo.settings, stop=stop))
        try:
            return await _run(client, demo, once, stop)
        finally:
            stop.set()
            await worker


async def _run(client: Client, demo: Demo, once: bool, stop: asyncio.Event) -> bool:
    with demo.console.status("starting Prometheus"):
        await asyncio.to_thread(demo.prometheus.start)
    await _apply(client, demo)
    with Live(console=demo.console, refresh_per_second=4) as live:
        watcher = asyncio.create_task(_watch(client, live))
        try:
            ok = await _script(client, demo, once)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            # The last table is read now, not half a second before the script's last
            # line: the closing view agrees with what the demo just said.
            with contextlib.suppress(Exception):
                live.update(await _table(client))
        if not once:
            demo.console.print("running; Ctrl-C stops the worker and every service")
            await stop.wait()
            demo.console.print("stopping everything the demo started")
    return ok


async def _apply(client: Client, demo: Demo) -> None:
    variables = {
        "IMAGE_REPO": demo.image_repo,
        "GITOPS_REPO_URL": demo.repo_url,
        "PROMETHEUS_URL": demo.prometheus.url,
        "GRAPHITE_URL": demo.graphite.url if demo.graphite else "",
        "PROD_TASK": "demo-pr-process" if demo.forge else "demo-promo-process",
        "WEBHOOK_RECEIVERS": (
            "[{name: forge, github: {secretRef: {name: forge-hooks}}}]" if demo.forge else "[]"
        ),
    }
    documents = load_text(substitute_env(DEMO_PIPELINE.read_text(), variables), str(DEMO_PIPELINE))
    if demo.graphite is not None:
        # The Graphite template takes the place of the Prometheus one of the same name.
        text = substitute_env(GRAPHITE_TEMPLATE.read_text(), variables)
        (graphite,) = load_text(text, source=str(GRAPHITE_TEMPLATE))
        documents = [d for d in documents if d.kind != graphite.kind] + [graphite]
    for resources in group_by_project(documents).values():
        await apply_project(client, resources)
    provider = "Graphite" if demo.graphite else "Prometheus"
    prod = "prod (through a pull request)" if demo.forge else "prod"
    demo.console.print(
        f"applied {DEMO_PIPELINE.name}: test → uat (verified with {provider}) → {prod}"
    )


_ERROR_RATIO = re.compile(r'^emulator_error_ratio\{app="([A-Za-z0-9_-]+)"\} (\S+)$', re.MULTILINE)


def _feed_graphite(emulator_url: str, graphite: GraphiteServer, stop: threading.Event) -> None:
    """Each second, the emulator's error ratio per app to carbon (``demo.error_ratio.<app>``),
    as a collector such as collectd would send it."""
    while not stop.wait(1.0):
        with contextlib.suppress(httpx.HTTPError, OSError):  # the next second tries again
            exposition = httpx.get(f"{emulator_url}/metrics", timeout=2).text
            for app, ratio in _ERROR_RATIO.findall(exposition):
                graphite.feed(f"demo.error_ratio.{app}", [float(ratio)])


async def _table(client: Client) -> Table:
    states = await stage_states(client, PROJECT)
    return pipeline_table(PROJECT, states, await running_notes(client, states))


async def _watch(client: Client, live: Live) -> None:
    while True:
        with contextlib.suppress(Exception):  # a refresh that fails just waits for the next
            live.update(await _table(client))
        await asyncio.sleep(0.5)


async def _script(client: Client, demo: Demo, once: bool) -> bool:
    say = demo.console.print
    pusher = Pusher(demo.registry)
    try:
        say(f"pushing the good image {demo.image_repo}:{GOOD_TAG}")
        await asyncio.to_thread(pusher.image, IMAGE_PATH, GOOD_TAG, created="2026-01-01T00:00:00Z")
        good = await _until(
            client,
            "the good Freight verified in uat",
            lambda s: _verified_at(s, "uat", GOOD_TAG),
        )
        say(f"[green]uat verified {good}[/green]")
        prod_promotion = await _until(
            client, "the prod promotion waiting for approval", _prod_waiting
        )
        await _until_waiting_for_approval(client, prod_promotion)
        say(f"[yellow]prod waits for approval[/yellow] of {good} ({prod_promotion})")
        _print_links(demo, client, prod_promotion)
        say(f"pushing the bad image {demo.image_repo}:{BAD_TAG} (50% errors in the emulator)")
        await asyncio.to_thread(pusher.image, IMAGE_PATH, BAD_TAG, created="2026-01-02T00:00:00Z")
        await _until(
            client,
            "the bad Freight failing verification in uat",
            lambda s: _failed_in(s, "uat", BAD_TAG),
        )
        await _until(
            client,
            "uat rolled back to the good Freight",
            lambda s: _current_tag(s, "uat") == GOOD_TAG and s["uat"].running is None,
        )
        say("[red]uat failed verification of the bad image[/red] and rolled back")
        if not once:
            say("prod still waits for your approval (the command above)")
            return True
        await _approve_in_ui(demo, prod_promotion)
        say("prod approved in the web UI as alice")
        if demo.forge is not None:
            await _merge_pull_request(client, demo, prod_promotion)
        await _until(
            client,
            "prod Healthy at the good Freight",
            lambda s: (
                _current_tag(s, "prod") == GOOD_TAG and s["prod"].health is HealthState.HEALTHY
            ),
        )
        say("[green]prod approved, promoted and Healthy; the bad image never left uat[/green]")
        return True
    finally:
        pusher.close()


async def _approve_in_ui(demo: Demo, promotion: str) -> None:
    """What a person does in the web UI: sign in as the approver, approve the promotion."""
    user, password = next((u, p) for u, p, role in demo.logins if role == "approver")
    async with httpx.AsyncClient(base_url=demo.ui_url, timeout=60) as browser:
        if demo.issuer is not None:
            await _sign_in_at_issuer(browser, user, password)
        else:
            page = await browser.get("/login")
            answer = await browser.post(
                "/login", data={"csrf": _csrf(page.text), "user": user, "password": password}
            )
            if answer.status_code != 303:
                raise FreightlineError(
                    f"the web UI refused the demo's sign-in: {answer.status_code}"
                )
        page = await browser.get(f"/promotions/{quote(promotion, safe='')}")
        answer = await browser.post(
            f"/promotions/{quote(promotion, safe='')}/approve",
            data={"csrf": _csrf(page.text), "comment": "approved by the unattended demo"},
        )
        if answer.status_code != 200:
            raise FreightlineError(f"the web UI refused the approval: {answer.text[:500]}")


async def _sign_in_at_issuer(browser: httpx.AsyncClient, user: str, password: str) -> None:
    """What a browser does: the UI sends it to the issuer, the person fills in the issuer's
    form, the issuer sends it back to the UI's callback with a code."""
    to_issuer = await browser.get("/oidc/start")
    form = {k: v[-1] for k, v in parse_qs(urlsplit(to_issuer.headers["location"]).query).items()}
    answer = await browser.post(
        to_issuer.headers["location"].split("?")[0],
        data={**form, "username": user, "password": password},
    )
    if answer.status_code != 303:
        raise FreightlineError(f"the sandbox issuer refused the demo's sign-in: {answer.text}")
    landed = await browser.get(answer.headers["location"])
    if landed.status_code != 303:
        raise FreightlineError(f"the web UI refused the demo's sign-in: {landed.text[:500]}")


async def _merge_pull_request(client: Client, demo: Demo, promotion: str) -> None:
    """``--pr``: once prod waits for its pull request, merge it in the forge as a reviewer
    would; the forge's webhook wakes the promotion."""
    assert demo.forge is not None
    handle = client.get_workflow_handle(promotion)
    found: list[PromotionStatus] = []

    async def waiting() -> bool:
        status = await handle.query("status", result_type=PromotionStatus)
        if status.pull_request is not None and status.pull_request.url:
            found.append(status)
            return True
        return False

    deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT
    while not await waiting():
        if asyncio.get_running_loop().time() > deadline:
            raise FreightlineError("timed out waiting for prod's pull request")
        await asyncio.sleep(0.5)
    wait = found[-1].pull_request
    assert wait is not None
    demo.console.print(f"[yellow]prod waits for its pull request[/yellow] {wait.url}")
    merged = await asyncio.to_thread(demo.forge.merge, FORGE_REPO, wait.number, user="alice")
    demo.console.print(
        f"pull request #{wait.number} merged by alice in the forge ({merged.merge_commit}); "
        "its webhook wakes the promotion"
    )


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    if found is None:
        raise FreightlineError("the web UI's page has no form")
    return found.group(1)


def _print_links(demo: Demo, client: Client, promotion: str) -> None:
    say = demo.console.print
    ui = demo.server.ui_url  # the demo's own dev server
    say(
        f"Temporal UI, this project's workflows: {ui}/namespaces/{client.namespace}/workflows"
        f"?query=FreightlineProject%3D%22{PROJECT}%22"
    )
    say(
        f"the uat Stage: {workflow_ui_url(ui, client.namespace, stage_workflow_id(PROJECT, 'uat'))}"
    )
    say(f"the prod promotion: {workflow_ui_url(ui, client.namespace, promotion)}")
    say(f"approve it in the web UI as alice: {demo.ui_url}/promotions/{quote(promotion, safe='')}")
    say(
        "approve prod (another terminal): "
        f"TEMPORAL_ADDRESS={demo.server.address} .venv/bin/freightline approve-promotion "
        f"'{promotion}' --comment 'looks good'"
    )
    if demo.forge is not None:
        say(
            "then prod opens a pull request on the forge emulator (its link shows in the web "
            "UI); merge it as a reviewer would: "
            f"curl -X POST {demo.forge.url}/-/person/merge -H 'Content-Type: application/json' "
            f"""-d '{{"project": "{FORGE_REPO}", "number": 1, "user": "you"}}'"""
        )


def _prod_waiting(states: dict[str, StageState]) -> str | None:
    running = states["prod"].running if "prod" in states else None
    return running.promotion if running else None


async def _until_waiting_for_approval(client: Client, promotion: str) -> None:
    deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT
    handle = client.get_workflow_handle(promotion)
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(Exception):  # not started yet
            status = await handle.query("status", result_type=PromotionStatus)
            if status.approval is not None:
                return
        await asyncio.sleep(0.5)
    raise FreightlineError(f"{promotion} never started waiting for approval")


async def _until(
    client: Client, what: str, check: Callable[[dict[str, StageState]], str | bool | None]
) -> str:
    """Poll the Stages until ``check`` passes; its value (an alias) is returned."""
    deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT
    while True:
        states = {s.name: s for s in await stage_states(client, PROJECT)}
        if states and (value := check(states)):
            return value if isinstance(value, str) else ""
        if asyncio.get_running_loop().time() > deadline:
            raise FreightlineError(f"the demo waited {STEP_TIMEOUT:.0f}s for {what}")
        await asyncio.sleep(0.5)


def _current_tag(states: dict[str, StageState], stage: str) -> str | None:
    current = states[stage].current if stage in states else None
    if current is None:
        return None
    return next((v.rsplit(":", 1)[-1] for v in current.versions), None)


def _verified_at(states: dict[str, StageState], stage: str, tag: str) -> str | None:
    current = states[stage].current if stage in states else None
    if current is not None and current.verified and _current_tag(states, stage) == tag:
        return current.freight_alias or current.freight
    return None


def _failed_in(states: dict[str, StageState], stage: str, tag: str) -> bool:
    state = states.get(stage)
    if state is None:
        return False
    failed = {v.freight for v in state.verifications if v.phase == "Failed"}
    return any(h.freight in failed and h.versions[-1].endswith(f":{tag}") for h in state.history)
