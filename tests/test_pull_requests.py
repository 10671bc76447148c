"""Promotion through pull requests: git-open-pr, git-wait-for-pr (a durable wait in the
Promotion workflow, woken by the forge's webhook), git-merge-pr, on the real Temporal dev
server and the forge emulator (``sandbox/forge``: real bare repositories, real merges)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker

from freightline.app.client import (
    abort_promotion,
    apply_project,
    promote_in_stage,
    running_notes,
    stage_states,
)
from freightline.app.ui import UiServer
from freightline.app.ui_auth import access_for
from freightline.app.webhooks import Refresher, WebhookServer
from freightline.contracts.names import SA_PULL_REQUEST
from freightline.contracts.promotion import PromotionPhase, PromotionResult, PromotionStatus
from freightline.contracts.pull_request_wait import poll_interval
from freightline.contracts.steps import STEPS, parse_config
from freightline.errors import ConfigError
from freightline.kargo.config import group_by_project, load_text
from freightline.kargo.credentials import CredentialStore
from freightline.kargo.webhooks import receiver_path
from freightline.settings import UiSettings, load_settings
from sandbox.forge import ForgeEmulator, ForgeKind, PullRequest
from sandbox.gitops import git
from sandbox.workers import start_worker, worker_env
from tests.conftest import recorded_text, wait_for
from tests.crash_worker import crash_worker_args
from tests.kargo_pages import assert_all_covered, example
from tests.pipelines import IMAGE, dump, freight_for, with_freight
from tests.test_ui import login, users_file
from tests.test_windows import current_details

pytestmark = pytest.mark.integration

PROJECT = "p"
SECRET = "pr-hook-secret"
TOKEN = "forge-token-0123456789"
REPO = "org/app"


@dataclass
class ForgeRepo:
    """The emulated forge and the one repository the tests promote through."""

    emulator: ForgeEmulator
    repo_url: str
    provider: str = "github"

    def pulls(self) -> list[PullRequest]:
        return list(self.emulator.store.pulls[REPO])

    def pr_url(self, number: int) -> str:
        return self.emulator.web_url(REPO, number)

    def merge(self, number: int, *, user: str, method: str = "merge") -> str:
        merged = self.emulator.merge(REPO, number, user=user, method=method)
        assert merged.merge_commit
        return merged.merge_commit

    def close(self, number: int, *, user: str) -> None:
        self.emulator.close(REPO, number, user=user)

    def branch_head(self, branch: str) -> str | None:
        return self.emulator.store.branch_head(REPO, branch)


def credentials(path: Path, repo_url: str, api_url: str | None = None) -> Path:
    """The worker's credentials file: the forge token for the repository (and the forge's API
    when the URL does not lead to it), the receiver's secret."""
    git = {"repoURL": repo_url, "username": "bot", "password": TOKEN}
    if api_url is not None:
        git["apiURL"] = api_url
    documents = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "forge", "labels": {"kargo.akuity.io/cred-type": "git"}},
            "stringData": git,
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gh", "namespace": PROJECT},
            "stringData": {"secret": SECRET, "secret-token": SECRET},
        },
    ]
    path.write_text(dump(documents))
    return path


