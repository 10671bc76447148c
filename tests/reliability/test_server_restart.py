"""The Temporal dev server (persistent SQLite) stops and starts again mid-promotion, and
mid-verification-window: each resumes, losing and repeating nothing.

The server is this test's own (``freightline.app.devserver.DevServer`` on free ports, database
in the test's directory), so stopping it leaves the session's server alone. The promotion
is inside ``argocd-update``'s wait (the emulator keeps the app Progressing for a while)
when the server goes down; the worker subprocess stays up and reconnects.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from freightline.app.client import apply_project, start_promotion
from freightline.app.devserver import DevServer
from freightline.contracts.promotion import PromotionPhase, PromotionResult
from freightline.contracts.verification import VerificationRequest
from freightline.kargo.analysis import AnalysisRunStatus
from freightline.kargo.resources import Metric
from sandbox.argocd import Timing
from sandbox.gitops import branch_head, commit_count, create_bare_repo
from sandbox.registry import quiet_port
from sandbox.workers import worker_env
from tests.conftest import wait_for
from tests.metric_server import ErrorRateServer
from tests.pipelines import freight_for, with_freight
from tests.reliability.conftest import WorkerProcess, spawn_worker
from tests.test_argocd_steps import TOKEN, UPDATE_STEP, quickstart, start_emulator

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


async def connect(server: DevServer) -> Client:
    return await Client.connect(server.address, data_converter=pydantic_data_converter)


async def test_server_restart_mid_promotion_resumes_and_succeeds(
    tmp_path: Path, worker_processes: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = create_bare_repo(tmp_path / "gitops.git")
    argocd = start_emulator(
        repo, Timing(sync_duration=0.5, progressing_duration=12.0, reconcile_interval=0)
    )
    server = DevServer(
        db_file=tmp_path / "temporal.db",
        port=quiet_port(),
        ui_port=quiet_port(),
        log_file=tmp_path / "devserver.log",
    )
    server.start()
    try:
        client = await connect(server)
        queue = f"restart-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("FREIGHTLINE_TASK_QUEUE", queue)  # where apply starts workflows
        env = worker_env(
            server.address, queue, ARGOCD_SERVER=argocd.base_url, ARGOCD_AUTH_TOKEN=TOKEN
        )
        worker = spawn_worker(worker_processes, env, tmp_path, "restart")
        freight = freight_for("1.29.1")
        await asyncio.wait_for(
            apply_project(client, with_freight(quickstart(repo), freight)), timeout=60
        )
        handle = await start_promotion(client, "kargo-demo", "test", freight.metadata.name)
        # In the Argo CD wait: pushed, synced, the app still Progressing.
        await wait_for(lambda: argocd.syncs == ["kargo-demo-test"], timeout=60)
        pushed = branch_head(repo, "stage/test")

        server.stop()
        await asyncio.sleep(2)  # the worker polls and heartbeats into a closed port meanwhile
        assert server.process is not None and server.process.returncode is not None
        server.start()

        client = await connect(server)
        again = client.get_workflow_handle(handle.id, result_type=PromotionResult)
        result = await asyncio.wait_for(again.result(), timeout=120)

        assert result.phase is PromotionPhase.SUCCEEDED, result.message
        assert pushed is not None and branch_head(repo, "stage/test") == pushed
        assert commit_count(repo, "stage/test") == 1
        (app,) = result.outputs[UPDATE_STEP]["apps"]
        assert (app["revision"], app["health"]) == (pushed, "Healthy")
        assert argocd.syncs == ["kargo-demo-test"]
        assert worker.returncode is None, worker.log()[-2000:]
        # The server kept the run's whole history across the restart.
        events = (await again.fetch_history()).to_json_dict()["events"]
        assert events[0]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"
        assert events[-1]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    finally:
        for process in worker_processes:
            process.stop()
        server.stop()
        argocd.emulator.stop()


async def test_server_restart_mid_verification_window_loses_and_repeats_no_measurement(
    tmp_path: Path, worker_processes: list[WorkerProcess], error_rates: ErrorRateServer
) -> None:
    server = DevServer(
        db_file=tmp_path / "temporal.db",
        port=quiet_port(),
        ui_port=quiet_port(),
        log_file=tmp_path / "devserver.log",
    )
    server.start()
    try:
        client = await connect(server)
        queue = f"window-{uuid.uuid4().hex[:8]}"
        spawn_worker(worker_processes, worker_env(server.address, queue), tmp_path, "window")
        metric = Metric.model_validate(
            {
                "name": "error-rate",
                "interval": "3s",
                "count": 4,
                "successCondition": "result < 0.05",
                "provider": {
                    "web": {
                        "url": f"{error_rates.url}/rate/good",
                        "jsonPath": "{$.errorRate}",
                    }
                },
            }
        )
        request = VerificationRequest(
            project="p",
            stage="uat",
            freight="f" * 40,
            freight_alias="calm-otter",
            metrics=(metric,),
        )
        handle = await client.start_workflow(
            "Verification",
            request,
            id="window-restart",
            task_queue=queue,
            result_type=AnalysisRunStatus,
        )
        await wait_for(lambda: error_rates.requests >= 2, timeout=60)

        server.stop()
        await asyncio.sleep(2)  # the window's timer runs on while the server is down
        server.start()

        client = await connect(server)
        again = client.get_workflow_handle(handle.id, result_type=AnalysisRunStatus)
        result = await asyncio.wait_for(again.result(), timeout=120)
        (measured,) = result.metric_results
        assert result.phase == "Successful"
        assert len(measured.measurements) == 4 == error_rates.requests
    finally:
        for process in worker_processes:
            process.stop()
        server.stop()
