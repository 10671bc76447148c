"""The main job: everything on loopback, one promotion of the Kargo quickstart, a link to it.

Brings up Temporal's dev server (UI on), a worker, and a local GitOps
repository seeded from the kargo-demo fixture; applies the demo pipeline
(``sandbox/demo/kargo.yaml``) and a Freight; promotes it into ``test`` and
shows where to look. Without ``--once`` it keeps running until Ctrl-C so
the UI can be explored; Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from rich.console import Console
from temporalio.client import Client, WorkflowFailureError

from freightline.client import apply_project, start_promotion
from freightline.config import group_by_project, load_text, substitute_env
from freightline.devserver import DevServer
from freightline.errors import FreightlineError
from freightline.freight import freight_alias, freight_id
from freightline.logging import configure_logging
from freightline.promotion import PromotionResult
from freightline.resources import Freight
from freightline.temporal import connect, workflow_ui_url
from sandbox.gitops import branch_head, create_bare_repo, show_file

DEMO_PIPELINE = Path(__file__).resolve().parent.parent / "sandbox" / "demo" / "kargo.yaml"
DEMO_IMAGE = "public.ecr.aws/nginx/nginx"
DEMO_TAG = "1.29.1"
PROJECT = "kargo-demo"


def demo_freight(tag: str = DEMO_TAG) -> Freight:
    """A Freight for the demo image at ``tag``, with its ID and alias computed."""
    images = [{"repoURL": DEMO_IMAGE, "tag": tag}]
    origin = {"kind": "Warehouse", "name": PROJECT}
    name = freight_id(Freight.model_validate({"origin": origin, "images": images, "metadata": {}}))
    return Freight.model_validate(
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Freight",
            "metadata": {"name": name, "namespace": PROJECT},
            "alias": freight_alias(name),
            "origin": origin,
            "images": images,
        }
    )


def run_demo(*, workdir: Path, once: bool, port: int, ui_port: int, console: Console) -> bool:
    """Run the demo; True when the promotion succeeded and the end state checks."""
    configure_logging("WARNING")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    repo = workdir / "gitops.git"
    if not repo.exists():
        create_bare_repo(repo)
    server = DevServer(
        db_file=workdir / "temporal.db",
        port=port,
        ui_port=ui_port,
        log_file=workdir / "temporal.log",
    )
    with console.status("starting the Temporal dev server (UI on)"):
        server.start()
    os.environ["TEMPORAL_ADDRESS"] = server.address
    os.environ["FREIGHTLINE_UI_URL"] = server.ui_url
    console.print(f"Temporal UI: [link]{server.ui_url}[/link]")
    try:
        return asyncio.run(_main(repo, once, console))
    except KeyboardInterrupt:
        console.print("stopping")
        return True
    finally:
        with console.status("stopping the Temporal dev server"):
            server.stop()


async def _main(repo: Path, once: bool, console: Console) -> bool:
    from worker import run_worker

    client = await connect()
    stop = asyncio.Event()
    worker_task = asyncio.create_task(run_worker(client, stop=stop))
    try:
        ok = await _promote(client, repo, console)
        if not once:
            console.print("running; press Ctrl-C to stop the worker and the dev server")
            await stop.wait()
        return ok
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task


async def _promote(client: Client, repo: Path, console: Console) -> bool:
    text = substitute_env(DEMO_PIPELINE.read_text(), {"GITOPS_REPO_URL": repo.as_uri()})
    (resources,) = group_by_project(load_text(text, source=str(DEMO_PIPELINE))).values()
    freight = demo_freight()
    resources = resources.model_copy(update={"freight": {freight.metadata.name: freight}})
    with console.status("applying the demo pipeline"):
        await apply_project(client, resources)
    console.print(
        f"pipeline applied: stages {', '.join(sorted(resources.stages))}; "
        f"freight [bold]{freight.alias}[/bold] = {DEMO_IMAGE}:{DEMO_TAG}"
    )
    handle = await start_promotion(
        client, PROJECT, "test", freight.metadata.name, requested_by="demo"
    )
    console.print(f"promotion started: {workflow_ui_url(client.namespace, handle.id)}")
    with console.status(f"promoting {freight.alias} into test"):
        try:
            result: PromotionResult = await handle.result()
        except WorkflowFailureError as err:
            console.print(f"[red]promotion failed:[/red] {err.cause}")
            return False
    head = branch_head(repo, "stage/test")
    rendered = show_file(repo, "stage/test", "deployment-kargo-demo.yaml")
    deployed = f"{DEMO_IMAGE}:{DEMO_TAG}" in rendered
    console.print(
        f"promotion {result.phase.value}: stage/test is at {head[:12] if head else '?'} "
        f"in {repo}, rendering {DEMO_IMAGE}:{DEMO_TAG}"
    )
    if not deployed:
        raise FreightlineError("stage/test does not render the promoted image")
    return True
