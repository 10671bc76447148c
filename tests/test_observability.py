"""Worker observability: the SDK's Prometheus endpoint with Freightline's metrics, and probes.

A real worker (``run_worker``) on a runtime that serves ``/metrics``, against
the session's dev server; a real promotion; the real health server.
"""

from __future__ import annotations

import asyncio
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Replayer, Worker

from freightline.app.client import apply_project, start_promotion
from freightline.app.observability import HealthServer, WorkerHealth, serve_health, worker_runtime
from freightline.app.temporal import connect
from freightline.contracts.metrics import (
    DISCOVERY_DURATION,
    DISCOVERY_ERRORS,
    FREIGHT_DISCOVERED,
    PROMOTION_DURATION,
    PROMOTIONS,
    VERIFICATIONS,
    record_discovery,
    record_promotion_finished,
    record_verification_finished,
)
from freightline.contracts.promotion import PromotionPhase
from freightline.errors import ConfigError
from freightline.kargo.config import group_by_project, load_text
from freightline.kargo.resources import ProjectResources
from freightline.settings import load_settings, parse_address
from tests.conftest import wait_for
from tests.pipelines import IMAGE, dump, freight_for, quickstart_up_to_push, with_freight
from worker import WORKFLOWS, run_worker

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Metrics:
    """A client on a runtime of its own whose Prometheus endpoint the test reads."""

    def __init__(self, client: Client, url: str) -> None:
        self.client = client
        self.url = url

    async def text(self) -> str:
        async with httpx.AsyncClient() as http:
            response = await http.get(self.url)
        response.raise_for_status()
        return response.text

    async def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        return sample(await self.text(), name, **labels)


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match["name"] != name:
            continue
        found = dict(_LABEL.findall(match["labels"] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match["value"])
    return total


@pytest.fixture(scope="module")
async def metrics(client: Client) -> Metrics:
    address = f"127.0.0.1:{free_port()}"
    runtime = worker_runtime(address)
    assert runtime is not None
    # The runtime must exist before connecting: a client (and its workers) report to it.
    metrics_client = await connect(
        client.service_client.config.target_host, client.namespace, runtime=runtime
    )
    return Metrics(metrics_client, f"http://{address}/metrics")


async def get(url: str) -> httpx.Response:
    # Async on purpose: the probes call back into this event loop.
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url)


async def test_worker_serves_metrics_and_probes(
    metrics: Metrics, task_queue: str, gitops_repo: Path
) -> None:
    freight = freight_for("1.30.1")
    with HealthServer("127.0.0.1:0") as server:
        base = f"http://127.0.0.1:{server.port}"
        assert (await get(f"{base}/healthz")).status_code == 200
        starting = await get(f"{base}/readyz")
        assert (starting.status_code, starting.text.strip()) == (503, "starting")

        stop = asyncio.Event()
        running = asyncio.create_task(
            run_worker(metrics.client, settings=load_settings(), stop=stop, health=server.health)
        )
        try:

            async def ready() -> bool:
                return (await get(f"{base}/readyz")).status_code == 200

            await wait_for(ready)
            assert (await get(f"{base}/healthz")).status_code == 200
            assert (await get(f"{base}/nothing")).status_code == 404

            await apply_project(
                metrics.client, with_freight(quickstart_up_to_push(gitops_repo), freight)
            )
            handle = await start_promotion(
                metrics.client, "kargo-demo", "test", freight.metadata.name
            )
            result = await handle.result()
            assert result.phase is PromotionPhase.SUCCEEDED

            text = await metrics.text()
            # The SDK's own metrics, from the worker that ran the promotion.
            assert sample(text, "temporal_workflow_completed", task_queue=task_queue) >= 1
            assert sample(text, "temporal_activity_execution_latency_count") >= 2
            succeeded = {
                "project": "kargo-demo",
                "stage": "test",
                "phase": "Succeeded",
                "task_queue": task_queue,
                "workflow_type": "Promotion",
            }
            assert sample(text, PROMOTIONS, **succeeded) == 1
            assert sample(text, f"{PROMOTION_DURATION}_count", **succeeded) == 1
            assert sample(text, f"{PROMOTION_DURATION}_sum", **succeeded) > 0
            # Freightline's buckets (up to a day: approvals wait), not the SDK's defaults.
            assert sample(text, f"{PROMOTION_DURATION}_bucket", le="86400", **succeeded) == 1

            # The quickstart's Warehouse watches a public registry, out of reach here: its
            # discovery passes fail, and each is timed and counted by the Warehouse workflow.
            warehouse = {"project": "kargo-demo", "warehouse": "kargo-demo"}

            async def discovery_failed() -> bool:
                return await metrics.value(DISCOVERY_ERRORS, **warehouse) >= 1

            await wait_for(discovery_failed, timeout=60)
            assert await metrics.value(f"{DISCOVERY_DURATION}_count", **warehouse) >= 1

            # Replaying the run (as a new worker would) does not count it again.
            history = await handle.fetch_history()
            replayer = Replayer(
                workflows=WORKFLOWS,
                data_converter=metrics.client.data_converter,
                runtime=metrics.client.service_client.config.runtime,
            )
            await replayer.replay_workflow(history)
            assert await metrics.value(PROMOTIONS, **succeeded) == 1

            stop.set()

            async def not_ready() -> bool:
                return (await get(f"{base}/readyz")).status_code == 503

            await wait_for(not_ready)  # from the moment the drain begins
            await asyncio.wait_for(running, timeout=60)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.shield(running), timeout=60)
        after = await get(f"{base}/readyz")
        assert (after.status_code, after.text.strip()) == (503, "draining")
        assert (await get(f"{base}/healthz")).status_code == 200


