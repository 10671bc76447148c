"""Signed approvals: with ``approvalKeys``, raw Temporal access cannot approve in a name.

The UI signs each decision for the person it authenticated; a forged approval
sent with the ``temporal`` CLI (unsigned, or signed with another key) is refused
and the promotion keeps waiting; the UI's approval goes through.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from freightline.app.client import apply_project, promote_in_stage
from freightline.app.devserver import temporal_binary
from freightline.app.ui import UiServer
from freightline.app.ui_auth import access_for
from freightline.contracts.approvals import (
    new_signing_key,
    public_key_of,
    sign_approval,
    signature_refusal,
)
from freightline.contracts.promotion import ApprovalMessage, PromotionPhase, PromotionResult
from freightline.errors import ConfigError
from freightline.kargo.config import group_by_project, load_text
from freightline.settings import UiSettings
from tests.conftest import started_promotion, wait_for
from tests.pipelines import dump, freight_for, gated_at_test, with_freight
from tests.test_ui import PROJECT, login, users_file

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_a_signature_covers_the_promotion_decision_user_comment_and_time() -> None:
    key, other = new_signing_key(), new_signing_key()
    keys = (public_key_of(key),)
    signed = sign_approval(key, "promotion:p:s:a:1", "approve", ApprovalMessage(user="alice"), NOW)
    assert signature_refusal(keys, "promotion:p:s:a:1", "approve", signed, NOW) == ""
    assert signature_refusal(keys, "promotion:p:s:a:2", "approve", signed, NOW)
    assert signature_refusal(keys, "promotion:p:s:a:1", "reject", signed, NOW)
    for changed in ({"user": "mallory"}, {"comment": "lgtm"}, {"signed_at": NOW}):
        forged = signed.model_copy(update=changed)
        if changed == {"signed_at": NOW}:
            forged = forged.model_copy(update={"signed_at": NOW - timedelta(seconds=1)})
        assert "does not match" in signature_refusal(
            keys, "promotion:p:s:a:1", "approve", forged, NOW
        )
    by_other = sign_approval(
        other, "promotion:p:s:a:1", "approve", ApprovalMessage(user="alice"), NOW
    )
    assert "does not match" in signature_refusal(
        keys, "promotion:p:s:a:1", "approve", by_other, NOW
    )
    late = NOW + timedelta(minutes=6)
    assert "too old" in signature_refusal(keys, "promotion:p:s:a:1", "approve", signed, late)
    unsigned = ApprovalMessage(user="alice")
    assert "only signed approvals" in signature_refusal(keys, "x", "approve", unsigned, NOW)


def test_approval_keys_must_be_ed25519_public_keys() -> None:
    documents = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": "p"}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "ProjectConfig",
            "metadata": {"name": "p", "namespace": "p"},
            "spec": {"approvalKeys": ["bm90IGEga2V5"]},
        },
    ]
    with pytest.raises(ConfigError, match=r"approvalKeys.*not an Ed25519 public key"):
        group_by_project(load_text(dump(documents), source="keys"))


@pytest.mark.integration
async def test_a_forged_approval_is_refused_and_the_uis_goes_through(
    client: Client, worker: Worker, gitops_repo: Path, tmp_path: Path
) -> None:
    key = new_signing_key()
    resources = gated_at_test(gitops_repo)
    config = resources.project_config
    assert config is not None
    config.spec.approval_keys = [public_key_of(key)]
    freight = freight_for("1.29.8")
    await apply_project(client, with_freight(resources, freight))
    await promote_in_stage(client, PROJECT, "test", freight.alias or "", "dev")

    promotion = await started_promotion(client, PROJECT, "test")
    handle = client.get_workflow_handle(promotion)

    async def waiting() -> bool:
        return (await handle.query("status"))["approval"] is not None

    await wait_for(waiting)

    async def temporal_cli(*args: str) -> subprocess.CompletedProcess[str]:
        target = client.service_client.config.target_host
        return await asyncio.to_thread(
            subprocess.run,
            [temporal_binary(), "workflow", *args, "--workflow-id", promotion, "--address", target],
            capture_output=True,
            text=True,
            check=False,
        )

    # Raw Temporal access, naming alice (an allowed approver): refused, unsigned.
    update = await temporal_cli(
        "update", "execute", "--name", "approve_promotion", "--input", '{"user": "alice"}'
    )
    assert update.returncode != 0
    assert "only signed approvals" in update.stdout + update.stderr
    # Signed with a key the project does not list: refused too.
    forged = sign_approval(
        new_signing_key(), promotion, "approve", ApprovalMessage(user="alice"), datetime.now(UTC)
    )
    update = await temporal_cli(
        "update", "execute", "--name", "approve_promotion", "--input", forged.model_dump_json()
    )
    assert update.returncode != 0 and "does not match" in update.stdout + update.stderr
    # The signal is ignored, with the reason recorded.
    signal = await temporal_cli("signal", "--name", "approve", "--input", '{"user": "alice"}')
    assert signal.returncode == 0, signal.stderr

    async def ignored() -> bool:
        return bool((await handle.query("status"))["refused"])

    await wait_for(ignored)
    status = await handle.query("status")
    assert status["approval"]["approvedBy"] == [] and status["approvals"] == []
    assert "only signed approvals" in status["refused"][0]["reason"]

    # The UI, holding the key, approves for alice, whom it authenticated.
    settings = UiSettings(
        users_file=users_file(tmp_path / "users.yaml"), secret="s", signing_key=key
    )
    async with (
        UiServer(client, access_for(settings)) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        await login(http, "alice")
        page = await http.get(f"/promotions/{promotion}")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf
        done = await http.post(
            f"/promotions/{promotion}/approve", data={"csrf": csrf.group(1), "comment": "ok"}
        )
        assert done.status_code == 200 and "approved by alice" in done.text, done.text
    result: PromotionResult = await client.get_workflow_handle(
        promotion, result_type=PromotionResult
    ).result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert [(a.user, a.comment) for a in result.approvals] == [("alice", "ok")]
    assert json.dumps(result.model_dump(mode="json")).count(key) == 0  # the key never travels
