"""The cluster-scoped configuration as the ``Cluster`` workflow holds it, and how an apply
merges into it.

Kargo and Argo Rollouts keep a few kinds outside any namespace, shared by every project:
here ``ClusterAnalysisTemplate`` and ``ClusterConfig`` (its webhook receivers). Freightline
keeps them in one workflow (``CLUSTER_WORKFLOW_ID``); each Project's reconcile reads them and
hands a Stage the ones its verification names, a change makes every Project reconcile at
once, and the webhook server reads the ClusterConfig's receivers.
"""

from __future__ import annotations

from freightline.contracts.model import Contract
from freightline.contracts.project import ApplyResult
from freightline.errors import ConfigError
from freightline.kargo.resources import ClusterResources

CLUSTER = "(cluster)"
"""What an ``ApplyResult`` of the cluster-scoped resources names as its project."""


class ClusterState(Contract):
    """Everything the Cluster workflow carries across continue-as-new."""

    resources: ClusterResources = ClusterResources()
    generation: int = 0
    """Bumped by every apply or delete that changed something."""
    announced: int = 0
    """The generation every Project workflow was last asked to reconcile for."""


class ClusterDelete(Contract):
    """The Cluster's ``delete`` update: ``{"kind": "ClusterAnalysisTemplate", "name": "x"}``."""

    kind: str
    name: str


def merge_cluster(
    current: ClusterResources, incoming: ClusterResources
) -> tuple[ClusterResources, ApplyResult]:
    """Create or replace each incoming resource by name."""
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    merged = dict(current.analysis_templates)
    for name, template in incoming.analysis_templates.items():
        label = f"{template.kind}/{name}"
        if name not in merged:
            created.append(label)
        elif merged[name] == template:
            unchanged.append(label)
        else:
            updated.append(label)
        merged[name] = template
    changes: dict[str, object] = {"analysis_templates": merged}
    if incoming.cluster_config is not None:
        label = f"ClusterConfig/{incoming.cluster_config.name}"
        if current.cluster_config is None:
            created.append(label)
        elif current.cluster_config == incoming.cluster_config:
            unchanged.append(label)
        else:
            updated.append(label)
        changes["cluster_config"] = incoming.cluster_config
    result = ApplyResult(
        project=CLUSTER, created=tuple(created), updated=tuple(updated), unchanged=tuple(unchanged)
    )
    return current.model_copy(update=changes), result


def remove_cluster_resource(current: ClusterResources, kind: str, name: str) -> ClusterResources:
    """The cluster's resources without one; ConfigError if it is unknown.

    A Stage that still names it fails its next verification with a message naming it, as a
    Kargo AnalysisRun does whose template is gone."""
    if kind == "ClusterConfig":
        if current.cluster_config is None or current.cluster_config.name != name:
            raise ConfigError(f'the cluster has no ClusterConfig "{name}"')
        return current.model_copy(update={"cluster_config": None})
    if kind != "ClusterAnalysisTemplate":
        raise ConfigError(
            f'cannot delete cluster-scoped kind "{kind}": ClusterAnalysisTemplate or ClusterConfig'
        )
    if name not in current.analysis_templates:
        raise ConfigError(f'the cluster has no ClusterAnalysisTemplate "{name}"')
    remaining = {k: v for k, v in current.analysis_templates.items() if k != name}
    return current.model_copy(update={"analysis_templates": remaining})
