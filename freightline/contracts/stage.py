"""A Stage's state and the rules that move Freight into it (pure; the Stage workflow applies them).

Availability follows Kargo: Freight is available to a Stage when it was
approved for the Stage by hand, or comes straight from a Warehouse the Stage
requests ``direct``, or was verified in one (``OneOf``) or all (``All``) of
the upstream Stages it lists — and, with ``requiredSoakTime``, has been
verified there for at least that long (counted from its verification
upstream). Auto-promotion (enabled per Stage by the ProjectConfig's
``promotionPolicies``) picks the newest available Freight of each origin;
manually promoting other Freight holds auto-promotion for that origin until
the newest candidate is promoted again.

A Stage fed by several Warehouses holds one Freight per origin (Kargo's
FreightCollection, ``HistoryEntry.collection``): promoting Freight replaces its
own origin's and keeps the others'; verification verifies the whole collection,
and each Freight of a verified collection becomes available downstream.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from freightline.contracts.argocd import AppRef, HealthState, StageHealth
from freightline.contracts.model import Contract, State
from freightline.contracts.promotion import PromotionPhase
from freightline.contracts.stage_requests import RetireRequest
from freightline.kargo.analysis import AnalysisPhase, AnalysisRunStatus
from freightline.kargo.resources import (
    AnalysisTemplate,
    ClusterAnalysisTemplate,
    Freight,
    FreightRequest,
    Stage,
    parse_duration,
)

HISTORY_LIMIT = 10
AVAILABLE_LIMIT = 50


class FreightAvailable(Contract):
    """The ``freight_available`` signal: Freight a Stage may take.

    ``source`` says why: discovered by a Warehouse the Stage requests
    directly from, or verified in an upstream Stage (``via`` names it).
    """

    freight: Freight
    source: Literal["warehouse", "stage"]
    via: str
    verified_at: datetime | None = None
    """For ``source="stage"``: when the upstream Stage verified it (soak time counts from here)."""


class StageConfig(State):
    """What ``freightline apply`` tells a Stage workflow (its ``configure`` update)."""

    project: str
    stage: Stage
    auto_promotion: bool = False
    downstream: tuple[str, ...] = ()
    """Stages that request Freight verified here."""
    analysis_templates: dict[str, AnalysisTemplate] = Field(default_factory=dict)
    """The AnalysisTemplates the Stage's verification uses."""
    cluster_analysis_templates: dict[str, ClusterAnalysisTemplate] = Field(default_factory=dict)
    """The ClusterAnalysisTemplates it uses (``kind: ClusterAnalysisTemplate``)."""
    rollback_on_verification: tuple[AnalysisPhase, ...] = ()
    """Verification phases (Failed, Error) after which the Stage returns to its previous Freight."""
    origins: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """For a Stage fed by several Warehouses: each one → what it subscribes to, so that
    verification's ``imageFrom(url)`` finds the origin (``requested_origins``)."""
    rollback_on_promotion: tuple[PromotionPhase, ...] = ()
    """Promotion phases (Failed, Errored) after which the Stage returns to its last verified
    Freight (``autoRollback.onPromotion``)."""


class AvailableFreight(State):
    """Freight this Stage knows of, and why it may (or may not yet) take it."""

    freight: Freight
    direct: bool = False
    approved_by: str | None = None
    verified_in: dict[str, datetime] = Field(default_factory=dict)
    first_seen: datetime


class PromotionTicket(State):
    """A promotion the Stage will run (queued) or is running."""

    promotion: str
    """The ``Promotion`` workflow ID it runs as."""
    freight: str
    freight_alias: str | None = None
    requested_by: str
    requested_at: datetime
    auto: bool = False
    rollback_of: str | None = None
    """Set on a rollback: the Freight whose verification or promotion failed. A rollback is never
    rolled back."""
    override_windows: bool = False
    """Passed to the Promotion: do not wait for a promotion window."""


class FreightRef(State):
    """One Freight of a Stage's collection (Kargo's FreightReference, by ID)."""

    freight: str
    freight_alias: str | None = None
    versions: tuple[str, ...] = ()


