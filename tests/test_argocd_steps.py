"""argocd-update, argocd-wait and Stage health against the Argo CD API emulator and a real repo.

The emulator runs in this process (its HTTP server on loopback), the worker reaches it
through ``ARGOCD_SERVER`` / ``ARGOCD_AUTH_TOKEN`` like a deployed worker, and the promotions
run the whole Kargo quickstart PromotionTask (clone … push, then argocd-update).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ActivityError, RetryState, TimeoutType
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.argocd import ArgoCDActivities, ArgoCDSettings, LabelSelector
from freightline.app.client import apply_project, start_promotion
from freightline.contracts.argocd import (
    AUTHORIZED_STAGE_ANNOTATION,
    AppRef,
    ArgoCDHealthRequest,
    ArgoCDStepInput,
    HealthState,
    apps_of,
    authorization_problem,
    shard_unserved,
    stage_health,
    step_timeout,
)
from freightline.contracts.promotion import PromotionPhase, PromotionResult, StepStatus
from freightline.errors import ConfigError
from freightline.kargo.config import group_by_project, load_text
from freightline.kargo.resources import ProjectResources
from freightline.settings import load_settings
from sandbox.argocd import ArgoCDEmulator, Timing
from sandbox.gitops import KARGO_QUICKSTART, branch_head
from sandbox.workers import start_worker, worker_env
from tests.conftest import wait_for
from tests.crash_worker import crash_worker_args
from tests.pipelines import dump, freight_for, quickstart_documents, with_freight
from tests.test_promotion import promote_expecting_failure

pytestmark = pytest.mark.integration

TOKEN = "argocd-token-7c0ffee-never-in-history"
APPSET = KARGO_QUICKSTART / "argocd-applicationset.yaml"
SWAGGER = Path(__file__).resolve().parent / "reference" / "argocd-swagger.json"
UPDATE_STEP = "promo-process::step-6"  # the quickstart's argocd-update has no `as`


# --- fixtures ---------------------------------------------------------------------------------


class CountingEmulator:
    """The emulator plus counts of the sync and patch calls its controller served."""

    def __init__(self, emulator: ArgoCDEmulator) -> None:
        self.emulator = emulator
        self.syncs: list[str] = []
        self.patches: list[str] = []
        self.after_sync: list[Any] = []
        controller = emulator.controller
        sync, patch = controller.sync, controller.patch
        lock = threading.Lock()

        def counted_sync(name: str, request: dict[str, Any]) -> dict[str, Any]:
            answer = sync(name, request)
            with lock:
                self.syncs.append(name)
            for hook in self.after_sync:
                hook(name)
            return answer

        def counted_patch(name: str, **kwargs: Any) -> dict[str, Any]:
            with lock:
                self.patches.append(name)
            return patch(name, **kwargs)

        controller.sync = counted_sync  # type: ignore[method-assign]
        controller.patch = counted_patch  # type: ignore[method-assign]

    @property
    def base_url(self) -> str:
        return self.emulator.base_url

    def app(self, name: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.base_url}/api/v1/applications/{name}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def admin(self, path: str, body: dict[str, Any]) -> None:
        response = httpx.post(
            f"{self.base_url}/admin/{path}",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        response.raise_for_status()


def start_emulator(repo: Path, timing: Timing) -> CountingEmulator:
    emulator = ArgoCDEmulator(
        APPSET, TOKEN, variables={"GITOPS_REPO_URL": repo.as_uri()}, timing=timing
    )
    emulator.start()
    return CountingEmulator(emulator)


@pytest.fixture
def argocd(gitops_repo: Path) -> Iterator[CountingEmulator]:
    counting = start_emulator(gitops_repo, Timing.instant())
    try:
        yield counting
    finally:
        counting.emulator.stop()


@pytest.fixture
async def argocd_worker(
    client: Client, task_queue: str, argocd: CountingEmulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Worker]:
    """Freightline's worker, configured for Argo CD through its environment only."""
    from worker import build_worker

    monkeypatch.setenv("ARGOCD_SERVER", argocd.base_url)
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", TOKEN)
    worker = build_worker(client, load_settings(), queue=task_queue)
    async with worker:
        yield worker