@pytest.fixture
async def webhooks(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The webhook receiver; its base URL."""
    creds = credentials(tmp_path / "receiver-creds.yaml", "https://unused.example/x.git")
    server = WebhookServer(
        client, credentials=CredentialStore(creds), host="127.0.0.1", index_interval=0
    )
    async with server:
        yield f"http://127.0.0.1:{server.port}"


def _forge(
    kind: ForgeKind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook_url: str | None
) -> Iterator[ForgeRepo]:
    emulator = ForgeEmulator(
        kind, tmp_path / "forge", token=TOKEN, webhook_url=webhook_url, webhook_secret=SECRET
    )
    try:
        emulator.add_repo(REPO)
        repo_url = emulator.repo_url(REPO)
        # Kargo's Bitbucket and Azure clients always call api.bitbucket.org, dev.azure.com:
        # apiURL names the emulator.
        api_url = emulator.api_url if kind in ("bitbucket", "azure") else None
        creds = credentials(tmp_path / "creds.yaml", repo_url, api_url)
        monkeypatch.setenv("FREIGHTLINE_CREDENTIALS_FILE", str(creds))
        yield ForgeRepo(emulator, repo_url, kind)
        assert emulator.violations == []  # every request and answer as GitHub's OpenAPI says
    finally:
        emulator.stop()


@pytest.fixture
def forge(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ForgeRepo]:
    """A forge without webhooks: GitHub (Enterprise-style, ``/api/v3``) unless the test's
    ``forge`` parameter names another."""
    yield from _forge(getattr(request, "param", "github"), tmp_path, monkeypatch, None)


@pytest.fixture
def hooked_forge(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    webhooks: str,
) -> Iterator[ForgeRepo]:
    """A forge that posts its pull request events to project ``p``'s Kargo receiver ``gh``
    of its kind (GitHub unless the test's ``hooked_forge`` parameter names another)."""
    kind: ForgeKind = getattr(request, "param", "github")
    url = webhooks + receiver_path(PROJECT, kind, "gh", SECRET)
    yield from _forge(kind, tmp_path, monkeypatch, url)


@pytest.fixture
async def pr_worker(client: Client, task_queue: str, forge: ForgeRepo) -> AsyncIterator[Worker]:
    """The real worker, built after the forge set its credentials file."""
    from worker import build_worker

    async with build_worker(client, load_settings(), queue=task_queue) as worker:
        yield worker


def pr_steps(forge: ForgeRepo, *, poll: str = "1h", timeout: str | None = None) -> list[Any]:
    """Render, push to the promotion's own branch, open a PR into main, wait for it."""
    wait: dict[str, Any] = {
        "uses": "git-wait-for-pr",
        "as": "wait-for-pr",
        "config": {
            "repoURL": forge.repo_url,
            "provider": forge.provider,
            "prNumber": "${{ outputs['open-pr'].pr.id }}",
            "pollInterval": poll,
        },
    }
    if timeout:
        wait["retry"] = {"timeout": timeout}
    return [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": forge.repo_url,
                "checkout": [{"branch": "main", "path": "./out"}],
            },
        },
        {
            "uses": "file-write",
            "config": {"path": "./out/release.txt", "contents": "${{ ctx.targetFreight.name }}\n"},
        },
        {
            "uses": "git-commit",
            "config": {
                "path": "./out",
                "message": "Promote to ${{ ctx.stage }}\n\nBy Freightline.",
            },
        },
        {
            "uses": "git-push",
            "as": "push",
            "config": {"path": "./out", "generateTargetBranch": True},
        },
        {
            "uses": "git-open-pr",
            "as": "open-pr",
            "config": {
                "repoURL": forge.repo_url,
                "provider": forge.provider,
                "sourceBranch": "${{ outputs.push.branch }}",
                "targetBranch": "main",
                # Kargo: "Gitea does not currently support labels" (it refuses unknown ones).
                "labels": [] if forge.provider == "gitea" else ["promotion"],
            },
        },
        wait,
    ]


def receiver(kind: str) -> dict[str, Any]:
    """Project ``p``'s ProjectConfig: one Kargo webhook receiver ``gh`` of the forge's kind."""
    return {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "ProjectConfig",
        "metadata": {"name": PROJECT, "namespace": PROJECT},
        "spec": {"webhookReceivers": [{"name": "gh", kind: {"secretRef": {"name": "gh"}}}]},
    }


