"""A project's configuration as its ``Project`` workflow holds it, how an apply merges,
and what each Stage and Warehouse workflow must hold for the project to be reconciled.

Reconciliation is level-based, like a Kubernetes controller: the desired state
is the applied configuration (``stage_configs``, ``warehouse_configs``), and a
reconcile brings every entity workflow to it and retires the ones the
configuration no longer names, however many applies came before.
"""

from __future__ import annotations

from typing import Any

from freightline.contracts.model import Contract
from freightline.contracts.promotion import PromotionPhase
from freightline.contracts.stage import StageConfig
from freightline.contracts.warehouse import WarehouseConfig, direct_stages
from freightline.errors import ConfigError
from freightline.kargo.config import check_references
from freightline.kargo.freight import requested_origins
from freightline.kargo.resources import ClusterResources, ProjectResources

MERGED_KINDS = {
    "warehouses": "Warehouse",
    "stages": "Stage",
    "promotion_tasks": "PromotionTask",
    "analysis_templates": "AnalysisTemplate",
    "config_maps": "ConfigMap",
    "freight": "Freight",
    "promotions": "Promotion",
}


class ProjectState(Contract):
    """Everything the Project workflow carries across continue-as-new."""

    resources: ProjectResources
    generation: int = 0
    """Bumped by every apply and delete that the workflow reconciles."""
    reconciled: int = 0
    """The generation every Stage and Warehouse workflow last held."""
    pending_offers: tuple[str, ...] = ()
    """IDs of Freight applied from files, still to be offered to the Stages that request it."""
    last_reconcile_error: str = ""


class DesiredState(Contract):
    """The ``desired`` query: what the reconcile activity brings the entity workflows to."""

    generation: int
    resources: ProjectResources
    pending_offers: tuple[str, ...] = ()


class ReconcileResult(Contract):
    """What one reconcile did; ``generation`` is the one it read and now holds."""

    generation: int
    offered: tuple[str, ...] = ()
    configured: tuple[str, ...] = ()
    """``Stage/test``, ``Warehouse/images``: workflows started or given a new config."""
    retired: tuple[str, ...] = ()
    """Workflows of resources no longer in the project, asked to finish."""

    def summary(self) -> str:
        parts = [f"{len(self.configured)} configured", f"{len(self.retired)} retired"]
        if self.offered:
            parts.append(f"{len(self.offered)} freight offered")
        return f"generation {self.generation}: " + ", ".join(parts)


class ApplyResult(Contract):
    """What an apply changed, one line per resource: ``Stage/test created``."""

    project: str
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    reconciled: bool = True
    """False when the worker had not yet brought every Stage and Warehouse workflow to the
    applied config when the answer was sent (it goes on doing so, durably)."""


def merge_resources(
    current: ProjectResources, incoming: ProjectResources
) -> tuple[ProjectResources, ApplyResult]:
    """Create or replace each incoming resource by name; validate the result as a whole.

    Freight is immutable: applying a Freight whose ID exists changes nothing. A Promotion
    is immutable too (Kargo refuses a change to its spec): applied again unchanged it changes
    nothing, changed it is refused. Raises ConfigError, leaving ``current`` as it was.
    """
    if incoming.name != current.name:
        raise ConfigError(
            f'resources of project "{incoming.name}" sent to project "{current.name}"'
        )
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    changes: dict[str, Any] = {}
    for field, kind in MERGED_KINDS.items():
        merged = dict(getattr(current, field))
        for name, resource in getattr(incoming, field).items():
            label = f"{kind}/{name}"
            if name not in merged:
                created.append(label)
                merged[name] = resource
            elif merged[name] == resource or field == "freight":
                unchanged.append(label)
            elif field == "promotions":
                raise ConfigError(
                    f"{label}: a Promotion cannot change once applied (it has started, as in "
                    "Kargo); apply the new one under another name"
                )
            else:
                updated.append(label)
                merged[name] = resource
        changes[field] = merged
    if incoming.project_config is not None:
        label = f"ProjectConfig/{incoming.name}"
        if current.project_config is None:
            created.append(label)
        elif current.project_config != incoming.project_config:
            updated.append(label)
        else:
            unchanged.append(label)
        changes["project_config"] = incoming.project_config
    merged_resources = current.model_copy(update=changes)
    check_references(merged_resources)
    return merged_resources, ApplyResult(
        project=current.name,
        created=tuple(created),
        updated=tuple(updated),
        unchanged=tuple(unchanged),
    )


class DeleteRequest(Contract):
    """The Project's ``delete`` update: ``{"kind": "Stage", "name": "uat"}``."""

    kind: str
    name: str
    user: str = ""


def remove_resource(current: ProjectResources, kind: str, name: str) -> ProjectResources:
    """The project without one resource; ConfigError if it is unknown or still referenced."""
    fields = {label: field for field, label in MERGED_KINDS.items()}
    field = fields.get(kind)
    if field is None:
        raise ConfigError(f'cannot delete kind "{kind}": one of {", ".join(sorted(fields))}')
    existing = dict(getattr(current, field))
    if name not in existing:
        raise ConfigError(f'project "{current.name}" has no {kind} "{name}"')
    del existing[name]
    remaining = current.model_copy(update={field: existing})
    try:
        check_references(remaining)
    except ConfigError as err:
        raise ConfigError(f'{kind} "{name}" is still in use: {err}') from None
    return remaining


def stage_configs(
    resources: ProjectResources, cluster: ClusterResources | None = None
) -> dict[str, StageConfig]:
    """What each Stage workflow should hold: its spec, auto-promotion, its downstream Stages,
    the (Cluster)AnalysisTemplates its verification names (``cluster``: the shared ones)."""
    shared = cluster.analysis_templates if cluster is not None else {}
    configs = {}
    for name, stage in resources.stages.items():
        downstream = sorted(
            other
            for other, spec in resources.stages.items()
            if any(name in (r.sources.stages or ()) for r in spec.spec.requested_freight)
        )
        verification = stage.spec.verification
        references = verification.analysis_templates or () if verification else ()
        templates = {
            ref.name: resources.analysis_templates[ref.name]
            for ref in references
            if ref.kind != "ClusterAnalysisTemplate" and ref.name in resources.analysis_templates
        }
        cluster_templates = {
            ref.name: shared[ref.name]
            for ref in references
            if ref.kind == "ClusterAnalysisTemplate" and ref.name in shared
        }
        configs[name] = StageConfig(
            project=resources.name,
            stage=stage,
            auto_promotion=resources.auto_promotion_enabled(name),
            downstream=tuple(downstream),
            analysis_templates=templates,
            cluster_analysis_templates=cluster_templates,
            rollback_on_verification=resources.auto_rollback_on_verification(name),
            origins=requested_origins(resources, stage),
            rollback_on_promotion=tuple(
                PromotionPhase(phase) for phase in resources.auto_rollback_on_promotion(name)
            ),
        )
    return configs


def warehouse_configs(resources: ProjectResources) -> dict[str, WarehouseConfig]:
    """What each Warehouse workflow should hold: its spec and the Stages it tells directly."""
    return {
        name: WarehouseConfig(warehouse=warehouse, stages=direct_stages(resources, name))
        for name, warehouse in resources.warehouses.items()
    }


def direct_requesters(resources: ProjectResources, origin: str) -> list[str]:
    """Stages that take Freight of Warehouse ``origin`` straight from it, by name."""
    return sorted(
        name
        for name, stage in resources.stages.items()
        if any(
            request.origin.name == origin and request.sources.direct
            for request in stage.spec.requested_freight
        )
    )
