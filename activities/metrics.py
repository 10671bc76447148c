"""The measurement activity: one measurement of one AnalysisTemplate metric.

``measure_metric`` takes a :class:`~freightline.kargo.analysis.MeasureRequest` (a
metric whose ``{{args.*}}`` are already substituted, see
:func:`freightline.kargo.analysis.resolve_metrics`) and returns a
:class:`~freightline.kargo.analysis.Measurement`, its phase decided by the metric's
conditions (:func:`freightline.kargo.analysis.evaluate_measurement`). It is a sync
activity: several providers' clients (``prometheus-api-client``, ``boto3``) are
blocking; the worker runs sync activities in its thread pool.

The providers live in ``activities.providers``, one module each, with Argo
Rollouts' configuration and result semantics (each module's docstring says
what value its conditions see and which failures are Error measurements).

Failures that happen while measuring (connection refused, timeout, 5xx, 429,
a query the provider rejects, an answer that is not what the provider
promises, an empty result where Argo Rollouts calls that an error) are
**Error measurements** with a message, not exceptions: Argo Rollouts counts
them against ``consecutiveErrorLimit`` and retries on the next interval.
Misconfiguration (an address that is not an http(s) URL, an unsupported
``jsonPath``, an ``{{args.x}}`` left unsubstituted, a credential the worker
lacks) raises a ``ConfigError`` / ``CredentialError``, which the activity
boundary turns into a non-retryable ``ApplicationError`` of that type: no retry
can fix it.

Credentials are the worker's ``FREIGHTLINE_METRIC_*`` environment variables,
read once at start (``freightline.settings.MetricSettings``) and handed to
:class:`MetricActivities`; a template names them by reference only (a web
header's ``{{env.NAME}}``, a provider's secret name and key, see
``activities.providers.measuring.WorkerSecrets``). Their values are never
logged or returned; messages are scrubbed of them, of credentials in URLs, and
of URL query strings.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from activities import boundary
from activities.providers import QUERIES
from activities.providers.measuring import MeasurementDecided, MeasurementFailed, WorkerSecrets
from activities.providers.web import HEADER_ENV_PREFIX
from freightline.errors import ConfigError, FreightlineError
from freightline.kargo.analysis import (
    SECRET_REFERENCE,
    Measurement,
    MeasurementPhase,
    MeasureRequest,
    evaluate_measurement,
)
from freightline.kargo.keypaths import parse_json_path
from freightline.kargo.resources import Metric
from freightline.logging import get_logger

__all__ = [
    "HEADER_ENV_PREFIX",
    "MeasureRequest",
    "MetricActivities",
    "measure",
    "parse_json_path",
    "take_measurement",
]

_ARG_TAG = re.compile(r"\{\{\s*args\.[^{}]*\}\}")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class MetricActivities:
    """The measurement activity, with the worker's ``FREIGHTLINE_METRIC_*`` values."""

    def __init__(self, header_values: Mapping[str, str] | None = None) -> None:
        self.header_values = dict(header_values or {})

    @boundary.defn(name="measure_metric")
    def measure_metric(self, request: MeasureRequest) -> Measurement:
        """Take one measurement of one metric (see the module docstring)."""
        return take_measurement(request, self.header_values)


def take_measurement(request: MeasureRequest, environ: Mapping[str, str]) -> Measurement:
    """One measurement for the activity; ``environ`` holds the ``FREIGHTLINE_METRIC_*`` values.

    Misconfiguration raises a ``ConfigError`` / ``CredentialError`` (converted
    at the activity boundary); every other failure is an Error measurement.
    """
    log = get_logger(__name__)
    try:
        measurement = measure(request.metric, environ)
    except FreightlineError as err:
        log.warning("measurement misconfigured", metric=request.metric.name, run=request.run)
        err.locate(metric=request.metric.name)
        raise
    log.info(
        "measurement taken",
        metric=request.metric.name,
        provider=request.metric.provider.kind,
        run=request.run,
        phase=measurement.phase,
        value=measurement.value,
        message=measurement.message,
    )
    return measurement


def measure(metric: Metric, environ: Mapping[str, str]) -> Measurement:
    """One measurement of ``metric``; ``environ`` holds the worker's credentials.

    Raises :class:`ConfigError` or :class:`CredentialError` for misconfiguration
    only; a failed measurement is returned with phase Error.
    """
    _check_no_unresolved_args(metric)
    started = _now()
    secrets = WorkerSecrets(environ)
    metric = _with_secret_values(metric, secrets)
    provider = metric.provider
    try:
        try:
            value = _scrubbed(QUERIES[provider.kind](provider.spec, secrets), secrets)
        except MeasurementFailed as failure:
            return Measurement(
                phase="Error",
                message=secrets.scrub(str(failure)),
                started_at=started,
                finished_at=_now(),
            )
        except MeasurementDecided as decided:
            return Measurement(
                phase=decided.phase,
                value=decided.value,
                message=secrets.scrub(str(decided)),
                started_at=started,
                finished_at=_now(),
            )
    except FreightlineError as err:
        # A misconfiguration's message may quote a header value; it leaves scrubbed too.
        err.args = tuple(secrets.scrub(str(arg)) for arg in err.args)
        raise
    phase: MeasurementPhase
    phase, message = evaluate_measurement(metric, value)
    return Measurement(
        phase=phase,
        value=value,
        message=secrets.scrub(message) if message else None,
        started_at=started,
        finished_at=_now(),
    )


def _with_secret_values(metric: Metric, secrets: WorkerSecrets) -> Metric:
    """``metric`` with each arg ``valueFrom.secretKeyRef`` reference replaced by the worker's
    value (Secret name and key, as ``WorkerSecrets`` reads them): here, and only here."""
    text = metric.model_dump_json(by_alias=True, exclude_none=True)
    if not SECRET_REFERENCE.search(text):
        return metric

    def resolve(value: Any) -> Any:
        if isinstance(value, str):
            return SECRET_REFERENCE.sub(
                lambda m: secrets.require(m.group(1), m.group(2), "arg valueFrom.secretKeyRef"),
                value,
            )
        if isinstance(value, dict):
            return {key: resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [resolve(item) for item in value]
        return value

    return Metric.model_validate(resolve(metric.model_dump(by_alias=True, exclude_none=True)))


def _scrubbed(value: Any, secrets: WorkerSecrets) -> Any:
    """``value`` with the worker's secrets masked in its strings (a provider that echoes a
    query echoes the secret an arg put in it)."""
    if not secrets.used:
        return value
    if isinstance(value, str):
        return secrets.scrub(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, secrets) for item in value]
    return value


def _check_no_unresolved_args(metric: Metric) -> None:
    text = metric.model_dump_json(by_alias=True, exclude_none=True)
    match = _ARG_TAG.search(text)
    if match:
        raise ConfigError(
            f'metric "{metric.name}": {match.group(0)} was not substituted '
            "(the AnalysisTemplate's args are resolved before measuring)"
        )