async def start(
    client: Client, forge: ForgeRepo, steps: list[Any], tag: str = "1.0.0"
) -> WorkflowHandle[Any, PromotionResult]:
    """Apply project ``p`` (one Stage, ``test``, running ``steps``; Kargo's GitHub receiver
    ``gh`` of the forge's kind) and promote a new Freight into it."""
    freight = freight_for(tag)
    stage = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": "test", "namespace": PROJECT},
        "spec": {
            "requestedFreight": [
                {"origin": {"kind": "Warehouse", "name": "kargo-demo"}, "sources": {"direct": True}}
            ],
            "promotionTemplate": {"spec": {"steps": steps}},
        },
    }
    warehouse = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Warehouse",
        "metadata": {"name": "kargo-demo", "namespace": PROJECT},
        "spec": {"subscriptions": [{"image": {"repoURL": IMAGE}}]},
    }
    project = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Project",
        "metadata": {"name": PROJECT},
    }
    documents = [project, warehouse, stage, receiver(forge.provider)]
    (resources,) = group_by_project(load_text(dump(documents), source="test")).values()
    await apply_project(client, with_freight(resources, freight))
    # Through the Stage, as a person promotes: the Stage's row then shows the wait.
    ticket = await promote_in_stage(client, PROJECT, "test", freight.alias or "", "t")
    handle = client.get_workflow_handle(ticket.promotion, result_type=PromotionResult)
    await wait_for(lambda: _started(handle))  # the Stage starts it after it answered
    return handle