@activity.defn(name="observe_discovery_and_verification")
def observe_discovery_and_verification(project: str) -> None:
    record_discovery(project, "wh", 0.2, new_freight=2)
    record_discovery(project, "wh", 1.5, error=True)
    record_verification_finished(project, "uat", "Failed", 42.0)


@workflow.defn(name="ObserveMetrics", sandboxed=False)
class ObserveMetricsWorkflow:
    @workflow.run
    async def run(self, project: str) -> None:
        await workflow.execute_activity(
            observe_discovery_and_verification,
            project,
            start_to_close_timeout=timedelta(seconds=30),
        )
        record_verification_finished(project, "uat", "Successful", 1.0)


async def test_recording_functions_reach_the_endpoint(metrics: Metrics, task_queue: str) -> None:
    with ThreadPoolExecutor(max_workers=2) as executor:
        async with Worker(
            metrics.client,
            task_queue=task_queue,
            workflows=[ObserveMetricsWorkflow],
            activities=[observe_discovery_and_verification],
            activity_executor=executor,
        ):
            await metrics.client.execute_workflow(
                ObserveMetricsWorkflow.run, "obs", id=f"observe-{task_queue}", task_queue=task_queue
            )

    text = await metrics.text()
    labels = {"project": "obs", "warehouse": "wh"}
    assert sample(text, f"{DISCOVERY_DURATION}_count", **labels) == 2
    assert sample(text, DISCOVERY_ERRORS, **labels) == 1
    assert sample(text, FREIGHT_DISCOVERED, **labels) == 2
    activity_labels = {"activity_type": "observe_discovery_and_verification"}
    assert sample(text, VERIFICATIONS, project="obs", phase="Failed", **activity_labels) == 1
    assert sample(text, VERIFICATIONS, project="obs", phase="Successful") == 1


def test_recording_outside_a_worker_is_a_no_op() -> None:
    record_promotion_finished("p", "s", "Succeeded", 1.0)
    record_discovery("p", "w", 0.1, error=True, new_freight=1)
    record_verification_finished("p", "s", "Successful", 1.0)


def test_addresses_are_validated_with_the_setting_named() -> None:
    assert parse_address("127.0.0.1:9464", setting="X") == ("127.0.0.1", 9464)
    assert parse_address(":8080", setting="X") == ("0.0.0.0", 8080)  # noqa: S104 - the point
    assert parse_address("[::1]:8080", setting="X") == ("::1", 8080)
    with pytest.raises(ConfigError, match='FREIGHTLINE_METRICS_ADDRESS: "9464" is not HOST:PORT'):
        worker_runtime("9464")
    with pytest.raises(ConfigError, match="FREIGHTLINE_HEALTH_ADDRESS"):
        HealthServer("localhost:http")
    assert worker_runtime("") is None
    assert worker_runtime(None) is None


