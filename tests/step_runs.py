"""Running steps for tests: plan them for one Freight and run them in the worktree activity,
or build the context one step function takes (to look at the files it leaves); and
pushing an OCI artifact (a chart) to a test registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.step_context import BasicLookup, SecretLookup, StepContext
from activities.workspace import Workspace
from activities.worktree import WorktreeActivities
from freightline.contracts.promotion import StepOutcome, WorktreeBatch, plan_promotion
from freightline.kargo.resources import Freight
from tests.pipelines import freight_for, single_stage_project, with_freight
from tests.registry_fixture import OCI_MANIFEST, Pusher, Registry

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def push_artifact(
    registry: Registry,
    repo: str,
    tag: str,
    layers: list[tuple[str, bytes]],
    *,
    config_type: str = HELM_CONFIG,
    annotations: dict[str, str] | None = None,
) -> str:
    """Push an OCI artifact (a config and ``layers``); its manifest digest."""
    pusher = Pusher(registry)
    try:
        config = json.dumps({"name": repo.rsplit("/", 1)[-1], "version": tag}).encode()
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": config_type,
                "digest": pusher.blob(repo, config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": kind, "digest": pusher.blob(repo, data), "size": len(data)}
                for kind, data in layers
            ],
        }
        if annotations:
            body["annotations"] = annotations
        return pusher.manifest(repo, tag, body, OCI_MANIFEST)
    finally:
        pusher.close()


def _anonymous(_cred_type: str, _repo_url: str) -> tuple[str, str] | None:
    return None


def _no_secrets(_project: str, _name: str) -> dict[str, str]:
    return {}


def run(
    tmp_path: Path,
    steps: list[dict[str, Any]],
    *,
    variables: list[dict[str, Any]] | None = None,
    freight: Freight | None = None,
    credentials: BasicLookup = _anonymous,
    secrets: SecretLookup | None = None,
    repo: Path | None = None,
) -> list[StepOutcome]:
    """Plan ``steps`` (as ``apply`` would validate them) and run them in the worktree activity;
    ``REPO_URL`` in them names ``repo``."""
    freight = freight or freight_for("1.0.0")
    resources = single_stage_project(repo or tmp_path, steps, variables=variables)
    plan = plan_promotion(with_freight(resources, freight), "test", freight.metadata.name, "p:x")
    batch = WorktreeBatch(plan=plan, step_indexes=tuple(range(len(plan.steps))))
    activities = WorktreeActivities(
        scratch_root=tmp_path,
        basic_credentials=credentials,
        allow_local_repositories=True,
        secrets=secrets or _no_secrets,
    )
    outcomes: list[StepOutcome] = ActivityEnvironment().run(activities.run_worktree_steps, batch)
    return outcomes


def refused(tmp_path: Path, steps: list[dict[str, Any]], **kwargs: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        run(tmp_path, steps, **kwargs)
    return caught.value


def outcome_of(err: ApplicationError) -> str:
    (details,) = err.details
    assert isinstance(details, dict)
    return str(details["outcome"])


def context(tmp_path: Path, credentials: BasicLookup = _anonymous) -> StepContext:
    """A step context over a fresh workspace under ``tmp_path``."""
    freight = freight_for("1.0.0")
    resources = single_stage_project(tmp_path, [{"uses": "fail", "config": {}}])
    plan = plan_promotion(with_freight(resources, freight), "test", freight.metadata.name, "p:x")
    return StepContext(
        Workspace(tmp_path / "ws"), plan, lambda _url: None, basic_credentials=credentials
    )