async def _started(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        await handle.describe()
    except RPCError:
        return False
    return True


async def waiting_status(handle: WorkflowHandle[Any, Any]) -> PromotionStatus:
    """The promotion's status once it waits for its pull request (the first poll answered)."""
    found: list[PromotionStatus] = []

    async def waiting() -> bool:
        try:
            status = await handle.query("status", result_type=PromotionStatus)
        except RPCError:
            return False  # the Stage has not started it yet
        if status.pull_request is not None and status.pull_request.url:
            found.append(status)
            return True
        return False

    await wait_for(waiting, timeout=60)
    return found[-1]


async def test_a_person_merges_and_the_promotion_succeeds_with_the_merge_commit(
    client: Client, forge: ForgeRepo, pr_worker: Worker, tmp_path: Path
) -> None:
    handle = await start(client, forge, pr_steps(forge, poll="10s"))
    status = await waiting_status(handle)
    (pr,) = forge.pulls()
    assert pr.source.startswith("kargo/promotion/promotion-p-test-")
    assert pr.target == "main" and pr.labels == ["promotion"]
    assert pr.title == "Promote to test" and pr.body.startswith("By Freightline.")
    wait = status.pull_request
    assert wait is not None and wait.number == pr.number and wait.url == forge.pr_url(pr.number)
    # Visible: the status, the Stage's row in `freightline status`, the current details.
    assert status.current == f"wait-for-pr: waiting for PR #{pr.number} to merge: {wait.url}"
    notes = await running_notes(client, await stage_states(client, PROJECT))
    assert notes["test"] == f"waiting for PR #{pr.number} to merge: {wait.url}"
    assert f"[pull request #{pr.number}]({wait.url})" in await current_details(handle)
    assert await pull_request_attribute(handle) == wait.url
    # The web UI: the promotion's page links the pull request; the Stage's page says so.
    settings = UiSettings(users_file=users_file(tmp_path / "users.yaml"), secret="s")
    async with (
        UiServer(client, access_for(settings)) as ui,
        httpx.AsyncClient(base_url=ui.url) as http,
    ):
        await login(http, "bob")
        page = (await http.get(f"/promotions/{handle.id}")).text
        assert f"Waiting for pull request #{pr.number} to merge" in page
        assert f'<a id="pull-request-link" href="{wait.url}">' in page
        stage = (await http.get(f"/projects/{PROJECT}/stages/test")).text
        assert f"waiting for PR #{pr.number} to merge: {wait.url}" in stage

    merged = forge.merge(pr.number, user="alice")  # a person, in the forge's web UI
    result = await handle.result()  # noticed by the 10 s poll: this forge sends no webhook

    assert result.phase is PromotionPhase.SUCCEEDED
    assert result.outputs["open-pr"] == {"pr": {"id": pr.number, "url": wait.url}}
    assert result.outputs["wait-for-pr"] == {
        "commit": merged,
        "pr": {"id": pr.number, "url": wait.url, "open": False, "merged": True},
    }
    assert forge.branch_head("main") == merged
    assert await pull_request_attribute(handle) is None  # unset when the wait ended
    # The token reached no history: not in a config, an output, an error or a summary.
    assert TOKEN not in await recorded_text(handle)


async def pull_request_attribute(handle: WorkflowHandle[Any, Any]) -> str | None:
    described = await handle.describe()
    return described.typed_search_attributes.get(SA_PULL_REQUEST)


@pytest.mark.parametrize(
    "hooked_forge", ["github", "gitlab", "gitea", "bitbucket", "azure"], indirect=True
)
async def test_the_forge_webhook_wakes_the_promotion_long_before_its_next_poll(
    client: Client, task_queue: str, hooked_forge: ForgeRepo
) -> None:
    from worker import build_worker

    forge = hooked_forge
    async with build_worker(client, load_settings(), queue=task_queue):
        handle = await start(client, forge, pr_steps(forge, poll="1h"), tag="1.0.1")
        status = await waiting_status(handle)
        assert status.pull_request is not None
        (pr,) = forge.pulls()
        # The receiver lists waiting promotions by search attribute: wait until it is visible.
        query = f"FreightlinePullRequest = '{status.pull_request.url}'"
        await wait_for(lambda: _listed(client, query))
        merged = forge.merge(pr.number, user="alice")  # the forge posts pull_request "closed"
        (delivery,) = await asyncio.to_thread(forge.emulator.wait_for_deliveries, 1)
        assert (delivery.action, delivery.status) == ("merged", 200)
        # The next poll is an hour away: only the webhook can end the wait now.
        result = await handle.result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert result.outputs["wait-for-pr"]["commit"] == merged
    history = await recorded_text(handle)
    assert "pull_request_closed" in history and SECRET not in history and TOKEN not in history


async def _listed(client: Client, query: str) -> bool:
    return [e async for e in client.list_workflows(query)] != []


@pytest.mark.parametrize(
    "forge", ["github", "gitlab", "gitea", "bitbucket", "azure"], indirect=True
)
async def test_a_pull_request_closed_unmerged_fails_the_promotion_naming_who_closed_it(
    client: Client, forge: ForgeRepo, pr_worker: Worker
) -> None:
    handle = await start(client, forge, pr_steps(forge, poll="10s"), tag="1.0.2")
    await waiting_status(handle)
    (pr,) = forge.pulls()
    forge.close(pr.number, user="bob")
    result = await _failed(handle)
    assert result.phase is PromotionPhase.FAILED
    assert result.failed_step == "wait-for-pr"
    closed = f"pull request #{pr.number} was closed without being merged"
    # Gitea's API does not say who closed a pull request (only its webhook's sender does).
    assert result.message == (closed if forge.provider == "gitea" else f"{closed} by bob")
    assert result.outputs["wait-for-pr"]["pr"] == {
        "id": pr.number,
        "url": forge.pr_url(pr.number),
        "open": False,
        "merged": False,
    }


async def test_abort_while_waiting_for_the_pull_request(
    client: Client, forge: ForgeRepo, pr_worker: Worker
) -> None:
    handle = await start(client, forge, pr_steps(forge, poll="1h"), tag="1.0.3")
    await waiting_status(handle)
    await abort_promotion(client, handle.id, "ops", "not today")
    result = await _failed(handle)
    assert result.phase is PromotionPhase.ABORTED
    assert result.message == "aborted by ops: not today"
    assert result.failed_step == "wait-for-pr"
    (pr,) = forge.pulls()
    assert pr.state == "open"  # the pull request is the people's to close


async def _failed(handle: WorkflowHandle[Any, Any]) -> PromotionResult:
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError)
    (details,) = cause.details
    return PromotionResult.model_validate(details)


