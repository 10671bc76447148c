"""The emulated application controller: applications' state, operations, refreshes and health.

State changes are driven by time: a background thread ticks every ``Timing.tick`` seconds,
and every API read first brings the application up to date, so an operation completes after
``sync_duration`` and health settles after ``progressing_duration`` whether or not anyone
polls. Slow work (git, kustomize) runs outside the state lock.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._errors import (
    ANOTHER_OPERATION,
    PERMISSION_DENIED,
    SYNC_WINDOW_BLOCKED,
    ApiError,
    Code,
    not_found,
)
from ._git import GitError, Repositories
from ._metrics import AppSample, Traffic, error_ratio, exposition
from ._patch import PatchError, decode_patch, json_patch, merge_patch
from ._render import RenderedSource, Renderer, RenderError, Resource
from ._selector import SelectorError, matches, parse_selector

log = logging.getLogger(__name__)

HEALTH_ANNOTATION = "emulator.freightline.dev/health"
HEALTH_MESSAGE_ANNOTATION = "emulator.freightline.dev/health-message"
SYNC_ANNOTATION = "emulator.freightline.dev/sync"
SYNC_MESSAGE_ANNOTATION = "emulator.freightline.dev/sync-message"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
HYDRATE_ANNOTATION = "argocd.argoproj.io/hydrate"

# gitops-engine's health order: a worse status wins when aggregating.
HEALTH_ORDER = ("Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown")
_WORKLOAD_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod", "Job", "Rollout"}
)
_HEALTH_KINDS = _WORKLOAD_KINDS | {
    "Service",
    "Ingress",
    "PersistentVolumeClaim",
    "HorizontalPodAutoscaler",
    "CronJob",
}
_DEFAULT_HISTORY_LIMIT = 10
_ROLLOUT_WAIT = "Waiting for rollout to finish: 0 of 1 updated replicas are available..."


@dataclass
class Timing:
    """How long emulated work takes, in seconds."""

    sync_duration: float = 0.5
    """From a sync request until its operation completes (at least the rendering time)."""
    progressing_duration: float = 1.0
    """How long workloads report Progressing after a sync changed them."""
    reconcile_interval: float = 5.0
    """Periodic refresh against git (Argo CD's timeout.reconciliation); 0 disables."""
    tick: float = 0.05
    """Background controller period."""

    @classmethod
    def instant(cls) -> Timing:
        """No artificial delays: operations finish as soon as their manifests are rendered."""
        return cls(sync_duration=0.0, progressing_duration=0.0, reconcile_interval=5.0, tick=0.01)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> datetime:
    return datetime.now(UTC)


def _compact(value: dict[str, Any]) -> dict[str, Any]:
    """Drop empty fields, as Go's ``omitempty`` does."""
    return {k: v for k, v in value.items() if v not in (None, "", [], {}, False)}


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str, default: float) -> float:
    """Seconds in a Go duration string such as ``5s`` or ``1m30s``."""
    parts = _DURATION.findall(text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        return default
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


@dataclass
class Fault:
    """Make the next ``remaining`` API calls fail (``500``/``503``) or hang."""

    mode: str
    remaining: int
    hang_seconds: float = 30.0


@dataclass
class OperationRun:
    """The controller's view of a running sync operation."""

    sources: list[dict[str, Any]]
    revisions: list[str]
    multi: bool
    dry_run: bool
    prune: bool
    retry: dict[str, Any]
    attempt_at: float
    attempt: int = 0
    rendering: bool = False
    rendered: list[RenderedSource] | None = None
    error: str | None = None
    started: datetime = field(default_factory=_now)


@dataclass
class AppRecord:
    """One emulated Application."""

    metadata: dict[str, Any]
    spec: dict[str, Any]
    resource_version: int = 0
    generation: int = 1
    spec_version: int = 0
    operation: dict[str, Any] | None = None
    operation_state: dict[str, Any] | None = None
    run: OperationRun | None = None
    live: dict[tuple[str, str, str, str], Resource] = field(default_factory=dict)
    synced_revisions: list[str] = field(default_factory=list)
    target: list[Resource] | None = None
    target_revisions: list[str] = field(default_factory=list)
    source_types: list[str] = field(default_factory=list)
    comparison_error: str | None = None
    reconciled_at: datetime | None = None
    last_reconcile: float = float("-inf")
    refresh_requested: bool = True
    refresh_lock: threading.Lock = field(default_factory=threading.Lock)
    history: list[dict[str, Any]] = field(default_factory=list)
    progressing_until: float = 0.0
    health_override: tuple[str, str] | None = None
    health_status: str = ""
    health_since: datetime = field(default_factory=_now)
    fail_syncs: int = 0
    fail_message: str = ""
    sync_window_open: bool = True
    fault: Fault | None = None
    traffic: Traffic = field(default_factory=Traffic)
    error_ratio_override: float | None = None

    @property
    def name(self) -> str:
        return str(self.metadata["name"])


def _sources(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    if spec.get("sources"):
        return [dict(s) for s in spec["sources"]], True
    return [dict(spec.get("source") or {})], False


def _renderable(source: dict[str, Any]) -> bool:
    # A `ref`-only source only lends values files to others; it renders nothing.
    return not (source.get("ref") and not source.get("path"))


def _worst(statuses: list[str]) -> str:
    ranked = [s if s in HEALTH_ORDER else "Unknown" for s in statuses]
    return max(ranked, key=HEALTH_ORDER.index, default="Healthy")


class Controller:
    """Holds every emulated Application and moves them through time."""

    def __init__(
        self,
        applications: list[dict[str, Any]],
        *,
        repositories: Repositories,
        renderer: Renderer,
        timing: Timing,
        username: str,
        error_ratio_by_tag: dict[str, float],
        requests_per_second: float,
    ) -> None:
        self._repositories = repositories
        self._renderer = renderer
        self.timing = timing
        self._username = username
        self.error_ratio_by_tag = error_ratio_by_tag
        self.requests_per_second = requests_per_second
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._revision = 0
        self._global_fault: Fault | None = None
        created = _timestamp(_now())
        self._records: dict[str, AppRecord] = {}
        for app in sorted(applications, key=lambda a: str(a["metadata"]["name"])):
            metadata = copy.deepcopy(app["metadata"])
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", created)
            record = AppRecord(metadata=metadata, spec=copy.deepcopy(app["spec"]))
            self._bump(record)
            self._records[record.name] = record

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        for name in list(self._records):
            self._refresh_quietly(name)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name="argocd-emulator-controller", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    def _loop(self) -> None:
        while not self._stop.wait(self.timing.tick):
            now = time.monotonic()
            with self._lock:
                due = []
                for record in self._records.values():
                    self._advance(record, now)
                    interval = self.timing.reconcile_interval
                    if record.refresh_requested or (
                        interval > 0 and now - record.last_reconcile >= interval
                    ):
                        due.append(record.name)
            for name in due:
                if self._stop.is_set():
                    return
                self._refresh_quietly(name)

    def _refresh_quietly(self, name: str) -> None:
        try:
            self.refresh(name, hard=False)
        except Exception:  # the loop must survive anything a repository throws at it
            log.exception("refreshing application %s failed", name)

    # state helpers ------------------------------------------------------------------------

    def _bump(self, record: AppRecord) -> None:
        self._revision += 1
        record.resource_version = self._revision

    def _lookup(self, name: str, project: str = "") -> AppRecord:
        # Argo CD answers "permission denied" for a missing app unless the request names a
        # project (server/application/application.go getAppEnforceRBAC), not to leak existence.
        record = self._records.get(name)
        if record is None:
            if project:
                raise not_found(name)
            raise ApiError(Code.PERMISSION_DENIED, PERMISSION_DENIED)
        if project and (record.spec.get("project") or "default") != project:
            raise not_found(name)
        return record

    def _serving_ratio(self, record: AppRecord) -> float:
        if record.error_ratio_override is not None:
            return record.error_ratio_override
        return error_ratio(self._live_images(record), self.error_ratio_by_tag)

    @staticmethod
    def _live_images(record: AppRecord) -> list[str]:
        return sorted({image for r in record.live.values() for image in r.images()})

    def _advance(self, record: AppRecord, now: float) -> None:
        record.traffic.accrue(
            now, bool(record.live), self.requests_per_second, self._serving_ratio(record)
        )
        run = record.run
        if run is not None:
            idle = run.rendered is None and run.error is None and not run.rendering
            if idle and now >= run.attempt_at:
                run.rendering = True
                threading.Thread(
                    target=self._render_operation,
                    args=(record, run),
                    daemon=True,
                    name=f"argocd-emulator-sync-{record.name}",
                ).start()
            done = run.rendered is not None or run.error is not None
            if done and now >= run.attempt_at + self.timing.sync_duration:
                self._finish(record, run, now)
        status, _ = self._health(record, now)
        if status != record.health_status:
            record.health_status = status
            record.health_since = _now()
            self._bump(record)

    # operations -----------------------------------------------------------------------------

    def _render_operation(self, record: AppRecord, run: OperationRun) -> None:
        namespace = str((record.spec.get("destination") or {}).get("namespace") or "")
        rendered: list[RenderedSource] = []
        error: str | None = None
        for index, (source, revision) in enumerate(zip(run.sources, run.revisions, strict=True)):
            if not _renderable(source):
                rendered.append(RenderedSource("", []))
                continue
            try:
                rendered.append(self._renderer.render(source, revision, namespace))
            except (RenderError, GitError) as exc:
                error = (
                    f"failed to generate manifest for source {index + 1} of {len(run.sources)}: "
                    f"rpc error: code = Unknown desc = {exc}"
                )
                break
        with self._lock:
            run.rendering = False
            if error is not None:
                run.error = error
            else:
                run.rendered = rendered

    def _finish(self, record: AppRecord, run: OperationRun, now: float) -> None:
        assert record.operation_state is not None
        state = record.operation_state
        resources = [r for rendered in run.rendered or [] for r in rendered.resources]
        failing: list[Resource] = []
        failure: tuple[str, str] | None = None
        if run.error is not None:
            failure = ("Error", f"ComparisonError: Failed to load target state: {run.error}")
        else:
            failing = [
                r for r in resources if (r.annotation(SYNC_ANNOTATION) or "").lower() == "failed"
            ]
            reason = next(
                (m for r in failing if (m := r.annotation(SYNC_MESSAGE_ANNOTATION))),
                "emulated apply failure",
            )
            if record.fail_syncs > 0 and not run.dry_run:
                record.fail_syncs -= 1
                failing = failing or resources[:1]
                reason = record.fail_message or reason
            if failing:
                failure = ("Failed", f"one or more objects failed to apply, reason: {reason}")
        limit = int(run.retry.get("limit") or 0)
        if failure is not None and (limit < 0 or run.attempt < limit):
            backoff = run.retry.get("backoff") or {}
            base = go_duration(str(backoff.get("duration") or "5s"), 5.0)
            factor = float(backoff.get("factor") or 2)
            ceiling = go_duration(str(backoff.get("maxDuration") or "3m"), 180.0)
            delay = min(base * factor**run.attempt, ceiling)
            run.attempt += 1
            run.attempt_at = now + delay
            run.rendered, run.error = None, None
            state["retryCount"] = run.attempt
            state["message"] = (
                f"Retrying attempt #{run.attempt} at {_now().strftime('%-I:%M%p')}: {failure[1]}"
            )
            self._bump(record)
            return

        results: list[dict[str, Any]] = []
        if run.error is None:
            results = self._apply(record, run, resources, failing, now)
        finished = _now()
        state["finishedAt"] = _timestamp(finished)
        if failure is not None:
            state["phase"], state["message"] = failure
        else:
            state["phase"] = "Succeeded"
            state["message"] = "successfully synced (all tasks run)"
        if run.error is None:
            sync_result: dict[str, Any] = {"resources": results}
            if run.multi:
                sync_result["revisions"] = list(run.revisions)
                sync_result["sources"] = copy.deepcopy(run.sources)
            else:
                sync_result["revision"] = run.revisions[0]
                sync_result["source"] = copy.deepcopy(run.sources[0])
            state["syncResult"] = _compact(sync_result)
        if failure is None and not run.dry_run:
            entry: dict[str, Any] = {
                "id": (record.history[-1]["id"] + 1) if record.history else 0,
                "deployStartedAt": _timestamp(run.started),
                "deployedAt": _timestamp(finished),
                "initiatedBy": {"username": self._username},
            }
            if run.multi:
                entry["revisions"] = list(run.revisions)
                entry["sources"] = copy.deepcopy(run.sources)
            else:
                entry["revision"] = run.revisions[0]
                entry["source"] = copy.deepcopy(run.sources[0])
            limit_history = int(record.spec.get("revisionHistoryLimit") or _DEFAULT_HISTORY_LIMIT)
            record.history = [*record.history, entry][-limit_history:]
        record.operation = None
        record.run = None
        record.refresh_requested = True
        self._bump(record)

    def _apply(
        self,
        record: AppRecord,
        run: OperationRun,
        resources: list[Resource],
        failing: list[Resource],
        now: float,
    ) -> list[dict[str, Any]]:
        suffix = " (dry run)" if run.dry_run else ""
        failing_keys = {r.key for r in failing}
        target_keys = {r.key for r in resources}
        live = dict(record.live)
        results: list[dict[str, Any]] = []
        changed = False
        for resource in resources:
            result = _compact(
                {
                    "group": resource.group,
                    "version": resource.version,
                    "kind": resource.kind,
                    "namespace": resource.namespace,
                    "name": resource.name,
                    "images": resource.images(),
                    "syncPhase": "Sync",
                }
            )
            previous = record.live.get(resource.key)
            if resource.key in failing_keys:
                reason = resource.annotation(SYNC_MESSAGE_ANNOTATION) or record.fail_message
                result.update(
                    status="SyncFailed",
                    hookPhase="Failed",
                    message=reason or "emulated apply failure",
                )
            else:
                if previous is None:
                    verb = "created"
                elif previous.manifest == resource.manifest:
                    verb = "unchanged"
                else:
                    verb = "configured"
                changed = changed or verb != "unchanged"
                result.update(
                    status="Synced",
                    hookPhase="Running",
                    message=f"{resource.kubectl_name()} {verb}{suffix}",
                )
                live[resource.key] = resource
            results.append(result)
        for key, resource in record.live.items():
            if key in target_keys:
                continue
            result = _compact(
                {
                    "group": resource.group,
                    "version": resource.version,
                    "kind": resource.kind,
                    "namespace": resource.namespace,
                    "name": resource.name,
                    "syncPhase": "Sync",
                }
            )
            if run.prune:
                result.update(status="Pruned", hookPhase="Succeeded", message=f"pruned{suffix}")
                del live[key]
                changed = True
            else:
                result.update(status="PruneSkipped", message="ignored (requires pruning)")
            results.append(result)
        if not run.dry_run:
            record.traffic.accrue(
                now, bool(record.live), self.requests_per_second, self._serving_ratio(record)
            )
            record.live = live
            record.synced_revisions = list(run.revisions)
            record.source_types = [r.source_type for r in run.rendered or []]
            if changed:
                record.progressing_until = now + self.timing.progressing_duration
        return results

    # health and status -----------------------------------------------------------------------

    def _resource_health(
        self, record: AppRecord, resource: Resource, now: float
    ) -> dict[str, str] | None:
        knob = resource.annotation(HEALTH_ANNOTATION)
        if resource.kind not in _HEALTH_KINDS and knob is None:
            return None
        if now < record.progressing_until and resource.kind in _WORKLOAD_KINDS:
            return {
                "status": "Progressing",
                "message": _ROLLOUT_WAIT,
            }
        if knob is not None and knob != "Healthy":
            message = resource.annotation(HEALTH_MESSAGE_ANNOTATION)
            if message is None and knob == "Degraded":
                message = f'{resource.kind} "{resource.name}" exceeded its progress deadline'
            return _compact({"status": knob, "message": message})
        return {"status": "Healthy"}

    def _health(self, record: AppRecord, now: float) -> tuple[str, str | None]:
        if record.health_override is not None:
            return record.health_override[0], record.health_override[1] or None
        statuses = [
            h["status"]
            for r in record.live.values()
            if (h := self._resource_health(record, r, now)) is not None
        ]
        if record.target is not None:
            statuses += ["Missing" for r in record.target if r.key not in record.live]
        return _worst(statuses), None

    def _status(self, record: AppRecord, now: float) -> dict[str, Any]:
        sources, multi = _sources(record.spec)
        compared = _compact(
            {
                "destination": record.spec.get("destination"),
                "source": None if multi else sources[0],
                "sources": sources if multi else None,
            }
        )
        targets = {r.key: r for r in record.target or []}
        resources: list[dict[str, Any]] = []
        synced = True
        for key in sorted(set(targets) | set(record.live)):
            wanted, live = targets.get(key), record.live.get(key)
            resource = wanted or live
            assert resource is not None
            if record.target is None:
                sync_status = "Unknown"
            elif wanted is not None and live is not None and wanted.manifest == live.manifest:
                sync_status = "Synced"
            else:
                sync_status = "OutOfSync"
                synced = False
            health = (
                self._resource_health(record, live, now)
                if live is not None
                else {"status": "Missing"}
            )
            resources.append(
                _compact(
                    {
                        "group": resource.group,
                        "version": resource.version,
                        "kind": resource.kind,
                        "namespace": resource.namespace,
                        "name": resource.name,
                        "status": sync_status,
                        "health": health,
                        "requiresPruning": record.target is not None and wanted is None,
                    }
                )
            )
        sync: dict[str, Any] = {"comparedTo": compared}
        if record.target is None:
            sync["status"] = "Unknown"
        else:
            sync["status"] = "Synced" if synced else "OutOfSync"
            if multi:
                sync["revisions"] = list(record.target_revisions)
            else:
                sync["revision"] = record.target_revisions[0]
        health_status, health_message = self._health(record, now)
        status: dict[str, Any] = {
            "resources": resources,
            "sync": sync,
            "health": _compact(
                {
                    "status": health_status,
                    "message": health_message,
                    "lastTransitionTime": _timestamp(record.health_since),
                }
            ),
            "history": copy.deepcopy(record.history),
            "reconciledAt": _timestamp(record.reconciled_at) if record.reconciled_at else None,
            "operationState": copy.deepcopy(record.operation_state),
            "controllerNamespace": "argocd",
            "summary": _compact({"images": self._live_images(record)}),
        }
        types = record.source_types or []
        if multi:
            status["sourceTypes"] = [t for t in types if t]
        elif types and types[0]:
            status["sourceType"] = types[0]
        if record.comparison_error is not None:
            status["conditions"] = [
                {
                    "type": "ComparisonError",
                    "message": record.comparison_error,
                    "lastTransitionTime": _timestamp(record.reconciled_at or _now()),
                }
            ]
        return _compact(status)

    def _json(self, record: AppRecord, now: float) -> dict[str, Any]:
        metadata = copy.deepcopy(record.metadata)
        metadata["resourceVersion"] = str(record.resource_version)
        metadata["generation"] = record.generation
        app: dict[str, Any] = {"metadata": metadata, "spec": copy.deepcopy(record.spec)}
        if record.operation is not None:
            app["operation"] = copy.deepcopy(record.operation)
        app["status"] = self._status(record, now)
        return app

    # refresh ------------------------------------------------------------------------------------

    def refresh(self, name: str, *, hard: bool) -> None:
        """Compare the app against git now, as a refresh does (blocking until done)."""
        record = self._records[name]
        with record.refresh_lock:
            with self._lock:
                spec = copy.deepcopy(record.spec)
                version = record.spec_version
            sources, _ = _sources(spec)
            namespace = str((spec.get("destination") or {}).get("namespace") or "")
            revisions: list[str] = []
            rendered: list[RenderedSource] = []
            error: str | None = None
            for index, source in enumerate(sources):
                try:
                    repo = self._repositories.get(str(source.get("repoURL", "")))
                    repo.update()
                    revision = repo.resolve(str(source.get("targetRevision") or "HEAD"))
                    revisions.append(revision)
                    rendered.append(
                        self._renderer.render(source, revision, namespace, hard=hard)
                        if _renderable(source)
                        else RenderedSource("", [])
                    )
                except (GitError, RenderError) as exc:
                    error = (
                        f"Failed to load target state: failed to generate manifest for source "
                        f"{index + 1} of {len(sources)}: rpc error: code = Unknown desc = {exc}"
                    )
                    break
            with self._lock:
                if record.spec_version != version:
                    record.refresh_requested = True
                    return
                record.comparison_error = error
                if error is None:
                    record.target = [r for part in rendered for r in part.resources]
                    record.target_revisions = revisions
                    if not record.source_types:
                        record.source_types = [r.source_type for r in rendered]
                else:
                    record.target = None
                record.reconciled_at = _now()
                record.last_reconcile = time.monotonic()
                record.refresh_requested = False
                annotations = record.metadata.get("annotations") or {}
                for key in (REFRESH_ANNOTATION, HYDRATE_ANNOTATION):
                    annotations.pop(key, None)
                self._bump(record)

    # API -----------------------------------------------------------------------------------------

    def get(self, name: str, *, project: str = "", refresh: str | None = None) -> dict[str, Any]:
        with self._lock:
            self._lookup(name, project)
        if refresh is not None:
            self.refresh(name, hard=refresh == "hard")
        with self._lock:
            record = self._lookup(name, project)
            now = time.monotonic()
            self._advance(record, now)
            return self._json(record, now)

    def list_apps(
        self,
        *,
        selector: str = "",
        name: str | None = None,
        projects: list[str] | None = None,
        repo: str = "",
    ) -> dict[str, Any]:
        try:
            requirements = parse_selector(selector)
        except SelectorError as exc:
            raise ApiError(Code.UNKNOWN, f"error parsing the selector: {exc}") from exc
        with self._lock:
            now = time.monotonic()
            items = []
            for record in self._records.values():
                if not matches(requirements, record.metadata.get("labels") or {}):
                    continue
                if name and record.name != name:
                    continue
                if projects and (record.spec.get("project") or "default") not in projects:
                    continue
                if repo and repo not in [s.get("repoURL") for s in _sources(record.spec)[0]]:
                    continue
                self._advance(record, now)
                items.append(self._json(record, now))
            return {"metadata": {"resourceVersion": str(self._revision)}, "items": items}

    def patch(self, name: str, *, patch: str, patch_type: str, project: str = "") -> dict[str, Any]:
        with self._lock:
            record = self._lookup(name, project)
            now = time.monotonic()
            self._advance(record, now)
            current = self._json(record, now)
        if patch_type in ("json", ""):
            try:
                operations = decode_patch(patch)
            except PatchError as exc:
                raise ApiError(Code.UNKNOWN, f"error decoding json patch: {exc}") from exc
            try:
                patched = json_patch(current, operations)
            except PatchError as exc:
                raise ApiError(Code.UNKNOWN, f"error applying patch: {exc}") from exc
        elif patch_type == "merge":
            try:
                patched = merge_patch(current, decode_patch(patch))
            except PatchError as exc:
                raise ApiError(Code.UNKNOWN, f"error calculating merge patch: {exc}") from exc
        else:
            raise ApiError(Code.INVALID_ARGUMENT, f"Patch type '{patch_type}' is not supported")
        spec = patched.get("spec") if isinstance(patched, dict) else None
        metadata = patched.get("metadata") if isinstance(patched, dict) else None
        if not isinstance(spec, dict) or not isinstance(metadata, dict):
            raise ApiError(
                Code.UNKNOWN, "error unmarshaling patched app: spec and metadata must be objects"
            )
        sources, _ = _sources(spec)
        if not all(isinstance(s, dict) and s.get("repoURL") for s in sources):
            raise ApiError(
                Code.INVALID_ARGUMENT,
                f"application spec for {name} is invalid: "
                "InvalidSpecError: repository URL is required",
            )
        with self._lock:
            record = self._lookup(name, project)
            if spec != record.spec:
                record.spec = spec
                record.spec_version += 1
                record.generation += 1
                record.refresh_requested = True
            for key in ("labels", "annotations", "finalizers"):
                if metadata.get(key):
                    record.metadata[key] = metadata[key]
                else:
                    record.metadata.pop(key, None)
            if REFRESH_ANNOTATION in (record.metadata.get("annotations") or {}):
                record.refresh_requested = True
            self._bump(record)
            now = time.monotonic()
            self._advance(record, now)
            return self._json(record, now)

    def sync(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        project = str(request.get("project") or "")
        with self._lock:
            record = self._lookup(name, project)
            if not record.sync_window_open:
                raise ApiError(Code.PERMISSION_DENIED, SYNC_WINDOW_BLOCKED)
            spec = copy.deepcopy(record.spec)
        sources, multi = _sources(spec)
        dry_run = bool(request.get("dryRun"))
        desired = [""] * len(sources)
        if multi:
            for index, position in enumerate(request.get("sourcePositions") or []):
                position = int(position)
                if position <= 0 or position > len(sources):
                    raise ApiError(Code.FAILED_PRECONDITION, "source position is out of range")
                desired[position - 1] = str((request.get("revisions") or [])[index])
        else:
            desired[0] = str(request.get("revision") or "")
        policy = spec.get("syncPolicy") or {}
        automated = policy.get("automated")
        auto_sync = isinstance(automated, dict) and automated.get("enabled", True) is not False
        revisions = []
        for source, wanted in zip(sources, desired, strict=True):
            target = str(source.get("targetRevision") or "HEAD")
            if wanted and wanted != target and auto_sync and not dry_run:
                raise ApiError(
                    Code.FAILED_PRECONDITION,
                    f"Cannot sync to {wanted}: auto-sync currently set to "
                    f"{source.get('targetRevision', '')}",
                )
            try:
                repo = self._repositories.get(str(source.get("repoURL", "")))
                repo.update()
                revisions.append(repo.resolve(wanted or target))
            except GitError as exc:
                raise ApiError(
                    Code.FAILED_PRECONDITION,
                    f"error resolving repo revision: rpc error: code = Unknown desc = {exc}",
                ) from exc
        options = (request.get("syncOptions") or {}).get("items")
        retry = request.get("retryStrategy") or policy.get("retry") or {}
        sync_op = _compact(
            {
                "revision": None if multi else revisions[0],
                "revisions": revisions if multi else None,
                "prune": bool(request.get("prune")),
                "dryRun": dry_run,
                "syncOptions": options if options is not None else policy.get("syncOptions"),
                "syncStrategy": request.get("strategy"),
                "resources": request.get("resources"),
                "manifests": request.get("manifests"),
                "source": None if multi else sources[0],
                "sources": sources if multi else None,
            }
        )
        operation = _compact(
            {
                "sync": sync_op,
                "initiatedBy": {"username": self._username},
                "info": request.get("infos"),
                "retry": retry,
            }
        )
        with self._lock:
            record = self._lookup(name, project)
            if record.operation is not None:
                raise ApiError(Code.FAILED_PRECONDITION, ANOTHER_OPERATION)
            now = time.monotonic()
            run = OperationRun(
                sources=sources,
                revisions=revisions,
                multi=multi,
                dry_run=dry_run,
                prune=bool(request.get("prune")),
                retry=dict(retry),
                attempt_at=now,
            )
            record.operation = operation
            record.operation_state = {
                "operation": copy.deepcopy(operation),
                "phase": "Running",
                "message": "",
                "startedAt": _timestamp(run.started),
            }
            record.run = run
            self._bump(record)
            self._advance(record, now)
            return self._json(record, now)

    # admin knobs ---------------------------------------------------------------------------------

    def record(self, name: str) -> AppRecord:
        with self._lock:
            record = self._records.get(name)
            if record is None:
                raise ApiError(Code.NOT_FOUND, f'applications.argoproj.io "{name}" not found')
            return record

    def set_health(self, name: str, status: str | None, message: str = "") -> None:
        """Force an app's health (``None`` returns it to the emulated health)."""
        if status is not None and status not in HEALTH_ORDER:
            raise ApiError(Code.INVALID_ARGUMENT, f"unknown health status {status!r}")
        with self._lock:
            record = self.record(name)
            record.health_override = None if status is None else (status, message)
            self._advance(record, time.monotonic())

    def inject_fault(
        self, name: str | None, mode: str, count: int, hang_seconds: float = 30.0
    ) -> None:
        """Make the next ``count`` API calls (about ``name``, or any with None) fail or hang."""
        if mode not in ("500", "503", "hang"):
            raise ApiError(Code.INVALID_ARGUMENT, f"unknown fault mode {mode!r} (500, 503 or hang)")
        fault = Fault(mode, count, hang_seconds) if count > 0 else None
        with self._lock:
            if name is None:
                self._global_fault = fault
            else:
                self.record(name).fault = fault

    def take_fault(self, name: str | None) -> Fault | None:
        """Consume one fault for a call about ``name`` (app-specific first, then global)."""
        with self._lock:
            record = self._records.get(name) if name else None
            for holder, fault in (
                (record, record.fault if record else None),
                (None, self._global_fault),
            ):
                if fault is not None and fault.remaining > 0:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        if holder is not None:
                            holder.fault = None
                        else:
                            self._global_fault = None
                    return Fault(fault.mode, 1, fault.hang_seconds)
            return None

    def fail_next_syncs(self, name: str, count: int, message: str = "") -> None:
        """Make the next ``count`` sync operations of the app end Failed."""
        with self._lock:
            record = self.record(name)
            record.fail_syncs = max(count, 0)
            record.fail_message = message

    def set_sync_window(self, name: str, open_: bool) -> None:
        """Open or close the app's sync window (a closed one denies syncs, as Argo CD does)."""
        with self._lock:
            self.record(name).sync_window_open = open_

    def set_error_ratio(self, name: str, ratio: float | None) -> None:
        """Override the app's simulated error ratio (``None`` returns to errorRatioByTag)."""
        if ratio is not None and not 0.0 <= ratio <= 1.0:
            raise ApiError(Code.INVALID_ARGUMENT, "errorRatio must be between 0 and 1")
        with self._lock:
            record = self.record(name)
            record.traffic.accrue(
                time.monotonic(),
                bool(record.live),
                self.requests_per_second,
                self._serving_ratio(record),
            )
            record.error_ratio_override = ratio

    def metrics(self) -> str:
        with self._lock:
            now = time.monotonic()
            samples = []
            for record in self._records.values():
                self._advance(record, now)
                status = self._status(record, now)
                samples.append(
                    AppSample(
                        app=record.name,
                        traffic=copy.copy(record.traffic),
                        images=self._live_images(record),
                        revision=",".join(record.synced_revisions),
                        health=status["health"]["status"],
                        sync=status["sync"]["status"],
                        ratio=self._serving_ratio(record),
                    )
                )
        return exposition(samples)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._records)


def to_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
