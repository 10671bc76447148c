"""A project's configuration as its ``Project`` workflow holds it, and how an apply merges."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from freightline.config import check_references
from freightline.errors import ConfigError
from freightline.resources import ProjectResources

MERGED_KINDS = {
    "warehouses": "Warehouse",
    "stages": "Stage",
    "promotion_tasks": "PromotionTask",
    "analysis_templates": "AnalysisTemplate",
    "freight": "Freight",
}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class ProjectState(_Model):
    """Everything the Project workflow carries across continue-as-new."""

    resources: ProjectResources


class ApplyResult(_Model):
    """What an apply changed, one line per resource: ``Stage/test created``."""

    project: str
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()


def merge_resources(
    current: ProjectResources, incoming: ProjectResources
) -> tuple[ProjectResources, ApplyResult]:
    """Create or replace each incoming resource by name; validate the result as a whole.

    Freight is immutable: applying a Freight whose ID exists changes nothing.
    Raises ConfigError, leaving ``current`` as it was.
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


class DeleteRequest(_Model):
    """The Project's ``delete`` update: ``{"kind": "Stage", "name": "uat"}``."""

    kind: str
    name: str


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
