"""Verification: a Stage's AnalysisTemplates measured as a durable window after each promotion.

Metrics come from a real HTTP endpoint (the ``web`` provider) whose answer the
test controls; Prometheus-backed measurement is covered in test_metrics.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from freightline.app.client import apply_project, promote_in_stage, stage_states, stage_update
from freightline.contracts.names import stage_workflow_id
from freightline.contracts.stage import StageState
from freightline.kargo.config import group_by_project, load_text
from tests.conftest import wait_for
from tests.metric_server import ErrorRateServer
from tests.pipelines import (
    AUTO_PROMOTE_ALL,
    dump,
    freight_for,
    up_to_push_documents,
    with_freight,
)
from tests.test_windows import current_details

pytestmark = pytest.mark.integration

PROJECT = "kargo-demo"


def verified_pipeline(repo: Path, url: str, *, rollback: bool, interval: str = "1s") -> Any:
    documents = up_to_push_documents(repo)
    for document in documents:
        if document["kind"] == "Stage" and document["metadata"]["name"] == "test":
            document["spec"]["verification"] = {
                "analysisTemplates": [{"name": "error-rate"}],
                "args": [{"name": "tag", "value": "${{ ctx.targetFreight.alias }}"}],
            }
    config = json.loads(json.dumps(AUTO_PROMOTE_ALL))
    if rollback:
        config["spec"]["promotionPolicies"][0]["autoRollback"] = {"onVerification": ["Failed"]}
    documents.append(config)
    documents.append(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "error-rate", "namespace": PROJECT},
            "spec": {
                "args": [{"name": "tag"}],
                "metrics": [
                    {
                        "name": "error-rate",
                        "interval": interval,
                        "count": 3,
                        "successCondition": "result < 0.05",
                        "provider": {
                            "web": {"url": url + "/rate/{{args.tag}}", "jsonPath": "{$.errorRate}"}
                        },
                    }
                ],
            },
        }
    )
    (resources,) = group_by_project(load_text(dump(documents), source="verified")).values()
    return resources


async def states(client: Client) -> dict[str, StageState]:
    return {s.name: s for s in await stage_states(client, PROJECT)}


async def test_good_freight_verifies_and_flows_downstream_bad_freight_rolls_back(
    client: Client, worker: Worker, gitops_repo: Path, error_rates: ErrorRateServer
) -> None:
    good, bad = freight_for("1.29.1"), freight_for("1.29.9")
    error_rates.rates[bad.alias or ""] = 0.5
    resources = verified_pipeline(gitops_repo, error_rates.url, rollback=True)
    await apply_project(client, with_freight(resources, good))

    async def good_in_uat() -> bool:
        current = (await states(client))["uat"].current
        return current is not None and current.freight == good.metadata.name

    await wait_for(good_in_uat, timeout=60)
    test = (await states(client))["test"]
    (run,) = test.verifications
    assert run.phase == "Successful" and run.result is not None
    assert len(run.result.metric_results[0].measurements) == 3

    # The bad Freight: promoted, verification Failed, not offered downstream, rolled back.
    await apply_project(client, with_freight(resources, good, bad))

    async def rolled_back() -> bool:
        test = (await states(client))["test"]
        return (
            len(test.history) >= 3
            and test.history[0].freight == good.metadata.name
            and test.running is None
        )

    await wait_for(rolled_back, timeout=90)
    by_stage = await states(client)
    test = by_stage["test"]
    assert [h.freight for h in test.history[:3]] == [
        good.metadata.name,
        bad.metadata.name,
        good.metadata.name,
    ]
    failed = next(v for v in test.verifications if v.freight == bad.metadata.name)
    assert failed.phase == "Failed"
    assert "error-rate" in (failed.message or "")
    assert bad.metadata.name not in by_stage["uat"].available
    with pytest.raises(Exception, match="not available"):
        await promote_in_stage(client, PROJECT, "uat", bad.metadata.name, "alice")


async def test_verify_reruns_and_abort_stops_a_long_window(
    client: Client, worker: Worker, gitops_repo: Path, error_rates: ErrorRateServer
) -> None:
    good = freight_for("1.29.1")
    resources = verified_pipeline(gitops_repo, error_rates.url, rollback=False, interval="1h")
    await apply_project(client, with_freight(resources, good))

    async def verifying() -> bool:
        return (await states(client))["test"].verifying is not None

    await wait_for(verifying, timeout=60)
    answer = await stage_update(client, PROJECT, "test", "abort_verification", "dana")
    assert "aborted by dana" in answer

    async def aborted() -> bool:
        test = (await states(client))["test"]
        return bool(test.verifications) and test.verifying is None

    await wait_for(aborted, timeout=30)
    test = (await states(client))["test"]
    assert test.verifications[0].phase == "Aborted"
    assert "dana" in (test.verifications[0].message or "")
    assert good.metadata.name not in (await states(client))["uat"].available

    # Re-run: a new window starts for the same Freight.
    await stage_update(client, PROJECT, "test", "verify", "erin")
    await wait_for(verifying, timeout=30)
    with pytest.raises(Exception, match="busy"):
        await stage_update(client, PROJECT, "test", "verify", "erin")


async def test_status_shows_a_failed_verification_as_failed(
    client: Client, worker: Worker, gitops_repo: Path, error_rates: ErrorRateServer
) -> None:
    bad = freight_for("1.29.8")
    error_rates.rates[bad.alias or ""] = 0.5
    resources = verified_pipeline(gitops_repo, error_rates.url, rollback=False)
    await apply_project(client, with_freight(resources, bad))

    async def failed() -> bool:
        test = (await states(client))["test"]
        return bool(test.verifications) and test.verifying is None

    await wait_for(failed, timeout=60)
    test = (await states(client))["test"]
    record = test.verifications[0]
    assert (record.phase, record.freight) == ("Failed", bad.metadata.name)
    assert test.current is not None and not test.current.verified
    # The Temporal UI's list says so too: the Verification workflow ended failed.
    ended = await client.get_workflow_handle(record.verification).describe()
    assert ended.status is WorkflowExecutionStatus.FAILED
    # And the Stage's details in the UI name the failure.
    stage = client.get_workflow_handle(stage_workflow_id(PROJECT, "test"))

    async def details_say_failed() -> bool:
        return "verification Failed: " in await current_details(stage)

    await wait_for(details_say_failed, timeout=10)

    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "freightline", "status", "-p", PROJECT],
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            "TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "COLUMNS": "400",
        },
    )
    assert shown.returncode == 0, shown.stderr
    (row,) = [line for line in shown.stdout.splitlines() if line.startswith("│ test ")]
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    assert cells[1] == bad.alias  # the Freight the Stage holds, no "(verifying)"
    assert cells[4].startswith("verification Failed: ")
    assert " ".join((record.message or "").split())[:40] in cells[4]
    assert "verifying" not in row
