"""Argo CD activities: ``argocd-update``, ``argocd-wait`` and Stage health, on Argo CD's REST API.

Configuration comes from the **worker's** settings only (read from its environment
at start, ``freightline.settings.ArgoCDSettings``), never from a workflow:

- ``ARGOCD_SERVER``: the API server, ``https://argocd.example.com`` (a bare host means
  https), or the sandbox emulator's ``http://127.0.0.1:PORT``;
- ``ARGOCD_AUTH_TOKEN``: a bearer token (an Argo CD account or project token);
- ``ARGOCD_INSECURE``: ``true`` to skip TLS verification (self-signed dev servers).

``argocd-update`` (Kargo's step, plus Kargo's ``selector`` to pick apps by label) refuses
every Application whose ``kargo.akuity.io/authorized-stage`` annotation does not list
``<project>:<stage>`` before changing anything, patches sources (``targetRevision``,
kustomize images, helm parameters) with a merge patch when they differ, starts a sync to
the desired revision, and then waits **in the same activity**, polling with
``refresh=normal`` and heartbeating on every poll, until the operation completed, its
``syncResult`` revision(s) equal the desired ones, the app is Synced at them and Healthy.
A Failed/Error operation, Degraded health or the timeout fail the step with Argo CD's own
message.

Retry safety: each sync carries operation ``info`` naming the promotion and step
(``kargo.akuity.io/promotion``, ``freightline.dev/step``), and the activity records the
syncs it started (app, revisions, operation ``startedAt``) in its heartbeat details. A
retry (a crashed worker, a 5xx) that finds its own operation on the app, running or
finished, or its recorded ``startedAt`` in the app's history, does not sync again; it
only waits.

Errors: connection failures, timeouts, 429 and 5xx are ``ArgoCDUnavailableError``
(retryable: the activity's retry policy tries again); 401 is a ``CredentialError``; an
unknown or unreadable app (Argo CD answers 403 "permission denied" for both), an
unauthorised app, or a config that matches no source is a ``ConfigError`` (the promotion
is Errored); anything Argo CD says about the operation or health (a refused or failed
sync, Degraded, the timeout) is a ``StepError`` (Failed): the table is in
``freightline/errors.py``. None of them ever carries the token.

Requests per ``argocd-update`` of one app: 1 GET, 0 or 1 PATCH, 1 sync POST, then one
``GET ?refresh=normal`` per poll (after 0.1 s, backing off to every second) until done.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import Field, model_validator
from temporalio import activity
from temporalio.exceptions import CancelledError

from activities import boundary
from activities.step_context import StepConfig, parse_config
from freightline.contracts.argocd import (
    DEFAULT_NAMESPACE,
    HEALTH_ACTIVITY,
    PROMOTION_INFO,
    STEP_INFO,
    AppRef,
    ArgoCDHealthRequest,
    ArgoCDStepInput,
    HealthState,
    StageHealth,
    authorization_problem,
    health_message,
    reassessed_after_operation,
    revisions_match,
    sources_of,
    stage_health,
    synced_revisions,
)
from freightline.contracts.promotion import StepOutcome, StepStatus
from freightline.contracts.steps import step_named
from freightline.errors import (
    ArgoCDResponseError,
    ArgoCDUnavailableError,
    ConfigError,
    CredentialError,
    FreightlineError,
    StepError,
)
from freightline.kargo.freight import same_repository
from freightline.logging import get_logger
from freightline.settings import (
    ARGOCD_AUTH_TOKEN_ENV,
    ARGOCD_INSECURE_ENV,
    ARGOCD_SERVER_ENV,
    ArgoCDSettings,
)

__all__ = [
    "ARGOCD_AUTH_TOKEN_ENV",
    "ARGOCD_INSECURE_ENV",
    "ARGOCD_SERVER_ENV",
    "ArgoCDActivities",
    "ArgoCDClient",
    "ArgoCDResponseError",
    "ArgoCDSettings",
    "ArgoCDUnavailableError",
    "ArgoCDUpdateConfig",
    "ArgoCDWaitConfig",
]

POLL_INTERVAL = timedelta(seconds=1)
FIRST_POLL = timedelta(milliseconds=100)
REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=5.0)

_RUNNING_PHASES = ("Running", "Terminating")
_FAILED_PHASES = ("Failed", "Error")
_ANOTHER_OPERATION = "another operation is already in progress"
_SYNC_REASON = "Promotion triggered a sync of this Application resource."


# --- settings and client ----------------------------------------------------------------------


class ArgoCDClient:
    """Argo CD's REST API, the parts Freightline uses. Thread-safe (one ``httpx.Client``)."""

    def __init__(
        self,
        settings: ArgoCDSettings,
        *,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
        timeout: httpx.Timeout = REQUEST_TIMEOUT,
    ) -> None:
        token = settings.token_value()
        if not token:
            raise CredentialError(
                f"{ARGOCD_AUTH_TOKEN_ENV} is not set on the worker: Argo CD needs a bearer token"
            )
        self.server = settings.base_url
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            verify=not settings.insecure,
            timeout=timeout,
            event_hooks=dict(event_hooks or {}),
        )

    def close(self) -> None:
        self._http.close()

    def get_app(
        self, name: str, namespace: str | None = None, *, refresh: str | None = None
    ) -> dict[str, Any]:
        """``GET /api/v1/applications/{name}``; ``refresh=normal|hard`` refreshes first."""
        params = {"appNamespace": namespace} if namespace else {}
        if refresh:
            params["refresh"] = refresh
        try:
            app: dict[str, Any] = self._request("GET", _app_path(name), params=params)
        except ArgoCDResponseError as err:
            if err.status in (403, 404):
                # Argo CD answers 403 "permission denied" for an app that does not exist too.
                raise ConfigError(
                    f'Argo CD Application "{name}" in namespace '
                    f'"{namespace or DEFAULT_NAMESPACE}" does not exist or the worker\'s '
                    f"Argo CD account may not read it (Argo CD: {err.message})"
                ) from None
            raise
        return app

    def list_apps(self, selector: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """``GET /api/v1/applications?selector=``."""
        params = {"selector": selector}
        if namespace:
            params["appNamespace"] = namespace
        body = self._request("GET", "/api/v1/applications", params=params)
        return list(body.get("items") or [])

    def patch_app(
        self, name: str, namespace: str | None, patch: str, patch_type: str = "merge"
    ) -> dict[str, Any]:
        """``PATCH /api/v1/applications/{name}`` (``applicationApplicationPatchRequest``)."""
        body: dict[str, Any] = {"name": name, "patch": patch, "patchType": patch_type}
        if namespace:
            body["appNamespace"] = namespace
        app: dict[str, Any] = self._request("PATCH", _app_path(name), json=body)
        return app

    def sync_app(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/v1/applications/{name}/sync`` (``applicationApplicationSyncRequest``)."""
        app: dict[str, Any] = self._request("POST", f"{_app_path(name)}/sync", json=dict(body))
        return app

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        try:
            response = self._http.request(method, path, params=params, json=json)
        except httpx.TransportError as err:
            raise ArgoCDUnavailableError(
                f"Argo CD at {self.server}: {method} {path}: {type(err).__name__}: {err}"
            ) from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise ArgoCDUnavailableError(
                    f"Argo CD at {self.server}: {method} {path}: the answer is not JSON"
                ) from None
        code, message = _error_body(response)
        status = response.status_code
        if status == 429 or status >= 500:
            raise ArgoCDUnavailableError(
                f"Argo CD at {self.server}: {method} {path}: HTTP {status}: {message}"
            )
        if status == 401:
            raise CredentialError(
                f"Argo CD at {self.server} refused the worker's token "
                f"({ARGOCD_AUTH_TOKEN_ENV}): {message}"
            )
        raise ArgoCDResponseError(status, code, message)


def _app_path(name: str) -> str:
    return f"/api/v1/applications/{urllib.parse.quote(name, safe='')}"


def _error_body(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        code = body.get("code")
        message = body.get("message") or body.get("error") or response.reason_phrase
        return (code if isinstance(code, int) else None), str(message)
    return None, response.reason_phrase


# --- step configs (Kargo's argocd-update and argocd-wait) --------------------------------------


class LabelSelectorRequirement(StepConfig):
    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(StepConfig):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> LabelSelector:
        if not self.match_labels and not self.match_expressions:
            raise ValueError("a selector needs matchLabels or matchExpressions")
        return self

    def query(self) -> str:
        """The selector in Kubernetes' text form, as Argo CD's ``selector`` parameter takes it."""
        parts = [f"{key}={value}" for key, value in sorted(self.match_labels.items())]
        for requirement in self.match_expressions:
            values = ",".join(requirement.values)
            parts.append(
                {
                    "In": f"{requirement.key} in ({values})",
                    "NotIn": f"{requirement.key} notin ({values})",
                    "Exists": requirement.key,
                    "DoesNotExist": f"!{requirement.key}",
                }[requirement.operator]
            )
        return ",".join(parts)


class AppSelection(StepConfig):
    """``name`` or ``selector`` (exactly one), and an optional ``namespace``."""

    name: str | None = Field(default=None, min_length=1)
    namespace: str | None = Field(default=None, min_length=1)
    selector: LabelSelector | None = None

    @model_validator(mode="after")
    def _name_or_selector(self) -> AppSelection:
        if (self.name is None) == (self.selector is None):
            raise ValueError("give exactly one of name or selector")
        return self

    def describe(self) -> str:
        if self.name is not None:
            return f'"{self.name}"'
        assert self.selector is not None
        return f'matching "{self.selector.query()}"'


class KustomizeImageUpdate(StepConfig):
    repo_url: str = Field(alias="repoURL", min_length=1)
    tag: str | None = None
    digest: str | None = None
    new_name: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _tag_or_digest(self) -> KustomizeImageUpdate:
        if bool(self.tag) == bool(self.digest):
            raise ValueError("give exactly one of tag or digest")
        return self

    def image(self) -> str:
        """Argo CD's kustomize image override: ``repo[=newName]:tag`` or ``...@digest``."""
        text = self.repo_url + (f"={self.new_name}" if self.new_name else "")
        return f"{text}@{self.digest}" if self.digest else f"{text}:{self.tag}"


class KustomizeUpdates(StepConfig):
    images: list[KustomizeImageUpdate] = Field(min_length=1)


class HelmImageUpdate(StepConfig):
    key: str = Field(min_length=1)
    value: str


class HelmUpdates(StepConfig):
    images: list[HelmImageUpdate] = Field(min_length=1)


class SourceUpdate(StepConfig):
    repo_url: str = Field(alias="repoURL", min_length=1)
    chart: str | None = Field(default=None, min_length=1)
    desired_revision: str | None = Field(default=None, min_length=1)
    update_target_revision: bool = False
    kustomize: KustomizeUpdates | None = None
    helm: HelmUpdates | None = None

    @model_validator(mode="after")
    def _revision_for_target(self) -> SourceUpdate:
        if self.update_target_revision and not self.desired_revision:
            raise ValueError("updateTargetRevision: true needs desiredRevision")
        return self


class AppUpdate(AppSelection):
    sources: list[SourceUpdate] = Field(default_factory=list)


class ArgoCDUpdateConfig(StepConfig):
    """``argocd-update`` config (Kargo's schema; ``timeout`` is Freightline's addition)."""

    apps: list[AppUpdate] = Field(min_length=1)
    timeout: str | None = None


WaitCondition = Literal["health", "sync", "operation", "suspended", "degraded"]
_DEFAULT_WAIT_FOR: tuple[WaitCondition, ...] = ("health", "sync", "operation")  # Kargo's default


class AppWait(AppSelection):
    wait_for: list[WaitCondition] = Field(default_factory=lambda: list(_DEFAULT_WAIT_FOR))


class ArgoCDWaitConfig(StepConfig):
    """``argocd-wait`` config (Kargo's schema; ``timeout`` is Freightline's addition)."""

    apps: list[AppWait] = Field(min_length=1)
    timeout: str | None = None


# --- the work -------------------------------------------------------------------------------


@dataclass
class _Target:
    """One Application a step acts on, and how far it got."""

    name: str
    namespace: str
    namespace_param: str | None
    """Sent as ``appNamespace`` when the config named a namespace."""
    desired: list[str]
    multi: bool
    patch: dict[str, Any] | None = None
    state: Literal["pending", "syncing", "done"] = "pending"
    waiting: str = "not yet observed"
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def where(self) -> str:
        return f'Argo CD Application "{self.name}" in namespace "{self.namespace}"'


class _Progress:
    """The deadline and the syncs started so far, kept in the activity's heartbeat details."""

    def __init__(self, timeout: float) -> None:
        details = activity.info().heartbeat_details
        previous = details[0] if details and isinstance(details[0], dict) else {}
        deadline = previous.get("deadline")
        self.deadline = (
            datetime.fromisoformat(deadline)
            if isinstance(deadline, str)
            else datetime.now(UTC) + timedelta(seconds=timeout)
        )
        self.timeout = timeout
        self.syncs: dict[str, dict[str, Any]] = dict(previous.get("syncs") or {})

    def expired(self) -> bool:
        return datetime.now(UTC) >= self.deadline

    def beat(self) -> None:
        activity.heartbeat({"deadline": self.deadline.isoformat(), "syncs": self.syncs})


class ArgoCDActivities:
    """The Argo CD activities; holds the worker's Argo CD settings and one HTTP client."""

    def __init__(
        self,
        settings: ArgoCDSettings | None,
        *,
        poll_interval: timedelta = POLL_INTERVAL,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        self.settings = settings
        self.poll_interval = poll_interval
        self._event_hooks = event_hooks
        self._client: ArgoCDClient | None = None
        self._lock = threading.Lock()

    def client(self) -> ArgoCDClient:
        with self._lock:
            if self._client is None:
                if self.settings is None or not self.settings.server:
                    raise CredentialError(
                        f"{ARGOCD_SERVER_ENV} is not set on the worker: Argo CD steps need the "
                        f"Argo CD API server's URL ({ARGOCD_SERVER_ENV}) and a token "
                        f"({ARGOCD_AUTH_TOKEN_ENV}) in the worker's environment"
                    )
                self._client = ArgoCDClient(self.settings, event_hooks=self._event_hooks)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # activities ----------------------------------------------------------------------------

    @boundary.defn(name="argocd_update")
    def argocd_update(self, request: ArgoCDStepInput) -> StepOutcome:
        """Patch and sync authorised Applications, then wait until Synced and Healthy."""
        return self._run(request, self._update)

    @boundary.defn(name="argocd_wait")
    def argocd_wait(self, request: ArgoCDStepInput) -> StepOutcome:
        """Wait until Applications meet ``waitFor`` (health, sync, operation, ...)."""
        return self._run(request, self._wait)

    @boundary.defn(name=HEALTH_ACTIVITY)
    def argocd_health(self, request: ArgoCDHealthRequest) -> StageHealth:
        """A Stage's health from its Applications; never fails (problems are issues)."""
        if not request.apps:
            return StageHealth(status=HealthState.HEALTHY)
        try:
            client = self.client()
        except FreightlineError as err:
            return StageHealth(status=HealthState.UNKNOWN, issues=(str(err),))
        observations: list[tuple[AppRef, dict[str, Any] | None, str | None]] = []
        for ref in request.apps:
            namespace = ref.namespace if ref.namespace != DEFAULT_NAMESPACE else None
            try:
                observations.append((ref, client.get_app(ref.name, namespace), None))
            except FreightlineError as err:
                observations.append((ref, None, str(err)))
        return stage_health(observations)

    def _run(
        self,
        request: ArgoCDStepInput,
        body: Callable[[ArgoCDStepInput, Any], dict[str, Any]],
    ) -> StepOutcome:
        """Validate the config against the step's registered model, then run ``body``.

        An ``ArgoCDUnavailableError`` is retryable: the retry finds the syncs this
        attempt started in its heartbeat details.
        """
        try:
            definition = step_named(request.uses)
            model = definition.config_model() if definition is not None else None
            if model is None:
                raise ConfigError(f'"{request.uses}" is not an Argo CD step')
            outputs = body(request, parse_config(model, request.config))
        except FreightlineError as err:
            err.locate(
                f'step "{request.step}" ({request.uses})', step=request.step, uses=request.uses
            )
            raise
        return StepOutcome(
            alias=request.step, uses=request.uses, status=StepStatus.SUCCEEDED, outputs=outputs
        )

    # argocd-update -------------------------------------------------------------------------

    def _update(self, request: ArgoCDStepInput, config: ArgoCDUpdateConfig) -> dict[str, Any]:
        client = self.client()
        progress = _Progress(request.timeout_seconds)
        selected: list[tuple[AppUpdate, dict[str, Any]]] = []
        refusals: list[str] = []
        for entry in config.apps:
            for app in self._find(client, entry):
                problem = authorization_problem(app["metadata"], request.project, request.stage)
                if problem:
                    refusals.append(problem)
                else:
                    selected.append((entry, app))
        if refusals:
            raise ConfigError("; ".join(refusals) + "; nothing was changed")
        targets: dict[str, _Target] = {}
        for entry, app in selected:
            target = _plan_update(entry, app)
            targets.setdefault(target.key, target)
        # Every app is authorised and every update applies: only now change anything.
        log = get_logger(__name__)
        for target in targets.values():
            if target.patch is not None:
                client.patch_app(
                    target.name, target.namespace_param, _json_text(target.patch), "merge"
                )
                log.info("argocd app patched", app=target.key, step=request.step)
        self._await(
            client,
            request,
            progress,
            list(targets.values()),
            lambda target, app: self._advance_update(client, request, progress, target, app),
        )
        return {"apps": [t.outputs for t in targets.values()]}

    def _advance_update(
        self,
        client: ArgoCDClient,
        request: ArgoCDStepInput,
        progress: _Progress,
        target: _Target,
        app: dict[str, Any],
    ) -> None:
        if target.state == "pending":
            decision = _sync_decision(app, request, progress.syncs.get(target.key))
            if decision == "busy":
                state = (app.get("status") or {}).get("operationState") or {}
                target.waiting = (
                    "another operation is in progress"
                    + (f" ({state['message']})" if state.get("message") else "")
                    + "; syncing once it completes"
                )
                return
            if decision == "sync":
                self._start_sync(client, request, progress, target, app)
                return  # judge the operation on the next poll
            target.state = "syncing"
        _judge_update(target, app)

    def _start_sync(
        self,
        client: ArgoCDClient,
        request: ArgoCDStepInput,
        progress: _Progress,
        target: _Target,
        app: dict[str, Any],
    ) -> None:
        body = _sync_request(target, app, request)
        try:
            synced = client.sync_app(target.name, body)
        except ArgoCDResponseError as err:
            if _ANOTHER_OPERATION in err.message:
                target.waiting = f"Argo CD: {err.message}"
                return
            if err.status == 403 and "sync window" in err.message:
                target.waiting = f"Argo CD: {err.message}; retrying until the step times out"
                return
            raise StepError(f"{target.where}: Argo CD refused the sync: {err.message}") from None
        state = (synced.get("status") or {}).get("operationState") or {}
        target.state = "syncing"
        target.waiting = "sync started"
        progress.syncs[target.key] = {
            "revisions": list(_requested_revisions(body)),
            "startedAt": state.get("startedAt"),
        }
        progress.beat()
        get_logger(__name__).info(
            "argocd sync started",
            app=target.key,
            revisions=_requested_revisions(body),
            step=request.step,
            promotion=request.promotion,
        )

    # argocd-wait ---------------------------------------------------------------------------

    def _wait(self, request: ArgoCDStepInput, config: ArgoCDWaitConfig) -> dict[str, Any]:
        client = self.client()
        progress = _Progress(request.timeout_seconds)
        targets: dict[str, _Target] = {}
        conditions: dict[str, list[str]] = {}
        for entry in config.apps:
            for app in self._find(client, entry):
                target = _target_of(entry, app)
                if target.key not in targets:
                    targets[target.key] = target
                    conditions[target.key] = list(entry.wait_for)
        seen_health: dict[str, str] = {}

        def advance(target: _Target, app: dict[str, Any]) -> None:
            _judge_wait(target, app, conditions[target.key], seen_health.get(target.key))
            seen_health[target.key] = _health_of(app)

        self._await(client, request, progress, list(targets.values()), advance)
        return {"apps": [t.outputs for t in targets.values()]}

    # shared --------------------------------------------------------------------------------

    def _find(self, client: ArgoCDClient, entry: AppSelection) -> list[dict[str, Any]]:
        namespace = entry.namespace or DEFAULT_NAMESPACE
        if entry.name is not None:
            app = client.get_app(entry.name, entry.namespace)
            if _namespace_of(app) != namespace:
                raise ConfigError(
                    f'Argo CD Application "{entry.name}" is in namespace "{_namespace_of(app)}", '
                    f'not "{namespace}"'
                )
            return [app]
        assert entry.selector is not None
        apps = [
            app
            for app in client.list_apps(entry.selector.query(), entry.namespace)
            if _namespace_of(app) == namespace
        ]
        if not apps:
            raise ConfigError(
                f'no Argo CD Application in namespace "{namespace}" matches selector '
                f'"{entry.selector.query()}"'
            )
        return sorted(apps, key=lambda a: str(a["metadata"]["name"]))

    def _await(
        self,
        client: ArgoCDClient,
        request: ArgoCDStepInput,
        progress: _Progress,
        targets: list[_Target],
        advance: Callable[[_Target, dict[str, Any]], None],
    ) -> None:
        """Poll (refresh=normal) and heartbeat until every target is done or time runs out.

        Polls start fast (a sync of a small app is often done in well under a
        second) and back off to ``poll_interval``.
        """
        wait = min(FIRST_POLL, self.poll_interval)
        while True:
            for target in targets:
                if target.state != "done":
                    app = client.get_app(target.name, target.namespace_param, refresh="normal")
                    advance(target, app)
            pending = [t for t in targets if t.state != "done"]
            if not pending:
                return
            if progress.expired():
                raise StepError(
                    f"timed out after {_duration(progress.timeout)}: "
                    + "; ".join(f"{t.where}: {t.waiting}" for t in pending)
                )
            progress.beat()
            activity.wait_for_cancelled_sync(wait)
            wait = min(wait * 1.5, self.poll_interval)
            if activity.is_cancelled():
                raise CancelledError("cancelled while waiting for Argo CD")


# --- decisions (pure) -------------------------------------------------------------------------


def _namespace_of(app: Mapping[str, Any]) -> str:
    return str((app.get("metadata") or {}).get("namespace") or DEFAULT_NAMESPACE)


def _target_of(entry: AppSelection, app: Mapping[str, Any]) -> _Target:
    sources, multi = sources_of(app)
    return _Target(
        name=str(app["metadata"]["name"]),
        namespace=_namespace_of(app),
        namespace_param=entry.namespace,
        desired=[""] * len(sources),
        multi=multi,
    )


def _applies(update: SourceUpdate, source: Mapping[str, Any]) -> bool:
    if source.get("chart") or update.chart:
        return (
            same_repository("chart", source.get("repoURL"), update.repo_url)
            and source.get("chart") == update.chart
        )
    return same_repository("git", source.get("repoURL"), update.repo_url)


def _image_name(image: str) -> str:
    """The image an Argo CD kustomize override is about (before ``=``, ``@`` or the tag)."""
    name = image.split("=", 1)[0].split("@", 1)[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


def _apply(update: SourceUpdate, source: dict[str, Any]) -> None:
    if update.update_target_revision and update.desired_revision:
        source["targetRevision"] = update.desired_revision
    if update.kustomize is not None:
        kustomize = source.setdefault("kustomize", {})
        images = list(kustomize.get("images") or [])
        for image in update.kustomize.images:
            text = image.image()
            # Replace this image's override, keep overrides of other images.
            images = [i for i in images if _image_name(i) != image.repo_url]
            images.append(text)
        kustomize["images"] = images
    if update.helm is not None:
        helm = source.setdefault("helm", {})
        parameters = list(helm.get("parameters") or [])
        for change in update.helm.images:
            parameter = {"name": change.key, "value": change.value}
            for index, existing in enumerate(parameters):
                if existing.get("name") == change.key:
                    parameters[index] = {**existing, **parameter}
                    break
            else:
                parameters.append(parameter)
        helm["parameters"] = parameters


def _plan_update(entry: AppUpdate, app: Mapping[str, Any]) -> _Target:
    target = _target_of(entry, app)
    sources, multi = sources_of(app)
    desired_sources = copy.deepcopy(sources)
    for update in entry.sources:
        for index, source in enumerate(desired_sources):
            if _applies(update, source):
                _apply(update, source)
                target.desired[index] = update.desired_revision or ""
                break
        else:
            chart = f' and chart "{update.chart}"' if update.chart else ""
            raise ConfigError(
                f'no source of {target.where} matches repoURL "{update.repo_url}"{chart}'
            )
    if desired_sources != sources:
        spec = {"sources": desired_sources} if multi else {"source": desired_sources[0]}
        target.patch = {"spec": spec}
    return target


def _info(state_or_operation: Mapping[str, Any]) -> dict[str, str]:
    operation = state_or_operation.get("operation") or {}
    return {str(i.get("name")): str(i.get("value")) for i in operation.get("info") or []}


def _sync_decision(
    app: Mapping[str, Any], request: ArgoCDStepInput, recorded: Mapping[str, Any] | None
) -> Literal["ours", "busy", "sync"]:
    """Whether this step already started the app's sync (a retry), must wait, or may sync."""
    status = app.get("status") or {}
    state = status.get("operationState") or {}
    info = _info(state)
    if info.get(PROMOTION_INFO) == request.promotion and info.get(STEP_INFO) == request.step:
        return "ours"
    started = (recorded or {}).get("startedAt")
    if started and (
        state.get("startedAt") == started
        or any(h.get("deployStartedAt") == started for h in status.get("history") or [])
    ):
        return "ours"
    if app.get("operation") or state.get("phase") in _RUNNING_PHASES:
        return "busy"
    return "sync"


def _sync_request(
    target: _Target, app: Mapping[str, Any], request: ArgoCDStepInput
) -> dict[str, Any]:
    policy = (app.get("spec") or {}).get("syncPolicy") or {}
    automated = policy.get("automated")
    auto_sync = isinstance(automated, dict) and automated.get("enabled", True) is not False
    body: dict[str, Any] = {
        "name": target.name,
        "prune": False,
        "dryRun": False,
        "infos": [
            {"name": "Reason", "value": _SYNC_REASON},
            {"name": PROMOTION_INFO, "value": request.promotion},
            {"name": STEP_INFO, "value": request.step},
        ],
    }
    if target.namespace_param:
        body["appNamespace"] = target.namespace_param
    # With auto-sync on, Argo CD only syncs to targetRevision; the revision check still applies.
    if not auto_sync:
        if target.multi:
            positions = [i for i, revision in enumerate(target.desired) if revision]
            if positions:
                body["revisions"] = [target.desired[i] for i in positions]
                body["sourcePositions"] = [str(i + 1) for i in positions]
        elif target.desired[0]:
            body["revision"] = target.desired[0]
    if policy.get("syncOptions"):
        body["syncOptions"] = {"items": list(policy["syncOptions"])}
    if policy.get("retry"):
        body["retryStrategy"] = policy["retry"]
    return body


def _requested_revisions(body: Mapping[str, Any]) -> list[str]:
    if body.get("revisions"):
        return [str(r) for r in body["revisions"]]
    return [str(body["revision"])] if body.get("revision") else []


def _health_of(app: Mapping[str, Any]) -> str:
    return str(((app.get("status") or {}).get("health") or {}).get("status") or "Unknown")


def _app_outputs(target: _Target, app: Mapping[str, Any]) -> dict[str, Any]:
    status = app.get("status") or {}
    revisions = synced_revisions((status.get("operationState") or {}).get("syncResult"))
    outputs: dict[str, Any] = {
        "name": target.name,
        "namespace": target.namespace,
        "health": _health_of(app),
        "sync": str((status.get("sync") or {}).get("status") or "Unknown"),
        "desiredRevisions": list(target.desired),
    }
    if target.multi:
        outputs["revisions"] = revisions
    else:
        outputs["revision"] = revisions[0] if revisions else ""
    return outputs


def _judge_update(target: _Target, app: Mapping[str, Any]) -> None:
    """Done, still waiting (``target.waiting`` says on what), or a StepError with Argo CD's words."""
    status = app.get("status") or {}
    state = status.get("operationState") or {}
    phase = state.get("phase")
    message = str(state.get("message") or "")
    if app.get("operation") or phase in _RUNNING_PHASES or not phase:
        target.waiting = f"sync operation {phase or 'pending'}" + (
            f": {message}" if message else ""
        )
        return
    if phase in _FAILED_PHASES:
        raise StepError(f"{target.where}: sync operation {phase}: {message}")
    observed = synced_revisions(state.get("syncResult"))
    if not revisions_match(observed, target.desired):
        raise StepError(
            f"{target.where}: the sync deployed {', '.join(observed) or 'nothing'}, not the "
            f"desired {', '.join(r for r in target.desired if r)}"
        )
    if not reassessed_after_operation(app):
        target.waiting = "waiting for Argo CD to reassess the app after the sync"
        return
    health = _health_of(app)
    if health == "Degraded":
        words = health_message(app)
        raise StepError(f"{target.where} is Degraded" + (f": {words}" if words else ""))
    sync = status.get("sync") or {}
    current = synced_revisions(sync)
    if sync.get("status") != "Synced" or not revisions_match(current, target.desired):
        target.waiting = (
            f"sync status {sync.get('status') or 'Unknown'} at {', '.join(current) or '?'}"
        )
        return
    if health != "Healthy":
        words = health_message(app)
        target.waiting = f"health {health}" + (f": {words}" if words else "")
        return
    target.state = "done"
    target.outputs = _app_outputs(target, app)


def _judge_wait(
    target: _Target, app: Mapping[str, Any], conditions: list[str], previous_health: str | None
) -> None:
    status = app.get("status") or {}
    health = _health_of(app)
    if (
        "health" in conditions
        and health == "Degraded"
        and previous_health not in (None, "Degraded", "Unknown")
    ):
        words = health_message(app)
        raise StepError(
            f"{target.where} became Degraded while waiting" + (f": {words}" if words else "")
        )
    unmet: list[str] = []
    wanted_health = [
        wanted
        for condition, wanted in (
            ("health", "Healthy"),
            ("suspended", "Suspended"),
            ("degraded", "Degraded"),
        )
        if condition in conditions
    ]
    if wanted_health and health not in wanted_health:
        unmet.append(f"health {health} (waiting for {' or '.join(wanted_health)})")
    sync = str((status.get("sync") or {}).get("status") or "Unknown")
    if "sync" in conditions and sync != "Synced":
        unmet.append(f"sync status {sync}")
    phase = ((status.get("operationState") or {}).get("phase")) or ""
    if "operation" in conditions and (app.get("operation") or phase in _RUNNING_PHASES):
        unmet.append(f"operation {phase or 'pending'}")
    if unmet:
        target.waiting = ", ".join(unmet)
        return
    target.state = "done"
    target.outputs = {
        "name": target.name,
        "namespace": target.namespace,
        "health": health,
        "sync": sync,
    }


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
