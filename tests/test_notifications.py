"""Notifications: JSON events POSTed to the worker's endpoints; a dead one never holds anything up."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from freightline.app.client import decide_promotion
from freightline.contracts.notifications import NotificationEvent, redacted
from freightline.contracts.promotion import PromotionPhase, PromotionResult
from freightline.settings import NOTIFY_URLS_ENV, load_settings
from tests.conftest import recorded_text, wait_for
from tests.test_approval import failure, gated, start, waiting_for_approval


class Endpoint:
    """A local webhook receiver; with ``hang`` it takes requests and never answers (until closed)."""

    def __init__(self, *, hang: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.received = 0
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.received += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hang:
                    outer.release.wait(60)
                    return
                outer.events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/secret-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoints(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Endpoint, Endpoint]]:
    """A working endpoint, a hanging one, and a port nothing listens on, in the worker's env."""
    good, hanging = Endpoint(), Endpoint(hang=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    monkeypatch.setenv(NOTIFY_URLS_ENV, f"{good.url}, {dead},{hanging.url}")
    try:
        yield good, hanging
    finally:
        good.close()
        hanging.close()


@pytest.fixture
async def notifying_worker(
    endpoints: tuple[Endpoint, Endpoint], client: Client, task_queue: str
) -> AsyncIterator[Worker]:
    """The worker, built once the endpoints are in its environment: it reads its settings then."""
    from worker import build_worker

    async with build_worker(client, load_settings(), queue=task_queue) as worker:
        yield worker


@pytest.mark.integration
async def test_events_arrive_and_dead_endpoints_do_not_stall_the_promotion(
    client: Client,
    notifying_worker: Worker,
    gitops_repo: Path,
    endpoints: tuple[Endpoint, Endpoint],
) -> None:
    good, hanging = endpoints
    handle = await start(client, gated(gitops_repo, {"approvers": ["alice"]}), "1.29.1")
    await waiting_for_approval(handle)
    await wait_for(lambda: "promotion.waiting_for_approval" in good.kinds())
    waiting = good.events[0]
    assert waiting["workflowId"] == handle.id
    assert (waiting["project"], waiting["stage"]) == ("kargo-demo", "test")
    assert "is waiting for approval" in waiting["text"]
    assert f"freightline approve-promotion {handle.id}" in waiting["text"]
    assert waiting["link"].endswith(handle.id.replace(":", "%3A"))
    await wait_for(lambda: hanging.received >= 1)

    await decide_promotion(client, handle.id, "approve", "alice")
    result: PromotionResult = await handle.result()

    # Finished while the hanging endpoint still holds its request unanswered.
    assert result.phase is PromotionPhase.SUCCEEDED
    assert not hanging.release.is_set()
    await wait_for(lambda: "promotion.succeeded" in good.kinds())
    succeeded = good.events[good.kinds().index("promotion.succeeded")]
    assert succeeded["text"].startswith(":white_check_mark: promoted freight")
    assert succeeded["freightAlias"] == result.freight_alias
    # Endpoint URLs (and their secret paths) never reach the promotion's history.
    history = await recorded_text(handle)
    assert "secret-token" not in history and "127.0.0.1" not in history


@pytest.mark.integration
async def test_rejection_is_notified_with_who(
    client: Client,
    notifying_worker: Worker,
    gitops_repo: Path,
    endpoints: tuple[Endpoint, Endpoint],
) -> None:
    good, _ = endpoints
    handle = await start(client, gated(gitops_repo, {}), "1.29.2")
    await waiting_for_approval(handle)
    await decide_promotion(client, handle.id, "reject", "dana", "not now")
    kind, _ = await failure(handle)
    assert kind == "PromotionFailed"

    await wait_for(lambda: "promotion.failed" in good.kinds())
    failed = good.events[good.kinds().index("promotion.failed")]
    assert failed["user"] == "dana"
    assert failed["text"] == (
        f":x: promotion of freight `{failed['freightAlias']}` into `test` (project `kargo-demo`) "
        "Failed: rejected by dana: not now"
    )


@pytest.mark.integration
async def test_no_endpoints_configured_starts_no_notification(
    client: Client, worker: Worker, gitops_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(NOTIFY_URLS_ENV, raising=False)
    handle = await start(client, gated(gitops_repo, {}), "1.29.3")
    await waiting_for_approval(handle)
    await decide_promotion(client, handle.id, "approve", "alice")
    await handle.result()
    history = await recorded_text(handle)
    assert "START_CHILD_WORKFLOW" not in history


def test_event_text_is_slack_flavoured_and_endpoints_are_redacted() -> None:
    event = NotificationEvent(
        event="verification.failed",
        project="kargo-demo",
        stage="uat",
        freight="a" * 40,
        freight_alias="wise-otter",
        workflow_id="verification:kargo-demo:uat:wise-otter:1",
        phase="Failed",
        message="error-rate: 0.2 > 0.05",
    )
    body = event.payload("http://ui/x")
    assert body["text"] == (
        ":warning: verification of freight `wise-otter` in `uat` (project `kargo-demo`) "
        "ended Failed: error-rate: 0.2 > 0.05"
    )
    assert body["event"] == "verification.failed" and body["link"] == "http://ui/x"
    assert redacted("https://hooks.slack.com/services/T0/B0/secret") == "https://hooks.slack.com"
