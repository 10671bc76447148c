"""Benchmark: from a docker-registry push to prod Synced, for the Kargo quickstart.

Everything real on loopback (Temporal dev server, docker-registry with its
webhook notifications, Warehouse and Stage workflows, git, kustomize, the
Argo CD emulator with instant timing, so its "sync time" is only its own
rendering), verification off. Prints, per pushed tag: seconds from push to
prod Synced+Healthy at the new tag; then history events per Promotion and
per Stage promotion, and the Argo CD emulator's share.

    .venv/bin/python bench/pipeline.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from freightline.app.client import apply_project, stage_states  # noqa: E402
from freightline.app.devserver import temporal_binary  # noqa: E402
from freightline.app.webhooks import WebhookServer  # noqa: E402
from freightline.contracts.names import SEARCH_ATTRIBUTES  # noqa: E402
from freightline.kargo.config import group_by_project, load_text  # noqa: E402
from freightline.logging import configure_logging  # noqa: E402
from freightline.settings import load_settings  # noqa: E402
from sandbox.argocd import ArgoCDEmulator, Timing  # noqa: E402
from sandbox.gitops import KARGO_QUICKSTART, create_bare_repo  # noqa: E402
from sandbox.registry import (  # noqa: E402
    Pusher,
    free_port,
    start_registry,
    webhook_notifications,
)
from tests.pipelines import AUTO_PROMOTE_ALL, dump, quickstart_documents  # noqa: E402

PROJECT, SECRET, TOKEN = "kargo-demo", "bench-secret", "bench-token"


async def main(rounds: int) -> None:
    import os

    from worker import build_worker

    configure_logging("WARNING", path=Path(tempfile.gettempdir()) / "bench-pipeline.log")
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    repo = create_bare_repo(work / "gitops.git")
    documents = [d for d in quickstart_documents(repo) if d["kind"] != "Secret"]
    (resources,) = group_by_project(
        load_text(dump([*documents, AUTO_PROMOTE_ALL]), source="quickstart")
    ).values()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    client = env.client
    emulator = ArgoCDEmulator(
        KARGO_QUICKSTART / "argocd-applicationset.yaml",
        TOKEN,
        variables={"GITOPS_REPO_URL": repo.as_uri()},
        timing=Timing.instant(),
    )
    emulator.start()
    try:
        hooks_port = free_port()
        registry = start_registry(
            work / "registry",
            notifications=webhook_notifications(
                f"http://127.0.0.1:{hooks_port}/webhooks/{PROJECT}/registry", SECRET
            ),
        )
        # The worker's settings, given in code; the queue stays in the environment for
        # the client helpers (apply_project) that read it there.
        os.environ["FREIGHTLINE_TASK_QUEUE"] = "bench-pipeline"
        settings = load_settings().replace(
            argocd={"server": emulator.base_url, "token": TOKEN},
            git={"allow_local_repositories": True},  # the GitOps repo is a bare repo on disk
            registry={"mirrors": {"public.ecr.aws": registry.host}},
        )
        hooks = WebhookServer(
            client,
            secret=SECRET,
            mirrors=settings.registry.mirrors,
            host="127.0.0.1",
            port=hooks_port,
        )
        async with hooks:
            pusher = Pusher(registry)
            try:
                async with build_worker(client, settings, queue="bench-pipeline"):
                    await apply_project(client, resources)
                    durations = []
                    for index in range(rounds):
                        tag = f"1.29.{index + 1}"
                        started = time.perf_counter()
                        pusher.image(
                            "nginx/nginx", tag, created=f"2026-01-{index + 1:02d}T00:00:00Z"
                        )
                        await _until_prod(client, tag)
                        durations.append(time.perf_counter() - started)
                        print(f"push {tag} → prod Synced+Healthy: {durations[-1]:.2f}s", flush=True)
                    await _history_figures(client, durations)
            finally:
                pusher.close()
                registry.stop()
    finally:
        emulator.stop()
        await env.shutdown()


async def _until_prod(client: object, tag: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = {s.name: s for s in await stage_states(client, PROJECT)}  # type: ignore[arg-type]
        prod = states.get("prod")
        if (
            prod is not None
            and prod.current is not None
            and prod.current.versions
            and prod.current.versions[0].endswith(f":{tag}")
            and prod.running is None
            and prod.health == "Healthy"
        ):
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"prod did not reach {tag} in 120s")


async def _history_figures(client: object, durations: list[float]) -> None:
    from temporalio.client import Client

    assert isinstance(client, Client)
    events = []
    async for execution in client.list_workflows("WorkflowType = 'Promotion'"):
        history = await client.get_workflow_handle(execution.id).fetch_history()
        events.append(len(history.events))
    stage_events = 0
    async for execution in client.list_workflows("WorkflowType = 'Stage'"):
        history = await client.get_workflow_handle(execution.id).fetch_history()
        stage_events += len(history.events)
    promotions = len(events)
    print(
        f"rounds: {len(durations)}; push→prod median {statistics.median(durations):.2f}s, "
        f"per Stage {statistics.median(durations) / 3:.2f}s"
    )
    print(
        f"promotions: {promotions}; history events per Promotion: median "
        f"{statistics.median(events):.0f}, max {max(events)}"
    )
    print(f"Stage workflow events per promotion: {stage_events / max(promotions, 1):.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