def quickstart(repo: Path, edit: Any = None) -> ProjectResources:
    """The whole quickstart (argocd-update included), Secret removed; ``edit`` the task's steps."""
    documents = [d for d in quickstart_documents(repo) if d["kind"] != "Secret"]
    for document in documents:
        if document["kind"] == "PromotionTask" and edit is not None:
            edit(document["spec"]["steps"])
    (resources,) = group_by_project(load_text(dump(documents), source="quickstart")).values()
    return resources


async def history_json(handle: WorkflowHandle[Any, Any]) -> str:
    history = await handle.fetch_history()
    return json.dumps(history.to_json_dict())


async def attempts_of(handle: WorkflowHandle[Any, Any], activity_type: str) -> int:
    """The attempt number the activity finally completed on."""
    events = (await handle.fetch_history()).to_json_dict()["events"]
    scheduled = {
        e["eventId"]
        for e in events
        if e.get("activityTaskScheduledEventAttributes", {}).get("activityType", {}).get("name")
        == activity_type
    }
    return max(
        int(e["activityTaskStartedEventAttributes"].get("attempt", 1))
        for e in events
        if e.get("activityTaskStartedEventAttributes", {}).get("scheduledEventId") in scheduled
    )


# --- the whole quickstart -----------------------------------------------------------------------