class HistoryEntry(State):
    """One promotion's result: the Freight it brought and the Stage's whole collection after
    it (newest first in ``StageState.history``; Kargo's FreightHistory)."""

    freight: str
    freight_alias: str | None = None
    promotion: str
    promoted_at: datetime
    verified: bool = False
    """The collection passed this Stage's verification."""
    versions: tuple[str, ...] = ()
    origin: str = ""
    """The Warehouse ``freight`` came from."""
    collection: dict[str, FreightRef] = Field(default_factory=dict)
    """Origin Warehouse → the Stage's Freight from it after this promotion (``freight``
    included): Kargo's FreightCollection. Empty only in state kept before collections."""


class VerificationRecord(State):
    """One verification run of Freight in this Stage (newest first in ``StageState.verifications``)."""

    verification: str
    """The ``Verification`` workflow ID (empty when there was nothing to verify)."""
    freight: str
    freight_alias: str | None = None
    phase: AnalysisPhase
    message: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    result: AnalysisRunStatus | None = None


class LastPromotion(State):
    promotion: str
    freight: str
    freight_alias: str | None = None
    phase: PromotionPhase
    message: str = ""
    finished_at: datetime


class StageState(State):
    """Everything the Stage workflow carries across continue-as-new; also its status query."""

    config: StageConfig
    available: dict[str, AvailableFreight] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list)
    queue: list[PromotionTicket] = Field(default_factory=list)
    running: PromotionTicket | None = None
    last_promotion: LastPromotion | None = None
    verifications: list[VerificationRecord] = Field(default_factory=list)
    verifying: VerificationRecord | None = None
    auto_hold: dict[str, str] = Field(default_factory=dict)
    """Origin warehouse → the Freight a person chose instead of the newest (auto-promotion paused)."""
    auto_paused_by: str | None = None
    """Who paused the Stage's auto-promotion (``pause_auto_promotion``); None: not paused."""
    health: HealthState = HealthState.UNKNOWN
    """Kargo's Stage health (Healthy, Progressing, Unknown, Unhealthy) from its Argo CD apps."""
    health_apps: list[AppRef] = Field(default_factory=list)
    """The Applications the last successful promotion updated (what health is derived from)."""
    health_detail: StageHealth | None = None
    health_checked_at: datetime | None = None
    retiring: RetireRequest | None = None
    """Set when the Stage left its project: the workflow ends once its promotion stopped."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Kargo's ``status.metadata``: what ``set-metadata`` steps wrote (``stageMetadata()``)."""

    @property
    def name(self) -> str:
        return self.config.stage.metadata.name

    @property
    def current(self) -> HistoryEntry | None:
        """The last successful promotion (its ``collection`` is the Stage's Freight now)."""
        return self.history[0] if self.history else None

    @property
    def current_collection(self) -> dict[str, FreightRef]:
        """The Stage's current Freight, one per origin Warehouse (empty: none yet)."""
        return self.history[0].collection if self.history else {}

    @model_validator(mode="after")
    def _one_freight_per_origin(self) -> StageState:
        # State carried across continue-as-new from before collections held one Freight
        # per history entry: it becomes that entry's collection, under its origin.
        requested = [r.origin.name for r in self.config.stage.spec.requested_freight]
        for entry in self.history:
            if entry.collection:
                continue
            known = self.available.get(entry.freight)
            origin = entry.origin or (
                known.freight.origin.name if known else (requested[0] if requested else "")
            )
            entry.origin = origin
            entry.collection = {
                origin: FreightRef(
                    freight=entry.freight,
                    freight_alias=entry.freight_alias,
                    versions=entry.versions,
                )
            }
        return self


def versions_of(freight: Freight) -> tuple[str, ...]:
    """Short artifact versions for displays: ``nginx:1.29.1``, ``repo@abc1234``, ``chart:1.2.3``."""
    parts = [f"{(i.repo_url or '').rsplit('/', 1)[-1]}:{i.tag}" for i in freight.images or ()]
    parts += [
        f"{(c.repo_url or '').rsplit('/', 1)[-1]}@{(c.id or '')[:7]}" for c in freight.commits or ()
    ]
    parts += [f"{c.name}:{c.version}" for c in freight.charts or ()]
    return tuple(parts)


