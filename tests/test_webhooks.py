"""The webhook receiver: a real registry's notifications, GitHub pushes (HMAC), a generic hook."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from freightline.app.client import apply_project
from freightline.app.http import Limits
from freightline.app.webhooks import (
    WebhookServer,
    github_signature,
    matching_warehouses,
    registry_repositories,
)
from freightline.contracts.names import FREIGHT_QUERY, warehouse_workflow_id
from freightline.contracts.warehouse import WarehouseStatus
from freightline.kargo.config import group_by_project, load_text
from freightline.kargo.resources import Freight, ProjectResources
from sandbox.registry import Pusher, start_registry, webhook_notifications
from tests.conftest import wait_for
from tests.hostile_http import exchange, large_body, request_head, slow_body, slow_headers
from tests.pipelines import dump
from tests.test_git_discovery import Upstream

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-for-tests"


def project(name: str, subscriptions: dict[str, list[dict[str, Any]]]) -> ProjectResources:
    documents: list[dict[str, Any]] = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": name}}
    ]
    for warehouse, subs in subscriptions.items():
        documents.append(
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Warehouse",
                "metadata": {"name": warehouse, "namespace": name},
                "spec": {"subscriptions": subs, "interval": "1h"},
            }
        )
    (resources,) = group_by_project(load_text(dump(documents))).values()
    return resources


@pytest.fixture
async def webhooks(client: Client) -> AsyncIterator[WebhookServer]:
    async with WebhookServer(client, secret=SECRET, host="127.0.0.1") as server:
        yield server


async def freight_count(handle: WorkflowHandle[Any, Any]) -> int:
    return len(await handle.query(FREIGHT_QUERY, result_type=list[Freight]))


async def signals(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(
        1 for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    )


def test_matching_and_registry_envelopes() -> None:
    resources = project(
        "p",
        {
            "images": [{"image": {"repoURL": "127.0.0.1:5000/app"}}],
            "code": [{"git": {"repoURL": "https://github.com/Example/App.git"}}],
            "charts": [{"chart": {"repoURL": "oci://127.0.0.1:5000/charts", "name": "app"}}],
        },
    )
    assert matching_warehouses(resources, ["127.0.0.1:5000/app"]) == ["images"]
    assert matching_warehouses(resources, ["https://github.com/example/app"]) == ["code"]
    assert matching_warehouses(resources, ["127.0.0.1:5000/charts/app"]) == ["charts"]
    assert matching_warehouses(resources, ["127.0.0.1:5000/other"]) == []
    envelope = {
        "events": [
            {
                "action": "push",
                "target": {"mediaType": "application/octet-stream", "repository": "blob-only"},
                "request": {"host": "127.0.0.1:5000"},
            },
            {
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "repository": "app",
                    "tag": "1.0.0",
                },
                "request": {"host": "127.0.0.1:5000"},
            },
            {"action": "pull", "target": {"repository": "pulled", "tag": "x"}},
        ]
    }
    assert registry_repositories(envelope) == {"127.0.0.1:5000/app"}


async def test_registry_notifications_trigger_discovery(
    client: Client, worker: Worker, webhooks: WebhookServer, tmp_path: Path
) -> None:
    name = f"hook-{uuid.uuid4().hex[:8]}"
    registry = start_registry(
        tmp_path / "registry",
        notifications=webhook_notifications(
            f"http://127.0.0.1:{webhooks.port}/webhooks/{name}/registry", SECRET
        ),
    )
    pusher = Pusher(registry)
    try:
        await apply_project(
            client, project(name, {"images": [{"image": {"repoURL": f"{registry.host}/app"}}]})
        )
        handle = client.get_workflow_handle(warehouse_workflow_id(name, "images"))

        async def discovered_nothing() -> bool:
            status: WarehouseStatus = await handle.query("status", result_type=WarehouseStatus)
            return status.discoveries >= 1

        await wait_for(discovered_nothing)
        assert await freight_count(handle) == 0
        # Only the registry's notification can make this Freight: the interval is an hour.
        pusher.image("app", "1.0.0")
        await wait_for(lambda: _at_least(handle, 1))
        pusher.image("app", "1.1.0")
        await wait_for(lambda: _at_least(handle, 2))
    finally:
        pusher.close()
        registry.stop()


async def _at_least(handle: WorkflowHandle[Any, Any], n: int) -> bool:
    return await freight_count(handle) >= n


async def test_github_push_is_verified(
    client: Client, worker: Worker, webhooks: WebhookServer, tmp_path: Path
) -> None:
    name = f"hook-{uuid.uuid4().hex[:8]}"
    upstream = Upstream(tmp_path)
    upstream.commit("a.txt")
    upstream.push()
    await apply_project(client, project(name, {"code": [{"git": {"repoURL": upstream.url}}]}))
    handle = client.get_workflow_handle(warehouse_workflow_id(name, "code"))
    await wait_for(lambda: _at_least(handle, 1))
    upstream.commit("b.txt")
    upstream.push()
    body = json.dumps({"ref": "refs/heads/main", "repository": {"clone_url": upstream.url}})
    url = f"http://127.0.0.1:{webhooks.port}/webhooks/{name}/github"
    async with httpx.AsyncClient(timeout=10) as http:
        headers = {"X-GitHub-Event": "push", "Content-Type": "application/json"}
        forged = await http.post(
            url,
            content=body,
            headers={
                **headers,
                "X-Hub-Signature-256": github_signature("not-the-secret", body.encode()),
            },
        )
        unsigned = await http.post(url, content=body, headers=headers)
        assert (forged.status_code, unsigned.status_code) == (401, 401)
        assert await signals(handle) == 0  # refused requests signal nothing
        signed = await http.post(
            url,
            content=body,
            headers={**headers, "X-Hub-Signature-256": github_signature(SECRET, body.encode())},
        )
        assert signed.status_code == 200 and signed.json() == {"refreshed": ["code"]}
        await wait_for(lambda: _at_least(handle, 2))
        assert await signals(handle) == 1
        ping = await http.post(
            url,
            content=b"{}",
            headers={
                "X-GitHub-Event": "ping",
                "X-Hub-Signature-256": github_signature(SECRET, b"{}"),
            },
        )
        assert ping.status_code == 200


async def test_generic_endpoint_needs_the_shared_secret(
    client: Client, worker: Worker, webhooks: WebhookServer, tmp_path: Path
) -> None:
    name = f"hook-{uuid.uuid4().hex[:8]}"
    upstream = Upstream(tmp_path)
    upstream.commit("a.txt")
    upstream.push()
    await apply_project(client, project(name, {"code": [{"git": {"repoURL": upstream.url}}]}))
    handle = client.get_workflow_handle(warehouse_workflow_id(name, "code"))
    await wait_for(lambda: _at_least(handle, 1))
    url = f"http://127.0.0.1:{webhooks.port}/webhooks/{name}/generic"
    async with httpx.AsyncClient(timeout=10) as http:
        body = {"repoURL": upstream.url}
        wrong = await http.post(url, json=body, headers={"X-Freightline-Token": "guess"})
        missing = await http.post(url, json=body)
        assert (wrong.status_code, missing.status_code) == (401, 401)
        assert await signals(handle) == 0
        right = await http.post(url, json=body, headers={"X-Freightline-Token": SECRET})
        assert right.json() == {"refreshed": ["code"]}
        other = await http.post(
            url,
            json={"repoURL": "https://example.com/x.git"},
            headers={"X-Freightline-Token": SECRET},
        )
        assert other.json() == {"refreshed": []}
        unknown = await http.post(
            f"http://127.0.0.1:{webhooks.port}/webhooks/no-such-project/generic",
            json=body,
            headers={"X-Freightline-Token": SECRET},
        )
        assert unknown.status_code == 404
        health = await http.get(f"http://127.0.0.1:{webhooks.port}/healthz")
        assert health.status_code == 200
    assert await signals(handle) == 1


async def test_hostile_clients_do_not_hold_back_a_good_request(
    client: Client, worker: Worker, tmp_path: Path
) -> None:
    name = f"hook-{uuid.uuid4().hex[:8]}"
    upstream = Upstream(tmp_path)
    upstream.commit("a.txt")
    upstream.push()
    await apply_project(client, project(name, {"code": [{"git": {"repoURL": upstream.url}}]}))
    handle = client.get_workflow_handle(warehouse_workflow_id(name, "code"))
    await wait_for(lambda: _at_least(handle, 1))
    limits = Limits(header_timeout=1.0, body_timeout=1.0, idle_timeout=1, shutdown_timeout=1)
    async with WebhookServer(client, secret=SECRET, host="127.0.0.1", limits=limits) as server:
        generic = f"/webhooks/{name}/generic"
        token = {"X-Freightline-Token": SECRET}
        started = [asyncio.Event() for _ in range(4)]
        hostile = [
            asyncio.create_task(slow_headers(server.port, started=started[0])),
            asyncio.create_task(slow_body(server.port, generic, headers=token, started=started[1])),
            asyncio.create_task(
                large_body(server.port, generic, 10 << 20, headers=token, started=started[2])
            ),
            asyncio.create_task(
                large_body(
                    server.port, generic, 10 << 20, chunked=True, headers=token, started=started[3]
                )
            ),
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), timeout=30)
        github = f"http://127.0.0.1:{server.port}/webhooks/{name}/github"
        body = json.dumps({"ref": "refs/heads/main", "repository": {"clone_url": upstream.url}})
        async with httpx.AsyncClient(timeout=10) as http:  # the timeout bounds "promptly"
            forged, good = await asyncio.gather(
                http.post(
                    github,
                    content=body,
                    headers={
                        "X-GitHub-Event": "push",
                        "X-Hub-Signature-256": github_signature("not-the-secret", body.encode()),
                    },
                ),
                http.post(
                    f"http://127.0.0.1:{server.port}{generic}",
                    json={"repoURL": upstream.url},
                    headers=token,
                ),
            )
        assert (good.status_code, good.json()) == (200, {"refreshed": ["code"]})
        assert forged.status_code == 401
        headers, trickled, too_long, too_long_chunked = await asyncio.gather(*hostile)
        assert (headers.status, headers.finished) == (None, False)
        assert (trickled.status, trickled.finished) == (408, False)
        assert (too_long.status, too_long_chunked.status) == (413, 413)
        assert not too_long_chunked.finished
    assert await signals(handle) == 1  # only the good request signalled


async def test_malformed_requests_get_a_4xx_and_the_receiver_keeps_serving(
    webhooks: WebhookServer,
) -> None:
    generic = "/webhooks/nowhere/generic"
    token = {"X-Freightline-Token": SECRET}
    for length in ("-1", "abc"):
        head = request_head("POST", generic, {**token, "Content-Length": length})
        assert (await exchange(webhooks.port, [head + b"{}"])).status == 400
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{webhooks.port}", timeout=10) as http:
        answered = await http.post(
            generic, json={"repoURL": "https://example.com/x.git"}, headers=token
        )
        health = await http.get("/healthz")
    # Well-formed requests are answered by the application: an unknown project, and health.
    assert answered.status_code == 404 and "nowhere" in answered.json()["error"]
    assert health.status_code == 200