async def test_quickstart_promotion_ends_synced_and_healthy_at_the_pushed_commit(
    client: Client, argocd_worker: Worker, argocd: CountingEmulator, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.1")
    await apply_project(client, with_freight(quickstart(gitops_repo), freight))
    handle = await start_promotion(client, "kargo-demo", "test", freight.alias or "")
    result: PromotionResult = await handle.result()

    assert result.phase is PromotionPhase.SUCCEEDED
    pushed = branch_head(gitops_repo, "stage/test")
    assert pushed and result.outputs["promo-process::commit"]["commit"] == pushed
    (synced,) = result.outputs[UPDATE_STEP]["apps"]
    assert synced["name"] == "kargo-demo-test"
    assert synced["revision"] == pushed
    assert (synced["sync"], synced["health"]) == ("Synced", "Healthy")
    app = argocd.app("kargo-demo-test")
    status = app["status"]
    assert status["sync"]["status"] == "Synced"
    assert status["sync"]["revision"] == pushed
    assert status["health"]["status"] == "Healthy"
    assert status["operationState"]["syncResult"]["revision"] == pushed
    info = {i["name"]: i["value"] for i in status["operationState"]["operation"]["info"]}
    assert info["kargo.akuity.io/promotion"] == handle.id
    assert argocd.syncs == ["kargo-demo-test"]
    assert len(status["history"]) == 1
    assert argocd.patches == []  # only desiredRevision: nothing to patch
    # Other stages' apps were not touched.
    assert "operationState" not in argocd.app("kargo-demo-uat")["status"]

    # The token lives in the worker's environment, never in the workflow's history.
    recorded = await history_json(handle)
    assert TOKEN not in recorded
    assert "ARGOCD_AUTH_TOKEN" not in recorded

    # The Stage's health follows the promotion's apps (what the Stage workflow asks).
    refs = apps_of(result)
    assert refs == [AppRef(name="kargo-demo-test", desired_revisions=(pushed,))]
    activities = ArgoCDActivities(ArgoCDSettings(server=argocd.base_url, token=TOKEN))
    env = ActivityEnvironment()
    healthy = await asyncio.to_thread(
        env.run, activities.argocd_health, ArgoCDHealthRequest(apps=tuple(refs))
    )
    assert healthy.status is HealthState.HEALTHY, healthy.issues
    argocd.admin("apps/kargo-demo-test/health", {"status": "Degraded", "message": "OOMKilled"})
    unhealthy = await asyncio.to_thread(
        env.run, activities.argocd_health, ArgoCDHealthRequest(apps=tuple(refs))
    )
    assert unhealthy.status is HealthState.UNHEALTHY
    assert "OOMKilled" in unhealthy.issues[0]
    activities.close()


async def test_sharded_stage_runs_its_argo_cd_steps_on_its_shards_worker(
    client: Client,
    task_queue: str,
    argocd: CountingEmulator,
    gitops_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``spec.shard``: the shared worker cannot reach Argo CD; the shard's worker can and does."""
    from worker import build_argocd_worker, build_worker

    monkeypatch.delenv("ARGOCD_SERVER", raising=False)
    shared = build_worker(client, load_settings(), queue=task_queue)
    monkeypatch.setenv("ARGOCD_SERVER", argocd.base_url)
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", TOKEN)
    shard_worker = build_argocd_worker(client, load_settings(), shard="eu-prod", queue=task_queue)
    assert shard_worker.task_queue == f"{task_queue}-argocd-eu-prod"
    documents = [d for d in quickstart_documents(gitops_repo) if d["kind"] != "Secret"]
    for document in documents:
        if document["kind"] == "Stage" and document["metadata"]["name"] == "test":
            document["spec"]["shard"] = "eu-prod"
    (resources,) = group_by_project(load_text(dump(documents), source="sharded")).values()
    freight = freight_for("1.29.9")

    async with shared, shard_worker:
        await apply_project(client, with_freight(resources, freight))
        handle = await start_promotion(client, "kargo-demo", "test", freight.alias or "")
        result: PromotionResult = await asyncio.wait_for(handle.result(), timeout=120)

    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    assert argocd.syncs == ["kargo-demo-test"]
    events = (await handle.fetch_history()).to_json_dict()["events"]
    queues = {
        attributes["activityType"]["name"]: attributes["taskQueue"]["name"]
        for event in events
        if (attributes := event.get("activityTaskScheduledEventAttributes"))
    }
    assert queues["argocd_update"] == f"{task_queue}-argocd-eu-prod"
    assert queues["run_worktree_steps"] == task_queue


def test_a_shard_nobody_serves_is_named_with_the_worker_to_start() -> None:
    def failed(cause: BaseException) -> ActivityError:
        error = ActivityError(
            "activity timeout",
            scheduled_event_id=5,
            started_event_id=0,
            identity="",
            activity_type="argocd_update",
            activity_id="3",
            retry_state=RetryState.TIMEOUT,
        )
        error.__cause__ = cause
        return error

    unserved = failed(
        TemporalTimeoutError(
            "timeout", type=TimeoutType.SCHEDULE_TO_START, last_heartbeat_details=[]
        )
    )
    message = shard_unserved("eu-prod", "freightline-argocd-eu-prod", unserved)
    assert message is not None
    assert 'shard "eu-prod"' in message and "freightline-argocd-eu-prod" in message
    assert "FREIGHTLINE_WORKER_ROLE=argocd FREIGHTLINE_SHARD=eu-prod" in message
    started = failed(
        TemporalTimeoutError("timeout", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])
    )
    assert shard_unserved("eu-prod", "q", started) is None
    assert shard_unserved(None, None, unserved) is None


def test_worker_role_needs_a_shard_for_argocd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FREIGHTLINE_WORKER_ROLE", raising=False)
    monkeypatch.delenv("FREIGHTLINE_SHARD", raising=False)
    assert (load_settings().worker.role, load_settings().worker.shard) == ("all", None)
    monkeypatch.setenv("FREIGHTLINE_WORKER_ROLE", "argocd")
    with pytest.raises(ConfigError, match="FREIGHTLINE_SHARD"):
        load_settings()
    monkeypatch.setenv("FREIGHTLINE_SHARD", "eu-prod")
    worker = load_settings().worker
    assert (worker.role, worker.shard) == ("argocd", "eu-prod")
    monkeypatch.setenv("FREIGHTLINE_WORKER_ROLE", "cluster")
    with pytest.raises(ConfigError, match="'cluster': expected all or argocd"):
        load_settings()


async def test_unauthorised_app_is_refused_and_nothing_is_patched(
    client: Client, argocd_worker: Worker, argocd: CountingEmulator, gitops_repo: Path
) -> None:
    def target_uat_app(steps: list[dict[str, Any]]) -> None:
        update = steps[-1]["config"]["apps"][0]
        update["name"] = "kargo-demo-uat"  # annotated kargo-demo:uat; we promote into test
        update["sources"][0]["updateTargetRevision"] = True
        update["sources"][0]["kustomize"] = {"images": [{"repoURL": "nginx", "tag": "1.0"}]}

    freight = freight_for("1.29.2")
    await apply_project(client, with_freight(quickstart(gitops_repo, target_uat_app), freight))
    before = argocd.app("kargo-demo-uat")

    result = await promote_expecting_failure(client, "kargo-demo", "test", freight.metadata.name)

    assert result.phase is PromotionPhase.ERRORED
    assert result.failed_step == UPDATE_STEP
    assert '"kargo-demo-uat"' in result.message
    assert AUTHORIZED_STAGE_ANNOTATION in result.message
    assert '"kargo-demo:uat"' in result.message and "kargo-demo:test" in result.message
    assert argocd.patches == [] and argocd.syncs == []
    after = argocd.app("kargo-demo-uat")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert "operationState" not in after["status"]


async def test_degraded_app_fails_the_promotion_with_the_apps_message(
    client: Client, argocd_worker: Worker, argocd: CountingEmulator, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.3")
    await apply_project(client, with_freight(quickstart(gitops_repo), freight))
    message = "Back-off pulling image public.ecr.aws/nginx/nginx:1.29.3"
    argocd.admin("apps/kargo-demo-test/health", {"status": "Degraded", "message": message})

    result = await promote_expecting_failure(client, "kargo-demo", "test", freight.metadata.name)

    assert result.phase is PromotionPhase.FAILED
    assert result.failed_step == UPDATE_STEP
    assert message in result.message
    assert "kargo-demo-test" in result.message and "Degraded" in result.message
    assert argocd.syncs == ["kargo-demo-test"]
    failed = {o.alias: o for o in result.steps}[UPDATE_STEP]
    assert failed.status is StepStatus.FAILED


async def test_failed_sync_operation_fails_with_argo_cds_message(
    client: Client, argocd_worker: Worker, argocd: CountingEmulator, gitops_repo: Path
) -> None:
    freight = freight_for("1.29.4")
    await apply_project(client, with_freight(quickstart(gitops_repo), freight))
    argocd.admin(
        "apps/kargo-demo-test/fail-sync", {"count": 1, "message": "admission webhook denied"}
    )

    result = await promote_expecting_failure(client, "kargo-demo", "test", freight.metadata.name)

    assert result.phase is PromotionPhase.FAILED
    assert "sync operation Failed" in result.message
    assert "admission webhook denied" in result.message
    assert argocd.syncs == ["kargo-demo-test"]


@pytest.mark.parametrize("when", ["before-sync", "after-sync"])
async def test_503_from_the_api_is_retried_and_the_promotion_succeeds(
    client: Client,
    argocd_worker: Worker,
    argocd: CountingEmulator,
    gitops_repo: Path,
    when: str,
) -> None:
    freight = freight_for("1.29.5")
    await apply_project(client, with_freight(quickstart(gitops_repo), freight))
    fault = {"mode": "503", "count": 2}
    if when == "before-sync":
        argocd.admin("apps/kargo-demo-test/fault", fault)
    else:
        # The polls right after the sync fail: the retried activity must not sync again.
        argocd.after_sync.append(lambda _name: argocd.admin("apps/kargo-demo-test/fault", fault))

    handle = await start_promotion(client, "kargo-demo", "test", freight.metadata.name)
    result: PromotionResult = await handle.result()

    assert result.phase is PromotionPhase.SUCCEEDED
    assert result.outputs[UPDATE_STEP]["apps"][0]["revision"] == branch_head(
        gitops_repo, "stage/test"
    )
    assert argocd.syncs == ["kargo-demo-test"]
    assert len(argocd.app("kargo-demo-test")["status"]["history"]) == 1
    assert await attempts_of(handle, "argocd_update") == 3  # two 503s, each one attempt


async def test_worker_killed_mid_wait_resumes_elsewhere_with_one_sync(
    client: Client, gitops_repo: Path, task_queue: str
) -> None:
    """The worker dies while Argo CD runs the sync; a fresh worker only waits."""
    argocd = start_emulator(
        gitops_repo, Timing(sync_duration=1.5, progressing_duration=2.0, reconcile_interval=0)
    )
    try:
        freight = freight_for("1.29.6")
        target = client.service_client.config.target_host
        env = worker_env(target, task_queue, ARGOCD_SERVER=argocd.base_url, ARGOCD_AUTH_TOKEN=TOKEN)
        doomed = start_worker(env, args=crash_worker_args("while-waiting", "argocd-update"))
        await apply_project(client, with_freight(quickstart(gitops_repo), freight))
        handle = await start_promotion(client, "kargo-demo", "test", freight.metadata.name)
        await wait_for(lambda: doomed.poll() is not None, timeout=90)
        assert doomed.returncode == 137
        assert argocd.syncs == ["kargo-demo-test"]
        # The dead attempt's heartbeat recorded the sync it started (and nothing secret).
        (pending,) = (await handle.describe()).raw_description.pending_activities
        recorded_sync = json.loads(pending.heartbeat_details.payloads[0].data)
        assert recorded_sync["syncs"]["argocd/kargo-demo-test"]["startedAt"]
        assert TOKEN not in str(pending)

        fresh = start_worker(env)
        try:
            result: PromotionResult = await asyncio.wait_for(handle.result(), timeout=120)
        finally:
            fresh.terminate()
            fresh.wait(30)

        assert result.phase is PromotionPhase.SUCCEEDED
        pushed = branch_head(gitops_repo, "stage/test")
        assert result.outputs[UPDATE_STEP]["apps"][0]["revision"] == pushed
        assert argocd.syncs == ["kargo-demo-test"]  # exactly one sync across both workers
        status = argocd.app("kargo-demo-test")["status"]
        assert len(status["history"]) == 1
        assert (status["sync"]["status"], status["health"]["status"]) == ("Synced", "Healthy")
        recorded = await history_json(handle)
        assert TOKEN not in recorded
        assert "TIMEOUT_TYPE_HEARTBEAT" in recorded  # attempt 2 began when heartbeats stopped
    finally:
        argocd.emulator.stop()


async def test_missing_argocd_configuration_errors_clearly(
    client: Client, worker: Worker, gitops_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARGOCD_SERVER", raising=False)
    freight = freight_for("1.29.7")
    await apply_project(client, with_freight(quickstart(gitops_repo), freight))

    result = await promote_expecting_failure(client, "kargo-demo", "test", freight.metadata.name)

    assert result.phase is PromotionPhase.ERRORED
    assert "ARGOCD_SERVER is not set on the worker" in result.message
    assert result.failed_step == UPDATE_STEP


async def test_skipped_and_continue_on_error_argocd_steps(
    client: Client, argocd_worker: Worker, argocd: CountingEmulator, gitops_repo: Path
) -> None:
    def edit(steps: list[dict[str, Any]]) -> None:
        update = steps[-1]
        update["if"] = "${{ ctx.stage == 'prod' }}"
        steps.append(
            {
                "uses": "argocd-wait",
                "as": "wait-missing",
                "continueOnError": True,
                "config": {"apps": [{"name": "no-such-app"}]},
            }
        )
        # Runs despite the failure before it (`always()`), and cannot: its timeout is bad.
        steps.append(
            {
                "uses": "argocd-wait",
                "as": "wait",
                "if": "${{ always() }}",
                "config": {"apps": [{"name": "kargo-demo-test"}], "timeout": "bogus"},
            }
        )

    freight = freight_for("1.29.8")
    await apply_project(client, with_freight(quickstart(gitops_repo, edit), freight))

    result = await promote_expecting_failure(client, "kargo-demo", "test", freight.metadata.name)

    outcomes = {o.alias: o for o in result.steps}
    assert outcomes[UPDATE_STEP].status is StepStatus.SKIPPED
    assert outcomes["promo-process::wait-missing"].status is StepStatus.ERRORED
    assert "no-such-app" in outcomes["promo-process::wait-missing"].message
    assert result.phase is PromotionPhase.ERRORED
    assert result.failed_step == "promo-process::wait"
    assert 'invalid duration "bogus"' in result.message
    assert argocd.syncs == []


# --- activities on their own (no workflow) ------------------------------------------------------


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def validate(body: Any, definition: str) -> None:
    definitions = _strict(json.loads(SWAGGER.read_text())["definitions"])
    schema = {"$ref": f"#/definitions/{definition}", "definitions": definitions}
    jsonschema.Draft4Validator(schema).validate(body)


def test_update_patches_kustomize_images_and_target_revision_with_swagger_shaped_requests(
    argocd: CountingEmulator, gitops_repo: Path
) -> None:
    main = branch_head(gitops_repo, "main")
    assert main
    requests: list[httpx.Request] = []
    activities = ArgoCDActivities(
        ArgoCDSettings(server=argocd.base_url, token=TOKEN),
        event_hooks={"request": [requests.append]},
    )
    # Point the prod app at the kustomize overlay on main, as a plain "live" update would.
    config = {
        "apps": [
            {
                "name": "kargo-demo-prod",
                "sources": [
                    {
                        "repoURL": gitops_repo.as_uri() + "/",
                        "desiredRevision": main,
                        "updateTargetRevision": True,
                        "kustomize": {
                            "images": [{"repoURL": "public.ecr.aws/nginx/nginx", "tag": "1.27.0"}]
                        },
                    }
                ],
            }
        ]
    }
    request = ArgoCDStepInput(
        project="kargo-demo",
        stage="prod",
        promotion="promotion:kargo-demo:prod:test",
        step="update",
        uses="argocd-update",
        config=config,
        timeout_seconds=60,
    )
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    # The overlay lives in stages/prod; the app's path is "." at the stage branch, which
    # does not exist yet: patch the path in first, as an operator would.
    httpx.patch(
        f"{argocd.base_url}/api/v1/applications/kargo-demo-prod",
        json={
            "patch": json.dumps({"spec": {"source": {"path": "stages/prod"}}}),
            "patchType": "merge",
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).raise_for_status()
    argocd.patches.clear()

    outcome = env.run(activities.argocd_update, request)

    assert outcome.status is StepStatus.SUCCEEDED
    (app_output,) = outcome.outputs["apps"]
    assert app_output["revision"] == main
    app = argocd.app("kargo-demo-prod")
    assert app["spec"]["source"]["targetRevision"] == main
    assert app["spec"]["source"]["kustomize"]["images"] == ["public.ecr.aws/nginx/nginx:1.27.0"]
    assert "public.ecr.aws/nginx/nginx:1.27.0" in app["status"]["summary"]["images"]
    assert argocd.patches == ["kargo-demo-prod"] and argocd.syncs == ["kargo-demo-prod"]
    patches = [json.loads(r.content) for r in requests if r.method == "PATCH"]
    syncs = [json.loads(r.content) for r in requests if r.url.path.endswith("/sync")]
    for body in patches:
        validate(body, "applicationApplicationPatchRequest")
    for body in syncs:
        validate(body, "applicationApplicationSyncRequest")
    assert syncs[0]["revision"] == main
    assert beats and beats[-1][0]["syncs"]["argocd/kargo-demo-prod"]["revisions"] == [main]
    assert all(TOKEN not in json.dumps(b) for b in beats)

    # Running the step again (a retry of a finished activity) neither patches nor syncs.
    again = ActivityEnvironment()
    again.info = dataclasses.replace(again.info, heartbeat_details=list(beats[-1]))
    assert again.run(activities.argocd_update, request).status is StepStatus.SUCCEEDED
    assert argocd.patches == ["kargo-demo-prod"] and argocd.syncs == ["kargo-demo-prod"]

    # argocd-wait by selector and by name.
    wait = request.model_copy(
        update={
            "uses": "argocd-wait",
            "step": "wait",
            "config": {
                "apps": [
                    {"name": "kargo-demo-prod"},
                    {
                        "selector": {
                            "matchExpressions": [
                                {"key": "nope", "operator": "DoesNotExist"},
                            ]
                        },
                        "waitFor": ["operation"],
                    },
                ]
            },
        }
    )
    waited = ActivityEnvironment().run(activities.argocd_wait, wait)
    names = [a["name"] for a in waited.outputs["apps"]]
    assert names == ["kargo-demo-prod", "kargo-demo-test", "kargo-demo-uat"]
    assert waited.outputs["apps"][0]["health"] == "Healthy"
    activities.close()


def test_wrong_token_is_a_credential_error(argocd: CountingEmulator) -> None:
    from temporalio.exceptions import ApplicationError

    activities = ArgoCDActivities(ArgoCDSettings(server=argocd.base_url, token="wrong"))
    request = ArgoCDStepInput(
        project="kargo-demo",
        stage="test",
        promotion="p",
        step="wait",
        uses="argocd-wait",
        config={"apps": [{"name": "kargo-demo-test"}]},
    )
    with pytest.raises(ApplicationError) as caught:
        ActivityEnvironment().run(activities.argocd_wait, request)
    assert caught.value.type == "CredentialError"
    assert caught.value.non_retryable
    assert "refused the worker's token" in caught.value.message
    assert "wrong" not in caught.value.message
    activities.close()


# --- pure decisions ---------------------------------------------------------------------------


def test_authorization_follows_kargos_annotation() -> None:
    def meta(value: str | None) -> dict[str, Any]:
        annotations = {AUTHORIZED_STAGE_ANNOTATION: value} if value is not None else {}
        return {"name": "app", "namespace": "argocd", "annotations": annotations}

    assert authorization_problem(meta("kargo-demo:test"), "kargo-demo", "test") is None
    assert authorization_problem(meta("p:a, kargo-demo:test"), "kargo-demo", "test") is None
    uat = authorization_problem(meta("kargo-demo:uat"), "kargo-demo", "test")
    assert uat and '"kargo-demo:uat"' in uat and '"app"' in uat
    missing = authorization_problem(meta(None), "kargo-demo", "test")
    assert missing and "has no kargo.akuity.io/authorized-stage annotation" in missing
    glob = authorization_problem(meta("kargo-demo:*"), "kargo-demo", "test")
    assert glob and "glob" in glob


def test_label_selector_text() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"team": "platform", "env": "prod"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.query() == "env=prod,team=platform,tier in (a,b),!legacy"


def test_step_timeout_prefers_config_then_retry_timeout() -> None:
    assert step_timeout({}, None).total_seconds() == 300
    assert step_timeout({}, "10m").total_seconds() == 600
    assert step_timeout({"timeout": "30s"}, "10m").total_seconds() == 30
    with pytest.raises(ConfigError, match=r"config\.timeout"):
        step_timeout({"timeout": "soon"}, None)


def _app(
    health: str,
    *,
    revision: str = "abc",
    finished: str | None = "2025-01-01T00:00:05Z",
    reconciled: str = "2025-01-01T00:00:06Z",
    running: bool = False,
    conditions: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {"phase": "Running" if running else "Succeeded"}
    if finished and not running:
        state["finishedAt"] = finished
        state["syncResult"] = {"revision": revision}
    status: dict[str, Any] = {
        "health": {"status": health},
        "sync": {"status": "Synced", "revision": revision},
        "operationState": state,
        "reconciledAt": reconciled,
    }
    if conditions:
        status["conditions"] = conditions
    return {"metadata": {"name": "a"}, "status": status}


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (_app("Healthy"), HealthState.HEALTHY),
        (_app("Progressing"), HealthState.PROGRESSING),
        (_app("Suspended"), HealthState.PROGRESSING),
        (_app("Degraded"), HealthState.UNHEALTHY),
        (_app("Healthy", revision="other"), HealthState.UNHEALTHY),
        (_app("Healthy", running=True), HealthState.UNKNOWN),
        (_app("Healthy", reconciled="2025-01-01T00:00:04Z"), HealthState.UNKNOWN),
        (
            _app("Healthy", conditions=[{"type": "ComparisonError", "message": "x"}]),
            HealthState.UNHEALTHY,
        ),
        (None, HealthState.UNKNOWN),
    ],
    ids=[
        "healthy",
        "progressing",
        "suspended",
        "degraded",
        "wrong-revision",
        "syncing",
        "stale",
        "comparison-error",
        "missing",
    ],
)
def test_stage_health_per_app(app: dict[str, Any] | None, expected: HealthState) -> None:
    ref = AppRef(name="a", desired_revisions=("abc",))
    health = stage_health([(ref, app, "permission denied" if app is None else None)])
    assert health.status is expected
    assert bool(health.issues) == (expected is not HealthState.HEALTHY)


def test_stage_health_takes_the_worst_app() -> None:
    ref = AppRef(name="a")
    health = stage_health([(ref, _app("Healthy"), None), (ref, _app("Progressing"), None)])
    assert health.status is HealthState.PROGRESSING
    assert stage_health([]).status is HealthState.HEALTHY
    unknown = stage_health([(ref, _app("Progressing"), None), (ref, None, "gone")])
    assert unknown.status is HealthState.UNKNOWN
