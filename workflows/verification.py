"""The ``Verification`` workflow: one analysis run over a Stage's AnalysisTemplates.

A child of the Stage workflow, started when a promotion succeeded (or on
``freightline verify``). Measurements are one short local activity each (a
read-only query, safe to repeat if a worker dies mid-measurement; its result
is recorded once); the gaps between them are durable timers, so a one-hour window survives worker and
server restarts and loses or repeats no measurement (each is recorded in
history the moment its activity completes). The ``abort`` signal ends it
Aborted; the ``status`` query shows every measurement so far. A run that ends
Successful is the workflow's result; any other ending fails the workflow
(``VerificationFailed`` and so on, the run as details) so that the Temporal UI
lists it as failed; the Stage reads the run back from either.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.metrics import MetricActivities
    from freightline.contracts.metrics import record_verification_finished
    from freightline.contracts.verification import VerificationRequest, failure_type
    from freightline.errors import diagnose
    from freightline.kargo.analysis import (
        COMPLETED_PHASES,
        AnalysisRunStatus,
        Measurement,
        MeasureRequest,
        assess_run,
        due_metrics,
        measurement_timeout,
        next_wakeup,
        record_measurement,
        start_run,
    )
    from freightline.kargo.resources import Metric
    from workflows.options import measurement_options

LOCAL_MEASUREMENTS = "local-measurements"
"""Patch: measurements run as local activities (runs started before it keep activities)."""
FAILS_UNLESS_SUCCESSFUL = "fails-unless-successful"
"""Patch: a run that did not end Successful fails the workflow (type ``VerificationFailed``
and so on, the run as details), so the Temporal UI lists it as failed; runs started before
it complete with the run as their result."""


@workflow.defn(name="Verification")
class VerificationWorkflow:
    """Measures metrics on their schedule until the run is decided or aborted."""

    def __init__(self) -> None:
        self._status = AnalysisRunStatus()
        self._aborted_by: str | None = None

    @workflow.run
    async def run(self, request: VerificationRequest) -> AnalysisRunStatus:
        metrics = list(request.metrics)
        self._status = start_run(
            metrics,
            workflow.now(),
            dry_run=request.dry_run,
            retention=request.measurement_retention,
            labels=request.labels,
            annotations=request.annotations,
        )
        while self._status.phase not in COMPLETED_PHASES:
            for metric in due_metrics(metrics, self._status, workflow.now()):
                measurement = await self._measure(request, metric)
                self._status = record_measurement(self._status, metric.name, measurement)
            self._status = assess_run(metrics, self._status, aborted=self._aborted_by is not None)
            self._show(request)
            wake = next_wakeup(metrics, self._status, workflow.now())
            if wake is None:
                break
            delay = wake - workflow.now()
            if delay > timedelta(0):
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._aborted_by is not None, timeout=delay
                    )
        if self._aborted_by is not None and self._status.phase == "Aborted":
            self._status = self._status.model_copy(
                update={"message": f"verification aborted by {self._aborted_by}"}
            )
        self._show(request)
        started = self._status.started_at or workflow.info().start_time
        record_verification_finished(
            request.project,
            request.stage,
            self._status.phase,
            (workflow.now() - started).total_seconds(),
        )
        if self._status.phase != "Successful" and workflow.patched(FAILS_UNLESS_SUCCESSFUL):
            raise ApplicationError(
                f"verification {self._status.phase}: {self._status.message or 'no reason given'}",
                self._status,
                type=failure_type(self._status.phase),
                non_retryable=True,
            )
        return self._status

    async def _measure(self, request: VerificationRequest, metric: Metric) -> Measurement:
        measure = MeasureRequest(metric=metric, run=request.run_name)
        options = measurement_options(measurement_timeout(metric), f"measure {metric.name}")
        try:
            if workflow.patched(LOCAL_MEASUREMENTS):
                # One marker event per measurement instead of an activity's three and the
                # workflow task between them: a 1 h window at 1 m fits in ~370 events.
                local = await workflow.execute_local_activity_method(
                    MetricActivities.measure_metric, measure, **options
                )
                # Scheduled from workflow time, which the worker's clock need not match.
                return local.model_copy(update={"recorded_at": workflow.now()})
            return await workflow.execute_activity_method(
                MetricActivities.measure_metric, measure, **options
            )
        except (ActivityError, ApplicationError, TemporalTimeoutError) as err:
            # (a local activity's error arrives unwrapped, not as an ActivityError)
            now = workflow.now()
            return Measurement(
                phase="Error", message=diagnose(err).reason, started_at=now, finished_at=now
            )

    @workflow.signal(name="abort")
    def abort(self, user: str = "unknown") -> None:
        """Stop measuring; the run ends Aborted unless its outcome is already known."""
        self._aborted_by = user or "unknown"

    @workflow.query(name="status")
    def status(self) -> AnalysisRunStatus:
        return self._status

    def _show(self, request: VerificationRequest) -> None:
        lines = [
            f"**verify freight `{request.freight_alias or request.freight[:7]}` "
            f"in `{request.stage}`**: {self._status.phase}"
        ]
        for kind, values in (("labels", request.labels), ("annotations", request.annotations)):
            if values:
                shown = ", ".join(f"`{key}={value}`" for key, value in sorted(values.items()))
                lines.append(f"{kind}: {shown}")
        for result in self._status.metric_results:
            last = result.measurements[-1] if result.measurements else None
            value = f", last value {last.value}" if last is not None else ""
            dry = " (dry run: never decisive)" if result.dry_run else ""
            lines.append(
                f"- {result.name}{dry}: {result.phase} ({result.successful} ok, "
                f"{result.failed} failed, {result.error} errors{value})"
            )
        if self._status.message:
            lines.append(self._status.message)
        workflow.set_current_details("\n".join(lines))