async def test_the_wait_times_out_as_kargo_words_it(
    time_skipping_client: Client, forge: ForgeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import build_worker

    client = time_skipping_client
    monkeypatch.setenv("FREIGHTLINE_TASK_QUEUE", "pr-timeout")
    async with build_worker(client, load_settings(), queue="pr-timeout"):
        handle = await start(client, forge, pr_steps(forge, poll="10m", timeout="2h"))
        result = await _failed(handle)
    assert result.phase is PromotionPhase.ERRORED
    assert result.message.startswith('step "wait-for-pr" timed out after 2h')
    (pr,) = forge.pulls()
    assert pr.state == "open"


@pytest.mark.parametrize("forge", ["github", "bitbucket", "azure"], indirect=True)
async def test_a_worker_killed_after_opening_the_pr_and_one_restarted_while_waiting_lose_nothing(
    client: Client, forge: ForgeRepo, task_queue: str
) -> None:
    """The worker dies (as SIGKILL leaves it) right after git-open-pr, before its activity
    completes: the retried activity pushes again and finds the pull request it opened. Then
    the next worker is stopped while the promotion waits, and a third one finishes it."""
    target = client.service_client.config.target_host
    env = worker_env(target, task_queue)
    doomed = start_worker(env, args=crash_worker_args("after-step", "git-open-pr"))
    handle = await start(client, forge, pr_steps(forge, poll="10s"), tag="1.0.4")
    await wait_for(lambda: doomed.poll() is not None, timeout=60)
    assert doomed.returncode == 137
    (opened,) = forge.pulls()  # the API call was made before the crash

    second = start_worker(env)
    try:
        await waiting_status(handle)
    finally:
        second.terminate()
        second.wait(30)
    merged = forge.merge(opened.number, user="alice")
    third = start_worker(env)
    try:
        result: PromotionResult = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        third.terminate()
        third.wait(30)
    assert result.phase is PromotionPhase.SUCCEEDED
    assert [p.number for p in forge.pulls()] == [opened.number]  # no second pull request
    assert result.outputs["open-pr"]["pr"]["id"] == opened.number
    assert result.outputs["wait-for-pr"]["commit"] == merged


# --- Kargo's reference pages: every example runs ---------------------------------------------

FORGE_STEPS = ("git-open-pr", "git-wait-for-pr", "git-merge-pr")


def page_steps(step: str, heading: str, forge: ForgeRepo, pr_number: int | None = None) -> Any:
    """The example's steps, verbatim but for three things: Kargo's example repository is the
    emulator's; ``provider: github`` is added (the emulator's host, 127.0.0.1, names no forge
    to infer it from); the placeholder ``prNumber: 42`` is a pull request that exists. An
    example that starts at ``git-push`` ("Clone, prepare the contents of ./out, commit,
    etc...") gets those steps before it."""
    steps: list[dict[str, Any]] = example(step, heading).document(forge.repo_url)["steps"]
    for entry in steps:
        if entry["uses"] in FORGE_STEPS:
            entry["config"]["provider"] = "github"
            if pr_number is not None and entry["config"].get("prNumber") == 42:
                entry["config"]["prNumber"] = pr_number
    if steps[0]["uses"] == "git-push":
        steps = [*pr_steps(forge)[:3], *steps]
    return steps


OPEN_PR_EXAMPLES = ["Common Usage", "Custom Title and Labels"]
WAIT_FOR_PR_EXAMPLES = ["Common Usage"]
MERGE_PR_EXAMPLES = ["Basic Usage", "Merge with Wait", "Specifying a Merge Method"]


def test_the_pull_request_pages_examples_are_all_tested() -> None:
    assert_all_covered("git-open-pr", OPEN_PR_EXAMPLES)
    assert_all_covered("git-wait-for-pr", WAIT_FOR_PR_EXAMPLES)
    assert_all_covered("git-merge-pr", MERGE_PR_EXAMPLES)


@pytest.mark.parametrize(
    ("step", "heading"),
    [
        *(("git-open-pr", h) for h in OPEN_PR_EXAMPLES),
        *(("git-wait-for-pr", h) for h in WAIT_FOR_PR_EXAMPLES),
    ],
)
async def test_page_example_opens_and_waits(
    client: Client, task_queue: str, hooked_forge: ForgeRepo, step: str, heading: str
) -> None:
    from worker import build_worker

    forge = hooked_forge
    forge.emulator.commit_to(REPO, "stage/test", {"stage.txt": "test\n"})
    steps = page_steps(step, heading, forge)
    async with build_worker(client, load_settings(), queue=task_queue):
        handle = await start(client, forge, steps)
        if any(s["uses"] == "git-wait-for-pr" for s in steps):
            status = await waiting_status(handle)
            assert status.pull_request is not None
            query = f"FreightlinePullRequest = '{status.pull_request.url}'"
            await wait_for(lambda: _listed(client, query))
            (pr,) = forge.pulls()
            forge.merge(pr.number, user="alice")  # the webhook wakes it (30 s poll otherwise)
        result = await handle.result()
    assert result.phase is PromotionPhase.SUCCEEDED
    (pr,) = forge.pulls()
    assert pr.target == "stage/test" and pr.source.startswith("kargo/promotion/")
    opened = result.outputs["open-pr"]["pr"]
    assert opened == {"id": pr.number, "url": forge.pr_url(pr.number)}
    if heading == "Custom Title and Labels":
        assert pr.title == "Deploy to test" and pr.labels == ["infra", "needs-review"]
    else:
        assert pr.title == "Promote to test" and pr.labels == []
    if step == "git-wait-for-pr" or heading == "Custom Title and Labels":
        assert result.outputs["wait-for-pr"]["commit"] == forge.branch_head("stage/test")


@pytest.mark.parametrize("heading", MERGE_PR_EXAMPLES)
async def test_git_merge_pr_page_example(
    client: Client, forge: ForgeRepo, pr_worker: Worker, heading: str
) -> None:
    forge.emulator.commit_to(REPO, "feature", {"feature.txt": "new\n"}, message="Add a feature")
    pr = forge.emulator.store.open(
        REPO, source="feature", target="main", title="Feature", body="", author="dev"
    )
    handle = await start(client, forge, page_steps("git-merge-pr", heading, forge, pr.number))
    result = await handle.result()
    assert result.phase is PromotionPhase.SUCCEEDED
    (outputs,) = result.outputs.values()
    merged = forge.emulator.pull(REPO, pr.number)
    assert merged.state == "merged" and merged.merge_commit is not None
    assert outputs == {"commit": merged.merge_commit}
    assert forge.branch_head("main") == merged.merge_commit
    repo = forge.emulator.store.repos[REPO]
    parents = git("log", "-1", "--format=%P", merged.merge_commit, cwd=repo).split()
    assert len(parents) == (1 if heading == "Specifying a Merge Method" else 2)  # squash: one


# --- the edges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "waited", "expected"),
    [
        (timedelta(seconds=30), timedelta(0), timedelta(seconds=30)),
        (timedelta(seconds=1), timedelta(0), timedelta(seconds=10)),  # Kargo's lower bound
        (timedelta(seconds=30), timedelta(hours=1), timedelta(minutes=5)),
        (timedelta(seconds=30), timedelta(days=3), timedelta(minutes=10)),
        (timedelta(hours=1), timedelta(days=3), timedelta(hours=1)),
    ],
)
def test_the_poll_slows_down_on_a_long_wait(
    configured: timedelta, waited: timedelta, expected: timedelta
) -> None:
    assert poll_interval(configured, waited) == expected


