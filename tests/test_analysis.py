"""Argo Rollouts' analysis rules in ``freightline.kargo.analysis``: pure, no services."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from temporalio.contrib.pydantic import pydantic_data_converter

from freightline.errors import ConfigError
from freightline.kargo.analysis import (
    DEFAULT_ERROR_RETRY_INTERVAL,
    AnalysisRunStatus,
    Measurement,
    MeasurementPhase,
    MeasureRequest,
    MetricResult,
    assess_run,
    due_metrics,
    effective_count,
    evaluate_measurement,
    measurement_timeout,
    metric_phase,
    next_measurement_at,
    next_wakeup,
    record,
    record_measurement,
    resolve_args,
    resolve_metrics,
    run_phase,
    start_run,
    substitute_args,
    validate_metric,
)
from freightline.kargo.resources import (
    APPLY_CHECKS,
    AnalysisRunArgument,
    AnalysisTemplate,
    Metric,
)

T0 = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
PHASES: list[MeasurementPhase] = ["Successful", "Failed", "Inconclusive", "Error"]


def metric(name: str = "m", **fields: Any) -> Metric:
    return Metric.model_validate(
        {
            "name": name,
            "provider": {"prometheus": {"address": "http://prom:9090", "query": "up"}},
            **fields,
        },
        context=APPLY_CHECKS,  # as apply reads it: the conditions are parsed
    )


def measured(phase: MeasurementPhase, at: datetime.datetime = T0) -> Measurement:
    return Measurement(phase=phase, started_at=at, finished_at=at)


def result_of(phases: list[MeasurementPhase], name: str = "m") -> MetricResult:
    result = MetricResult(name=name)
    for phase in phases:
        result = record(result, measured(phase))
    return result


# --- conditions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("success", "failure", "value", "expected"),
    [
        (None, None, [1.0], "Successful"),  # neither set: Successful
        ("result[0] >= 0.95", None, [0.99], "Successful"),
        ("result[0] >= 0.95", None, [0.5], "Failed"),  # only success set and false: Failed
        (None, "result[0] > 0.05", [0.01], "Successful"),  # only failure set and false
        (None, "result[0] > 0.05", [0.5], "Failed"),
        ("result[0] < 0.05", "result[0] > 0.2", [0.01], "Successful"),
        ("result[0] < 0.05", "result[0] > 0.2", [0.5], "Failed"),
        ("result[0] < 0.05", "result[0] > 0.2", [0.1], "Inconclusive"),  # both set, neither true
        ("result > 0", "result > 0", 1.0, "Failed"),  # both true: failure wins
        ("result == true", None, True, "Successful"),
        ('result == "ok"', None, "ok", "Successful"),
        ("len(result) == 2 && result[1] == 0", None, [1.0, 0.0], "Successful"),
    ],
)
def test_conditions_decide_the_measurement_phase(
    success: str | None, failure: str | None, value: Any, expected: str
) -> None:
    phase, message = evaluate_measurement(
        metric(success_condition=success, failure_condition=failure), value
    )
    assert phase == expected
    assert (message is None) == (expected == "Successful")


@pytest.mark.parametrize(
    ("condition", "value", "fragment"),
    [
        ("result[0] < 0.05", [], "out of range"),  # an empty vector cannot be indexed
        ("results[0] < 1", [0.1], "unknown name"),
        ("result[0]", [0.1], "expected a bool"),
    ],
)
def test_a_condition_that_cannot_be_evaluated_is_an_error(
    condition: str, value: Any, fragment: str
) -> None:
    phase, message = evaluate_measurement(metric(success_condition=condition), value)
    assert phase == "Error"
    assert message is not None and fragment in message


def test_a_condition_that_does_not_parse_is_refused_at_apply() -> None:
    with pytest.raises(ValueError, match="unexpected end"):
        metric(success_condition="result[0] <")
    with pytest.raises(ValueError, match="failure_condition"):
        metric(failure_condition="len(result")
    # An arg placeholder stands for a value until the run substitutes it.
    assert metric(success_condition="result < {{args.threshold}}").success_condition == (
        "result < {{args.threshold}}"
    )


def test_argo_rollouts_condition_helpers() -> None:
    nan = float("nan")
    check = metric(success_condition="!isNaN(result[0]) && result[0] < 0.05")
    assert evaluate_measurement(check, [nan])[0] == "Failed"
    assert evaluate_measurement(check, [0.01])[0] == "Successful"
    assert evaluate_measurement(metric(success_condition="isInf(result)"), float("inf"))[0] == (
        "Successful"
    )
    assert evaluate_measurement(metric(success_condition="asFloat(result) > 1"), "2.5")[0] == (
        "Successful"
    )
    assert evaluate_measurement(metric(success_condition="asInt(result) == 3"), "3")[0] == (
        "Successful"
    )
    assert evaluate_measurement(metric(success_condition="default(result, 1) == 1"), None)[0] == (
        "Successful"
    )
    assert evaluate_measurement(metric(success_condition="isNil(result)"), None)[0] == (
        "Successful"
    )


# --- counts and metric phases ------------------------------------------------------------------


def test_record_counts_like_argo_rollouts() -> None:
    result = result_of(["Successful", "Error", "Error", "Failed", "Inconclusive", "Error"])
    assert (result.count, result.successful, result.failed, result.inconclusive) == (3, 1, 1, 1)
    assert (result.error, result.consecutive_error) == (3, 1)
    assert len(result.measurements) == 6
    # record returns a new result; the old one is unchanged
    assert record(result, measured("Successful")).consecutive_error == 0
    assert result.consecutive_error == 1


def test_metric_phase_limits_in_argo_rollouts_order() -> None:
    assert metric_phase(metric(), MetricResult(name="m")) == "Pending"
    # failureLimit defaults to 0: the first failure fails the metric
    assert metric_phase(metric(interval="1m"), result_of(["Failed"])) == "Failed"
    assert metric_phase(metric(interval="1m", failure_limit=2), result_of(["Failed"] * 2)) == (
        "Running"
    )
    assert metric_phase(metric(interval="1m", failure_limit=2), result_of(["Failed"] * 3)) == (
        "Failed"
    )
    # -1: failures never fail the metric
    assert metric_phase(metric(interval="1m", failure_limit=-1), result_of(["Failed"] * 50)) == (
        "Running"
    )
    assert metric_phase(metric(interval="1m"), result_of(["Inconclusive"])) == "Inconclusive"
    lenient = metric(interval="1m", inconclusive_limit=1)
    assert metric_phase(lenient, result_of(["Inconclusive"])) == "Running"
    # consecutiveErrorLimit defaults to 4: the fifth error in a row errors the metric
    assert metric_phase(metric(interval="1m"), result_of(["Error"] * 4)) == "Running"
    assert metric_phase(metric(interval="1m"), result_of(["Error"] * 5)) == "Error"
    errors: list[MeasurementPhase] = ["Error"] * 4
    broken: list[MeasurementPhase] = [*errors, "Successful", *errors]
    assert metric_phase(metric(interval="1m"), result_of(broken)) == "Running"  # reset
    assert metric_phase(metric(consecutive_error_limit=0), result_of(["Error"])) == "Error"
    # failures are checked before inconclusives and errors
    both = metric(interval="1m", consecutive_error_limit=0)
    assert metric_phase(both, result_of(["Inconclusive", "Failed", "Error"])) == "Failed"


def test_count_and_interval_decide_when_a_metric_is_done() -> None:
    assert effective_count(metric()) == 1  # no interval: one measurement
    assert effective_count(metric(count=0)) == 1
    assert effective_count(metric(interval="1m")) is None  # until stopped
    assert effective_count(metric(interval="1m", count=3)) == 3
    assert metric_phase(metric(), result_of(["Successful"])) == "Successful"
    # errors do not count towards count
    assert metric_phase(metric(), result_of(["Error", "Error"])) == "Running"
    assert metric_phase(metric(), result_of(["Error", "Successful"])) == "Successful"
    counted = metric(interval="1m", count=3, failure_limit=1)
    assert metric_phase(counted, result_of(["Successful", "Failed"])) == "Running"
    # the count is reached with failures within the limit: Successful
    assert metric_phase(counted, result_of(["Successful", "Failed", "Successful"])) == "Successful"
    forever = metric(interval="1m")
    assert metric_phase(forever, result_of(["Successful"] * 100)) == "Running"
    assert metric_phase(forever, result_of(["Successful"]), terminating=True) == "Successful"
    assert metric_phase(forever, MetricResult(name="m"), terminating=True) == "Successful"


def test_a_completed_metric_phase_is_kept() -> None:
    done = result_of(["Failed"]).model_copy(update={"phase": "Failed"})
    again = record(done, measured("Successful"))
    assert metric_phase(metric(interval="1m", failure_limit=5), again) == "Failed"


# --- run phases --------------------------------------------------------------------------------


def with_phase(phase: str, name: str = "m") -> MetricResult:
    return MetricResult.model_validate({"name": name, "phase": phase})


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (["Successful", "Successful"], "Successful"),
        (["Successful", "Running"], "Running"),
        (["Pending", "Pending"], "Running"),
        (["Running", "Failed"], "Failed"),  # a failure decides the run at once
        (["Running", "Inconclusive"], "Inconclusive"),
        (["Pending", "Error"], "Error"),
        (["Inconclusive", "Error", "Successful"], "Error"),
        (["Error", "Failed", "Inconclusive"], "Failed"),
        (["Successful", "Inconclusive"], "Inconclusive"),
    ],
)
def test_run_phase_takes_the_worst_decided_metric(phases: list[str], expected: str) -> None:
    results = [with_phase(p, f"m{i}") for i, p in enumerate(phases)]
    assert run_phase(results) == expected
    assert run_phase(reversed(results)) == expected


def test_an_abort_only_changes_an_undecided_run() -> None:
    assert run_phase([with_phase("Running")], aborted=True) == "Aborted"
    assert run_phase([with_phase("Failed")], aborted=True) == "Failed"
    assert run_phase([with_phase("Successful")], aborted=True) == "Successful"


def test_assess_run_stops_the_other_metrics_when_one_fails() -> None:
    metrics = [
        metric("errors", interval="1m", success_condition="result[0] < 0.05"),
        metric("latency", interval="1m", initial_delay="5m"),
    ]
    status = start_run(metrics, T0)
    assert status.phase == "Running" and [r.phase for r in status.metric_results] == [
        "Pending",
        "Pending",
    ]
    failed, message = evaluate_measurement(metrics[0], [0.5])
    status = record_measurement(
        status, "errors", Measurement(phase=failed, value=[0.5], message=message, finished_at=T0)
    )
    status = assess_run(metrics, status)
    assert status.phase == "Failed"
    assert status.result("errors").phase == "Failed"
    assert status.result("latency").phase == "Successful"  # run terminated before it started
    assert status.message == (
        'metric "errors" assessed Failed due to failed (1) > failureLimit (0): '
        'successCondition "result[0] < 0.05" is false'
    )
    assert due_metrics(metrics, status, T0 + datetime.timedelta(hours=1)) == []
    assert next_wakeup(metrics, status, T0) is None
    assert assess_run(metrics, status, aborted=True) == status  # decided runs stay decided


def test_assess_run_aborted_marks_unfinished_metrics_aborted() -> None:
    metrics = [metric("a", count=1), metric("b", interval="1m")]
    status = record_measurement(start_run(metrics, T0), "a", measured("Successful"))
    status = record_measurement(status, "b", measured("Successful"))
    running = assess_run(metrics, status)
    assert running.phase == "Running"
    assert [r.phase for r in running.metric_results] == ["Successful", "Running"]
    aborted = assess_run(metrics, running, aborted=True)
    assert aborted.phase == "Aborted" and aborted.message == "verification aborted"
    assert [r.phase for r in aborted.metric_results] == ["Successful", "Aborted"]


def test_start_run_refuses_what_argo_rollouts_refuses() -> None:
    with pytest.raises(ConfigError, match="same name: m"):
        start_run([metric(), metric()], T0)
    with pytest.raises(ConfigError, match='metric "m": count 3 needs an interval'):
        start_run([metric(count=3)], T0)
    with pytest.raises(ConfigError, match="count must be >= failureLimit"):
        start_run([metric(count=1, failure_limit=2)], T0)
    with pytest.raises(ConfigError, match="count must be >= inconclusiveLimit"):
        start_run([metric(count=1, inconclusive_limit=2)], T0)


# --- scheduling --------------------------------------------------------------------------------


def test_next_measurement_times() -> None:
    m = metric(interval="1m", initial_delay="30s", count=3)
    assert next_measurement_at(m, MetricResult(name="m"), T0) == T0 + datetime.timedelta(seconds=30)
    assert next_measurement_at(metric(), MetricResult(name="m"), T0) == T0
    at = T0 + datetime.timedelta(seconds=31)
    one = record(MetricResult(name="m"), measured("Successful", at))
    assert next_measurement_at(m, one, T0) == at + datetime.timedelta(minutes=1)
    # an interval applies after an error too
    err = record(MetricResult(name="m"), measured("Error", at))
    assert next_measurement_at(m, err, T0) == at + datetime.timedelta(minutes=1)
    # without interval, an error is retried after 10 seconds
    assert next_measurement_at(metric(), err, T0) == at + DEFAULT_ERROR_RETRY_INTERVAL
    # done: count reached, or the metric completed
    assert next_measurement_at(metric(), one, T0) is None
    three = result_of(["Successful"] * 3)
    assert next_measurement_at(m, three, T0) is None
    assert next_measurement_at(m, one.model_copy(update={"phase": "Failed"}), T0) is None


def simulate(
    metrics: list[Metric],
    outcome: Any,
    duration: datetime.timedelta = datetime.timedelta(seconds=2),
    limit: int = 1000,
) -> tuple[AnalysisRunStatus, list[tuple[str, datetime.datetime]]]:
    """Drive a run as the workflow will: wake, measure what is due, record, assess, sleep."""
    now = T0
    status = start_run(metrics, now)
    taken: list[tuple[str, datetime.datetime]] = []
    for _ in range(limit):
        for m in due_metrics(metrics, status, now):
            phase: MeasurementPhase = outcome(m.name, len(status.result(m.name).measurements))
            taken.append((m.name, now))
            measurement = Measurement(phase=phase, started_at=now, finished_at=now + duration)
            status = record_measurement(status, m.name, measurement)
        status = assess_run(metrics, status)
        wake = next_wakeup(metrics, status, now)
        if wake is None:
            return status, taken
        assert wake >= now
        now = max(wake, now + duration)
    raise AssertionError("the run did not finish")


def test_a_window_measures_count_times_at_the_interval() -> None:
    metrics = [metric("m", interval="1m", count=3, initial_delay="10s")]
    status, taken = simulate(metrics, lambda name, n: "Successful")
    assert status.phase == "Successful"
    step = datetime.timedelta(minutes=1, seconds=2)
    start = T0 + datetime.timedelta(seconds=10)
    assert [at for _, at in taken] == [start, start + step, start + 2 * step]


def test_errors_retry_until_the_consecutive_error_limit() -> None:
    status, taken = simulate([metric("m")], lambda name, n: "Error")
    assert status.phase == "Error"
    assert len(taken) == 5  # consecutiveErrorLimit 4: the fifth error ends it
    gaps = {b - a for (_, a), (_, b) in itertools.pairwise(taken)}
    assert gaps == {DEFAULT_ERROR_RETRY_INTERVAL + datetime.timedelta(seconds=2)}
    assert status.message is not None and "consecutiveErrors (5) > consecutiveErrorLimit (4)" in (
        status.message
    )


def test_two_metrics_interleave_on_their_own_intervals() -> None:
    metrics = [metric("fast", interval="10s", count=6), metric("slow", interval="30s", count=2)]
    status, taken = simulate(metrics, lambda name, n: "Successful", duration=datetime.timedelta(0))
    assert status.phase == "Successful"
    assert [at - T0 for name, at in taken if name == "slow"] == [
        datetime.timedelta(0),
        datetime.timedelta(seconds=30),
    ]
    assert len([name for name, _ in taken if name == "fast"]) == 6


# --- properties --------------------------------------------------------------------------------

phase_lists = st.lists(st.sampled_from(PHASES), max_size=40)
limits = st.fixed_dictionaries(
    {
        "failure_limit": st.integers(-1, 5),
        "inconclusive_limit": st.integers(0, 5),
        "consecutive_error_limit": st.integers(0, 6),
        "count": st.none() | st.integers(0, 10),
        "interval": st.none() | st.just("1m"),
    }
)


@given(phase_lists)
def test_counts_add_up(phases: list[MeasurementPhase]) -> None:
    result = result_of(phases)
    assert result.count == result.successful + result.failed + result.inconclusive
    assert result.error == phases.count("Error")
    assert len(result.measurements) == result.count + result.error
    trailing = next((i for i, p in enumerate(reversed(phases)) if p != "Error"), len(phases))
    assert result.consecutive_error == trailing


@settings(max_examples=300)
@given(limits, phase_lists)
def test_metric_phase_matches_its_limits(fields: dict[str, Any], phases: list[Any]) -> None:
    m = metric(**fields)
    try:
        validate_metric(m)
    except ConfigError:
        assume(False)
    result = MetricResult(name="m")
    for phase in phases:  # measure as a run would: stop once the metric is decided
        result = record(result, measured(phase))
        decided = metric_phase(m, result)
        result = result.model_copy(update={"phase": decided})
        if decided != "Running":
            break
    final = result.phase
    assert final != "Pending" or not phases
    if final == "Failed":
        assert result.failed == m.failure_limit + 1 and m.failure_limit >= 0
    if final == "Inconclusive":
        assert result.inconclusive == m.inconclusive_limit + 1
    if final == "Error":
        assert result.consecutive_error == m.consecutive_error_limit + 1
    if final == "Successful":
        count = effective_count(m)
        assert count is not None and result.count == count
    if m.failure_limit == -1:
        assert final != "Failed"
    # the phase, once decided, never changes; scheduling agrees the metric is done
    if final not in ("Running", "Pending"):
        more = record(result, measured("Successful"))
        assert metric_phase(m, more) == final
        assert next_measurement_at(m, result, T0) is None
    elif phases:
        at = next_measurement_at(m, result, T0)
        assert at is not None and at >= T0


@given(st.lists(st.sampled_from(["Pending", "Running", *PHASES]), min_size=1, max_size=6))
def test_run_phase_is_decided_by_its_worst_metric(phases: list[str]) -> None:
    results = [with_phase(p, f"m{i}") for i, p in enumerate(phases)]
    phase = run_phase(results)
    assert phase == run_phase(results[::-1])
    if "Failed" in phases:
        assert phase == "Failed"
    elif phase == "Successful":
        assert set(phases) == {"Successful"}
    if any(p in ("Failed", "Error", "Inconclusive") for p in phases):
        assert phase in ("Failed", "Error", "Inconclusive")


# --- args --------------------------------------------------------------------------------------


def template(**spec: Any) -> AnalysisTemplate:
    return AnalysisTemplate.model_validate(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": spec.pop("name", "errors"), "namespace": "kargo-demo"},
            "spec": spec,
        }
    )


ERRORS = template(
    args=[{"name": "app"}, {"name": "threshold", "value": "0.05"}, {"name": "token"}],
    metrics=[
        {
            "name": "error-ratio",
            "interval": "1m",
            "successCondition": "result[0] < {{ args.threshold }}",
            "provider": {
                "prometheus": {
                    "address": "http://prometheus:9090",
                    "query": 'emulator_error_ratio{app="{{args.app}}"}',
                }
            },
        },
        {
            "name": "health",
            "provider": {
                "web": {
                    "url": "http://{{args.app}}.svc/health?x={{args.app}}",
                    "headers": [
                        {"key": "X-App", "value": "{{args.app}}"},
                        {"key": "Authorization", "value": "Bearer {{env.FREIGHTLINE_METRIC_T}}"},
                    ],
                    "jsonPath": "{$.status}",
                }
            },
        },
    ],
)


def stage_args(**values: str) -> list[AnalysisRunArgument]:
    return [AnalysisRunArgument(name=k, value=v) for k, v in values.items()]


ENV = {"ctx": {"project": "kargo-demo", "stage": "uat"}, "vars": {"count": 3, "on": True}}


def test_args_take_stage_values_then_template_defaults() -> None:
    values = resolve_args(
        ERRORS,
        stage_args(app="kargo-demo-${{ ctx.stage }}", token="${{ vars.count }}", extra="x"),
        ENV,
    )
    assert values == {"app": "kargo-demo-uat", "threshold": "0.05", "token": "3"}
    metrics = resolve_metrics(ERRORS, stage_args(app="${{ ctx.stage }}", token="t"), ENV)
    prom = metrics[0].provider.prometheus
    assert prom is not None and prom.query == 'emulator_error_ratio{app="uat"}'
    assert metrics[0].success_condition == "result[0] < 0.05"
    assert metrics[0].interval == "1m"
    web = metrics[1].provider.web
    assert web is not None and web.url == "http://uat.svc/health?x=uat"
    assert [(h.key, h.value) for h in web.headers or []] == [
        ("X-App", "uat"),
        ("Authorization", "Bearer {{env.FREIGHTLINE_METRIC_T}}"),  # left for the worker
    ]
    assert resolve_args(ERRORS, stage_args(app="a", token="${{ vars.on }}"), ENV)["token"] == "true"


def test_arg_problems_name_the_arg() -> None:
    with pytest.raises(ConfigError, match=r'arg "app" has no value'):
        resolve_args(ERRORS, stage_args(token="t"), ENV)
    with pytest.raises(ConfigError, match=r'verification arg "app": expression "nope.x"'):
        resolve_args(ERRORS, stage_args(app="${{ nope.x }}", token="t"), ENV)
    undeclared = template(
        args=[{"name": "app"}],
        metrics=[
            {
                "name": "q",
                "provider": {"prometheus": {"address": "http://p", "query": "{{args.window}}"}},
            }
        ],
    )
    with pytest.raises(ConfigError, match=r'metric "q": \{\{args.window\}\} names no arg'):
        resolve_metrics(undeclared, stage_args(app="a"), ENV)
    # Durations are checked when the template loads; names after substitution, here.
    unnamed = template(
        args=[{"name": "n"}],
        metrics=[{"name": "{{args.n}}", "provider": {"web": {"url": "http://x"}}}],
    )
    with pytest.raises(ConfigError, match=r"after substituting args: name: String should have"):
        resolve_metrics(unnamed, stage_args(n=""), ENV)


def test_several_templates_flatten() -> None:
    other = template(
        name="latency",
        args=[{"name": "app", "value": "default-app"}],
        metrics=[
            {"name": "p99", "provider": {"prometheus": {"address": "http://p", "query": "q"}}}
        ],
    )
    errors = template(
        args=[{"name": "app"}],
        metrics=[{"name": "e", "provider": {"prometheus": {"address": "http://p", "query": "q"}}}],
    )
    metrics = resolve_metrics([errors, other], None, ENV)
    assert [m.name for m in metrics] == ["e", "p99"]
    assert resolve_args([errors, other], None, ENV) == {"app": "default-app"}
    with pytest.raises(ConfigError, match='both define a metric "e"'):
        resolve_metrics([errors, errors], None, ENV)
    conflicting = template(
        name="c",
        args=[{"name": "app", "value": "other"}],
        metrics=[{"name": "c", "provider": {"prometheus": {"address": "http://p", "query": "q"}}}],
    )
    with pytest.raises(ConfigError, match='arg "app" has two different default values'):
        resolve_args([other, conflicting], None, ENV)


def test_substitute_args_leaves_other_tags() -> None:
    m = metric(success_condition="result == {{args.x}}")
    assert substitute_args(m, {"x": "1"}).success_condition == "result == 1"
    assert substitute_args(metric(success_condition="{{other}}"), {}).success_condition == (
        "{{other}}"
    )


# --- wire shapes -------------------------------------------------------------------------------


def test_models_round_trip_through_the_data_converter() -> None:
    converter = pydantic_data_converter.payload_converter
    status = record_measurement(
        start_run([metric()], T0),
        "m",
        Measurement.model_validate(
            {
                "phase": "Failed",
                "value": [float("nan"), 0.5],
                "startedAt": "2025-01-01T12:00:00Z",
                "finishedAt": "2025-01-01T12:00:01+00:00",
            }
        ),
    )
    assert status.metric_results[0].measurements[0].value == ["NaN", 0.5]
    payloads = converter.to_payloads([status, MeasureRequest(metric=metric(), run="p/s/f")])
    assert b'"consecutiveError"' in payloads[0].data
    back = converter.from_payloads(payloads, [AnalysisRunStatus, MeasureRequest])
    assert back == [status, MeasureRequest(metric=metric(), run="p/s/f")]


def test_measurement_timeout_covers_the_provider_timeout() -> None:
    assert measurement_timeout(metric()) > datetime.timedelta(seconds=30)
    web = Metric.model_validate(
        {"name": "w", "provider": {"web": {"url": "http://x", "timeoutSeconds": 3}}}
    )
    assert datetime.timedelta(seconds=3) < measurement_timeout(web) < datetime.timedelta(minutes=1)