def freight_details(freight: Freight) -> str:
    """A promotion's static details in the Temporal UI: the Freight and its artifacts."""
    lines = [f"freight `{freight.metadata.name}` ({freight.alias})"]
    lines += [f"- image {i.repo_url}:{i.tag}" for i in freight.images or ()]
    lines += [f"- commit {c.repo_url}@{(c.id or '')[:12]}" for c in freight.commits or ()]
    lines += [f"- chart {c.repo_url}/{c.name}:{c.version}" for c in freight.charts or ()]
    return "\n".join(lines)


def request_for(stage: Stage, freight: Freight) -> FreightRequest | None:
    """The Stage's ``requestedFreight`` entry for this Freight's origin, if it requests it."""
    for request in stage.spec.requested_freight:
        if (
            request.origin.name == freight.origin.name
            and request.origin.kind == freight.origin.kind
        ):
            return request
    return None


def accepts(stage: Stage, offer: FreightAvailable) -> bool:
    """Whether an offer is one this Stage requested (right origin, right source)."""
    request = request_for(stage, offer.freight)
    if request is None:
        return False
    if offer.source == "warehouse":
        return bool(request.sources.direct)
    return offer.via in (request.sources.stages or ())


def ready_at(stage: Stage, entry: AvailableFreight) -> datetime | None:
    """When the Freight becomes (or became) available to the Stage; None if it never will as is."""
    if entry.approved_by or entry.direct:
        return entry.first_seen
    request = request_for(stage, entry.freight)
    if request is None:
        return None
    upstream = request.sources.stages or []
    soak = (
        parse_duration(request.sources.required_soak_time)
        if request.sources.required_soak_time
        else timedelta(0)
    )
    times = [entry.verified_in[s] + soak for s in upstream if s in entry.verified_in]
    if not times:
        return None
    if request.sources.availability_strategy == "All":
        return max(times) if len(times) == len(upstream) else None
    return min(times)


def is_available(stage: Stage, entry: AvailableFreight, now: datetime) -> bool:
    when = ready_at(stage, entry)
    return when is not None and when <= now


def record_offer(state: StageState, offer: FreightAvailable, now: datetime) -> bool:
    """Remember an offer; True if it changed what the Stage knows."""
    if not accepts(state.config.stage, offer):
        return False
    freight = offer.freight
    entry = state.available.get(freight.metadata.name)
    if entry is None:
        entry = AvailableFreight(freight=freight, first_seen=now)
        state.available[freight.metadata.name] = entry
        _trim(state)
    if offer.source == "warehouse":
        if entry.direct:
            return False
        entry.direct = True
        return True
    if offer.via in entry.verified_in:
        return False
    entry.verified_in[offer.via] = offer.verified_at or now
    return True


def _trim(state: StageState) -> None:
    # The current collection's Freight stay: they are offered downstream once verified.
    current = {ref.freight for ref in state.current_collection.values()}
    while len(state.available) > AVAILABLE_LIMIT:
        spare = [e for e in state.available.values() if e.freight.metadata.name not in current]
        if not spare:
            return
        oldest = min(spare, key=lambda e: e.first_seen)
        del state.available[oldest.freight.metadata.name]


def newest_available(state: StageState, origin: str, now: datetime) -> AvailableFreight | None:
    """The newest Freight of an origin available to the Stage (by discovery, then first seen)."""
    candidates = [
        e
        for e in state.available.values()
        if e.freight.origin.name == origin and is_available(state.config.stage, e, now)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda e: (e.freight.discovered_at or e.first_seen, e.first_seen))


