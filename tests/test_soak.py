"""Soak time as a durable timer, under virtual time (the dev server's time skipping)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from freightline.app.client import apply_project, stage_states
from freightline.kargo.config import group_by_project, load_text
from freightline.settings import load_settings
from tests.conftest import wait_for
from tests.pipelines import (
    AUTO_PROMOTE_ALL,
    dump,
    freight_for,
    up_to_push_documents,
    with_freight,
)

pytestmark = pytest.mark.integration


async def test_uat_waits_the_required_soak_time_after_test_verified(
    time_skipping_client: Client, gitops_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import build_worker

    client = time_skipping_client
    monkeypatch.setenv("FREIGHTLINE_TASK_QUEUE", "soak")
    documents = up_to_push_documents(gitops_repo)
    for document in documents:
        if document["kind"] == "Stage" and document["metadata"]["name"] == "uat":
            document["spec"]["requestedFreight"][0]["sources"]["requiredSoakTime"] = "1h"
    (resources,) = group_by_project(
        load_text(dump([*documents, AUTO_PROMOTE_ALL]), source="soak")
    ).values()
    freight = freight_for("1.29.1")
    async with build_worker(client, load_settings(), queue="soak"):
        await apply_project(client, with_freight(resources, freight))

        async def in_uat() -> bool:
            by_stage = {s.name: s for s in await stage_states(client, "kargo-demo")}
            return by_stage["uat"].current is not None

        await wait_for(in_uat, timeout=120)
        by_stage = {s.name: s for s in await stage_states(client, "kargo-demo")}
    verified_in_test = by_stage["test"].verifications[0].finished_at
    assert verified_in_test is not None
    soaked = by_stage["uat"].history[0].promoted_at - verified_in_test
    assert soaked >= timedelta(hours=1)
