"""A long verification window under virtual time: every measurement, a bounded history."""

from __future__ import annotations

import pytest
from temporalio.client import Client

from freightline.analysis import AnalysisRunStatus
from freightline.resources import Metric
from freightline.verification import VerificationRequest
from tests.metric_server import ErrorRateServer

pytestmark = pytest.mark.integration

EVENTS_PER_MEASUREMENT = 7
"""Timer started/fired, the measurement activity, and the workflow tasks between them."""
HISTORY_BUDGET = 60 * EVENTS_PER_MEASUREMENT + 10
"""A one-hour window at one-minute interval (stated in the README): 430 events."""


async def test_one_hour_window_at_one_minute_measures_60_times_within_budget(
    time_skipping_client: Client, error_rates: ErrorRateServer
) -> None:
    from worker import build_worker

    url = f"{error_rates.url}/rate/good"
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
    assert len(metric_result.measurements) == 60 == error_rates.requests
    times = [m.started_at for m in metric_result.measurements]
    assert all(t is not None for t in times) and times == sorted(times)
    history = await handle.fetch_history()
    assert len(history.events) < HISTORY_BUDGET
