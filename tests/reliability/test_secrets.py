"""Secrets: after the whole session, no credential is in any workflow history or worker log.

One pipeline uses every kind of credential the worker holds: a git credential (a
credentials-file entry for the file:// GitOps repo, so the lookup runs on every clone
and push), a registry password (a Basic-auth registry the Warehouse discovers from),
and an Argo CD token. Then every workflow history on the session's dev server (this
test runs last, see ``conftest.SCAN_LAST``) and the worker's log are searched for those
values and the other tests' credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from freightline.app.client import apply_project, stage_states
from freightline.kargo.config import group_by_project, load_text
from sandbox.argocd import ArgoCDEmulator, Timing
from sandbox.gitops import branch_head
from sandbox.workers import worker_env
from tests.conftest import wait_for
from tests.history_text import readable
from tests.pipelines import AUTO_PROMOTE_ALL, dump, quickstart_documents
from tests.registry_fixture import Pusher, Registry, htpasswd_line, start_registry
from tests.reliability.conftest import SCAN_LAST, WorkerProcess, spawn_worker
from tests.test_argocd_steps import APPSET
from tests.test_argocd_steps import TOKEN as OTHER_ARGOCD_TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.reliability, getattr(pytest.mark, SCAN_LAST)]

GIT_PASSWORD = "git-pw-5f3a9c-never-in-history"
REGISTRY_PASSWORD = "registry-pw-8d21e4-never-in-history"
ARGOCD_TOKEN = "argocd-token-b7e90a-never-in-history"
# Credentials other tests of the session hand to their workers.
OTHER_SECRETS = [OTHER_ARGOCD_TOKEN, "s3cret-pw", "ghp_x"]


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[Registry]:
    workdir = tmp_path / "registry"
    workdir.mkdir()
    (workdir / "htpasswd").write_text(htpasswd_line("robot", REGISTRY_PASSWORD))
    registry = start_registry(
        workdir, auth={"htpasswd": {"realm": "r", "path": str(workdir / "htpasswd")}}
    )
    registry.headers = {"Authorization": httpx.BasicAuth("robot", REGISTRY_PASSWORD)._auth_header}
    yield registry
    registry.stop()


def credentials_file(path: Path, repo_url: str, image_repo: str) -> Path:
    documents = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {"kargo.akuity.io/cred-type": kind}},
            "stringData": {"repoURL": url, "username": user, "password": password},
        }
        for name, kind, url, user, password in [
            ("gitops", "git", repo_url, "octocat", GIT_PASSWORD),
            ("images", "image", image_repo, "robot", REGISTRY_PASSWORD),
        ]
    ]
    path.write_text(dump(documents))
    return path


def pipeline(repo: Path, image_repo: str) -> Any:
    """The quickstart, discovering from the local registry, auto-promoting every Stage."""
    documents = [d for d in quickstart_documents(repo) if d["kind"] != "Secret"]
    for document in documents:
        if document["kind"] == "Warehouse":
            document["spec"]["subscriptions"] = [{"image": {"repoURL": image_repo}}]
            document["spec"]["interval"] = "1h"
        if document["kind"] == "PromotionTask":
            for var in document["spec"]["vars"]:
                if var["name"] == "imageRepo":
                    var["value"] = image_repo
    documents.append(AUTO_PROMOTE_ALL)
    (resources,) = group_by_project(load_text(dump(documents), source="secrets")).values()
    return resources


async def every_history(client: Client) -> list[tuple[str, str]]:
    """(workflow ID, all its history's text) for every run the server holds."""
    histories = []
    async for execution in client.list_workflows():
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = (await handle.fetch_history()).to_json_dict()
        histories.append((execution.id, "\n".join(readable(history))))
    return histories


async def test_no_credential_in_any_history_or_log(
    client: Client,
    gitops_repo: Path,
    basic_registry: Registry,
    task_queue: str,
    tmp_path: Path,
    worker_processes: list[WorkerProcess],
) -> None:
    image_repo = f"{basic_registry.host}/secret-app"
    pusher = Pusher(basic_registry)
    try:
        pusher.image("secret-app", "1.0.0", salt="secrets")
    finally:
        pusher.close()
    argocd = ArgoCDEmulator(
        APPSET,
        ARGOCD_TOKEN,
        variables={"GITOPS_REPO_URL": gitops_repo.as_uri()},
        timing=Timing.instant(),
    )
    argocd.start()
    try:
        env = worker_env(
            client.service_client.config.target_host,
            task_queue,
            ARGOCD_SERVER=argocd.base_url,
            ARGOCD_AUTH_TOKEN=ARGOCD_TOKEN,
            FREIGHTLINE_CREDENTIALS_FILE=str(
                credentials_file(tmp_path / "creds.yaml", gitops_repo.as_uri(), image_repo)
            ),
        )
        worker = spawn_worker(worker_processes, env, tmp_path, "secrets")
        await apply_project(client, pipeline(gitops_repo, image_repo))

        async def prod_has_it() -> bool:
            states = {s.name: s for s in await stage_states(client, "kargo-demo")}
            prod = states["prod"]
            return prod.current is not None and prod.running is None

        await wait_for(prod_has_it, timeout=120)
        for stage in ("test", "uat", "prod"):
            assert branch_head(gitops_repo, f"stage/{stage}") is not None
        worker.stop()
    finally:
        argocd.stop()

    secrets = [GIT_PASSWORD, REGISTRY_PASSWORD, ARGOCD_TOKEN, *OTHER_SECRETS]
    histories = await every_history(client)
    # This test's pipeline alone: project, warehouse, three stages, three promotions.
    assert len(histories) >= 8
    assert any("kargo.akuity.io/v1alpha1" in text for _, text in histories)  # decoded
    for workflow_id, recorded in histories:
        for secret in secrets:
            assert secret not in recorded, f"{secret!r} is in the history of {workflow_id}"
    logs = worker.log()
    assert "step finished" in logs  # the log is the worker's, and it logged
    for secret in secrets:
        assert secret not in logs, f"{secret!r} is in the worker's log"
    await asyncio.sleep(0)
