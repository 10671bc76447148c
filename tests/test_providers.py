"""The provider registry and the AnalysisTemplate schema of each provider, checked at apply."""

from __future__ import annotations

import base64

import pytest

from activities.metrics import measure
from activities.providers import QUERIES
from freightline.errors import ConfigError
from freightline.kargo.config import load_text
from freightline.kargo.resources import PROVIDER_KINDS, AnalysisTemplate, Metric
from tests.metric_server import StatusServer

TEMPLATE = """apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: checks
  namespace: kargo-demo
spec:
  metrics:
  - name: m
    successCondition: "true"
    provider:
{provider}
"""

# Each provider's example from Argo Rollouts' documentation (docs/analysis/<provider>.md).
EXAMPLES = {
    "graphite": """      graphite:
        address: http://graphite.example.com:9090
        query: |
          target=summarize(
            asPercent(
              sumSeries(stats.timers.httpServerRequests.app.{{args.service-name}}.exception.*.outcome.SERVER_ERROR.count),
              sumSeries(stats.timers.httpServerRequests.app.{{args.service-name}}.exception.*.count)
            ),
            '5min', 'avg'
          )""",
    "datadog": """      datadog:
        apiVersion: v2
        interval: 5m
        queries:
          a: sum:requests.error.count{service:{{args.service-name}}}
          b: sum:requests.request.count{service:{{args.service-name}}}
        formula: "moving_rollup(a, 60, 'sum') / b"
        aggregator: avg""",
    "newRelic": """      newRelic:
        profile: my-newrelic-secret
        query: |
          FROM Transaction SELECT percentage(count(*), WHERE httpResponseCode != 500) as successRate
          where appName = '{{ args.application-name }}'""",
    "cloudWatch": """      cloudWatch:
        interval: 5m
        metricDataQueries:
        - id: rate
          expression: errors / requests
        - id: errors
          metricStat:
            metric:
              namespace: app
              metricName: errors
            period: 300
            stat: Sum
            unit: Count
          returnData: false
        - id: requests
          metricStat:
            metric:
              namespace: app
              metricName: requests
            period: 300
            stat: Sum
            unit: Count
          returnData: false""",
    "influxdb": """      influxdb:
        profile: my-influxdb-secret
        query: |
          from(bucket: "app_istio")
            |> range(start: -15m)
            |> filter(fn: (r) => r["destination_workload"] == "{{ args.application-name }}")
            |> filter(fn: (r) => r["_measurement"] == "istio:istio_requests_errors_percentage:rate1m:5xx")""",
    "wavefront": """      wavefront:
        address: example.wavefront.com
        query: |
          sum(ts(istio.requestcount.count, response_code!=500 and destination_service="{{args.svc}}")) /
          sum(ts(istio.requestcount.count, reporter=client and destination_service="{{args.svc}}"))""",
}


def template(provider: str) -> str:
    return TEMPLATE.format(provider=provider)


def test_the_registry_measures_every_provider_the_model_accepts() -> None:
    assert set(QUERIES) == set(PROVIDER_KINDS)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_argo_rollouts_examples_load(kind: str) -> None:
    (resource,) = load_text(template(EXAMPLES[kind]), source="t.yaml")
    assert isinstance(resource, AnalysisTemplate)
    assert resource.spec.metrics[0].provider.kind == kind


@pytest.mark.parametrize("kind", ["job", "kayenta", "skywalking", "plugin"])
def test_providers_freightline_does_not_run_are_refused_by_name(kind: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_text(template(f"      {kind}:\n        x: y"), source="t.yaml")
    message = str(refused.value)
    assert "t.yaml" in message
    assert f'the "{kind}" provider is not supported; use one of {", ".join(PROVIDER_KINDS)}' in (
        message
    )


def test_two_providers_in_one_metric_are_refused() -> None:
    both = EXAMPLES["graphite"] + "\n      web:\n        url: http://x"
    with pytest.raises(ConfigError, match=r"exactly one of .* \(got web, graphite\)"):
        load_text(template(both), source="t.yaml")


def test_a_provider_field_outside_argo_rollouts_schema_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"graphite\.password"):
        load_text(
            template(
                "      graphite:\n        address: http://g\n        query: a\n        password: x"
            ),
            source="t.yaml",
        )


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("prometheus", "Prometheus at {url} answered 429 Too Many Requests: error: slow down"),
        ("web", "GET {url}/q: received non 2xx response code: 429 Too Many Requests"),
    ],
)
def test_a_429_is_an_error_that_says_when_to_retry(provider: str, expected: str) -> None:
    server = StatusServer(
        429,
        {"status": "error", "error": "slow down"},
        {"Retry-After": "Wed, 02 Dec 2026 21:00:00 GMT"},
    )
    spec = (
        {"prometheus": {"address": server.url, "query": "up"}}
        if provider == "prometheus"
        else {"web": {"url": f"{server.url}/q"}}
    )
    try:
        measured = measure(Metric.model_validate({"name": "m", "provider": spec}), {})
    finally:
        server.stop()
    assert (measured.phase, measured.message) == (
        "Error",
        expected.format(url=server.url) + " (Retry-After: Wed, 02 Dec 2026 21:00:00 GMT)",
    )


def test_prometheus_headers_and_basic_auth_come_from_the_worker() -> None:
    vector = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.01"]}]},
    }
    server = StatusServer(200, vector)
    spec = {
        "address": server.url,
        "query": "up",
        "headers": [{"key": "X-Scope-OrgID", "value": "tenant-{{env.FREIGHTLINE_METRIC_TENANT}}"}],
        "authentication": {
            "basicAuth": {"username": "grafana", "password": "{{env.FREIGHTLINE_METRIC_PROM_PW}}"}
        },
    }
    metric = Metric.model_validate(
        {"name": "m", "successCondition": "result[0] < 0.05", "provider": {"prometheus": spec}}
    )
    environ = {"FREIGHTLINE_METRIC_TENANT": "7", "FREIGHTLINE_METRIC_PROM_PW": "pw-0e1d-secret"}
    try:
        measured = measure(metric, environ)
        server.status, server.body = 401, {"status": "error", "error": "bad pw-0e1d-secret"}
        refused = measure(metric, environ)
    finally:
        server.stop()
    assert (measured.phase, measured.value) == ("Successful", [0.01])
    headers = server.requests[0][2]
    assert headers["X-Scope-OrgID"] == "tenant-7"
    assert (
        headers["Authorization"] == "Basic " + base64.b64encode(b"grafana:pw-0e1d-secret").decode()
    )
    assert refused.phase == "Error" and "pw-0e1d-secret" not in (refused.message or "")
    with pytest.raises(
        ConfigError, match=r"prometheus\.authentication\.sigv4: OAuth2 and SigV4 .* not supported"
    ):
        load_text(
            template(
                "      prometheus:\n        address: http://p\n        query: up\n"
                "        authentication:\n          sigv4:\n            region: eu-west-1"
            ),
            source="t.yaml",
        )
