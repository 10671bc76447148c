"""The Temporal dev server (persistent SQLite) stops and starts again while a promotion waits
for its pull request; the pull request is merged while the server is down. The promotion
resumes where it was (its timer, its search attribute) and ends with the merge commit,
having opened one pull request."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from freightline.app.devserver import DevServer
from freightline.contracts.promotion import PromotionPhase, PromotionResult
from sandbox.forge import ForgeEmulator
from sandbox.registry import quiet_port
from sandbox.workers import worker_env
from tests.reliability.conftest import WorkerProcess, spawn_worker
from tests.test_pull_requests import (
    REPO,
    TOKEN,
    ForgeRepo,
    credentials,
    pr_steps,
    start,
    waiting_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


async def test_server_restart_while_waiting_for_the_pull_request_loses_nothing(
    tmp_path: Path, worker_processes: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = ForgeEmulator("github", tmp_path / "forge", token=TOKEN)
    emulator.add_repo(REPO)
    forge = ForgeRepo(emulator, emulator.repo_url(REPO))
    creds = credentials(tmp_path / "creds.yaml", forge.repo_url)
    server = DevServer(
        db_file=tmp_path / "temporal.db",
        port=quiet_port(),
        ui_port=quiet_port(),
        log_file=tmp_path / "devserver.log",
    )
    server.start()
    try:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        queue = f"pr-restart-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("FREIGHTLINE_TASK_QUEUE", queue)
        env = worker_env(server.address, queue, FREIGHTLINE_CREDENTIALS_FILE=str(creds))
        worker = spawn_worker(worker_processes, env, tmp_path, "pr-restart")
        handle = await start(client, forge, pr_steps(forge, poll="10s"))
        await waiting_status(handle)
        (pr,) = forge.pulls()

        server.stop()
        merged = forge.merge(pr.number, user="alice")  # while Temporal is down
        await asyncio.sleep(2)  # the worker polls into a closed port meanwhile
        server.start()

        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        again = client.get_workflow_handle(handle.id, result_type=PromotionResult)
        result = await asyncio.wait_for(again.result(), timeout=120)
        assert result.phase is PromotionPhase.SUCCEEDED, result.message
        assert result.outputs["wait-for-pr"]["commit"] == merged
        assert [p.number for p in forge.pulls()] == [pr.number]
        assert worker.returncode is None, worker.log()[-2000:]
    finally:
        for process in worker_processes:
            process.stop()
        server.stop()
        emulator.stop()
