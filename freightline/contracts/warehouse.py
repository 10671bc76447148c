"""What a Warehouse does with what it discovers: Kargo's rules, as pure code.

A discovery (one activity run over all of a Warehouse's subscriptions)
yields, per subscription, its artifacts newest first. Freight is made as
Kargo makes it:

- **the newest artifact of every subscription**, combined into one Freight
  whose origin is the Warehouse; a subscription that found nothing means no
  Freight (and a message on the status);
- the ID is Kargo's (:func:`freightline.kargo.freight.freight_id`); Freight whose ID
  the Warehouse already holds is not made again;
- the alias comes from :func:`freightline.kargo.freight.freight_alias`, avoiding
  the aliases the Warehouse already uses;
- ``freightCreationPolicy: Manual`` discovers but makes no Freight;
- ``freightCreationCriteria.expression`` must be true for the candidate
  before it is made. Its names are Kargo's: ``imageFrom(repoURL)``,
  ``commitFrom(repoURL)``, ``chartFrom(repoURL[, name])`` over the
  candidate's artifacts (fields ``RepoURL``, ``Tag``, ``Digest``,
  ``Annotations`` / ``ID``, ``Branch``, ``Subject`` (or ``Message``), ``Author``,
  ``Committer`` / ``Name``, ``Version``; an unknown field is an error, not a
  silently false criterion), ``artifactFrom`` and ``warehouse(name)``; see
  docs/expressions.md.

The Warehouse keeps the newest :data:`MAX_FREIGHT_HISTORY` Freight, newest
first; older Freight is dropped from the Warehouse (Freight already promoted
stays in the Stages that hold it). Everything here is deterministic, so the
``Warehouse`` workflow calls it directly.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from freightline.contracts.model import Contract
from freightline.errors import ConfigError, DiscoveryError, ExpressionError
from freightline.kargo import expressions
from freightline.kargo.freight import artifact_functions, freight_alias, freight_id
from freightline.kargo.resources import (
    Chart,
    Freight,
    FreightMeta,
    FreightOrigin,
    GitCommit,
    Image,
    ProjectResources,
    RepoSubscription,
    Warehouse,
)

__all__ = [
    "MAX_FREIGHT_HISTORY",
    "MAX_KNOWN_CREATED",
    "DiscoveredChart",
    "DiscoveredCommit",
    "DiscoveredImageRef",
    "DiscoveryError",
    "DiscoveryRequest",
    "DiscoveryResult",
    "FreightDecision",
    "SubscriptionDiscovery",
    "WarehouseConfig",
    "WarehouseInput",
    "WarehouseState",
    "WarehouseStatus",
    "continue_as_new_input",
    "decide_freight",
    "direct_stages",
    "record_freight",
    "remember_created",
    "subscription_label",
]

MAX_FREIGHT_HISTORY = 50
"""How much Freight one Warehouse keeps (newest first); older Freight is dropped."""
MAX_KNOWN_CREATED = 5_000
"""How many image build dates (digest -> created) a Warehouse remembers for NewestBuild."""


# --- discovery results ---------------------------------------------------------------------


class DiscoveredImageRef(Contract):
    """An image tag and the digest it points at (Kargo's ``DiscoveredImageReference``)."""

    tag: str
    digest: str
    created_at: datetime.datetime | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class DiscoveredCommit(Contract):
    """A commit (and the tag that names it, for tag strategies)."""

    id: str
    branch: str | None = None
    tag: str | None = None
    subject: str = ""
    author: str = ""
    committer: str = ""
    creator_date: datetime.datetime | None = None


class DiscoveredChart(Contract):
    """A chart version (and where to download it, when the repository says)."""

    version: str
    url: str | None = None


class SubscriptionDiscovery(Contract):
    """What one subscription found, newest first (at most its ``discoveryLimit``)."""

    kind: Literal["image", "git", "chart"]
    repo_url: str = Field(alias="repoURL")
    name: str | None = None
    """The chart name, for a chart subscription to an HTTP repository."""
    images: tuple[DiscoveredImageRef, ...] = ()
    commits: tuple[DiscoveredCommit, ...] = ()
    charts: tuple[DiscoveredChart, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.images or self.commits or self.charts)


class DiscoveryRequest(Contract):
    """Input of the ``discover_warehouse`` activity: subscriptions and cached build dates."""

    project: str
    warehouse: str
    subscriptions: tuple[RepoSubscription, ...]
    known_created: dict[str, str] = Field(default_factory=dict)


class DiscoveryResult(Contract):
    """The output of the ``discover_warehouse`` activity: artifacts only, no secrets."""

    subscriptions: tuple[SubscriptionDiscovery, ...]


def subscription_label(index: int, subscription: RepoSubscription) -> str:
    """``subscription 1 (image 127.0.0.1:5000/app)``, for messages."""
    if subscription.image is not None:
        what = f"image {subscription.image.repo_url}"
    elif subscription.git is not None:
        what = f"git {subscription.git.repo_url}"
    else:
        assert subscription.chart is not None
        chart = subscription.chart
        what = f"chart {chart.repo_url}" + (f" {chart.name}" if chart.name else "")
    named = f' "{subscription.name}"' if subscription.name else ""
    return f"subscription {index + 1}{named} ({what})"


# --- workflow state ------------------------------------------------------------------------


class WarehouseConfig(Contract):
    """What ``freightline apply`` gives a Warehouse: its resource and who to tell."""

    warehouse: Warehouse
    stages: tuple[str, ...] = ()
    """Stages that request Freight from this Warehouse directly (``sources.direct``)."""


class WarehouseState(Contract):
    """Everything a Warehouse workflow carries across continue-as-new."""

    freight: tuple[Freight, ...] = ()
    """Newest first, at most MAX_FREIGHT_HISTORY."""
    known_created: dict[str, str] = Field(default_factory=dict)
    """Image digest -> RFC 3339 build date, so NewestBuild need not read configs again."""
    last_discovery: datetime.datetime | None = None
    last_error: str | None = None
    message: str = ""
    """What the last discovery did (``made Freight wise-otter``, ``no new artifacts``)."""
    discovered: DiscoveryResult | None = None
    """The artifacts of the last successful discovery (for Manual Freight creation)."""
    discoveries: int = 0
    failures: int = 0


class WarehouseInput(Contract):
    """The input of a ``Warehouse`` workflow."""

    project: str
    config: WarehouseConfig
    state: WarehouseState = WarehouseState()
    refresh: bool = True
    """Discover at once on start (a continued run that was waiting does not)."""


class WarehouseStatus(Contract):
    """The ``status`` query: when it last looked, what went wrong, what it holds."""

    project: str
    warehouse: str
    interval: str
    last_discovery: datetime.datetime | None
    last_error: str | None
    message: str
    freight_count: int
    latest_freight: str | None
    discoveries: int
    failures: int
    stages: tuple[str, ...]


def continue_as_new_input(project: str, config: WarehouseConfig, state: WarehouseState) -> Any:
    """The next run's input: the same Warehouse and state, waiting for its next turn.

    Pure, so a test checks what survives continue-as-new without forcing one.
    """
    return WarehouseInput(project=project, config=config, state=state, refresh=False)


# --- Freight -------------------------------------------------------------------------------


class FreightDecision(Contract):
    """What one discovery means for the Warehouse's Freight."""

    freight: Freight | None = None
    """New Freight to record and announce, or None."""
    message: str


def decide_freight(
    project: str,
    warehouse: Warehouse,
    discovery: DiscoveryResult,
    existing: Sequence[Freight],
    now: datetime.datetime,
) -> FreightDecision:
    """Make Freight from the newest artifact of every subscription, by Kargo's rules.

    Raises ExpressionError when the creation criteria cannot be evaluated.
    """
    name = warehouse.metadata.name
    if warehouse.spec.freight_creation_policy == "Manual":
        return FreightDecision(message="discovered; freightCreationPolicy is Manual")
    for index, found in enumerate(discovery.subscriptions):
        if found.empty:
            label = subscription_label(index, warehouse.spec.subscriptions[index])
            return FreightDecision(message=f"{label} discovered nothing; no Freight made")
    candidate = _freight_of(
        project, name, discovery, [0] * len(discovery.subscriptions), existing, now
    )
    for held in existing:
        if held.metadata.name == candidate.metadata.name:
            return FreightDecision(message=f"no new artifacts (newest Freight {held.alias})")
    criteria = warehouse.spec.freight_creation_criteria
    expression = (criteria.expression or "").strip() if criteria else ""
    if expression and not _criteria_met(expression, candidate, discovery, now):
        return FreightDecision(message=f"freightCreationCriteria not met by {_describe(candidate)}")
    return FreightDecision(freight=candidate, message=f"made Freight {candidate.alias}")


class AssembleRequest(Contract):
    """The Warehouse ``assemble`` update: who asks, and the artifact to take per repoURL."""

    user: str = "unknown"
    picks: dict[str, str] = Field(default_factory=dict)
    """repoURL -> image tag or digest, commit ID or tag, chart version; the rest newest."""


def assemble_freight(
    project: str,
    warehouse: Warehouse,
    discovery: DiscoveryResult | None,
    existing: Sequence[Freight],
    now: datetime.datetime,
    picks: Mapping[str, str] | None = None,
) -> Freight:
    """Freight a person assembles from what the Warehouse discovered (Kargo's manual Freight).

    Each subscription contributes its newest artifact, or the one ``picks`` names
    for its repoURL: an image tag or digest, a commit ID (7 characters or more) or
    tag, a chart version. Neither ``freightCreationPolicy`` nor the creation
    criteria apply: a person chose. Freight with the same artifacts as held
    Freight is that Freight (same ID), so assembling twice makes one.
    Raises ConfigError naming the Warehouse, the repoURL and what there is to pick.
    """
    name = warehouse.metadata.name
    if discovery is None:
        raise ConfigError(
            f'warehouse "{name}" has discovered nothing yet: refresh it and try again'
        )
    wanted = dict(picks or {})
    known = {found.repo_url for found in discovery.subscriptions}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise ConfigError(
            f'warehouse "{name}" has no subscription to {", ".join(unknown)} '
            f"(subscriptions: {', '.join(sorted(known))})"
        )
    chosen: list[int] = []
    for index, found in enumerate(discovery.subscriptions):
        label = subscription_label(index, warehouse.spec.subscriptions[index])
        versions = _versions(found)
        if not versions:
            raise ConfigError(f'warehouse "{name}": {label} discovered nothing to assemble')
        pick = wanted.get(found.repo_url)
        if pick is None:
            chosen.append(0)
            continue
        matches = [i for i, names in enumerate(versions) if _picked(pick, names)]
        if not matches:
            offered = ", ".join(names[0] for names in versions[:10])
            raise ConfigError(
                f'warehouse "{name}": {label} discovered no "{pick}" (newest first: {offered})'
            )
        chosen.append(matches[0])
    candidate = _freight_of(project, name, discovery, chosen, existing, now)
    for held in existing:
        if held.metadata.name == candidate.metadata.name:
            return held
    return candidate


def _versions(found: SubscriptionDiscovery) -> list[tuple[str, ...]]:
    """Each discovered artifact's names a person may pick it by, newest first."""
    if found.kind == "image":
        return [(i.tag, i.digest) for i in found.images]
    if found.kind == "git":
        return [(c.tag or c.id[:7], c.id) for c in found.commits]
    return [(c.version,) for c in found.charts]


def _picked(pick: str, names: tuple[str, ...]) -> bool:
    return any(
        pick == name or (len(pick) >= 7 and len(name) == 40 and name.startswith(pick))
        for name in names
    )


def _freight_of(
    project: str,
    warehouse: str,
    discovery: DiscoveryResult,
    chosen: Sequence[int],
    existing: Sequence[Freight],
    now: datetime.datetime,
) -> Freight:
    """Freight of the ``chosen[i]``-th artifact of each subscription, ID by Kargo's rule."""
    origin = FreightOrigin(kind="Warehouse", name=warehouse)
    pairs = list(zip(discovery.subscriptions, chosen, strict=True))
    images = [_image(s, i) for s, i in pairs if s.kind == "image"]
    commits = [_commit(s, i) for s, i in pairs if s.kind == "git"]
    charts = [_chart(s, i) for s, i in pairs if s.kind == "chart"]
    new_id = freight_id(origin, images=images, commits=commits, charts=charts)
    return Freight(
        metadata=FreightMeta(name=new_id, namespace=project),
        alias=freight_alias(new_id, {f.alias for f in existing if f.alias}),
        origin=origin,
        images=images or None,
        commits=commits or None,
        charts=charts or None,
        discovered_at=now,
    )


def record_freight(
    existing: Sequence[Freight], new: Freight, limit: int = MAX_FREIGHT_HISTORY
) -> tuple[Freight, ...]:
    """``new`` first, then the existing Freight, the oldest dropped beyond ``limit``."""
    kept = [f for f in existing if f.metadata.name != new.metadata.name]
    return (new, *kept)[:limit]


def remember_created(
    known: Mapping[str, str], discovery: DiscoveryResult, limit: int = MAX_KNOWN_CREATED
) -> dict[str, str]:
    """Add the build dates a discovery read to ``known``, keeping the newest ``limit``."""
    merged = dict(known)
    for found in discovery.subscriptions:
        for image in found.images:
            if image.created_at is not None:
                merged.pop(image.digest, None)
                merged[image.digest] = image.created_at.isoformat()
    excess = len(merged) - limit
    return dict(list(merged.items())[excess:]) if excess > 0 else merged


def direct_stages(resources: ProjectResources, warehouse: str) -> tuple[str, ...]:
    """The Stages that request Freight from ``warehouse`` directly, sorted."""
    return tuple(
        sorted(
            name
            for name, stage in resources.stages.items()
            if any(
                request.origin.kind == "Warehouse"
                and request.origin.name == warehouse
                and request.sources.direct
                for request in stage.spec.requested_freight
            )
        )
    )


def _image(found: SubscriptionDiscovery, index: int) -> Image:
    newest = found.images[index]
    return Image(
        repo_url=found.repo_url,
        tag=newest.tag,
        digest=newest.digest,
        annotations=newest.annotations or None,
    )


def _commit(found: SubscriptionDiscovery, index: int) -> GitCommit:
    newest = found.commits[index]
    return GitCommit(
        repo_url=found.repo_url,
        id=newest.id,
        branch=newest.branch,
        tag=newest.tag,
        message=newest.subject or None,
        author=newest.author or None,
        committer=newest.committer or None,
    )


def _chart(found: SubscriptionDiscovery, index: int) -> Chart:
    return Chart(repo_url=found.repo_url, name=found.name, version=found.charts[index].version)


def _describe(freight: Freight) -> str:
    parts = [f"{i.repo_url}:{i.tag}" for i in freight.images or ()]
    parts += [f"{c.repo_url}@{c.tag or (c.id or '')[:7]}" for c in freight.commits or ()]
    parts += [
        f"{c.repo_url}{'/' + c.name if c.name else ''}:{c.version}" for c in freight.charts or ()
    ]
    return ", ".join(parts)


def _criteria_met(
    expression: str, candidate: Freight, discovery: DiscoveryResult, now: datetime.datetime
) -> bool:
    text = expression.strip()
    if not text.startswith("${{"):
        text = "${{ " + text + " }}"
    # commitFrom(url).CreatorDate from discovery; now() is the discovery's (workflow) time.
    dates = {
        commit.id: commit.creator_date
        for found in discovery.subscriptions
        for commit in found.commits[:1]
        if commit.creator_date is not None
    }
    env = {**artifact_functions(candidate, commit_dates=dates), expressions.NOW: now}
    try:
        value = expressions.render(text, env)
    except ExpressionError as err:
        raise ExpressionError(f"freightCreationCriteria.expression: {err}") from None
    if isinstance(value, str) and value in ("true", "false"):
        value = value == "true"
    if not isinstance(value, bool):
        raise ExpressionError(
            f"freightCreationCriteria.expression must be true or false, got {value!r}"
        )
    return value
