"""Faults at a bad moment: Argo CD hanging and answering 503, Prometheus stopped mid-window,
the git remote gone, the registry stopped during discovery.

Each must be retried where retrying helps, show a clear status while it lasts, and never
end in a false Succeeded (promotion), Successful (verification) or new Freight (discovery).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.worker import Worker

from freightline.app.client import apply_project, start_promotion
from freightline.contracts.names import WAREHOUSE_WORKFLOW, warehouse_workflow_id
from freightline.contracts.promotion import PromotionPhase, PromotionResult
from freightline.contracts.verification import VerificationRequest, ended_run
from freightline.contracts.warehouse import WarehouseConfig, WarehouseInput, WarehouseStatus
from freightline.kargo.analysis import AnalysisRunStatus
from freightline.kargo.resources import Metric
from sandbox.gitops import branch_head, commit_count
from sandbox.prometheus import PrometheusServer
from tests.conftest import wait_for
from tests.pipelines import freight_for, quickstart_up_to_push, with_freight
from tests.registry_fixture import REGISTRY_BINARY, Pusher, Registry, start_registry
from tests.test_argocd_steps import UPDATE_STEP, CountingEmulator, argocd, argocd_worker, quickstart
from tests.test_promotion import promote, promote_expecting_failure
from tests.test_warehouse import warehouse

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

__all__ = ["argocd", "argocd_worker"]  # fixtures, used by name


# --- Argo CD --------------------------------------------------------------------------------------


async def test_argocd_hanging_then_503_is_retried_with_one_sync(
    client: Client, argocd_worker: Worker, argocd: CountingEmulator, gitops_repo: Path
) -> None:
    """Right after the sync, one poll hangs past the client's timeout, then two answer 503."""
    freight = freight_for("1.29.1")
    await apply_project(client, with_freight(quickstart(gitops_repo), freight))

    def faults(_name: str) -> None:
        argocd.admin("fault", {"mode": "hang", "count": 1, "hangSeconds": 20})

    argocd.after_sync.append(faults)
    handle = await start_promotion(client, "kargo-demo", "test", freight.metadata.name)

    # While Argo CD hangs, the promotion is running and says where it is; not Succeeded.
    await wait_for(lambda: argocd.syncs == ["kargo-demo-test"], timeout=60)
    status = await handle.query("status")
    assert status["phase"] == "Running"
    assert "waiting for Argo CD app kargo-demo-test" in status["current"]
    argocd.after_sync.clear()
    argocd.admin("apps/kargo-demo-test/fault", {"mode": "503", "count": 2})

    result: PromotionResult = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.phase is PromotionPhase.SUCCEEDED
    (app,) = result.outputs[UPDATE_STEP]["apps"]
    assert app["revision"] == branch_head(gitops_repo, "stage/test")
    assert argocd.syncs == ["kargo-demo-test"]
    assert len(argocd.app("kargo-demo-test")["status"]["history"]) == 1


async def test_argocd_answering_503_for_good_errors_and_never_succeeds(
    client: Client, argocd_worker: Worker, argocd: CountingEmulator, gitops_repo: Path
) -> None:
    """Argo CD down for longer than the retry policy: the promotion ends Errored, saying why."""
    freight = freight_for("1.29.2")
    await apply_project(client, with_freight(quickstart(gitops_repo), freight))
    argocd.admin("fault", {"mode": "503", "count": 1000})

    result = await promote_expecting_failure(client, "kargo-demo", "test", freight.metadata.name)

    assert result.phase is PromotionPhase.ERRORED
    assert result.failed_step == UPDATE_STEP
    assert "HTTP 503" in result.message and argocd.base_url in result.message
    assert argocd.syncs == []


# --- Prometheus -------------------------------------------------------------------------------


def ratio_metric(prometheus: PrometheusServer, *, consecutive_errors: int, count: int) -> Metric:
    return Metric.model_validate(
        {
            "name": "error-ratio",
            "interval": "1s",
            "count": count,
            "consecutiveErrorLimit": consecutive_errors,
            "successCondition": "result[0] < 0.05",
            "provider": {"prometheus": {"address": prometheus.url, "query": "vector(0.01)"}},
        }
    )


async def start_verification(
    client: Client, queue: str, metric: Metric, name: str
) -> WorkflowHandle[Any, AnalysisRunStatus]:
    request = VerificationRequest(project="p", stage=name, freight="f" * 40, metrics=(metric,))
    return await client.start_workflow(
        "Verification",
        request,
        id=f"verification-{name}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
        result_type=AnalysisRunStatus,
    )


async def measured(handle: WorkflowHandle[Any, Any], phase: str, at_least: int) -> bool:
    status = AnalysisRunStatus.model_validate(await handle.query("status"))
    taken = [m for r in status.metric_results for m in r.measurements if m.phase == phase]
    return len(taken) >= at_least


