"""A long verification window under virtual time: every measurement, a bounded history."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from freightline.contracts.verification import VerificationRequest, ended_run
from freightline.kargo.analysis import AnalysisRunStatus
from freightline.kargo.resources import Metric
from freightline.settings import load_settings
from tests.metric_server import ErrorRateServer

pytestmark = pytest.mark.integration

EVENTS_PER_MEASUREMENT = 6
"""Timer started and fired, the workflow task between them (3), the measurement's marker."""
HISTORY_BUDGET = 400
"""A one-hour window at one-minute interval (stated in the README): 60 x 6 + a few < 400."""
SKIP_EVENT = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIME_SKIPPING_TRANSITIONED
"""Written by the time-skipping test server at each skip; a real server writes none."""


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
    async with build_worker(time_skipping_client, load_settings(), queue="window"):
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
    # One minute apart in workflow time: each measurement waited for its interval.
    recorded = [m.recorded_at for m in metric_result.measurements if m.recorded_at is not None]
    assert len(recorded) == 60
    gaps = {b - a for a, b in itertools.pairwise(recorded)}
    # (plus the moment between the timer firing and the workflow task that reads it)
    assert all(timedelta(minutes=1) <= gap < timedelta(minutes=1, seconds=10) for gap in gaps)
    history = await handle.fetch_history()
    events = [e for e in history.events if e.event_type != SKIP_EVENT]
    measured = [e for e in events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert len(measured) == 61  # 60 measurements and the local-measurements patch marker
    assert len(events) <= 60 * EVENTS_PER_MEASUREMENT + 10 < HISTORY_BUDGET


async def test_a_measurement_that_cannot_run_is_an_error_not_a_failed_workflow(
    time_skipping_client: Client,
) -> None:
    """The local activity's own error (a bad address) is recorded as Error measurements."""
    from worker import build_worker

    metric = Metric.model_validate(
        {
            "name": "error-rate",
            "interval": "1m",
            "count": 3,
            "successCondition": "result[0] < 0.05",
            "provider": {"prometheus": {"address": "prometheus:9090", "query": "up"}},
        }
    )
    request = VerificationRequest(project="p", stage="uat", freight="f" * 40, metrics=(metric,))
    async with build_worker(time_skipping_client, load_settings(), queue="window-errors"):
        with pytest.raises(WorkflowFailureError) as ended:
            await time_skipping_client.execute_workflow(
                "Verification",
                request,
                id="verification-window-errors",
                task_queue="window-errors",
                result_type=AnalysisRunStatus,
            )
    # A run that did not end Successful fails the workflow (the UI lists it failed), with the
    # run as the failure's details.
    cause = ended.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "VerificationError"
    result = ended_run(cause)
    assert result is not None and result.phase == "Error"
    (metric_result,) = result.metric_results
    assert metric_result.measurements and {m.phase for m in metric_result.measurements} == {"Error"}
    assert 'prometheus.address "prometheus:9090" is not an http(s) URL' in (
        metric_result.measurements[0].message or ""
    )
