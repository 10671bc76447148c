"""Provider credentials stay on the worker: a recorded Verification history holds none.

One Verification measures Datadog and New Relic (their emulators) with keys the
worker holds as ``FREIGHTLINE_METRIC_*``; each provider also answers once with
an error that quotes the key back, as a careless API might. The workflow's
whole history (input, every measurement's marker, the result), its query and
the worker's log are then searched for the keys.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from structlog.testing import capture_logs
from temporalio.client import Client, WorkflowFailureError

from activities.providers.measuring import secret_variable
from freightline.contracts.verification import VerificationRequest
from freightline.kargo.analysis import AnalysisRunStatus
from freightline.kargo.resources import Metric
from freightline.settings import load_settings
from sandbox.datadog import DatadogEmulator
from sandbox.newrelic import NerdGraphEmulator
from tests.history_text import readable

pytestmark = pytest.mark.integration

DD_API_KEY = "dd-api-5e1d77-never-in-a-history"
DD_APP_KEY = "dd-app-0b93c2-never-in-a-history"
NR_KEY = "NRAK-9f04aa-never-in-a-history"
SECRETS = (DD_API_KEY, DD_APP_KEY, NR_KEY)
QUERY = "avg:shop.errors{env:uat}"
NRQL = "SELECT average(duration) FROM Transaction"


async def test_a_verification_history_holds_no_provider_credential(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import build_worker

    with DatadogEmulator(DD_API_KEY, DD_APP_KEY) as datadog, NerdGraphEmulator(NR_KEY, 7) as nr:
        now = int(time.time())
        datadog.add_points(QUERY, [(now - 1, 0.01)])
        nr.set_results(NRQL, [{"average.duration": 0.1}])
        # Each first answer quotes the key back; the measurement's message must not.
        datadog.fail_next(400, {"errors": [f"bad key {DD_API_KEY}/{DD_APP_KEY}"]})
        nr.fail_next(500, {"errors": [{"message": f"bad key {NR_KEY}"}]})
        for name, value in {
            secret_variable("datadog", "address"): datadog.url,
            secret_variable("datadog", "api-key"): DD_API_KEY,
            secret_variable("datadog", "app-key"): DD_APP_KEY,
            secret_variable("newrelic", "personal-api-key"): NR_KEY,
            secret_variable("newrelic", "account-id"): "7",
            secret_variable("newrelic", "base-url-nerdgraph"): nr.graphql_url,
        }.items():
            monkeypatch.setenv(name, value)
        metrics = tuple(
            Metric.model_validate(
                {
                    "name": name,
                    "interval": "1s",
                    "count": 2,
                    "successCondition": condition,
                    "provider": provider,
                }
            )
            for name, condition, provider in (
                ("errors", "result < 0.05", {"datadog": {"query": QUERY}}),
                (
                    "latency",
                    "result['average.duration'] < 0.5",
                    {"newRelic": {"query": NRQL}},
                ),
            )
        )
        request = VerificationRequest(
            project="p", stage="uat", freight="f" * 40, freight_alias="calm-otter", metrics=metrics
        )
        workflow_id = f"verification-secrets-{uuid.uuid4().hex[:8]}"
        with capture_logs() as logs:
            async with build_worker(client, load_settings(), queue=task_queue):
                handle = await client.start_workflow(
                    "Verification",
                    request,
                    id=workflow_id,
                    task_queue=task_queue,
                    result_type=AnalysisRunStatus,
                )
                try:
                    result = await handle.result()
                except WorkflowFailureError as failed:  # pragma: no cover - shown on failure
                    raise AssertionError(f"verification did not succeed: {failed.cause}") from None
                status = await handle.query("status", result_type=AnalysisRunStatus)
        assert datadog.violations == [] and nr.violations == []
    assert result.phase == "Successful"
    errors = [m for r in result.metric_results for m in r.measurements if m.phase == "Error"]
    assert len(errors) == 2  # each provider's first answer
    assert any("bad key *****/*****" in (m.message or "") for m in errors)  # quoted, scrubbed
    history = "\n".join(readable((await handle.fetch_history()).to_json_dict()))
    shown = [history, status.model_dump_json(), json.dumps(logs, default=str)]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text
    assert QUERY in history  # payloads decoded: the history holds the query, not the keys
