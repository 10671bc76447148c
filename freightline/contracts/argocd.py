"""Argo CD in Freightline's domain: step inputs, authorisation, and Stage health.

Pure code shared by the ``Promotion`` workflow (which builds an
:class:`ArgoCDStepInput` for ``argocd-update`` / ``argocd-wait``), the Argo CD
activities (``activities/argocd.py``, which talk to Argo CD's REST API) and the
``Stage`` workflow (which asks ``argocd_health`` for the :class:`StageHealth` of
the Applications its last successful promotion updated).

Nothing here holds credentials: the Argo CD server and token live in the
worker's environment (``ARGOCD_SERVER``, ``ARGOCD_AUTH_TOKEN``) and are read by
the activities only.

Stage health follows Kargo's ``argocd-update`` health check: per Application,
an error condition (``ComparisonError``, ``InvalidSpecError``) is Unhealthy; a
sync in progress, or a status not reassessed since the last operation
finished, is Unknown; a synced revision other than the desired one is
Unhealthy; then Argo CD health maps Healthy → Healthy, Progressing / Suspended
→ Progressing, anything else → Unhealthy. The Stage gets the most severe state
(Healthy < Progressing < Unknown < Unhealthy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.exceptions import TimeoutType

from freightline.contracts.model import Contract
from freightline.contracts.promotion import PromotionResult, StepStatus
from freightline.errors import ConfigError
from freightline.kargo.resources import parse_duration

AUTHORIZED_STAGE_ANNOTATION = "kargo.akuity.io/authorized-stage"
"""An Application lists the ``<project>:<stage>`` allowed to change it (Kargo's rule)."""
PROMOTION_INFO = "kargo.akuity.io/promotion"
"""Operation ``info`` naming the promotion that started a sync (Kargo's key)."""
STEP_INFO = "freightline.dev/step"
"""Operation ``info`` naming the step alias within that promotion."""
DEFAULT_NAMESPACE = "argocd"
DEFAULT_TIMEOUT = timedelta(minutes=5)

HEALTH_ACTIVITY = "argocd_health"
SHARD_PICKUP_TIMEOUT = timedelta(minutes=5)
"""How long a sharded Stage's Argo CD activity waits for a worker of its shard to take it."""


class ArgoCDStepInput(Contract):
    """What the workflow hands an Argo CD step activity: references and rendered config only."""

    project: str
    stage: str
    promotion: str
    """The promotion's ID; recorded on the sync operation so a retry recognises its own sync."""
    step: str
    """The step's alias."""
    uses: str
    config: dict[str, Any] = Field(default_factory=dict)
    """The step's config with every ``${{ }}`` already rendered by the workflow."""
    timeout_seconds: float = DEFAULT_TIMEOUT.total_seconds()


def step_timeout(config: Mapping[str, Any], retry_timeout: str | None) -> timedelta:
    """The step's timeout: config ``timeout``, else the step's ``retry.timeout``, else 5m."""
    for where, text in (
        ("config.timeout", config.get("timeout")),
        ("retry.timeout", retry_timeout),
    ):
        if text is None or text == "":
            continue
        try:
            timeout = parse_duration(str(text))
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
        if timeout > timedelta(0):
            return timeout
    return DEFAULT_TIMEOUT


def shard_unserved(shard: str | None, queue: str | None, error: BaseException) -> str | None:
    """What to say when a sharded Stage's Argo CD activity found no worker, else None."""
    cause = getattr(error, "cause", None) or error.__cause__
    if not (
        shard
        and isinstance(cause, TemporalTimeoutError)
        and cause.type is TimeoutType.SCHEDULE_TO_START
    ):
        return None
    return (
        f'no worker of shard "{shard}" took the Argo CD activity within '
        f"{SHARD_PICKUP_TIMEOUT} (task queue {queue}): run one next to that cluster's "
        f"Argo CD with FREIGHTLINE_WORKER_ROLE=argocd FREIGHTLINE_SHARD={shard}"
    )


# --- authorisation --------------------------------------------------------------------------


def authorization_problem(metadata: Mapping[str, Any], project: str, stage: str) -> str | None:
    """Why ``<project>:<stage>`` may not change the Application, or None when it may.

    The annotation holds ``<project>:<stage>`` (a comma-separated list is
    accepted); globs are refused, as Kargo refuses them.
    """
    name = metadata.get("name", "?")
    namespace = metadata.get("namespace", DEFAULT_NAMESPACE)
    app = f'Argo CD Application "{name}" in namespace "{namespace}"'
    wanted = f"{project}:{stage}"
    value = (metadata.get("annotations") or {}).get(AUTHORIZED_STAGE_ANNOTATION)
    if value is None:
        return (
            f"{app} does not permit changes by Stage {wanted}: it has no "
            f'{AUTHORIZED_STAGE_ANNOTATION} annotation (add "{AUTHORIZED_STAGE_ANNOTATION}: '
            f'{wanted}" to the Application to authorise it)'
        )
    entries = [entry.strip() for entry in str(value).split(",") if entry.strip()]
    annotation = f'{app}: annotation {AUTHORIZED_STAGE_ANNOTATION} "{value}"'
    for entry in entries:
        if "*" in entry:
            return f"{annotation} uses a glob; name the stage"
        if entry.count(":") != 1:
            return f"{annotation} is not <project>:<stage>"
    if wanted in entries:
        return None
    return (
        f"{app} does not permit changes by Stage {wanted}: its annotation "
        f'{AUTHORIZED_STAGE_ANNOTATION} is "{value}"'
    )


# --- reading an Application's JSON ------------------------------------------------------------


def sources_of(app: Mapping[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The Application's sources and whether it uses ``spec.sources`` (multi-source)."""
    spec = app.get("spec") or {}
    if spec.get("sources"):
        return [dict(s) for s in spec["sources"]], True
    return [dict(spec.get("source") or {})], False


def synced_revisions(result: Mapping[str, Any] | None) -> list[str]:
    """``revisions`` of a ``syncResult`` or ``sync`` status, else its single ``revision``."""
    if not result:
        return []
    revisions = result.get("revisions")
    if revisions:
        return [str(r) for r in revisions]
    revision = result.get("revision")
    return [str(revision)] if revision else []


def revisions_match(observed: Sequence[str], desired: Sequence[str]) -> bool:
    """Every desired revision ("" means any) equals the observed one at the same position."""
    if not any(desired):
        return True
    if len(observed) != len(desired):
        return False
    return all(not want or want == seen for seen, want in zip(observed, desired, strict=True))


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def reassessed_after_operation(app: Mapping[str, Any]) -> bool:
    """Whether health and sync were computed after the last operation finished (Kargo's rule)."""
    status = app.get("status") or {}
    finished = parse_time((status.get("operationState") or {}).get("finishedAt"))
    if finished is None:
        return True
    reconciled = parse_time(status.get("reconciledAt"))
    return reconciled is not None and reconciled >= finished


def health_message(app: Mapping[str, Any]) -> str:
    """The app's own words about its health: its message, else its unhealthy resources'."""
    status = app.get("status") or {}
    health = status.get("health") or {}
    if health.get("message"):
        return str(health["message"])
    wanted = health.get("status")
    messages = []
    for resource in status.get("resources") or []:
        resource_health = resource.get("health") or {}
        if resource_health.get("status") == wanted and resource_health.get("message"):
            messages.append(
                f"{resource.get('kind')} {resource.get('name')}: {resource_health['message']}"
            )
    return "; ".join(messages)


# --- Stage health -----------------------------------------------------------------------------


class HealthState(StrEnum):
    """A Stage's health, as Kargo reports it."""

    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    UNKNOWN = "Unknown"
    UNHEALTHY = "Unhealthy"

    def merge(self, other: HealthState) -> HealthState:
        """The more severe of the two."""
        return max(self, other, key=_SEVERITY.index)


_SEVERITY = [
    HealthState.HEALTHY,
    HealthState.PROGRESSING,
    HealthState.UNKNOWN,
    HealthState.UNHEALTHY,
]


class AppRef(Contract):
    """An Application a Stage's health depends on, and the revisions it should run."""

    name: str
    namespace: str = DEFAULT_NAMESPACE
    desired_revisions: tuple[str, ...] = ()
    """Per source, in order; "" for a source with no desired revision."""


class AppStatus(Contract):
    """What Argo CD reported for one Application."""

    name: str
    namespace: str = DEFAULT_NAMESPACE
    health: str = "Unknown"
    sync: str = "Unknown"
    revisions: tuple[str, ...] = ()
    """The revisions the last sync operation deployed."""


class StageHealth(Contract):
    """A Stage's health derived from its Applications."""

    status: HealthState
    issues: tuple[str, ...] = ()
    apps: tuple[AppStatus, ...] = ()


class ArgoCDHealthRequest(Contract):
    """The input of ``argocd_health``."""

    apps: tuple[AppRef, ...] = ()


def app_status(ref: AppRef, app: Mapping[str, Any] | None) -> AppStatus:
    if app is None:
        return AppStatus(name=ref.name, namespace=ref.namespace)
    status = app.get("status") or {}
    return AppStatus(
        name=ref.name,
        namespace=ref.namespace,
        health=str((status.get("health") or {}).get("status") or "Unknown"),
        sync=str((status.get("sync") or {}).get("status") or "Unknown"),
        revisions=tuple(synced_revisions((status.get("operationState") or {}).get("syncResult"))),
    )


def assess_app(
    ref: AppRef, app: Mapping[str, Any] | None, error: str | None = None
) -> tuple[HealthState, str | None]:
    """One Application's contribution to Stage health, and the issue if not Healthy."""
    where = f'Argo CD Application "{ref.name}" in namespace "{ref.namespace}"'
    if app is None:
        return HealthState.UNKNOWN, f"{where}: {error or 'not found'}"
    status = app.get("status") or {}
    if not reassessed_after_operation(app):
        return (
            HealthState.UNKNOWN,
            f"{where} was not reconciled after its most recent operation completed",
        )
    errors = [
        f"{where} has {c.get('type')} condition: {c.get('message', '')}"
        for c in status.get("conditions") or []
        if c.get("type") in ("ComparisonError", "InvalidSpecError")
    ]
    if errors:
        return HealthState.UNHEALTHY, "; ".join(errors)
    if any(ref.desired_revisions):
        state = status.get("operationState") or {}
        if app.get("operation") or not state.get("finishedAt"):
            return HealthState.UNKNOWN, f"{where} is being synced"
        observed = synced_revisions(state.get("syncResult"))
        if not revisions_match(observed, ref.desired_revisions):
            return (
                HealthState.UNHEALTHY,
                f"{where} is synced to {', '.join(observed) or 'nothing'}, "
                f"not the desired {', '.join(r for r in ref.desired_revisions if r)}",
            )
    health = str((status.get("health") or {}).get("status") or "")
    if health == "Healthy":
        return HealthState.HEALTHY, None
    if health in ("Progressing", ""):
        return HealthState.PROGRESSING, f"{where} is progressing"
    if health == "Suspended":
        return HealthState.PROGRESSING, f"{where} is suspended"
    message = health_message(app)
    return (
        HealthState.UNHEALTHY,
        f'{where} has health state "{health}"' + (f": {message}" if message else ""),
    )


def stage_health(
    observations: Iterable[tuple[AppRef, Mapping[str, Any] | None, str | None]],
) -> StageHealth:
    """Combine (ref, Application JSON or None, error) observations into the Stage's health.

    No Applications at all is Healthy: the Stage has nothing Argo CD could report on.
    """
    overall = HealthState.HEALTHY
    issues: list[str] = []
    apps: list[AppStatus] = []
    for ref, app, error in observations:
        state, issue = assess_app(ref, app, error)
        overall = overall.merge(state)
        if issue:
            issues.append(issue)
        apps.append(app_status(ref, app))
    return StageHealth(status=overall, issues=tuple(issues), apps=tuple(apps))


def apps_of(result: PromotionResult) -> list[AppRef]:
    """The Applications a successful promotion's ``argocd-update`` steps brought to Healthy.

    This is what a Stage's health is derived from (Kargo's health checks registered
    by ``argocd-update``).
    """
    refs: dict[tuple[str, str], AppRef] = {}
    for outcome in result.steps:
        if outcome.uses != "argocd-update" or outcome.status is not StepStatus.SUCCEEDED:
            continue
        for app in outcome.outputs.get("apps") or []:
            ref = AppRef(
                name=str(app["name"]),
                namespace=str(app.get("namespace") or DEFAULT_NAMESPACE),
                desired_revisions=tuple(str(r) for r in app.get("desiredRevisions") or ()),
            )
            refs[(ref.namespace, ref.name)] = ref
    return list(refs.values())
