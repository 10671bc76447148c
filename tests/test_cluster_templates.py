"""ClusterAnalysisTemplate: Argo Rollouts' cluster-scoped template, kept by the Cluster workflow,
named by any project's Stage with ``kind: ClusterAnalysisTemplate`` and merged with its
namespaced templates into one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from freightline.app.client import apply_everything, delete_resource, stage_states
from freightline.contracts.verification import verification_request
from freightline.errors import ConfigError
from freightline.kargo.config import (
    group_by_project,
    group_cluster,
    load_text,
    missing_cluster_templates,
)
from freightline.kargo.resources import ClusterAnalysisTemplate, ClusterResources, Stage
from tests.conftest import wait_for
from tests.metric_server import ErrorRateServer
from tests.pipelines import freight_for, with_freight
from tests.test_analysis_features import stage, template, web
from tests.test_verification import PROJECT, verified_pipeline


def shared(name: str, metrics: list[dict[str, Any]], **spec: Any) -> ClusterAnalysisTemplate:
    return ClusterAnalysisTemplate.model_validate(
        {"metadata": {"name": name}, "spec": {"metrics": metrics, **spec}}
    )


def naming_shared(base: Stage, name: str) -> Stage:
    """``base`` whose verification also names the ClusterAnalysisTemplate ``name``."""
    document = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    references = document["spec"]["verification"]["analysisTemplates"]
    references.append({"name": name, "kind": "ClusterAnalysisTemplate"})
    return Stage.model_validate(document)


FILE = """
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: p}
---
apiVersion: argoproj.io/v1alpha1
kind: ClusterAnalysisTemplate
metadata: {name: shared-rate}
spec:
  metrics: [{name: shared, provider: {web: {url: "http://m/shared"}}}]
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: w}
spec: {subscriptions: [{image: {repoURL: nginx}}]}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: uat}
spec:
  requestedFreight: [{origin: {kind: Warehouse, name: w}, sources: {direct: true}}]
  verification:
    analysisTemplates:
      - {name: shared-rate, kind: ClusterAnalysisTemplate}
      - {name: missing, kind: ClusterAnalysisTemplate}
"""


def test_a_file_splits_into_cluster_and_project_resources() -> None:
    resources = load_text(FILE, source="shared.yaml")
    cluster = group_cluster(resources)
    (project,) = group_by_project(resources).values()
    assert list(cluster.analysis_templates) == ["shared-rate"]
    assert cluster.analysis_templates["shared-rate"].namespace is None
    assert project.analysis_templates == {}
    (problem,) = missing_cluster_templates(project, cluster.analysis_templates)
    assert 'unknown ClusterAnalysisTemplate "missing" (known: shared-rate)' in problem
    assert "shared.yaml" in problem and "analysisTemplates[1].name" in problem


def test_a_cluster_template_with_a_namespace_or_twice_is_refused() -> None:
    namespaced = FILE.replace("metadata: {name: shared-rate}", "metadata: {name: s, namespace: p}")
    with pytest.raises(ConfigError, match="is cluster-scoped"):
        group_cluster(load_text(namespaced, source="f"))
    twice = FILE + FILE.split("---")[1].join(["---", ""])
    with pytest.raises(ConfigError, match='duplicate ClusterAnalysisTemplate "shared-rate"'):
        group_cluster(load_text(twice, source="f"))


def test_cluster_and_namespaced_templates_merge_into_one_run() -> None:
    local = template("local", [web("local", "http://m/{{args.tag}}")], args=[{"name": "tag"}])
    common = shared(
        "common",
        [web("common", "http://m/common/{{args.tag}}")],
        args=[{"name": "tag", "value": "x"}],
        dryRun=[{"metricName": "common"}],
    )
    request = verification_request(
        "p",
        naming_shared(stage("local", args=[{"name": "tag", "value": "7"}]), "common"),
        freight_for("1"),
        {"local": local},
        cluster_templates={"common": common},
    )
    assert request is not None
    urls = [m.provider.spec.model_dump()["url"] for m in request.metrics]
    assert urls == ["http://m/7", "http://m/common/7"]
    assert request.dry_run == ("common",)
    # A namespaced template of the same name is not a stand-in for the cluster's.
    with pytest.raises(ConfigError, match='ClusterAnalysisTemplate "common", which is not'):
        verification_request(
            "p",
            naming_shared(stage("local"), "common"),
            freight_for("1"),
            {"local": local, "common": local},
        )


@pytest.mark.integration
async def test_a_stage_verifies_with_a_cluster_template_and_follows_its_changes(
    client: Client, worker: Worker, gitops_repo: Path, error_rates: ErrorRateServer
) -> None:
    good = freight_for("1.29.1")
    resources = verified_pipeline(gitops_repo, error_rates.url, rollback=False)
    stages = dict(resources.stages)
    stages["test"] = naming_shared(stages["test"], "shared-rate")
    resources = resources.model_copy(update={"stages": stages})
    metric = web("shared", f"{error_rates.url}/rate/shared", jsonPath="{$.errorRate}")
    cluster = ClusterResources(analysis_templates={"shared-rate": shared("shared-rate", [metric])})
    with pytest.raises(ConfigError, match='unknown ClusterAnalysisTemplate "shared-rate"'):
        await apply_everything(client, ClusterResources(), [resources])

    results = await apply_everything(client, cluster, [with_freight(resources, good)])
    assert results[0].created == ("ClusterAnalysisTemplate/shared-rate",)

    async def verified() -> bool:
        test = {s.name: s for s in await stage_states(client, PROJECT)}["test"]
        return bool(test.verifications) and test.verifications[0].phase == "Successful"

    await wait_for(verified, timeout=60)
    test = {s.name: s for s in await stage_states(client, PROJECT)}["test"]
    run = test.verifications[0].result
    assert run is not None
    assert [r.name for r in run.metric_results] == ["error-rate", "shared"]

    # A change to the shared template reaches the Stage without applying its project again.
    changed = {**metric, "successCondition": "result < 0.01"}
    update = ClusterResources(analysis_templates={"shared-rate": shared("shared-rate", [changed])})
    (result,) = await apply_everything(client, update, [])
    assert result.updated == ("ClusterAnalysisTemplate/shared-rate",)

    async def stage_holds_the_change() -> bool:
        test = {s.name: s for s in await stage_states(client, PROJECT)}["test"]
        held = test.config.cluster_analysis_templates["shared-rate"]
        return held.spec.metrics[0].success_condition == "result < 0.01"

    await wait_for(stage_holds_the_change, timeout=30)
    answer = await delete_resource(client, "", "ClusterAnalysisTemplate", "shared-rate", "alice")
    assert answer == "ClusterAnalysisTemplate/shared-rate deleted"

    async def stage_lost_it() -> bool:
        test = {s.name: s for s in await stage_states(client, PROJECT)}["test"]
        return not test.config.cluster_analysis_templates

    await wait_for(stage_lost_it, timeout=30)