def test_a_month_long_wait_stays_far_below_temporals_history_limit() -> None:
    waited, polls = timedelta(0), 0
    while waited < timedelta(days=30):
        waited += poll_interval(timedelta(seconds=30), waited)
        polls += 1
    assert polls * 6 < 30_000  # six events a poll; Temporal's limit is 50,000


async def test_a_webhook_url_that_could_break_the_visibility_query_wakes_nothing(
    client: Client,
) -> None:
    refresher = Refresher(client)
    assert await refresher.wake_promotions(PROJECT, "https://x/pull/1' OR '1'='1") == []
    assert await refresher.wake_promotions(PROJECT, "https://x/pull/999") == []


async def test_git_open_pr_skips_branches_without_a_difference_and_needs_the_target(
    client: Client, forge: ForgeRepo, pr_worker: Worker
) -> None:
    forge.emulator.commit_to(REPO, "same", {}, message="nothing new")  # main's tree
    steps: list[Any] = [
        {
            "uses": "git-open-pr",
            "as": "open-pr",
            "config": {
                "repoURL": forge.repo_url,
                "provider": "github",
                "sourceBranch": "same",
                "targetBranch": "main",
            },
        },
        {
            "if": "${{ status('open-pr') != 'Skipped' }}",
            "uses": "fail",
            "config": {"message": "should have been skipped"},
        },
    ]
    result = await (await start(client, forge, steps, tag="2.0.0")).result()
    assert result.phase is PromotionPhase.SUCCEEDED and forge.pulls() == []
    steps[0]["config"]["targetBranch"] = "stage/nowhere"
    failed = await _failed(await start(client, forge, steps[:1], tag="2.0.1"))
    assert failed.phase is PromotionPhase.ERRORED
    assert 'target branch "stage/nowhere" does not exist' in failed.message


