"""A long verification window under virtual time: every measurement, a bounded history."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from temporalio.client import Client

from freightline.analysis import AnalysisRunStatus
from freightline.resources import Metric
from freightline.verification import VerificationRequest

pytestmark = pytest.mark.integration

EVENTS_PER_MEASUREMENT = 7
"""Timer started/fired, the measurement activity, and the workflow tasks between them."""
HISTORY_BUDGET = 60 * EVENTS_PER_MEASUREMENT + 10
"""A one-hour window at one-minute interval (stated in the README): 430 events."""


@pytest.fixture
def health_endpoint() -> Iterator[tuple[str, list[int]]]:
    hits: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(1)
            body = json.dumps({"errorRate": 0.01}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/rate", hits
    server.shutdown()
    server.server_close()


async def test_one_hour_window_at_one_minute_measures_60_times_within_budget(
    time_skipping_client: Client, health_endpoint: tuple[str, list[int]]
) -> None:
    from worker import build_worker

    url, hits = health_endpoint
    metric = Metric.model_validate(
        {
            "name": "error-rate",
            "interval": "1m",
            "count": 60,
            "successCondition": "result < 0.05",
            "provider": {"web": {"url": url, "jsonPath": "{$.errorRate}"}},
        }
    )
    request = VerificationRequest(
        project="p", stage="uat", freight="f" * 40, freight_alias="calm-otter", metrics=(metric,)
    )
    async with build_worker(time_skipping_client, queue="window"):
        handle = await time_skipping_client.start_workflow(
            "Verification",
            request,
            id="verification-window",
            task_queue="window",
            result_type=AnalysisRunStatus,
        )
        result = await handle.result()
    (metric_result,) = result.metric_results
    assert result.phase == "Successful"
    assert len(metric_result.measurements) == 60 == len(hits)
    times = [m.started_at for m in metric_result.measurements]
    assert all(t is not None for t in times) and times == sorted(times)
    history = await handle.fetch_history()
    assert len(history.events) < HISTORY_BUDGET