async def test_prometheus_stopped_mid_verification(
    client: Client, worker: Worker, task_queue: str, tmp_path: Path
) -> None:
    prometheus = PrometheusServer(tmp_path / "prometheus", [])
    prometheus.start()
    try:
        # One run gives up after 3 errors in a row; the other tolerates 10 and recovers.
        strict = await start_verification(
            client, task_queue, ratio_metric(prometheus, consecutive_errors=2, count=30), "strict"
        )
        patient = await start_verification(
            client, task_queue, ratio_metric(prometheus, consecutive_errors=10, count=6), "patient"
        )
        for handle in (strict, patient):
            await wait_for(lambda h=handle: measured(h, "Successful", 1), timeout=30)

        prometheus.stop()
        with pytest.raises(WorkflowFailureError) as ended:
            await asyncio.wait_for(strict.result(), timeout=60)
        failed = ended_run(ended.value.cause)  # the workflow failed, carrying its run
        assert failed is not None and failed.phase == "Error", failed
        errors = [m for m in failed.metric_results[0].measurements if m.phase == "Error"]
        assert len(errors) == 3
        assert all(
            f"could not reach Prometheus at {prometheus.url}" in (m.message or "") for m in errors
        )
        await wait_for(lambda: measured(patient, "Error", 1), timeout=30)
        prometheus.start()

        recovered = await asyncio.wait_for(patient.result(), timeout=60)
        assert recovered.phase == "Successful", recovered
        result = recovered.metric_results[0]
        assert result.error >= 1 and result.successful == 6  # the errors were not counted as passes
    finally:
        prometheus.stop()


# --- git ------------------------------------------------------------------------------------------


async def test_git_remote_gone_fails_clearly_then_recovers_with_one_commit(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.3")
    await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), freight))
    away = gitops_repo.with_name("moved-away.git")
    os.rename(gitops_repo, away)
    try:
        result = await promote_expecting_failure(
            client, "kargo-demo", "test", freight.metadata.name
        )
    finally:
        os.rename(away, gitops_repo)

    assert result.phase in (PromotionPhase.FAILED, PromotionPhase.ERRORED)
    assert result.failed_step == "promo-process::step-0"  # the quickstart's git-clone
    assert "(git-clone): git clone" in result.message
    assert "does not appear to be a git repository" in result.message
    assert branch_head(gitops_repo, "stage/test") is None

    back = await promote(client, "kargo-demo", "test", freight.metadata.name)
    assert back.phase is PromotionPhase.SUCCEEDED
    assert commit_count(gitops_repo, "stage/test") == 1


# --- registry -------------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = start_registry(tmp_path / "registry")
    yield reg
    reg.stop()


def restart(registry: Registry) -> None:
    """The same registry again: same config, same port, same storage."""
    registry.stop()
    config = registry.log_path.parent / "config.yml"
    with registry.log_path.open("ab") as log:
        registry.process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def push(registry: Registry, repo: str, tag: str) -> None:
    pusher = Pusher(registry)
    try:
        pusher.image(repo, tag, salt=f"{repo}-{tag}")
    finally:
        pusher.close()


async def warehouse_status(handle: WorkflowHandle[Any, Any]) -> WarehouseStatus:
    status: WarehouseStatus = await handle.query("status", result_type=WarehouseStatus)
    return status


async def test_registry_stopped_during_discovery_keeps_freight_and_says_so(
    client: Client, worker: Worker, task_queue: str, registry: Registry
) -> None:
    project = f"wh-{uuid.uuid4().hex[:8]}"
    push(registry, project, "1.0.0")
    spec = warehouse([{"image": {"repoURL": f"{registry.host}/{project}"}}], interval="1h")
    handle = await client.start_workflow(
        WAREHOUSE_WORKFLOW,
        WarehouseInput(project=project, config=WarehouseConfig(warehouse=spec)),
        id=warehouse_workflow_id(project, "wh"),
        task_queue=task_queue,
    )

    async def status_holds(check: Any) -> bool:
        return bool(check(await warehouse_status(handle)))

    await wait_for(lambda: status_holds(lambda s: s.freight_count == 1), timeout=30)
    first = (await warehouse_status(handle)).latest_freight

    registry.process.kill()  # like a crash: no graceful shutdown
    registry.process.wait()
    await handle.signal("refresh")
    await wait_for(lambda: status_holds(lambda s: s.last_error), timeout=60)
    down = await warehouse_status(handle)
    assert down.last_error is not None and registry.host in down.last_error
    assert down.freight_count == 1 and down.latest_freight == first  # nothing invented
    assert down.failures >= 1
    description = await handle.describe()
    assert description.status is not None and description.status.name == "RUNNING"
    # The activity was retried before the failure was recorded.
    events = (await handle.fetch_history()).to_json_dict()["events"]
    attempts = [
        int(e["activityTaskStartedEventAttributes"].get("attempt", 1))
        for e in events
        if "activityTaskStartedEventAttributes" in e
    ]
    assert max(attempts) == 3

    restart(registry)
    await wait_for(lambda: _answers(registry), timeout=20)
    push(registry, project, "1.1.0")
    await handle.signal("refresh")
    await wait_for(lambda: status_holds(lambda s: s.freight_count == 2), timeout=60)
    up = await warehouse_status(handle)
    assert up.last_error is None and up.latest_freight != first


def _answers(registry: Registry) -> bool:
    import httpx

    try:
        return httpx.get(f"{registry.url}/v2/", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
