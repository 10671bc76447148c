"""Argo Rollouts' analysis features: arg ``valueFrom`` (a worker secret by reference, a field of
the Freight or Stage), ``dryRun``, ``measurementRetention``, ``analysisRunMetadata``, several
templates merged into one run."""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

import pytest
from temporalio.client import Client

from activities.metrics import measure
from activities.providers.measuring import secret_variable
from freightline.contracts.verification import VerificationRequest, verification_request
from freightline.errors import ConfigError, CredentialError
from freightline.kargo.analysis import (
    AnalysisRunStatus,
    Measurement,
    assess_run,
    record_measurement,
    resolve_metrics,
    secret_reference,
    start_run,
)
from freightline.kargo.resources import AnalysisRunArgument, AnalysisTemplate, Metric, Stage
from freightline.settings import load_settings
from tests.history_text import readable
from tests.metric_server import ErrorRateServer, StatusServer
from tests.pipelines import freight_for
from tests.test_windows import current_details

T0 = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
TOKEN = "argument-token-83c1f0-never-in-history"


def template(name: str, metrics: list[dict[str, Any]], **spec: Any) -> AnalysisTemplate:
    return AnalysisTemplate.model_validate(
        {"metadata": {"name": name, "namespace": "p"}, "spec": {"metrics": metrics, **spec}}
    )


def web(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": {"web": {"url": url, **extra}}}


def stage(*templates: str, **verification: Any) -> Stage:
    return Stage.model_validate(
        {
            "metadata": {"name": "uat", "namespace": "p", "labels": {"team": "shop"}},
            "spec": {
                "requestedFreight": [
                    {
                        "origin": {"kind": "Warehouse", "name": "kargo-demo"},
                        "sources": {"direct": True},
                    }
                ],
                "verification": {
                    "analysisTemplates": [{"name": name} for name in templates],
                    **verification,
                },
            },
        }
    )


# --- valueFrom ---------------------------------------------------------------------------------


def test_field_ref_reads_the_freight_and_the_stage() -> None:
    checks = template(
        "checks",
        [web("m", "http://m/{{args.alias}}/{{args.team}}/{{args.tag}}")],
        args=[
            {"name": "alias", "valueFrom": {"fieldRef": {"fieldPath": "freight.alias"}}},
            {
                "name": "team",
                "valueFrom": {"fieldRef": {"fieldPath": "stage.metadata.labels['team']"}},
            },
            {"name": "tag", "valueFrom": {"fieldRef": {"fieldPath": "freight.images[0].tag"}}},
        ],
    )
    freight = freight_for("1.2.3")
    request = verification_request("p", stage("checks"), freight, {"checks": checks})
    assert request is not None
    (metric,) = request.metrics
    assert metric.provider.spec.url == f"http://m/{freight.alias}/shop/1.2.3"  # type: ignore[attr-defined]


def test_a_field_ref_outside_the_freight_and_stage_is_refused() -> None:
    checks = template(
        "checks",
        [web("m", "http://m/{{args.x}}")],
        args=[{"name": "x", "valueFrom": {"fieldRef": {"fieldPath": "freight.metadata.nope"}}}],
    )
    with pytest.raises(ConfigError, match=r'arg "x": fieldRef "freight.metadata.nope": no such'):
        verification_request("p", stage("checks"), freight_for("1"), {"checks": checks})
    checks = template(
        "checks",
        [web("m", "http://m/{{args.x}}")],
        args=[{"name": "x", "valueFrom": {"fieldRef": {"fieldPath": "spec.x"}}}],
    )
    with pytest.raises(ConfigError, match="must start with one of freight, stage"):
        verification_request("p", stage("checks"), freight_for("1"), {"checks": checks})


def test_secret_key_ref_travels_as_a_reference_and_the_stage_may_override_it() -> None:
    checks = template(
        "checks",
        [
            web(
                "m",
                "http://m/",
                headers=[{"key": "Authorization", "value": "Bearer {{args.token}}"}],
            )
        ],
        args=[
            {"name": "token", "valueFrom": {"secretKeyRef": {"name": "shop-api", "key": "token"}}}
        ],
    )
    (metric,) = resolve_metrics(checks, [], {})
    reference = secret_reference("shop-api", "token")
    assert metric.provider.spec.headers[0].value == f"Bearer {reference}"  # type: ignore[attr-defined]
    (overridden,) = resolve_metrics(checks, [AnalysisRunArgument(name="token", value="plain")], {})
    assert overridden.provider.spec.headers[0].value == "Bearer plain"  # type: ignore[attr-defined]


def test_value_and_value_from_together_are_refused() -> None:
    with pytest.raises(ValueError, match='arg "x": give value or valueFrom, not both'):
        template(
            "t",
            [web("m", "http://m")],
            args=[{"name": "x", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "stage.x"}}}],
        )


def test_the_activity_resolves_a_secret_reference_from_the_worker_and_masks_it() -> None:
    server = StatusServer(200, {"ok": True, "echo": f"token {TOKEN}"})
    try:
        metric = Metric.model_validate(
            web(
                "m",
                f"{server.url}/status",
                headers=[{"key": "X-Shop-Token", "value": secret_reference("shop-api", "token")}],
            )
        )
        environ = {secret_variable("shop-api", "token"): TOKEN}
        measured = measure(metric, environ)
        with pytest.raises(CredentialError, match="FREIGHTLINE_METRIC_SHOP_API_TOKEN"):
            measure(metric, {})
    finally:
        server.stop()
    assert server.requests[0][2]["X-Shop-Token"] == TOKEN
    assert measured.phase == "Successful"
    assert TOKEN not in json.dumps(measured.model_dump(mode="json"))