async def test_health_without_an_address_serves_nothing_but_keeps_state() -> None:
    with serve_health(None) as health:
        assert isinstance(health, WorkerHealth)
        assert health.live() == (True, "alive")
        assert health.ready() == (False, "starting")


def hostile_stages(repo: Path) -> dict[str, list[dict[str, Any]]]:
    """Stages whose steps a worker must refuse, each a different way (all end quickly)."""
    clone = {
        "uses": "git-clone",
        "config": {"repoURL": repo.as_uri(), "checkout": [{"branch": "main", "path": "./src"}]},
    }

    def clone_of(url: str, branch: str = "main") -> dict[str, Any]:
        return {
            "uses": "git-clone",
            "config": {"repoURL": url, "checkout": [{"branch": branch, "path": "./src"}]},
        }

    return {
        "remote-helper": [clone_of("ext::sh -c touch% /tmp/freightline-pwned")],
        "option-branch": [clone_of(repo.as_uri(), "--upload-pack=touch /tmp/freightline-pwned")],
        "missing-repo": [clone_of((repo.parent / "nowhere.git").as_uri())],
        "path-escape": [
            clone,
            {
                "uses": "yaml-update",
                "config": {
                    "path": "./src/../../../etc/passwd",
                    "updates": [{"key": "a", "value": 1}],
                },
            },
        ],
        "bad-expression": [
            clone,
            {
                "uses": "yaml-update",
                "config": {
                    "path": "./src/base/deploy.yaml",
                    "updates": [{"key": "a", "value": "${{ int('not a number') }}"}],
                },
            },
        ],
        "unknown-step": [{"uses": "kubectl-apply", "config": {}}],
    }


def hostile_project(repo: Path) -> ProjectResources:
    stages = hostile_stages(repo)
    documents: list[dict[str, Any]] = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": "p"}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Warehouse",
            "metadata": {"name": "kargo-demo", "namespace": "p"},
            "spec": {"subscriptions": [{"image": {"repoURL": IMAGE}}], "interval": "1h"},
        },
    ]
    for name, steps in stages.items():
        documents.append(
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Stage",
                "metadata": {"name": name, "namespace": "p"},
                "spec": {
                    "requestedFreight": [
                        {
                            "origin": {"kind": "Warehouse", "name": "kargo-demo"},
                            "sources": {"direct": True},
                        }
                    ],
                    "promotionTemplate": {"spec": {"steps": steps}},
                },
            }
        )
    (resources,) = group_by_project(load_text(dump(documents), source="hostile")).values()
    return resources


async def test_readiness_holds_through_a_batch_of_hostile_promotions(
    client: Client, task_queue: str, gitops_repo: Path
) -> None:
    freight = freight_for("1.30.1")
    polls: list[tuple[int, str]] = []
    with HealthServer("127.0.0.1:0") as server:
        base = f"http://127.0.0.1:{server.port}"
        stop = asyncio.Event()
        running = asyncio.create_task(
            run_worker(client, settings=load_settings(), stop=stop, health=server.health)
        )
        try:

            async def ready() -> bool:
                return (await get(f"{base}/readyz")).status_code == 200

            await wait_for(ready)
            hostile = with_freight(hostile_project(gitops_repo), freight)
            await apply_project(client, hostile)
            handles = [
                await start_promotion(client, "p", stage, freight.metadata.name)
                for _ in range(4)
                for stage in hostile.stages
            ]
            finished = asyncio.gather(*(h.result() for h in handles), return_exceptions=True)

            async def poll() -> None:
                # Each probe gets a kubelet-like timeout; a slow answer fails the test.
                async with httpx.AsyncClient(timeout=2) as http:
                    while not finished.done():
                        answer = await http.get(f"{base}/readyz")
                        polls.append((answer.status_code, answer.text.strip()))
                        await asyncio.sleep(0.05)

            await asyncio.gather(poll(), asyncio.wait_for(asyncio.shield(finished), timeout=120))
            outcomes = await finished
            assert all(isinstance(o, WorkflowFailureError) for o in outcomes), outcomes
            assert polls and all(p == (200, "ready") for p in polls), polls

            # A legitimate promotion still goes through.
            await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), freight))
            handle = await start_promotion(client, "kargo-demo", "test", freight.metadata.name)
            assert (await handle.result()).phase is PromotionPhase.SUCCEEDED
            assert (await get(f"{base}/readyz")).status_code == 200
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.shield(running), timeout=60)
