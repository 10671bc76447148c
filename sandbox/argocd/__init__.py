"""Argo CD API emulator: a real HTTP server speaking the part of Argo CD's API Freightline uses.

Argo CD needs Kubernetes, which these machines lack; this stand-in tracks the real git
repositories, "syncs" by rendering manifests at the resolved commit, and reports
sync/health/operation state shaped by Argo CD's swagger (``v1alpha1Application``).

API (``Authorization: Bearer <token>`` or the ``argocd.token`` cookie on every call):

- ``GET /api/v1/applications?selector=&name=&projects=&repo=`` -> ``v1alpha1ApplicationList``
- ``GET /api/v1/applications/{name}?refresh=normal|hard&project=`` (refresh blocks until done)
- ``PATCH /api/v1/applications/{name}`` ``{"patch": "<JSON>", "patchType": "merge"|"json"}``
- ``POST /api/v1/applications/{name}/sync`` (``applicationApplicationSyncRequest``)
- ``GET /metrics`` (Prometheus, no auth), ``GET /healthz`` (no auth)

Errors are Argo CD's (grpc-gateway) ``{"error", "code", "message"}`` with its HTTP mapping:
no token 401/16 "no session information"; wrong token 401/16 "invalid session: ...";
unknown app 403/7 "permission denied", or 404/5 ``applications.argoproj.io "x" not found``
when the request names a ``project`` (Argo CD hides existence otherwise); sync while an
operation runs 400/9 "another operation is already in progress"; unresolvable revision
400/9; closed sync window 403/7 "cannot sync: blocked by sync window"; unsupported patch
type 400/3; a patch that does not apply 500/2.

Failure knobs:

- Manifest annotations (in the rendered resources, so they travel with a commit):
  ``emulator.freightline.dev/health: Degraded`` (any health status; optional
  ``emulator.freightline.dev/health-message``) makes that resource, hence the app, report it
  once the Progressing window ends; ``emulator.freightline.dev/sync: Failed`` (optional
  ``emulator.freightline.dev/sync-message``) makes syncs of that commit end Failed.
- Admin endpoints (``POST``, bearer token required, JSON body):
  ``/admin/apps/{name}/health`` ``{"status": "Degraded", "message": "..."}`` forces health
  (``{"status": null}`` clears); ``/admin/apps/{name}/fault`` ``{"mode": "500"|"503"|"hang",
  "count": N, "hangSeconds": S}`` makes the next N API calls about the app fail or hang
  (``/admin/fault`` for any API call); ``/admin/apps/{name}/fail-sync`` ``{"count": N,
  "message": "..."}`` makes the next N syncs end Failed; ``/admin/apps/{name}/sync-window``
  ``{"open": false}`` closes the sync window; ``/admin/apps/{name}/traffic``
  ``{"errorRatio": 0.3}`` overrides the simulated error ratio (``null`` clears).

Timing knobs (``Timing``): ``sync_duration`` (0.5s), ``progressing_duration`` (1s),
``reconcile_interval`` (5s periodic refresh, 0 off), ``tick`` (0.05s); ``Timing.instant()``
for tests. Progress is driven by a background thread and by time checks on every read.

Metrics: ``emulator_http_requests_total{app, code="200"|"500"}`` counters growing at
``requestsPerSecond`` (10) per deployed app with the error share of the deployed image tag
(``errorRatioByTag``, default 0.0), ``emulator_error_ratio{app}`` and
``emulator_app_info{app, image, tag, revision, health, sync}``.

Apps file: ``Application``s, ``ApplicationSet``s with list generators, and an optional
``emulator.freightline.dev/v1alpha1`` ``EmulatorConfig`` (``spec.errorRatioByTag``,
``spec.requestsPerSecond``, ``spec.repoMap``); see ``_apps``.

Python: ``with ArgoCDEmulator("apps.yaml", token="t", timing=Timing.instant()) as argocd:``
``argocd.base_url``. CLI: ``python -m sandbox.argocd --apps FILE --port N --token T``.
"""

from ._apps import AppsDocument, expand_application_set, load_apps_file, load_documents
from ._controller import (
    HEALTH_ANNOTATION,
    HEALTH_MESSAGE_ANNOTATION,
    SYNC_ANNOTATION,
    SYNC_MESSAGE_ANNOTATION,
    Timing,
)
from ._errors import ApiError, Code, EmulatorConfigError
from ._server import ArgoCDEmulator

__all__ = [
    "HEALTH_ANNOTATION",
    "HEALTH_MESSAGE_ANNOTATION",
    "SYNC_ANNOTATION",
    "SYNC_MESSAGE_ANNOTATION",
    "ApiError",
    "AppsDocument",
    "ArgoCDEmulator",
    "Code",
    "EmulatorConfigError",
    "Timing",
    "expand_application_set",
    "load_apps_file",
    "load_documents",
]
