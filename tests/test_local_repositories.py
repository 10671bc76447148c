"""A project's configuration cannot read the worker's own filesystem.

A local path or ``file://`` URL as a git step's or a git subscription's
``repoURL`` is refused unless the worker sets ``FREIGHTLINE_ALLOW_LOCAL_REPOSITORIES``
(the tests set it for every worker they build, ``tests/conftest.py``; these tests
take it away); so are git's remote helpers, and kustomize bases outside the work tree.
Real git, real kustomize, a real worker against the session's dev server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.git import remote_url
from activities.kustomize_steps import check_bases_inside, render_kustomization
from freightline.app.client import apply_project
from freightline.contracts.names import warehouse_workflow_id
from freightline.contracts.promotion import PromotionPhase
from freightline.errors import ConfigError, PathEscapeError, StepError
from freightline.kargo.config import group_by_project, load_text
from freightline.settings import ALLOW_LOCAL_REPOSITORIES_ENV, load_settings
from sandbox.gitops import branch_head
from tests.conftest import wait_for
from tests.pipelines import dump, freight_for, single_stage_project, with_freight
from tests.test_promotion import promote_expecting_failure
from tests.test_warehouse import status_of

pytestmark = pytest.mark.integration


@pytest.fixture
async def strict_worker(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Worker]:
    """The real worker with the default settings: no local repositories."""
    from worker import build_worker

    monkeypatch.delenv(ALLOW_LOCAL_REPOSITORIES_ENV)
    settings = load_settings()
    assert not settings.git.allow_local_repositories
    async with build_worker(client, settings, queue=task_queue) as worker:
        yield worker


@pytest.mark.parametrize(
    "url", ["https://github.com/akuity/kargo.git", "ssh://git@example.com/x.git", "git@h:o/r.git"]
)
def test_network_urls_pass_unchanged(url: str) -> None:
    assert remote_url(url, allow_local=False) == url


@pytest.mark.parametrize("url", [".", "..", "/srv/git/other.git", "repo.git", "file:///srv/x"])
def test_local_repositories_need_the_setting(url: str) -> None:
    with pytest.raises(ConfigError, match=f"{ALLOW_LOCAL_REPOSITORIES_ENV}=true"):
        remote_url(url, allow_local=False)
    assert remote_url(url, allow_local=True).startswith("file://")


def test_remote_helpers_are_refused_even_when_local_repositories_are_allowed() -> None:
    for url in ("ext::sh -c touch% /tmp/pwned", "fd::0"):
        with pytest.raises(ConfigError, match="remote helpers"):
            remote_url(url, allow_local=True)


def clone_and_push(url: str) -> list[dict[str, Any]]:
    return [
        {
            "uses": "git-clone",
            "config": {"repoURL": url, "checkout": [{"branch": "main", "path": "./src"}]},
        },
        {"uses": "git-commit", "config": {"path": "./src", "message": "m"}},
        {"uses": "git-push", "config": {"path": "./src", "targetBranch": "stolen"}},
    ]


async def test_git_steps_refuse_local_repositories(
    client: Client, strict_worker: Worker, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.1")
    for url in (".", str(gitops_repo), gitops_repo.as_uri(), "FILE://" + str(gitops_repo)):
        steps = clone_and_push(url)
        await apply_project(client, with_freight(single_stage_project(gitops_repo, steps), freight))
        result = await promote_expecting_failure(client, "p", "test", freight.metadata.name)
        assert result.phase is PromotionPhase.ERRORED, url
        assert f"{ALLOW_LOCAL_REPOSITORIES_ENV}=true" in result.message, result.message
    assert branch_head(gitops_repo, "stolen") is None


async def test_git_subscriptions_refuse_local_repositories(
    client: Client, strict_worker: Worker, gitops_repo: Path
) -> None:
    project = f"local-{uuid.uuid4().hex[:8]}"
    documents = [
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Project",
            "metadata": {"name": project},
        },
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Warehouse",
            "metadata": {"name": "code", "namespace": project},
            "spec": {"subscriptions": [{"git": {"repoURL": gitops_repo.as_uri()}}]},
        },
    ]
    (resources,) = group_by_project(load_text(dump(documents))).values()
    await apply_project(client, resources)
    handle = client.get_workflow_handle(warehouse_workflow_id(project, "code"))

    async def refused() -> bool:
        error = (await status_of(handle)).last_error
        return error is not None and f"{ALLOW_LOCAL_REPOSITORIES_ENV}=true" in error

    await wait_for(refused)


def kustomization(directory: Path, resources: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    entries = "".join(f"- {json.dumps(entry)}\n" for entry in resources)
    (directory / "kustomization.yaml").write_text(f"resources:\n{entries}" if entries else "{}\n")
    return directory


def test_kustomize_bases_outside_the_work_tree_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "work"
    kustomization(tmp_path / "elsewhere", [])
    base = kustomization(root / "base", ["../../elsewhere"])
    overlay = kustomization(root / "overlay", ["../base"])
    with pytest.raises(PathEscapeError, match=r'base/kustomization.yaml: resources entry "\.\./'):
        check_bases_inside(overlay, root)
    # Bases inside the work tree are fine, and remote ones are left to kustomize's git.
    kustomization(base, ["https://github.com/kubernetes-sigs/kustomize//examples/hello"])
    check_bases_inside(overlay, root)


def test_kustomize_fetches_no_local_repository_unless_allowed(
    tmp_path: Path, gitops_repo: Path
) -> None:
    overlay = kustomization(tmp_path / "overlay", [f"{gitops_repo.as_uri()}//base?ref=main"])
    with pytest.raises(StepError, match="transport 'file' not allowed"):
        render_kustomization(overlay)
    assert "kind: Deployment" in render_kustomization(overlay, allow_local_repositories=True)