# --- dryRun, measurementRetention, merging -----------------------------------------------------


def measurement(phase: str, at: datetime.datetime) -> Measurement:
    return Measurement.model_validate({"phase": phase, "startedAt": at, "finishedAt": at})


def test_a_dry_run_metric_is_reported_but_never_decides() -> None:
    metrics = [Metric.model_validate(web(name, "http://m")) for name in ("gate", "trial")]
    status = start_run(metrics, T0, dry_run=["trial"])
    status = record_measurement(status, "trial", measurement("Failed", T0))
    status = assess_run(metrics, status)
    assert status.phase == "Running"  # the trial failed; the run waits for the gate
    assert status.result("trial").phase == "Failed" and status.result("trial").dry_run
    status = record_measurement(status, "gate", measurement("Successful", T0))
    status = assess_run(metrics, status)
    assert (status.phase, status.message) == ("Successful", None)
    # A failing gate still fails the run, dry-run metrics or not.
    failing = start_run(metrics, T0, dry_run=["trial"])
    failing = assess_run(metrics, record_measurement(failing, "gate", measurement("Failed", T0)))
    assert failing.phase == "Failed"
    # Only dry-run metrics: the run is Successful once they are measured, whatever they say.
    alone = [metrics[1]]
    only = start_run(alone, T0, dry_run=["trial"])
    only = assess_run(alone, record_measurement(only, "trial", measurement("Error", T0)))
    assert only.phase == "Running"  # an Error measurement is retried
    only = assess_run(alone, record_measurement(only, "trial", measurement("Failed", T0)))
    assert only.phase == "Successful"


def test_measurement_retention_keeps_the_latest_and_every_count() -> None:
    metrics = [Metric.model_validate(web("m", "http://m") | {"interval": "1s", "count": 5})]
    status = start_run(metrics, T0, retention={"m": 2})
    for second in range(5):
        phase = "Error" if second == 1 else "Successful"
        at = T0 + datetime.timedelta(seconds=second)
        status = record_measurement(status, "m", measurement(phase, at))
    result = status.result("m")
    assert [m.started_at.second for m in result.measurements if m.started_at] == [3, 4]
    assert (result.count, result.successful, result.error) == (4, 4, 1)


def test_templates_merge_their_dry_run_and_retention_by_metric_name() -> None:
    first = template(
        "first",
        [web("a", "http://m")],
        dryRun=[{"metricName": "b"}],
        measurementRetention=[{"metricName": "*", "limit": 10}],
    )
    second = template(
        "second", [web("b", "http://m")], measurementRetention=[{"metricName": "b", "limit": 3}]
    )
    verification = {
        "analysisRunMetadata": {"labels": {"team": "shop"}, "annotations": {"ticket": "OPS-1"}}
    }
    request = verification_request(
        "p",
        stage("first", "second", **verification),
        freight_for("1"),
        {"first": first, "second": second},
    )
    assert request is not None
    assert request.dry_run == ("b",)
    assert request.measurement_retention == {"a": 10, "b": 3}
    assert (request.labels, request.annotations) == ({"team": "shop"}, {"ticket": "OPS-1"})
    unknown = template("t", [web("a", "http://m")], dryRun=[{"metricName": "typo"}])
    with pytest.raises(ConfigError, match='dryRun: metricName "typo" names no metric'):
        verification_request("p", stage("t"), freight_for("1"), {"t": unknown})


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_run_shows_its_metadata_reports_dry_run_and_keeps_no_secret(
    client: Client, task_queue: str, error_rates: ErrorRateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import build_worker

    monkeypatch.setenv(secret_variable("shop-api", "token"), TOKEN)
    error_rates.rates["bad"] = 0.5
    auth = [{"key": "X-Shop-Token", "value": secret_reference("shop-api", "token")}]
    metrics = (
        Metric.model_validate(
            web("gate", f"{error_rates.url}/rate/good", jsonPath="{$.errorRate}", headers=auth)
            | {"successCondition": "result < 0.05", "interval": "1s", "count": 3}
        ),
        Metric.model_validate(
            web("trial", f"{error_rates.url}/rate/bad", jsonPath="{$.errorRate}")
            | {"successCondition": "result < 0.05"}
        ),
    )
    request = VerificationRequest(
        project="p",
        stage="uat",
        freight="f" * 40,
        freight_alias="calm-otter",
        metrics=metrics,
        dry_run=("trial",),
        measurement_retention={"gate": 1},
        labels={"team": "shop"},
        annotations={"ticket": "OPS-1"},
    )
    async with build_worker(client, load_settings(), queue=task_queue):
        handle = await client.start_workflow(
            "Verification",
            request,
            id=f"verification-features-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=AnalysisRunStatus,
        )
        result = await handle.result()
        details = await current_details(handle)
    assert result.phase == "Successful"
    gate, trial = result.metric_results
    assert (gate.count, len(gate.measurements)) == (3, 1)
    assert (trial.phase, trial.dry_run) == ("Failed", True)
    assert (result.labels, result.annotations) == ({"team": "shop"}, {"ticket": "OPS-1"})
    assert "labels: `team=shop`" in details and "annotations: `ticket=OPS-1`" in details
    assert "- trial (dry run: never decisive): Failed" in details
    history = "\n".join(readable((await handle.fetch_history()).to_json_dict()))
    assert TOKEN not in history and "secretKeyRef:shop-api:token" in history