def auto_promotion_candidates(
    state: StageState, now: datetime, *, per_origin: bool = True
) -> list[AvailableFreight]:
    """Freight auto-promotion should promote now (newest per origin, not held, not already
    here). ``per_origin=False``: "here" is only the last promoted Freight (runs started
    before collections)."""
    if not state.config.auto_promotion or state.auto_paused_by is not None:
        return []
    busy = {t.freight for t in state.queue} | ({state.running.freight} if state.running else set())
    if per_origin:
        here = {ref.freight for ref in state.current_collection.values()}
    else:
        here = {state.current.freight} if state.current else set()
    chosen = []
    for request in state.config.stage.spec.requested_freight:
        origin = request.origin.name
        if origin in state.auto_hold:
            continue
        candidate = newest_available(state, origin, now)
        if candidate is None:
            continue
        name = candidate.freight.metadata.name
        if name not in here and name not in busy:
            chosen.append(candidate)
    return chosen


def next_ready_time(state: StageState, now: datetime) -> datetime | None:
    """The earliest future moment some known Freight becomes available (a soak timer ends)."""
    future = [
        when
        for e in state.available.values()
        if (when := ready_at(state.config.stage, e)) is not None and when > now
    ]
    return min(future) if future else None


def note_manual_choice(state: StageState, freight: Freight, now: datetime) -> None:
    """A person promoted ``freight``: hold auto-promotion unless it is the newest candidate."""
    origin = freight.origin.name
    newest = newest_available(state, origin, now)
    if newest is None or newest.freight.metadata.name == freight.metadata.name:
        state.auto_hold.pop(origin, None)
    else:
        state.auto_hold[origin] = freight.metadata.name


def record_verification(state: StageState, record: VerificationRecord) -> None:
    """Keep the last verification runs, newest first; mark the Freight verified if it passed."""
    state.verifications.insert(0, record)
    del state.verifications[HISTORY_LIMIT:]
    if record.phase == "Successful":
        for entry in state.history:
            if entry.freight == record.freight:
                entry.verified = True
                break


def record_promoted(state: StageState, ticket: PromotionTicket, now: datetime) -> HistoryEntry:
    """The promotion succeeded: the Freight is now the Stage's current Freight of its origin,
    the other origins' kept (a new collection at the top of the history)."""
    entry = state.available.get(ticket.freight)
    versions = versions_of(entry.freight) if entry else ()
    origin = entry.freight.origin.name if entry else _origin_of_ticket(state, ticket)
    collection = {
        **state.current_collection,
        origin: FreightRef(
            freight=ticket.freight, freight_alias=ticket.freight_alias, versions=versions
        ),
    }
    record = HistoryEntry(
        freight=ticket.freight,
        freight_alias=ticket.freight_alias,
        promotion=ticket.promotion,
        promoted_at=now,
        versions=versions,
        origin=origin,
        collection=dict(sorted(collection.items())),
    )
    state.history.insert(0, record)
    del state.history[HISTORY_LIMIT:]
    return record


def _origin_of_ticket(state: StageState, ticket: PromotionTicket) -> str:
    """The origin of promoted Freight the Stage no longer keeps: where it was before, else
    the Stage's first requested Warehouse."""
    for origin, ref in state.current_collection.items():
        if ref.freight == ticket.freight:
            return origin
    requested = state.config.stage.spec.requested_freight
    return requested[0].origin.name if requested else ""


def collection_freight(state: StageState) -> list[Freight]:
    """The Freight of the Stage's current collection that it still knows, by origin."""
    found = []
    for ref in state.current_collection.values():
        entry = state.available.get(ref.freight)
        if entry is not None:
            found.append(entry.freight)
    return found


def previous_of_origin(state: StageState, failed: str, origin: str, since: int = 1) -> str | None:
    """The Freight of ``origin`` the Stage held in its last verified collection before
    ``failed`` came (what a rollback promotes), or None; ``since`` as in the Stage's
    ``_roll_back`` (0 after a failed promotion, which never entered the history)."""
    for entry in state.history[since:]:
        ref = entry.collection.get(origin)
        if entry.verified and ref is not None and ref.freight != failed:
            return ref.freight
    return None


def collection_summary(collection: dict[str, FreightRef]) -> str:
    """``origin: alias (versions)``, one per origin, for the Temporal UI's details."""
    return "; ".join(
        f"{origin}: `{ref.freight_alias or ref.freight[:7]}` ({', '.join(ref.versions)})"
        for origin, ref in collection.items()
    )
