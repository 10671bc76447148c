"""Freightline's own metrics: their names, buckets and the functions that record them.

Recorded through the SDK's metric meter: in workflows ``workflow.metric_meter()``,
which records nothing while a workflow is being replayed, so a promotion counted
once is not counted again when a worker rebuilds its state from history; in
activities ``activity.metric_meter()``; elsewhere (the CLI) nothing. The worker's
runtime serves them with the SDK's own ``temporal_*`` metrics
(``freightline.app.observability.worker_runtime``).

Labels besides the SDK's ``namespace``, ``task_queue``,
``workflow_type``/``activity_type`` and ``service_name``:

    freightline_promotions_total                 counter    project, stage, phase
    freightline_promotion_duration_seconds       histogram  project, stage, phase
    freightline_discovery_duration_seconds       histogram  project, warehouse
    freightline_discovery_errors_total           counter    project, warehouse
    freightline_freight_discovered_total         counter    project, warehouse
    freightline_verifications_total              counter    project, stage, phase
    freightline_verification_duration_seconds    histogram  project, stage, phase
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity, workflow
from temporalio.common import MetricMeter

PROMOTIONS = "freightline_promotions_total"
PROMOTION_DURATION = "freightline_promotion_duration_seconds"
DISCOVERY_DURATION = "freightline_discovery_duration_seconds"
DISCOVERY_ERRORS = "freightline_discovery_errors_total"
FREIGHT_DISCOVERED = "freightline_freight_discovered_total"
VERIFICATIONS = "freightline_verifications_total"
VERIFICATION_DURATION = "freightline_verification_duration_seconds"

# Seconds. A promotion spans a clone-to-push activity and an Argo CD sync (minutes),
# and may wait for an approval (hours); a discovery is one registry or git listing.
_LONG_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0)
_SHORT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
HISTOGRAM_BUCKETS: Mapping[str, tuple[float, ...]] = {
    PROMOTION_DURATION: _LONG_BUCKETS,
    VERIFICATION_DURATION: _LONG_BUCKETS,
    DISCOVERY_DURATION: _SHORT_BUCKETS,
}


def _meter() -> MetricMeter:
    # Workflow code gets the replay-safe meter; outside a worker (the CLI) nothing is recorded.
    if workflow.in_workflow():
        return workflow.metric_meter()
    if activity.in_activity():
        return activity.metric_meter()
    return MetricMeter.noop


def record_promotion_finished(project: str, stage: str, phase: str, seconds: float) -> None:
    """Count a promotion that reached a terminal phase, and how long it took."""
    labels = {"project": project, "stage": stage, "phase": phase}
    meter = _meter()
    meter.create_counter(PROMOTIONS, "Promotions that reached a terminal phase").add(1, labels)
    meter.create_histogram_float(
        PROMOTION_DURATION, "Time from a promotion's start to its terminal phase", "s"
    ).record(max(seconds, 0.0), labels)


def record_discovery(
    project: str, warehouse: str, seconds: float, *, error: bool = False, new_freight: int = 0
) -> None:
    """Record one discovery pass of a Warehouse: its latency, whether it failed, new Freight."""
    labels = {"project": project, "warehouse": warehouse}
    meter = _meter()
    meter.create_histogram_float(
        DISCOVERY_DURATION, "Time to list a Warehouse's subscriptions", "s"
    ).record(max(seconds, 0.0), labels)
    if error:
        meter.create_counter(DISCOVERY_ERRORS, "Discovery passes that failed").add(1, labels)
    if new_freight:
        meter.create_counter(FREIGHT_DISCOVERED, "New Freight produced by Warehouses").add(
            new_freight, labels
        )


def record_verification_finished(project: str, stage: str, phase: str, seconds: float) -> None:
    """Count a verification by outcome (``Successful``, ``Failed``, ``Error``, ``Inconclusive``)."""
    labels = {"project": project, "stage": stage, "phase": phase}
    meter = _meter()
    meter.create_counter(VERIFICATIONS, "Verifications that reached a terminal phase").add(
        1, labels
    )
    meter.create_histogram_float(
        VERIFICATION_DURATION, "Time from a verification's start to its outcome", "s"
    ).record(max(seconds, 0.0), labels)
