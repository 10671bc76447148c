"""Crash at a step boundary of the quickstart promotion: the worker dies, a fresh one finishes.

Each case runs the whole quickstart PromotionTask (clone … push, then ``argocd-update``
against the in-process Argo CD emulator) on a worker subprocess that ends itself with
``os._exit(137)`` (what SIGKILL leaves behind: no cleanup, no goodbye to the server)
right after the step, on the activity's first attempt: the normal worker with the
tests' crash interceptor (``tests/crash_worker.py``). A fresh worker picks the
activity up once its heartbeat times out (10s, ``WORKTREE_HEARTBEAT_TIMEOUT``), and the
promotion must end Succeeded with exactly one commit on the stage branch and exactly
one sync in the emulator.

Three representative boundaries run by default (nothing done yet, committed but not
pushed, pushed); ``FREIGHTLINE_RELIABILITY_ALL=1`` runs every worktree step and a crash
in the middle of the Argo CD wait (after the sync started) as well.

The waits are boundaries too: a worker SIGKILLed while a promotion waits at its approval
gate (the approval, sent afterwards, reaches a fresh worker), and one SIGKILLed in the
timer between two verification measurements (the run ends with exactly its four).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from freightline.app.client import apply_project, decide_promotion, start_promotion
from freightline.contracts.promotion import PromotionPhase, PromotionResult
from freightline.contracts.verification import VerificationRequest
from freightline.kargo.analysis import AnalysisRunStatus
from freightline.kargo.resources import Metric
from sandbox.argocd import Timing
from sandbox.gitops import branch_head, commit_count
from sandbox.workers import worker_env
from tests.conftest import wait_for
from tests.crash_worker import CRASH_MESSAGE, Mode, crash_worker_args
from tests.metric_server import ErrorRateServer
from tests.pipelines import freight_for, with_freight
from tests.reliability.conftest import WorkerProcess, spawn_worker
from tests.test_approval import gated, start, waiting_for_approval
from tests.test_argocd_steps import TOKEN, UPDATE_STEP, CountingEmulator, quickstart, start_emulator

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ALL_BOUNDARIES = os.environ.get("FREIGHTLINE_RELIABILITY_ALL") == "1"
DEFAULT_STEPS = ("git-clone", "git-commit", "git-push")
EVERY_STEP = (
    "git-clone",
    "git-clear",
    "kustomize-set-image",
    "kustomize-build",
    "git-commit",
    "git-push",
)


def boundaries() -> list[Any]:
    """(crash point, step) cases; the non-default ones run with FREIGHTLINE_RELIABILITY_ALL=1."""
    cases = [("after-step", step) for step in EVERY_STEP]
    cases.append(("while-waiting", "argocd-update"))
    chosen = []
    for point, step in cases:
        default = point == "after-step" and step in DEFAULT_STEPS
        skip = pytest.mark.skip(reason="all boundaries run with FREIGHTLINE_RELIABILITY_ALL=1")
        marks = () if default or ALL_BOUNDARIES else (skip,)
        chosen.append(pytest.param(point, step, id=step, marks=marks))
    return chosen


@pytest.fixture
def argocd(gitops_repo: Path) -> Iterator[CountingEmulator]:
    # A short sync, so a crash in the middle of the wait has something to wait for.
    emulator = start_emulator(
        gitops_repo, Timing(sync_duration=1.0, progressing_duration=0.5, reconcile_interval=0)
    )
    try:
        yield emulator
    finally:
        emulator.emulator.stop()


@pytest.mark.parametrize(("point", "step"), boundaries())
async def test_crash_after_step_gives_one_commit_and_one_sync(
    client: Client,
    gitops_repo: Path,
    task_queue: str,
    argocd: CountingEmulator,
    worker_processes: list[WorkerProcess],
    tmp_path: Path,
    point: Mode,
    step: str,
) -> None:
    freight = freight_for("1.29.1")
    env = worker_env(
        client.service_client.config.target_host,
        task_queue,
        ARGOCD_SERVER=argocd.base_url,
        ARGOCD_AUTH_TOKEN=TOKEN,
    )
    doomed = spawn_worker(worker_processes, env, tmp_path, "doomed", crash_worker_args(point, step))
    await apply_project(client, with_freight(quickstart(gitops_repo), freight))
    handle = await start_promotion(client, "kargo-demo", "test", freight.metadata.name)

    await wait_for(lambda: doomed.returncode is not None, timeout=90)
    assert doomed.returncode == 137, doomed.log()[-2000:]
    assert CRASH_MESSAGE in doomed.log()
    pushed_before_crash = branch_head(gitops_repo, "stage/test")
    if step in ("git-push", "argocd-update"):
        assert pushed_before_crash is not None
    else:
        assert pushed_before_crash is None  # nothing reached the remote yet

    fresh = spawn_worker(worker_processes, env, tmp_path, "fresh")
    result: PromotionResult = await asyncio.wait_for(handle.result(), timeout=120)

    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    pushed = branch_head(gitops_repo, "stage/test")
    assert pushed is not None
    assert commit_count(gitops_repo, "stage/test") == 1
    if pushed_before_crash is not None:
        assert pushed == pushed_before_crash
    assert result.outputs["promo-process::commit"]["commit"] == pushed
    (app,) = result.outputs[UPDATE_STEP]["apps"]
    assert (app["revision"], app["sync"], app["health"]) == (pushed, "Synced", "Healthy")
    assert argocd.syncs == ["kargo-demo-test"]  # one sync across both workers
    assert len(argocd.app("kargo-demo-test")["status"]["history"]) == 1
    assert fresh.returncode is None, fresh.log()[-2000:]


# --- the waits: an approval gate, the gaps between verification measurements ---------------------


async def test_worker_killed_while_waiting_for_approval(
    client: Client,
    gitops_repo: Path,
    task_queue: str,
    argocd: CountingEmulator,
    worker_processes: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    """SIGKILL while the promotion waits on its gate; the approval reaches a fresh worker."""
    env = worker_env(
        client.service_client.config.target_host,
        task_queue,
        ARGOCD_SERVER=argocd.base_url,
        ARGOCD_AUTH_TOKEN=TOKEN,
    )
    doomed = spawn_worker(worker_processes, env, tmp_path, "doomed")
    handle = await start(
        client, gated(gitops_repo, {"approvers": ["alice"]}, argocd=True), "1.29.2"
    )
    await waiting_for_approval(handle)
    doomed.process.kill()
    doomed.process.wait()
    assert branch_head(gitops_repo, "stage/test") is None

    spawn_worker(worker_processes, env, tmp_path, "fresh")
    answer = await decide_promotion(client, handle.id, "approve", "alice", "after the crash")
    assert "alice" in answer
    result: PromotionResult = await asyncio.wait_for(handle.result(), timeout=120)

    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    assert [a.user for a in result.approvals] == ["alice"]
    assert commit_count(gitops_repo, "stage/test") == 1
    assert argocd.syncs == ["kargo-demo-test"]


async def test_worker_killed_between_measurements_loses_and_repeats_none(
    client: Client,
    task_queue: str,
    worker_processes: list[WorkerProcess],
    tmp_path: Path,
    error_rates: ErrorRateServer,
) -> None:
    env = worker_env(client.service_client.config.target_host, task_queue)
    doomed = spawn_worker(worker_processes, env, tmp_path, "doomed")
    metric = Metric.model_validate(
        {
            "name": "error-rate",
            "interval": "2s",
            "count": 4,
            "successCondition": "result < 0.05",
            "provider": {"web": {"url": error_rates.url + "/rate/x", "jsonPath": "{$.errorRate}"}},
        }
    )
    request = VerificationRequest(project="p", stage="test", freight="f" * 40, metrics=(metric,))
    handle = await client.start_workflow(
        "Verification",
        request,
        id=f"verification-crash-{task_queue}",
        task_queue=task_queue,
        result_type=AnalysisRunStatus,
    )

    async def measured(n: int) -> bool:
        status = AnalysisRunStatus.model_validate(await handle.query("status"))
        return sum(len(r.measurements) for r in status.metric_results) >= n

    await wait_for(lambda: measured(2), timeout=60)
    doomed.process.kill()  # in the timer between measurements 2 and 3
    doomed.process.wait()
    spawn_worker(worker_processes, env, tmp_path, "fresh")

    status = await asyncio.wait_for(handle.result(), timeout=120)
    assert status.phase == "Successful", status
    (result,) = status.metric_results
    assert len(result.measurements) == 4 and result.successful == 4
    started = [m.started_at for m in result.measurements]
    assert started == sorted(started) and len(set(started)) == 4