@pytest.mark.parametrize("forge", ["github", "bitbucket", "azure"], indirect=True)
async def test_git_merge_pr_converges_on_a_merged_pr_and_fails_on_a_closed_one(
    client: Client, forge: ForgeRepo, pr_worker: Worker
) -> None:
    forge.emulator.commit_to(REPO, "feature", {"feature.txt": "new\n"})
    forge.emulator.commit_to(REPO, "other", {"other.txt": "new\n"})
    store = forge.emulator.store
    first = store.open(REPO, source="feature", target="main", title="f", body="", author="d")
    second = store.open(REPO, source="other", target="main", title="o", body="", author="d")
    merged = forge.merge(first.number, user="alice")
    forge.close(second.number, user="bob")

    def merge(number: int) -> list[Any]:
        config = {"repoURL": forge.repo_url, "provider": forge.provider, "prNumber": number}
        return [{"uses": "git-merge-pr", "as": "merge", "config": config}]

    result = await (await start(client, forge, merge(first.number), tag="3.0.0")).result()
    assert result.outputs["merge"] == {"commit": merged}  # a retry after the merge converges
    failed = await _failed(await start(client, forge, merge(second.number), tag="3.0.1"))
    assert failed.phase is PromotionPhase.FAILED
    assert f"pull request #{second.number} was closed by bob without merging" in failed.message


@pytest.mark.parametrize("forge", ["gitlab", "gitea", "bitbucket", "azure"], indirect=True)
async def test_other_forges_pull_requests_promote_as_github_pull_requests_do(
    client: Client, forge: ForgeRepo, pr_worker: Worker
) -> None:
    handle = await start(client, forge, pr_steps(forge, poll="10s"), tag="4.0.0")
    status = await waiting_status(handle)
    (pr,) = forge.pulls()
    assert status.pull_request is not None and status.pull_request.url == forge.pr_url(pr.number)
    merged = forge.merge(pr.number, user="carol")
    result = await handle.result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert result.outputs["wait-for-pr"]["commit"] == merged == forge.branch_head("main")
    assert TOKEN not in await recorded_text(handle)


@pytest.mark.parametrize("forge", ["github", "bitbucket", "azure"], indirect=True)
async def test_git_merge_pr_with_wait_merges_once_a_reviewer_approved(
    client: Client, forge: ForgeRepo, pr_worker: Worker
) -> None:
    forge.emulator.require_approvals(REPO, "main")
    forge.emulator.commit_to(REPO, "feature", {"feature.txt": "new\n"})
    pr = forge.emulator.store.open(
        REPO, source="feature", target="main", title="f", body="", author="dev"
    )
    config: dict[str, Any] = {
        "repoURL": forge.repo_url,
        "provider": forge.provider,
        "prNumber": pr.number,
    }
    if forge.provider in ("bitbucket", "azure"):
        config["mergeMethod"] = "squash"  # a Bitbucket (and Azure) merge strategy
    without_wait = [{"uses": "git-merge-pr", "as": "merge", "config": config}]
    failed = await _failed(await start(client, forge, without_wait, tag="5.0.0"))
    assert failed.phase is PromotionPhase.FAILED
    assert "is not ready to merge and wait is disabled" in failed.message

    waiting = [{**without_wait[0], "config": {**config, "wait": True, "pollInterval": "10s"}}]
    handle = await start(client, forge, waiting, tag="5.0.1")
    # The step runs (its activity is pending) and cannot merge yet; a reviewer approves.
    await wait_for(lambda: _activity_running(handle))
    assert forge.emulator.pull(REPO, pr.number).state == "open"
    forge.emulator.approve(REPO, pr.number, user="reviewer")
    result = await handle.result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert result.outputs["merge"] == {"commit": forge.emulator.pull(REPO, pr.number).merge_commit}


