"""Records the workflow histories under ``tests/histories/`` that ``test_replay`` replays.

Run ``scripts/record-histories`` (all) or ``scripts/record-histories promotion stage``
(some) after a deliberate, versioned change to workflow code: each scenario runs real
workflows on a throwaway dev server with an in-process worker, the Argo CD emulator, a
local registry and bare git repositories, and writes ``<name>.json`` (the history as
``temporal workflow show --output json`` prints it).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from freightline.app.client import (
    abort_promotion,
    apply_project,
    decide_promotion,
    delete_resource,
    stage_states,
    start_promotion,
)
from freightline.app.devserver import temporal_binary
from freightline.contracts.names import (
    SEARCH_ATTRIBUTES,
    WAREHOUSE_WORKFLOW,
    project_workflow_id,
    stage_workflow_id,
    warehouse_workflow_id,
)
from freightline.contracts.promotion import PromotionResult
from freightline.contracts.verification import VerificationRequest
from freightline.contracts.warehouse import WarehouseConfig, WarehouseInput, WarehouseStatus
from freightline.kargo.analysis import AnalysisRunStatus
from freightline.kargo.resources import Metric
from freightline.settings import load_settings
from sandbox.argocd import ArgoCDEmulator, Timing
from sandbox.gitops import create_bare_repo
from tests.metric_server import ErrorRateServer
from tests.pipelines import freight_for, quickstart_auto, with_freight
from tests.registry_fixture import Pusher, start_registry

HISTORIES = Path(__file__).resolve().parent.parent / "histories"
TOKEN = "recorder-token"
APPSET = (
    Path(__file__).resolve().parents[2]
    / "sandbox/fixtures/kargo-quickstart/argocd-applicationset.yaml"
)


async def _wait(check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the scenario did not reach its end state")
        await asyncio.sleep(0.2)


async def _save(handle: WorkflowHandle[Any, Any], name: str) -> Path:
    history = await handle.fetch_history()
    path = HISTORIES / f"{name}.json"
    path.write_text(json.dumps(history.to_json_dict(), indent=1) + "\n")
    print(f"{path.relative_to(HISTORIES.parent.parent)}: {len(history.events)} events")
    return path


class Scenarios:
    """One method per recorded history; each makes its own repos and services."""

    def __init__(self, client: Client, queue: str, workdir: Path) -> None:
        self.client = client
        self.queue = queue
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def worker(self) -> Any:
        """Freightline's worker, built now (it reads ``ARGOCD_SERVER`` when built)."""
        from worker import build_worker

        # The recorder's repositories are bare repositories on disk.
        settings = load_settings().replace(git={"allow_local_repositories": True})
        return build_worker(self.client, settings, queue=self.queue)

    def repo(self, name: str) -> Path:
        return create_bare_repo(self.workdir / f"{name}-{uuid.uuid4().hex[:6]}.git")

    async def project(self) -> None:
        """``Project`` reconciling: apply, apply again with Freight, delete a Stage (whose
        retired workflow is recorded too)."""
        repo = self.repo("project")
        resources = quickstart_auto(repo, auto=False)
        async with self.worker():
            await apply_project(self.client, resources)
            await apply_project(self.client, with_freight(resources, freight_for("1.0.0")))
            await delete_resource(self.client, "kargo-demo", "Stage", "prod", "recorder")
            retired = self.client.get_workflow_handle(stage_workflow_id("kargo-demo", "prod"))
            await retired.result()
            handle = self.client.get_workflow_handle(project_workflow_id("kargo-demo"))
            await _save(handle, "project")
            await _save(retired, "stage-retired")

    async def approval(self) -> None:
        """``Promotion`` waiting for approval: one approved (Succeeded), one aborted."""
        from tests.test_approval import gated

        repo = self.repo("approval")
        approved, aborted = freight_for("1.3.0"), freight_for("1.3.1")
        resources = with_freight(gated(repo, {"approvers": ["alice"]}), approved, aborted)

        async def waiting(handle: WorkflowHandle[Any, Any]) -> bool:
            status = await handle.query("status")
            return isinstance(status, dict) and status.get("approval") is not None

        async with self.worker():
            await apply_project(self.client, resources)
            handle = await start_promotion(self.client, "kargo-demo", "test", approved.alias or "")
            await _wait(lambda: waiting(handle))
            await decide_promotion(self.client, handle.id, "approve", "alice", "ship it")
            await handle.result()
            await _save(handle, "promotion-approved")
            handle = await start_promotion(self.client, "kargo-demo", "test", aborted.alias or "")
            await _wait(lambda: waiting(handle))
            await abort_promotion(self.client, handle.id, "ops", "wrong freight")
            await _expect_failure(handle)
            await _save(handle, "promotion-aborted")

    async def window(self) -> None:
        """``Promotion`` held by a closed promotion window (a durable timer), then aborted."""
        from tests.test_windows import ical, project_with_windows

        repo = self.repo("window")
        now = datetime.now(UTC).replace(microsecond=0)
        freeze = {"kind": "Deny", "name": "freeze", "dtstart": ical(now), "duration": "1h"}
        freight = freight_for("1.4.0")

        async def held(handle: WorkflowHandle[Any, Any]) -> bool:
            status = await handle.query("status")
            return isinstance(status, dict) and bool(status.get("waitingForWindow"))

        async with self.worker():
            resources = with_freight(project_with_windows(repo, [freeze]), freight)
            await apply_project(self.client, resources)
            handle = await start_promotion(self.client, "kargo-demo", "test", freight.alias or "")
            await _wait(lambda: held(handle))
            await abort_promotion(self.client, handle.id, "ops", "freeze")
            await _expect_failure(handle)
            await _save(handle, "promotion-window")

    async def stage(self) -> None:
        """``Stage`` (test) auto-promoting applied Freight (its child Promotion runs too)."""
        repo = self.repo("stage")
        freight = freight_for("1.1.0")

        async def promoted() -> bool:
            states = {s.name: s for s in await stage_states(self.client, "kargo-demo")}
            test = states["test"]
            return test.current is not None and test.running is None

        async with self.worker():
            await apply_project(self.client, with_freight(quickstart_auto(repo), freight))
            await _wait(promoted)
            await asyncio.sleep(1)  # let the Stage finish the task that recorded the result
            handle = self.client.get_workflow_handle(stage_workflow_id("kargo-demo", "test"))
            await _save(handle, "stage")

    async def collections(self) -> None:
        """``Stage`` (test) fed by two Warehouses: auto-promotes each origin's Freight and
        keeps both (the ``freight-collections`` patch), offering each downstream."""
        from tests.test_freight_collections import PROJECT, back, front, two_warehouse_project

        repo = self.repo("collections")
        f1, b1 = front("1.6.0"), back("2.6.0")

        async def both() -> bool:
            states = {s.name: s for s in await stage_states(self.client, PROJECT)}
            test = states["test"]
            return len(test.current_collection) == 2 and test.running is None

        async with self.worker():
            resources = with_freight(two_warehouse_project(repo, auto=True), f1, b1)
            await apply_project(self.client, resources)
            await _wait(both)
            await asyncio.sleep(1)  # let the Stage finish the task that recorded the result
            handle = self.client.get_workflow_handle(stage_workflow_id(PROJECT, "test"))
            await _save(handle, "stage-collections")

    async def rollback(self) -> None:
        """``Stage`` (test): good Freight verified; bad Freight promoted, its verification Failed,
        rolled back to the good one (``autoRollback.onVerification``)."""
        from tests.test_verification import verified_pipeline

        repo = self.repo("rollback")
        server = ErrorRateServer()
        good, bad = freight_for("1.5.0"), freight_for("1.5.9")
        server.rates[bad.alias or ""] = 0.5
        resources = verified_pipeline(repo, server.url, rollback=True)

        async def test_state() -> Any:
            return {s.name: s for s in await stage_states(self.client, "kargo-demo")}["test"]

        async def good_verified() -> bool:
            test = await test_state()
            return bool(test.verifications) and test.verifications[0].phase == "Successful"

        async def rolled_back() -> bool:
            test = await test_state()
            return (
                len(test.history) >= 3
                and test.history[0].freight == good.metadata.name
                and (test.running is None and test.verifying is None)
            )

        try:
            async with self.worker():
                await apply_project(self.client, with_freight(resources, good))
                await _wait(good_verified, timeout=90)
                await apply_project(self.client, with_freight(resources, good, bad))
                await _wait(rolled_back, timeout=120)
                handle = self.client.get_workflow_handle(stage_workflow_id("kargo-demo", "test"))
                await _save(handle, "stage-rollback")
        finally:
            server.stop()

    async def verification(self) -> None:
        """``Verification``: two measurements of a web metric, one second apart."""
        await self._web_verification(0.01, "verification")

    async def verification_failed(self) -> None:
        """``Verification``: a measurement over the limit (failureLimit 0), Failed; the workflow fails with
        ``VerificationFailed`` and the run (the ``fails-unless-successful`` patch)."""
        await self._web_verification(0.5, "verification-failed")

    async def _web_verification(self, rate: float, name: str) -> None:
        """Two measurements of a web metric answering ``rate``, one second apart, saved as
        ``name``; under 0.05 it succeeds, else the workflow fails."""
        server = ErrorRateServer()
        server.rates["rate"] = rate
        try:
            metric = Metric.model_validate(
                {
                    "name": "error-rate",
                    "interval": "1s",
                    "count": 2,
                    "successCondition": "result < 0.05",
                    "provider": {"web": {"url": f"{server.url}/rate", "jsonPath": "{$.errorRate}"}},
                }
            )
            request = VerificationRequest(
                project="kargo-demo", stage="test", freight="f" * 40, metrics=(metric,)
            )
            async with self.worker():
                handle = await self.client.start_workflow(
                    "Verification",
                    request,
                    id=f"verification-{uuid.uuid4().hex[:6]}",
                    task_queue=self.queue,
                    result_type=AnalysisRunStatus,
                )
                if rate < 0.05:
                    await handle.result()
                else:
                    await _expect_failure(handle)
                await _save(handle, name)
        finally:
            server.stop()

    async def warehouse(self) -> None:
        """``Warehouse``: discoveries on a 1s interval, a new tag, a refresh."""
        registry = start_registry(self.workdir / "registry")
        try:
            pusher = Pusher(registry)
            pusher.image("app", "1.0.0", salt="a")
            config = WarehouseConfig.model_validate(
                {
                    "warehouse": {
                        "metadata": {"name": "wh", "namespace": "rec"},
                        "spec": {
                            "interval": "1s",
                            "subscriptions": [{"image": {"repoURL": f"{registry.host}/app"}}],
                        },
                    }
                }
            )

            async def discovered(n: int) -> bool:
                status: WarehouseStatus = await handle.query("status", result_type=WarehouseStatus)
                return status.discoveries >= n

            async with self.worker():
                handle = await self.client.start_workflow(
                    WAREHOUSE_WORKFLOW,
                    WarehouseInput(project="rec", config=config),
                    id=warehouse_workflow_id("rec", "wh"),
                    task_queue=self.queue,
                )
                await _wait(lambda: discovered(2))
                pusher.image("app", "1.1.0", salt="b")
                pusher.close()
                await handle.signal("refresh")
                await _wait(lambda: discovered(4))
                await handle.terminate("recorded")
                await _save(handle, "warehouse")
        finally:
            registry.stop()

    async def inline(self) -> None:
        """``Promotion`` with inline steps: a ``compose-output`` inside the clone-to-push
        activity, then ``compose-output`` and ``fail`` in the workflow itself (Failed)."""
        from tests.pipelines import commit_freight, single_stage_project
        from tests.test_inline_steps import INLINE_SCENARIO

        repo = self.repo("inline")
        freight = commit_freight(repo, "")
        async with self.worker():
            resources = with_freight(single_stage_project(repo, INLINE_SCENARIO), freight)
            await apply_project(self.client, resources)
            handle = await start_promotion(self.client, "p", "test", freight.metadata.name)
            await _expect_failure(handle)
            await _save(handle, "promotion-inline")

    async def metadata(self) -> None:
        """``Promotion``: ``set-freight-alias`` and ``set-metadata`` (Kargo's examples), then a
        ``compose-output`` reading the metadata back, Succeeded."""
        from tests.test_metadata_steps import METADATA_SCENARIO, freight, project

        target = freight(tag="v1.2.3", alias="my-app-freight")
        async with self.worker():
            await apply_project(self.client, with_freight(project(METADATA_SCENARIO), target))
            handle = await start_promotion(self.client, "p", "test", target.metadata.name)
            result: PromotionResult = await handle.result()
            assert result.phase == "Succeeded", result.message
            await _save(handle, "promotion-metadata")

    async def promotion(self) -> None:
        """``Promotion``: the whole quickstart, Argo CD included; and one that errors."""
        repo = self.repo("promotion")
        argocd = ArgoCDEmulator(
            APPSET, TOKEN, variables={"GITOPS_REPO_URL": repo.as_uri()}, timing=Timing.instant()
        )
        argocd.start()
        os.environ["ARGOCD_SERVER"] = argocd.base_url
        os.environ["ARGOCD_AUTH_TOKEN"] = TOKEN
        try:
            from tests.test_argocd_steps import quickstart

            freight = freight_for("1.2.0")
            async with self.worker():
                await apply_project(self.client, with_freight(quickstart(repo), freight))
                handle = await start_promotion(
                    self.client, "kargo-demo", "uat", freight.metadata.name
                )
                result: PromotionResult = await handle.result()
                assert result.phase == "Succeeded", result.message
                await _save(handle, "promotion")
                failing = await start_promotion(
                    self.client, "kargo-demo", "nowhere", freight.metadata.name
                )
                try:
                    await failing.result()
                except WorkflowFailureError:  # meant to fail: unknown Stage
                    await _save(failing, "promotion-errored")
                else:
                    raise AssertionError("the promotion into an unknown Stage succeeded")
        finally:
            os.environ.pop("ARGOCD_SERVER", None)
            os.environ.pop("ARGOCD_AUTH_TOKEN", None)
            argocd.stop()

    async def pull_request(self) -> None:
        """``Promotion`` through a pull request: push, open it on the GitHub emulator, wait
        (a local-activity poll on a timer), merged by a person, woken by the signal a
        webhook sends."""
        from freightline.contracts.names import PULL_REQUEST_SIGNAL
        from freightline.contracts.pull_request_wait import PullRequestClosed
        from sandbox.forge import ForgeEmulator
        from tests.test_pull_requests import REPO, TOKEN, ForgeRepo, credentials, pr_steps, start

        emulator = ForgeEmulator("github", self.workdir / "forge", token=TOKEN)
        emulator.add_repo(REPO)
        forge = ForgeRepo(emulator, emulator.repo_url(REPO))
        creds = credentials(self.workdir / "creds.yaml", forge.repo_url)
        os.environ["FREIGHTLINE_CREDENTIALS_FILE"] = str(creds)
        try:
            async with self.worker():
                handle = await start(self.client, forge, pr_steps(forge, poll="1h"))

                async def waiting() -> bool:
                    try:
                        status = await handle.query("status")
                    except Exception:
                        return False
                    pr = status.get("pullRequest") if isinstance(status, dict) else None
                    return bool(pr and pr.get("url"))

                await _wait(waiting)
                (pull,) = forge.pulls()
                forge.merge(pull.number, user="alice")
                url = forge.pr_url(pull.number)
                await handle.signal(PULL_REQUEST_SIGNAL, PullRequestClosed(url=url))
                result = await handle.result()
                assert result.phase == "Succeeded", result.message
                await _save(handle, "promotion-pull-request")
        finally:
            os.environ.pop("FREIGHTLINE_CREDENTIALS_FILE", None)
            emulator.stop()


async def _expect_failure(handle: WorkflowHandle[Any, Any]) -> None:
    try:
        await handle.result()
    except WorkflowFailureError:
        return
    raise AssertionError(f"{handle.id} succeeded; the scenario meant it to end otherwise")


# Promotion last: it is the workflow most often changed, so it is re-recorded most.
ORDER = [
    "project",
    "stage",
    "collections",
    "rollback",
    "verification",
    "verification_failed",
    "warehouse",
    "approval",
    "window",
    "inline",
    "metadata",
    "pull_request",
    "promotion",
]


async def record(names: list[str]) -> None:
    HISTORIES.mkdir(exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    queue = f"record-{uuid.uuid4().hex[:8]}"
    os.environ["FREIGHTLINE_TASK_QUEUE"] = queue
    try:
        with tempfile.TemporaryDirectory(prefix="freightline-histories-") as tmp:
            for name in names:
                await getattr(Scenarios(env.client, queue, Path(tmp) / name), name)()
    finally:
        await env.shutdown()


def main() -> None:
    names = sys.argv[1:] or ORDER
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        sys.exit(
            f"record-histories: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(ORDER)}"
        )
    asyncio.run(record([n for n in ORDER if n in names]))


if __name__ == "__main__":
    main()
