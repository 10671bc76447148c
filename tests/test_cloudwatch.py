"""The ``cloudWatch`` provider through boto3 against moto in server mode (a real HTTP
endpoint speaking CloudWatch's protocol), points put with ``PutMetricData``."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from structlog.testing import capture_logs

from activities.metrics import measure
from activities.providers.measuring import secret_variable
from freightline.errors import ConfigError
from freightline.kargo.resources import Metric
from sandbox.registry import free_port
from tests.metric_server import StatusServer

pytestmark = pytest.mark.integration

KEY_ID = "AKIAFREIGHTLINETEST1"
SECRET_KEY = "cw-secret-4b8e2f-never-in-history"
REGION = "eu-west-1"
SHOP = [{"name": "App", "value": "shop"}]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "cloudwatch",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET_KEY,
    )
    now = datetime.datetime.now(datetime.UTC)
    client.put_metric_data(
        Namespace="Shop",
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": "App", "Value": "shop"}],
                "Timestamp": now - datetime.timedelta(seconds=age),
                "Value": value,
            }
            for name, age, value in [
                ("5xx", 30, 1.0),
                ("5xx", 90, 3.0),
                ("Requests", 30, 1000.0),
                ("Requests", 90, 1000.0),
            ]
        ],
    )
    yield url
    server.stop()


def credentials(endpoint: str) -> dict[str, str]:
    return {
        secret_variable("cloudwatch", "endpoint-url"): endpoint,
        secret_variable("cloudwatch", "region"): REGION,
        secret_variable("cloudwatch", "access-key-id"): KEY_ID,
        secret_variable("cloudwatch", "secret-access-key"): SECRET_KEY,
    }


def stat(query_id: str, metric: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": query_id,
        "metricStat": {
            "metric": {"namespace": "Shop", "metricName": metric, "dimensions": SHOP},
            "period": "60",
            "stat": "Sum",
        },
        **extra,
    }


def cloudwatch_metric(condition: str, *queries: dict[str, Any], interval: str = "5m") -> Metric:
    return Metric.model_validate(
        {
            "name": "errors",
            "successCondition": condition,
            "provider": {"cloudWatch": {"interval": interval, "metricDataQueries": list(queries)}},
        }
    )


def test_the_metric_data_results_are_the_value(moto_url: str) -> None:
    metric = cloudwatch_metric(
        "max(result[0].Values) < 5 && result[1].Values[0] > 0",
        stat("errors", "5xx"),
        stat("requests", "Requests"),
    )
    measured = measure(metric, credentials(moto_url))
    assert measured.phase == "Successful", measured.message
    errors, requests = measured.value
    assert (errors["Id"], errors["StatusCode"]) == ("errors", "Complete")
    assert sorted(errors["Values"]) == [1.0, 3.0] and sorted(requests["Values"]) == [1000.0] * 2
    assert all(stamp.endswith("+00:00") for stamp in errors["Timestamps"])
    failed = measure(
        cloudwatch_metric("max(result[0].Values) < 2", stat("errors", "5xx")),
        {**credentials(moto_url)},
    )
    assert failed.phase == "Failed"


def test_no_data_is_no_error(moto_url: str) -> None:
    measured = measure(
        cloudwatch_metric("len(result[0].Values) == 0", stat("quiet", "Nothing")),
        credentials(moto_url),
    )
    assert (measured.phase, measured.value[0]["Values"]) == ("Successful", [])


def test_a_query_cloudwatch_refuses_is_an_error(moto_url: str) -> None:
    # Neither metricStat nor expression: Argo Rollouts' schema allows it; CloudWatch refuses it.
    measured = measure(cloudwatch_metric("true", {"id": "e"}), credentials(moto_url))
    assert (measured.phase, measured.message) == (
        "Error",
        f"CloudWatch ({REGION}): ValidationError: "
        "The parameter MetricDataQueries.member.1.MetricStat is required.",
    )


def test_throttling_and_an_unreachable_endpoint_are_errors() -> None:
    throttled = StatusServer(
        429, {"__type": "Throttling", "message": "Rate exceeded"}, {"Retry-After": "3"}
    )
    try:
        measured = measure(
            cloudwatch_metric("true", stat("errors", "5xx")), credentials(throttled.url)
        )
    finally:
        throttled.stop()
    assert (measured.phase, measured.message) == (
        "Error",
        f"CloudWatch ({REGION}): Throttling: Rate exceeded (Retry-After: 3)",
    )
    assert len(throttled.requests) == 1  # one try: the next measurement is the retry
    closed = f"http://127.0.0.1:{free_port()}"
    refused = measure(cloudwatch_metric("true", stat("errors", "5xx")), credentials(closed))
    assert (refused.phase, refused.message) == (
        "Error",
        f"could not reach CloudWatch ({REGION}) at {closed}",
    )


def test_the_secret_key_never_comes_back(moto_url: str) -> None:
    with capture_logs() as logs:
        measured = measure(cloudwatch_metric("true", stat("errors", "5xx")), credentials(moto_url))
    shown = json.dumps([measured.model_dump(mode="json"), logs], default=str)
    assert SECRET_KEY not in shown


def test_no_region_is_misconfiguration(monkeypatch: pytest.MonkeyPatch, moto_url: str) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    environ = credentials(moto_url)
    del environ[secret_variable("cloudwatch", "region")]
    with pytest.raises(ConfigError, match="no AWS region"):
        measure(cloudwatch_metric("true", stat("errors", "5xx")), environ)