async def _activity_running(handle: WorkflowHandle[Any, Any]) -> bool:
    return bool((await handle.describe()).raw_description.pending_activities)


@pytest.mark.parametrize(
    ("step", "config", "problem"),
    [
        ("git-open-pr", {"sourceBranch": "--upload-pack=x", "targetBranch": "main"}, "'-'"),
        ("git-open-pr", {"sourceBranch": "a", "targetBranch": "main", "title": ""}, "title"),
        ("git-wait-for-pr", {"prNumber": 0}, "prNumber"),
        ("git-wait-for-pr", {"prNumber": 1, "pollInterval": "soon"}, "invalid duration"),
        ("git-merge-pr", {"prNumber": 1, "provider": "sourcehut"}, "provider"),
        ("git-merge-pr", {"prNumber": 1, "squash": True}, "squash"),
    ],
)
def test_configs_are_kargos_schemas(step: str, config: dict[str, Any], problem: str) -> None:
    model = STEPS[step].config_model()
    assert model is not None
    with pytest.raises(ConfigError, match=problem):
        parse_config(model, {"repoURL": "https://github.com/example/repo.git", **config})


@pytest.mark.parametrize("hooked_forge", ["gitea"], indirect=True)
async def test_gitea_names_who_closed_the_pull_request_through_its_webhook(
    client: Client, task_queue: str, hooked_forge: ForgeRepo
) -> None:
    """Gitea's API does not say who closed a pull request; its signed webhook's ``sender``
    does. The emulator posts Gitea's event signed as Gitea signs it (``X-Hub-Signature-256``,
    which Kargo's receiver checks, beside ``X-Gitea-Signature``)."""
    from worker import build_worker

    forge = hooked_forge
    async with build_worker(client, load_settings(), queue=task_queue):
        handle = await start(client, forge, pr_steps(forge, poll="1h"), tag="6.0.0")
        status = await waiting_status(handle)
        assert status.pull_request is not None
        url = status.pull_request.url
        await wait_for(lambda: _listed(client, f"FreightlinePullRequest = '{url}'"))
        (pr,) = forge.pulls()
        forge.close(pr.number, user="bob")  # the forge posts pull_request "closed"
        (delivery,) = await asyncio.to_thread(forge.emulator.wait_for_deliveries, 1)
        assert (delivery.action, delivery.status) == ("closed", 200)
        result = await _failed(handle)  # the poll was an hour away: the webhook woke it
    assert result.message == f"pull request #{pr.number} was closed without being merged by bob"


@pytest.mark.parametrize("forge", ["bitbucket", "azure"], indirect=True)
async def test_a_token_the_forge_refuses_fails_git_open_pr_without_showing_it(
    client: Client, forge: ForgeRepo, pr_worker: Worker
) -> None:
    forge.emulator.commit_to(REPO, "feature", {"feature.txt": "new\n"})
    del forge.emulator.accounts[TOKEN]  # revoked on the forge; the worker still holds it
    steps = [
        {
            "uses": "git-open-pr",
            "as": "open-pr",
            "config": {
                "repoURL": forge.repo_url,
                "provider": forge.provider,
                "sourceBranch": "feature",
                "targetBranch": "main",
            },
        }
    ]
    handle = await start(client, forge, steps, tag="7.0.0")
    failed = await _failed(handle)
    assert failed.failed_step == "open-pr"
    assert "refused the worker's token" in failed.message
    assert forge.pulls() == []
    assert TOKEN not in await recorded_text(handle)
