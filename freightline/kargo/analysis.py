"""Argo Rollouts' AnalysisRun semantics, as a pure state machine for verification.

One *run* measures the metrics of one or more AnalysisTemplates. The workflow
that drives it holds an :class:`AnalysisRunStatus`, asks which metrics are due
(:func:`due_metrics`) and when to wake up next (:func:`next_wakeup`), measures
each due metric with one activity (``activities.metrics.measure_metric``),
records the :class:`Measurement` (:func:`record_measurement`) and re-assesses
the run (:func:`assess_run`) until its phase is completed.

Everything here is pure and deterministic: no I/O, no clock (times come in as
arguments), so Temporal workflow code may import it in its sandbox.

The rules follow Argo Rollouts' analysis controller:

- a measurement's phase comes from ``successCondition`` / ``failureCondition``
  over ``result`` (:func:`evaluate_measurement`): neither set, Successful; only
  success set, Failed when false; only failure set, Successful when false; both
  set, Failed when failure is true, else Successful when success is true, else
  Inconclusive; an expression that fails or does not give a bool, Error;
- counts (:func:`record`): Successful, Failed and Inconclusive measurements
  count towards ``count`` and reset ``consecutiveError``; an Error counts only
  as an error, so errors never use up ``count``;
- a metric's phase (:func:`metric_phase`), checked in this order: Failed when
  ``failed > failureLimit`` (default 0, ``-1`` never), Inconclusive when
  ``inconclusive > inconclusiveLimit`` (0), Error when ``consecutiveError >
  consecutiveErrorLimit`` (4), Successful once the effective count is reached
  (``count``; without it, 1 when there is no ``interval`` and unbounded when
  there is one), else Running (Pending before the first measurement). Once
  completed, a metric's phase never changes;
- the run (:func:`run_phase`): as soon as one metric is Failed, Error or
  Inconclusive the run is *terminating*: no more measurements, every other
  metric is done, and the run takes the worst phase (Failed > Error >
  Inconclusive > Successful). Otherwise it is Running until every metric has
  completed. A run aborted while running is Aborted (Kargo's verification
  phase); an abort after the outcome is known changes nothing;
- scheduling (:func:`next_measurement_at`): the first measurement at the run's
  start plus ``initialDelay``; the next one ``interval`` after the previous
  measurement finished; a metric without ``interval`` whose measurement
  errored retries after 10 seconds.

Arguments (:func:`resolve_args`, :func:`resolve_metrics`): a template's
``args`` give names and optional defaults; the Stage's ``verification.args``
override them (their values may hold ``${{ }}`` expressions, rendered here
against the environment the caller gives); ``{{args.name}}`` (spaces allowed
inside the braces) is then replaced in every string of every metric, as Argo
Rollouts does. ``{{env.NAME}}`` is left alone: it is a worker-side header
reference that only the measurement activity resolves (see
``activities.metrics``).
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Final, Literal, TypeAlias

from pydantic import AfterValidator, AwareDatetime, Field, ValidationError

from freightline.errors import ConfigError, ExpressionError
from freightline.kargo.expressions import evaluate, render_text
from freightline.kargo.keypaths import parse_json_path
from freightline.kargo.resources import (
    APPLY_CHECKS,
    AnalysisArgument,
    AnalysisRunArgument,
    AnalysisTemplate,
    DatadogMetric,
    InfluxdbMetric,
    KargoModel,
    Metric,
    NewRelicMetric,
    PrometheusMetric,
    WebMetric,
    parse_duration,
)

__all__ = [
    "COMPLETED_PHASES",
    "DEFAULT_CONSECUTIVE_ERROR_LIMIT",
    "DEFAULT_ERROR_RETRY_INTERVAL",
    "DEFAULT_PROMETHEUS_TIMEOUT_SECONDS",
    "DEFAULT_WEB_TIMEOUT_SECONDS",
    "SECRET_REFERENCE",
    "AnalysisPhase",
    "AnalysisRunStatus",
    "MeasureRequest",
    "Measurement",
    "MeasurementPhase",
    "MetricResult",
    "assess_run",
    "dry_run_metrics",
    "due_metrics",
    "effective_count",
    "evaluate_measurement",
    "flatten_templates",
    "measurement_timeout",
    "metric_phase",
    "next_measurement_at",
    "next_wakeup",
    "provider_timeout_seconds",
    "record",
    "record_measurement",
    "resolve_args",
    "resolve_metrics",
    "retention_limits",
    "run_phase",
    "secret_reference",
    "start_run",
    "substitute_args",
    "validate_metric",
]

AnalysisPhase: TypeAlias = Literal[
    "Pending", "Running", "Successful", "Failed", "Error", "Inconclusive", "Aborted"
]
MeasurementPhase: TypeAlias = Literal["Successful", "Failed", "Error", "Inconclusive"]

COMPLETED_PHASES: Final[frozenset[str]] = frozenset(
    {"Successful", "Failed", "Error", "Inconclusive", "Aborted"}
)
_TERMINATING_PHASES: Final = frozenset({"Failed", "Error", "Inconclusive"})
# Argo Rollouts' analysisStatusOrder, best to worst (Aborted is Kargo's, never a metric's).
_PHASE_ORDER: Final[tuple[str, ...]] = (
    "Successful",
    "Running",
    "Pending",
    "Inconclusive",
    "Error",
    "Failed",
)

DEFAULT_CONSECUTIVE_ERROR_LIMIT: Final = 4
DEFAULT_ERROR_RETRY_INTERVAL: Final = datetime.timedelta(seconds=10)
# Argo Rollouts' web provider default; Prometheus has none there, but an activity must end.
DEFAULT_WEB_TIMEOUT_SECONDS: Final = 10
DEFAULT_PROMETHEUS_TIMEOUT_SECONDS: Final = 30
# Graphite's (and Datadog's default) HTTP client timeout in Argo Rollouts.
_DEFAULT_PROVIDER_TIMEOUT_SECONDS: Final = 10
_DEFAULT_NRQL_TIMEOUT_SECONDS: Final = 5  # Argo Rollouts' NRQL timeout
_INFLUXDB_QUERY_TIMEOUT_SECONDS: Final = 30  # Argo Rollouts' Flux query timeout

# --- models ------------------------------------------------------------------------------------


def _finite_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if isinstance(value, list | tuple):
        return [_finite_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _finite_json(item) for key, item in value.items()}
    return value


class Measurement(KargoModel):
    """One measurement of one metric: its value, phase and when it was taken.

    ``value`` is plain JSON: a Prometheus vector is a list of floats, a scalar a
    float, a web metric the value at its ``jsonPath``. Non-finite floats (NaN,
    which Prometheus gives for 0/0, and infinities) are kept as Prometheus spells
    them, ``"NaN"``, ``"+Inf"``, ``"-Inf"``, so the value survives JSON (the
    conditions were evaluated on the real floats, in the activity).
    """

    phase: MeasurementPhase
    value: Annotated[Any, AfterValidator(_finite_json)] = None
    message: str | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    recorded_at: AwareDatetime | None = None
    """When the Verification workflow recorded it, in workflow time: the next measurement
    is due ``interval`` after this (after ``finished_at`` for runs that predate it)."""


class MetricResult(KargoModel):
    """The measurements of one metric in a run, and the counts the limits are checked on."""

    name: str
    phase: AnalysisPhase = "Pending"
    message: str | None = None
    measurements: list[Measurement] = Field(default_factory=list)
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    dry_run: bool = False
    """Measured and reported, never deciding the run (the templates' ``dryRun``)."""
    retention: int | None = None
    """How many of the latest measurements are kept (``measurementRetention``); None: all."""


class MeasureRequest(KargoModel):
    """The input of the ``measure_metric`` activity: one metric, its args already substituted.

    ``run`` names the analysis run for logs (say ``kargo-demo/uat/wise-otter``).
    The metric may hold ``{{env.NAME}}`` header references; they are resolved
    by the activity, on the worker, and never travel back.
    """

    metric: Metric
    run: str | None = None


class AnalysisRunStatus(KargoModel):
    """The state of one analysis run: its phase and one result per metric."""

    phase: AnalysisPhase = "Pending"
    message: str | None = None
    started_at: AwareDatetime | None = None
    metric_results: list[MetricResult] = Field(default_factory=list)
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    """The Stage's ``analysisRunMetadata``, shown on the run."""

    def result(self, name: str) -> MetricResult:
        """The result of the metric called ``name`` (a Pending one if none is recorded)."""
        for result in self.metric_results:
            if result.name == name:
                return result
        return MetricResult(name=name)


# --- arguments ---------------------------------------------------------------------------------

_ARG_TAG = re.compile(r"\{\{\s*args\.([^{}\s]*)\s*\}\}")


def flatten_templates(templates: AnalysisTemplate | Sequence[AnalysisTemplate]) -> AnalysisTemplate:
    """One template holding the metrics and args of several, as Argo Rollouts flattens them.

    Metric names must be unique across the templates; an arg declared twice
    must not have two different defaults.
    """
    if isinstance(templates, AnalysisTemplate):
        return templates
    if not templates:
        raise ConfigError("verification names no AnalysisTemplate")
    if len(templates) == 1:
        return templates[0]
    names = ", ".join(f'"{t.name}"' for t in templates)
    metrics: list[Metric] = []
    seen: dict[str, str] = {}
    for template in templates:
        for metric in template.spec.metrics:
            if metric.name in seen:
                raise ConfigError(
                    f'AnalysisTemplates "{seen[metric.name]}" and "{template.name}" both '
                    f'define a metric "{metric.name}"'
                )
            seen[metric.name] = template.name
            metrics.append(metric)
    args: dict[str, AnalysisArgument] = {}
    for template in templates:
        for arg in template.spec.args or []:
            previous = args.get(arg.name)
            if previous is None or (previous.value is None and previous.value_from is None):
                args[arg.name] = arg
            elif (arg.value is not None or arg.value_from is not None) and (
                (arg.value, arg.value_from) != (previous.value, previous.value_from)
            ):
                raise ConfigError(
                    f'AnalysisTemplates {names}: arg "{arg.name}" has two different default values'
                )
    # dryRun and measurementRetention are lists merged by metric name, as Argo Rollouts does.
    dry_run = {d.metric_name: d for t in templates for d in t.spec.dry_run or []}
    retention = {r.metric_name: r for t in templates for r in t.spec.measurement_retention or []}
    first = templates[0]
    return first.model_copy(
        update={
            "metadata": first.metadata.model_copy(update={"name": first.name}),
            "spec": first.spec.model_copy(
                update={
                    "metrics": metrics,
                    "args": list(args.values()) or None,
                    "dry_run": list(dry_run.values()) or None,
                    "measurement_retention": list(retention.values()) or None,
                }
            ),
        }
    )


def _arg_text(name: str, template: str, env: Mapping[str, Any]) -> str:
    # An argument is text: the rendered text itself (true, 3, 1.10, compact JSON), not typed
    # (Kargo refuses an argument that types as a number; a tag 1.10 must not become 1.1).
    try:
        return render_text(template, env)
    except ExpressionError as err:
        raise ConfigError(f'verification arg "{name}": {err}') from None


def secret_reference(name: str, key: str) -> str:
    """What an arg ``valueFrom.secretKeyRef`` is substituted with: a reference the measurement
    activity replaces with the worker's value, so that the value never enters a workflow."""
    return f"{{{{secretKeyRef:{name}:{key}}}}}"


SECRET_REFERENCE: Final = re.compile(r"\{\{secretKeyRef:([^:{}]+):([^:{}]+)\}\}")
"""Finds :func:`secret_reference` in a metric's strings (groups: the secret, the key)."""


def _field_value(arg: str, path: str, objects: Mapping[str, Any]) -> str:
    text = path.strip()
    segments = parse_json_path(text if text[:1] in "{$.[" else f".{text}")
    if not segments or segments[0] not in objects:
        raise ConfigError(
            f'arg "{arg}": fieldRef "{path}" must start with one of {", ".join(sorted(objects))}'
        )
    node: Any = objects
    for segment in segments:
        if isinstance(segment, int):
            ok = isinstance(node, list) and -len(node) <= segment < len(node)
        else:
            ok = isinstance(node, Mapping) and segment in node
        if not ok:
            raise ConfigError(f'arg "{arg}": fieldRef "{path}": no such field')
        node = node[segment]
    if isinstance(node, Mapping | list):
        raise ConfigError(f'arg "{arg}": fieldRef "{path}" is not a single value')
    return _arg_text(arg, "${{ value }}", {"value": node}) if not isinstance(node, str) else node


def resolve_args(
    templates: AnalysisTemplate | Sequence[AnalysisTemplate],
    stage_args: Sequence[AnalysisRunArgument] | None,
    env: Mapping[str, Any],
    objects: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The value of each of the templates' args: the Stage's value, else the template's.

    Stage values may hold ``${{ }}`` expressions, rendered against ``env``
    (``ctx``, ``vars``, ... as the caller builds it); a non-string result is
    interpolated as text (``3``, ``true``). Stage args the templates do not
    declare are ignored, as in Argo Rollouts. A template arg's ``valueFrom``:
    ``fieldRef`` reads a field of ``objects`` (the Freight and the Stage as
    JSON, by root name: ``freight.metadata.name``); ``secretKeyRef`` becomes
    :func:`secret_reference`, resolved by the measurement activity. Raises
    :class:`ConfigError` naming the arg when an expression or a field fails, or
    an arg is left without a value.
    """
    template = flatten_templates(templates)
    given = {arg.name: arg.value for arg in stage_args or []}
    values: dict[str, str] = {}
    for arg in template.spec.args or []:
        if arg.name in given:
            values[arg.name] = _arg_text(arg.name, given[arg.name], env)
        elif arg.value is not None:
            values[arg.name] = arg.value
        elif arg.value_from is not None and arg.value_from.secret_key_ref is not None:
            ref = arg.value_from.secret_key_ref
            values[arg.name] = secret_reference(ref.name, ref.key)
        elif arg.value_from is not None and arg.value_from.field_ref is not None:
            values[arg.name] = _field_value(
                arg.name, arg.value_from.field_ref.field_path, objects or {}
            )
        else:
            raise ConfigError(
                f'AnalysisTemplate "{template.name}": arg "{arg.name}" has no value: give it a '
                "default in the template or a value in the Stage's verification.args"
            )
    return values


def _substitute(value: Any, args: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in args:
                raise ConfigError(
                    f"{where}: {{{{args.{name}}}}} names no arg of the AnalysisTemplate "
                    f"(declared: {', '.join(sorted(args)) or 'none'})"
                )
            return args[name]

        return _ARG_TAG.sub(replace, value)
    if isinstance(value, Mapping):
        return {key: _substitute(item, args, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, args, where) for item in value]
    return value


def substitute_args(metric: Metric, args: Mapping[str, str]) -> Metric:
    """``metric`` with every ``{{args.name}}`` in its strings replaced by the arg's value.

    Raises :class:`ConfigError` for an unknown arg, or when the result is no
    longer a valid metric (say, an ``interval`` that is not a duration).
    """
    where = f'metric "{metric.name}"'
    data = _substitute(
        metric.model_dump(mode="json", by_alias=True, exclude_none=True), args, where
    )
    try:
        # The args are known only now: check the conditions with their values in.
        return Metric.model_validate(data, context=APPLY_CHECKS)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'metric'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"{where}: after substituting args: {problems}") from None


def resolve_metrics(
    templates: AnalysisTemplate | Sequence[AnalysisTemplate],
    stage_args: Sequence[AnalysisRunArgument] | None,
    env: Mapping[str, Any],
    objects: Mapping[str, Any] | None = None,
) -> list[Metric]:
    """The templates' metrics, ready to measure: args resolved and substituted."""
    template = flatten_templates(templates)
    args = resolve_args(template, stage_args, env, objects)
    return [substitute_args(metric, args) for metric in template.spec.metrics]


def _by_metric_name(kind: str, names: Iterable[str], metrics: Sequence[Metric]) -> dict[str, str]:
    """Each metric a ``dryRun`` / ``measurementRetention`` entry names (``*``: all), by name."""
    known = [metric.name for metric in metrics]
    chosen: dict[str, str] = {}
    for name in names:
        if name == "*":
            chosen.update({metric: name for metric in known if metric not in chosen})
        elif name in known:
            chosen[name] = name
        else:
            raise ConfigError(
                f'{kind}: metricName "{name}" names no metric (metrics: {", ".join(known)})'
            )
    return chosen


def dry_run_metrics(templates: AnalysisTemplate | Sequence[AnalysisTemplate]) -> tuple[str, ...]:
    """The metrics the templates' ``dryRun`` names (``*`` for all): measured, never deciding."""
    template = flatten_templates(templates)
    entries = [d.metric_name for d in template.spec.dry_run or []]
    return tuple(_by_metric_name("dryRun", entries, template.spec.metrics))


def retention_limits(templates: AnalysisTemplate | Sequence[AnalysisTemplate]) -> dict[str, int]:
    """How many measurements each metric keeps, from ``measurementRetention`` (a metric's own
    entry over ``*``); metrics it does not name keep every measurement."""
    template = flatten_templates(templates)
    entries = template.spec.measurement_retention or []
    limits = {r.metric_name: r.limit for r in entries}
    chosen = _by_metric_name(
        "measurementRetention", [r.metric_name for r in entries], template.spec.metrics
    )
    return {
        metric: limits[metric] if metric in limits else limits[via]
        for metric, via in chosen.items()
    }


# --- measurements ------------------------------------------------------------------------------


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _is_inf(value: Any) -> bool:
    return isinstance(value, float) and math.isinf(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("cannot convert bool to float")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"cannot convert {type(value).__name__} to float")


def _as_int(value: Any) -> int:
    if isinstance(value, str):
        return int(value.strip())
    number = _as_float(value)
    if not number.is_integer():
        raise ValueError(f"{value} is not an integer")
    return int(number)


# The helpers Argo Rollouts offers its conditions, besides ``result``.
_CONDITION_FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = {
    "isNaN": _is_nan,
    "isInf": _is_inf,
    "isNil": lambda value: value is None,
    "asFloat": _as_float,
    "asInt": _as_int,
    "default": lambda value, fallback: fallback if value is None else value,
}


def _condition(kind: str, expression: str, result: Any) -> bool:
    value = evaluate(expression, {**_CONDITION_FUNCTIONS, "result": result})
    if not isinstance(value, bool):
        raise ExpressionError(
            f'{kind} "{expression}": expected a bool, got {type(value).__name__} ({value!r})'
        )
    return value


def evaluate_measurement(metric: Metric, result: Any) -> tuple[MeasurementPhase, str | None]:
    """The phase of a measurement whose value is ``result``, and a message saying why.

    The conditions are expressions over ``result`` (a vector is a list of
    floats: ``result[0] >= 0.95``), with Argo Rollouts' helpers ``isNaN``,
    ``isInf``, ``isNil``, ``asInt``, ``asFloat`` and ``default``.
    """
    success, failure = metric.success_condition, metric.failure_condition
    try:
        succeeded = _condition("successCondition", success, result) if success else False
        failed = _condition("failureCondition", failure, result) if failure else False
    except ExpressionError as err:
        return "Error", str(err)
    if not success and not failure:
        return "Successful", None
    if success and not failure:
        if succeeded:
            return "Successful", None
        return "Failed", f'successCondition "{success}" is false'
    if failure and not success:
        if failed:
            return "Failed", f'failureCondition "{failure}" is true'
        return "Successful", None
    if failed:
        return "Failed", f'failureCondition "{failure}" is true'
    if succeeded:
        return "Successful", None
    return "Inconclusive", "neither successCondition nor failureCondition is true"


def record(result: MetricResult, measurement: Measurement) -> MetricResult:
    """``result`` with ``measurement`` appended and its counts updated (a new object)."""
    counts = {
        "count": result.count,
        "successful": result.successful,
        "failed": result.failed,
        "inconclusive": result.inconclusive,
        "error": result.error,
        "consecutive_error": result.consecutive_error,
    }
    if measurement.phase == "Error":
        counts["error"] += 1
        counts["consecutive_error"] += 1
    else:
        counts[measurement.phase.lower()] += 1
        counts["count"] += 1
        counts["consecutive_error"] = 0
    measurements = [*result.measurements, measurement]
    if result.retention is not None:
        measurements = measurements[-result.retention :]
    return result.model_copy(update={"measurements": measurements, **counts})


# --- metric and run phases ---------------------------------------------------------------------


def effective_count(metric: Metric) -> int | None:
    """How many (non-error) measurements complete the metric; None when it runs until stopped."""
    if not metric.count:
        return None if metric.interval else 1
    return metric.count


def _assess_metric(
    metric: Metric, result: MetricResult, terminating: bool
) -> tuple[AnalysisPhase, str | None]:
    if result.phase in COMPLETED_PHASES:
        return result.phase, result.message
    if not result.measurements:
        return ("Successful", "run terminated") if terminating else ("Pending", None)
    if metric.failure_limit >= 0 and result.failed > metric.failure_limit:
        return "Failed", f"failed ({result.failed}) > failureLimit ({metric.failure_limit})"
    if result.inconclusive > metric.inconclusive_limit:
        return (
            "Inconclusive",
            f"inconclusive ({result.inconclusive}) > inconclusiveLimit "
            f"({metric.inconclusive_limit})",
        )
    limit = metric.consecutive_error_limit
    if result.consecutive_error > limit:
        return (
            "Error",
            f"consecutiveErrors ({result.consecutive_error}) > consecutiveErrorLimit ({limit})",
        )
    count = effective_count(metric)
    if count is not None and result.count >= count:
        return "Successful", f"count ({count}) reached"
    if terminating:
        return "Successful", "run terminated"
    return "Running", None


def metric_phase(
    metric: Metric, result: MetricResult, *, terminating: bool = False
) -> AnalysisPhase:
    """The phase of one metric from its counts and limits (see the module docstring).

    ``terminating``: the run is ending (another metric failed, or an abort), so
    a metric that is not yet done counts as Successful. A completed phase
    already in ``result`` is kept.
    """
    return _assess_metric(metric, result, terminating)[0]


def _worse(current: str, new: str) -> bool:
    return _PHASE_ORDER.index(new) > _PHASE_ORDER.index(current)


def run_phase(results: Iterable[MetricResult], *, aborted: bool = False) -> AnalysisPhase:
    """The run's phase from its metrics' phases (as :func:`assess_run` leaves them).

    Failed, Error or Inconclusive in any metric decides the run at once, worst
    first (Failed, Error, Inconclusive); otherwise the run is Running until
    every metric is completed, then Successful. ``aborted`` turns a run that is
    still undecided into Aborted.
    """
    results = list(results)
    phases = [result.phase for result in results]
    worst: str | None = None
    for result in results:
        # A dry-run metric is reported, never decisive.
        phase = result.phase
        if result.dry_run:
            continue
        if phase in _TERMINATING_PHASES and (worst is None or _worse(worst, phase)):
            worst = phase
    if worst is not None:
        return worst  # type: ignore[return-value]  # one of _TERMINATING_PHASES
    if phases and all(phase in COMPLETED_PHASES for phase in phases):
        return "Aborted" if "Aborted" in phases else "Successful"
    return "Aborted" if aborted else "Running"


def validate_metric(metric: Metric) -> None:
    """Argo Rollouts' checks of a metric that its schema cannot express (ConfigError)."""
    where = f'metric "{metric.name}"'
    if metric.count:
        if metric.count > 1 and not metric.interval:
            raise ConfigError(f"{where}: count {metric.count} needs an interval")
        if metric.count < metric.failure_limit:
            raise ConfigError(f"{where}: count must be >= failureLimit")
        if metric.count < metric.inconclusive_limit:
            raise ConfigError(f"{where}: count must be >= inconclusiveLimit")


def start_run(
    metrics: Sequence[Metric],
    started_at: datetime.datetime,
    *,
    dry_run: Iterable[str] = (),
    retention: Mapping[str, int] | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> AnalysisRunStatus:
    """A Running run with a Pending result per metric, started at ``started_at``.

    ``dry_run`` names the metrics that never decide the run, ``retention`` how many
    measurements a metric keeps; ``labels`` and ``annotations`` are shown on the run.

    Raises :class:`ConfigError` for metrics Argo Rollouts would refuse to run
    (see :func:`validate_metric`) or two metrics of the same name.
    """
    for metric in metrics:
        validate_metric(metric)
    names = [metric.name for metric in metrics]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"two metrics have the same name: {', '.join(duplicates)}")
    if not metrics:
        raise ConfigError("an analysis run needs at least one metric")
    dry = set(dry_run)
    limits = dict(retention or {})
    return AnalysisRunStatus(
        phase="Running",
        started_at=started_at,
        metric_results=[
            MetricResult(name=name, dry_run=name in dry, retention=limits.get(name))
            for name in names
        ],
        labels=dict(labels) if labels else None,
        annotations=dict(annotations) if annotations else None,
    )


def record_measurement(
    status: AnalysisRunStatus, metric_name: str, measurement: Measurement
) -> AnalysisRunStatus:
    """``status`` with ``measurement`` recorded on the metric ``metric_name`` (a new object)."""
    results = list(status.metric_results)
    for index, result in enumerate(results):
        if result.name == metric_name:
            results[index] = record(result, measurement)
            break
    else:
        results.append(record(MetricResult(name=metric_name), measurement))
    return status.model_copy(update={"metric_results": results})


def assess_run(
    metrics: Sequence[Metric], status: AnalysisRunStatus, *, aborted: bool = False
) -> AnalysisRunStatus:
    """Re-assess every metric and the run, as Argo Rollouts' controller does after measuring.

    Returns a new status whose metric phases, run phase and message are up to
    date. Once the run is completed it is returned unchanged.
    """
    if status.phase in COMPLETED_PHASES:
        return status
    by_name = {result.name: result for result in status.metric_results}
    results = [by_name.get(metric.name, MetricResult(name=metric.name)) for metric in metrics]
    # First pass: has a metric already decided the run? Then the others stop where they are.
    assessed = [
        _assess_metric(metric, result, terminating=False)
        for metric, result in zip(metrics, results, strict=True)
    ]
    terminating = aborted or any(
        phase in _TERMINATING_PHASES and not result.dry_run
        for result, (phase, _) in zip(results, assessed, strict=True)
    )
    if terminating:
        assessed = [
            _assess_metric(metric, result, terminating=True)
            for metric, result in zip(metrics, results, strict=True)
        ]
    if aborted:
        # Metrics the abort cut short are Aborted, not Successful: nobody measured them out.
        assessed = [
            ("Aborted", "aborted") if message == "run terminated" else (phase, message)
            for phase, message in assessed
        ]
    updated = [
        result.model_copy(update={"phase": phase, "message": message})
        for result, (phase, message) in zip(results, assessed, strict=True)
    ]
    phase = run_phase(updated, aborted=aborted)
    message: str | None = None
    if phase in _TERMINATING_PHASES:
        for metric_result in updated:
            if metric_result.phase == phase and not metric_result.dry_run:
                message = f'metric "{metric_result.name}" assessed {phase}'
                if metric_result.message:
                    message += f" due to {metric_result.message}"
                last = metric_result.measurements[-1] if metric_result.measurements else None
                if last is not None and last.message:
                    message += f": {last.message}"
                break
    elif phase == "Aborted":
        message = "verification aborted"
    return status.model_copy(update={"phase": phase, "message": message, "metric_results": updated})


# --- scheduling --------------------------------------------------------------------------------


def next_measurement_at(
    metric: Metric, result: MetricResult, started_at: datetime.datetime
) -> datetime.datetime | None:
    """When ``metric`` should next be measured, or None when it needs no more measurements.

    ``started_at`` is the run's start. The time may be in the past: the
    measurement is overdue and should be taken at once.
    """
    if result.phase in COMPLETED_PHASES:
        return None
    if not result.measurements:
        delay = parse_duration(metric.initial_delay) if metric.initial_delay else None
        return started_at + delay if delay else started_at
    count = effective_count(metric)
    if count is not None and result.count >= count:
        return None
    last = result.measurements[-1]
    if metric.interval:
        interval = parse_duration(metric.interval)
    elif last.phase == "Error":
        interval = DEFAULT_ERROR_RETRY_INTERVAL
    else:  # pragma: no cover - validate_metric refuses count > 1 without an interval
        return None
    finished = last.recorded_at or last.finished_at or last.started_at or started_at
    return finished + interval


def due_metrics(
    metrics: Sequence[Metric], status: AnalysisRunStatus, now: datetime.datetime
) -> list[Metric]:
    """The metrics to measure at ``now`` (none once the run is completed)."""
    if status.phase in COMPLETED_PHASES:
        return []
    started = status.started_at or now
    due: list[Metric] = []
    for metric in metrics:
        at = next_measurement_at(metric, status.result(metric.name), started)
        if at is not None and at <= now:
            due.append(metric)
    return due


def next_wakeup(
    metrics: Sequence[Metric], status: AnalysisRunStatus, now: datetime.datetime
) -> datetime.datetime | None:
    """The earliest time any metric is next due (``now`` if one is overdue); None when done."""
    if status.phase in COMPLETED_PHASES:
        return None
    started = status.started_at or now
    times = [
        at
        for metric in metrics
        if (at := next_measurement_at(metric, status.result(metric.name), started)) is not None
    ]
    return max(min(times), now) if times else None


def measurement_timeout(metric: Metric) -> datetime.timedelta:
    """A start-to-close timeout for one measurement activity of ``metric``.

    The provider's own timeout plus a margin, so that a slow provider ends as an
    Error measurement (which counts against ``consecutiveErrorLimit``) rather
    than as an activity timeout.
    """
    return datetime.timedelta(seconds=provider_timeout_seconds(metric.provider.spec) + 15)


def provider_timeout_seconds(spec: KargoModel) -> float:
    """How long a provider (its configuration, ``metric.provider.spec``) may take to answer
    one query, in seconds: its own setting where Argo Rollouts has one, else its default
    there (Graphite's and Datadog's 10 s client), else Freightline's (an activity must end).
    """
    if isinstance(spec, PrometheusMetric):
        return spec.timeout or DEFAULT_PROMETHEUS_TIMEOUT_SECONDS
    if isinstance(spec, WebMetric):
        return spec.timeout_seconds or DEFAULT_WEB_TIMEOUT_SECONDS
    if isinstance(spec, DatadogMetric) and spec.request_timeout:
        return parse_duration(spec.request_timeout).total_seconds()
    if isinstance(spec, NewRelicMetric):
        return spec.timeout or _DEFAULT_NRQL_TIMEOUT_SECONDS
    if isinstance(spec, InfluxdbMetric):
        return _INFLUXDB_QUERY_TIMEOUT_SECONDS
    return _DEFAULT_PROVIDER_TIMEOUT_SECONDS
