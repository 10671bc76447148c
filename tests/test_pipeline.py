"""The Kargo quickstart, end to end: a registry push flows through test → uat → prod by itself.

Real parts: docker-registry (reached as a mirror of public.ecr.aws, so the
quickstart's Warehouse is applied unchanged), its webhook notifications, the
Warehouse and Stage workflows, git, kustomize, and the Argo CD emulator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from freightline.app.client import apply_project, stage_states
from freightline.app.webhooks import WebhookServer
from freightline.contracts.stage import StageState
from freightline.kargo.config import group_by_project, load_text
from freightline.settings import load_settings
from sandbox.argocd import ArgoCDEmulator, Timing
from sandbox.gitops import KARGO_QUICKSTART, branch_head
from sandbox.registry import Pusher, free_port, start_registry, webhook_notifications
from tests.conftest import wait_for
from tests.pipelines import AUTO_PROMOTE_ALL, dump, quickstart_documents

pytestmark = pytest.mark.integration

PROJECT = "kargo-demo"
SECRET = "hook-secret"
TOKEN = "argocd-token"
STAGES = ("test", "uat", "prod")


async def states(client: Client) -> dict[str, StageState]:
    return {s.name: s for s in await stage_states(client, PROJECT)}


def tag_of(state: StageState) -> str | None:
    current = state.current
    return current.versions[0].rsplit(":", 1)[-1] if current and current.versions else None


async def test_registry_push_reaches_prod_through_every_stage(
    client: Client,
    task_queue: str,
    gitops_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker import build_worker

    documents = quickstart_documents(gitops_repo)
    # The quickstart's Secret belongs to the worker, not to Temporal.
    (secret,) = [d for d in documents if d["kind"] == "Secret"]
    credentials = tmp_path / "credentials.yaml"
    credentials.write_text(dump([secret]))
    pipeline = [d for d in documents if d["kind"] != "Secret"] + [AUTO_PROMOTE_ALL]
    (resources,) = group_by_project(load_text(dump(pipeline), source="quickstart")).values()

    emulator = ArgoCDEmulator(
        KARGO_QUICKSTART / "argocd-applicationset.yaml",
        TOKEN,
        variables={"GITOPS_REPO_URL": gitops_repo.as_uri()},
        timing=Timing.instant(),
    )
    emulator.start()
    hooks_port = free_port()  # the registry is told where to notify before the receiver starts
    registry = start_registry(
        tmp_path / "registry",
        notifications=webhook_notifications(
            f"http://127.0.0.1:{hooks_port}/webhooks/{PROJECT}/registry", SECRET
        ),
    )
    pusher = Pusher(registry)
    # The worker's settings, as a deployment gives them; the receiver shares its mirrors.
    monkeypatch.setenv("ARGOCD_SERVER", emulator.base_url)
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("FREIGHTLINE_REGISTRY_MIRRORS", f"public.ecr.aws={registry.host}")
    monkeypatch.setenv("FREIGHTLINE_CREDENTIALS_FILE", str(credentials))
    settings = load_settings()
    mirrors = settings.registry.mirrors
    async with WebhookServer(
        client, secret=SECRET, mirrors=mirrors, host="127.0.0.1", port=hooks_port
    ):
        try:
            async with build_worker(client, settings, queue=task_queue):
                await apply_project(client, resources)
                pusher.image("nginx/nginx", "1.29.1", created="2026-01-01T00:00:00Z")

                async def first_in_test() -> bool:
                    return tag_of((await states(client))["test"]) == "1.29.1"

                await wait_for(first_in_test, timeout=90)
                # A second push while the first is still moving through uat and prod.
                pusher.image("nginx/nginx", "1.29.2", created="2026-01-02T00:00:00Z")

                async def newest_everywhere() -> bool:
                    by_stage = await states(client)
                    return all(
                        tag_of(by_stage[s]) == "1.29.2"
                        and by_stage[s].running is None
                        and by_stage[s].health == "Healthy"
                        for s in STAGES
                    )

                await wait_for(newest_everywhere, timeout=180)
                by_stage = await states(client)
                assert {tag_of(by_stage[s]) for s in STAGES} == {"1.29.2"}
                for stage in STAGES:
                    history = by_stage[stage].history
                    promoted = [h.promoted_at for h in history]
                    assert promoted == sorted(promoted, reverse=True)
                    tags = [h.versions[0].rsplit(":", 1)[-1] for h in reversed(history)]
                    assert tags == sorted(tags), f"{stage} went backwards: {tags}"
                    app = await _app(emulator.base_url, f"kargo-demo-{stage}")
                    head = branch_head(gitops_repo, f"stage/{stage}")
                    assert app["status"]["sync"]["status"] == "Synced"
                    assert app["status"]["sync"]["revision"] == head
                    assert app["status"]["health"]["status"] == "Healthy"
                # Promotions happened in pipeline order for the newest Freight.
                order = [by_stage[s].history[0].promoted_at for s in STAGES]
                assert order == sorted(order)

                again = await apply_project(client, resources)
                assert again.created == () and again.updated == ()
        finally:
            pusher.close()
            registry.stop()
            emulator.stop()


async def _app(base_url: str, name: str) -> dict[str, Any]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        response = await http.get(f"{base_url}/api/v1/applications/{name}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body
