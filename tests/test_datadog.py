"""The ``datadog`` provider through ``datadog-api-client`` against the emulator in
``sandbox/datadog.py``, whose requests and answers are checked against Datadog's published
OpenAPI description (``tests/reference/datadog-v*-query.yaml``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from activities.metrics import measure
from activities.providers.measuring import secret_variable
from freightline.errors import CredentialError
from freightline.kargo.resources import Metric
from sandbox.datadog import DatadogEmulator
from sandbox.registry import free_port

pytestmark = pytest.mark.integration

API_KEY = "dd-api-key-3f9c1b-never-in-history"
APP_KEY = "dd-app-key-7a2e4d-never-in-history"
ERRORS = "avg:shop.errors{env:uat}"
REQUESTS = "sum:shop.requests{env:uat}"


@pytest.fixture
def datadog() -> Iterator[DatadogEmulator]:
    with DatadogEmulator(API_KEY, APP_KEY) as emulator:
        now = int(time.time())
        emulator.add_points(ERRORS, [(now - 3, 0.01), (now - 2, 0.03), (now - 1, 0.02)])
        emulator.add_points(REQUESTS, [(now - 3, 100.0), (now - 2, 100.0), (now - 1, 200.0)])
        yield emulator
        assert emulator.violations == []


def credentials(emulator: DatadogEmulator, secret: str = "datadog") -> dict[str, str]:  # noqa: S107
    return {
        secret_variable(secret, "address"): emulator.url,
        secret_variable(secret, "api-key"): API_KEY,
        secret_variable(secret, "app-key"): APP_KEY,
    }


def datadog_metric(condition: str | None = "default(result, 1) < 0.05", **spec: Any) -> Metric:
    document: dict[str, Any] = {"name": "errors", "provider": {"datadog": spec}}
    if condition:
        document["successCondition"] = condition
    return Metric.model_validate(document)


def test_v1_the_last_point_of_the_first_series(datadog: DatadogEmulator) -> None:
    measured = measure(datadog_metric(query=ERRORS), credentials(datadog))
    assert (measured.phase, measured.value) == ("Successful", 0.02)
    failed = measure(datadog_metric("result < 0.01", query=ERRORS), credentials(datadog))
    assert (failed.phase, failed.value) == ("Failed", 0.02)
    (request,) = [r for r in datadog.requests if r.path == "/api/v1/query"][:1]
    assert request.headers["DD-API-KEY"] == API_KEY
    window = int(request.args["to"]) - int(request.args["from"])
    assert window == 300  # the default interval, 5m


def test_v1_no_series_gives_nil(datadog: DatadogEmulator) -> None:
    empty = "avg:shop.nothing{env:uat}"
    defaulted = measure(datadog_metric(query=empty), credentials(datadog))
    assert (defaulted.phase, defaulted.value) == ("Failed", None)
    nil = measure(datadog_metric("isNil(result)", query=empty), credentials(datadog))
    assert nil.phase == "Successful"


def test_v2_scalar_with_queries_formula_and_aggregator(datadog: DatadogEmulator) -> None:
    metric = datadog_metric(
        "result < 0.05",
        apiVersion="v2",
        queries={"errors": ERRORS, "requests": REQUESTS},
        formula="errors / requests",
        aggregator="sum",
        interval="1m",
    )
    measured = measure(metric, credentials(datadog))
    assert measured.phase == "Successful"
    assert measured.value == pytest.approx(0.06 / 400)
    body = json.loads(datadog.requests[-1].get_data())
    attributes = body["data"]["attributes"]
    assert body["data"]["type"] == "scalar_request"
    assert attributes["to"] - attributes["from"] == 60_000  # milliseconds
    assert attributes["formulas"] == [{"formula": "errors / requests"}]
    assert {q["name"]: q["aggregator"] for q in attributes["queries"]} == {
        "errors": "sum",
        "requests": "sum",
    }


def test_v2_single_query_is_named_query_and_aggregated_last(datadog: DatadogEmulator) -> None:
    measured = measure(datadog_metric(apiVersion="v2", query=ERRORS), credentials(datadog))
    assert (measured.phase, measured.value) == ("Successful", 0.02)
    (query,) = json.loads(datadog.requests[-1].get_data())["data"]["attributes"]["queries"]
    assert query == {
        "aggregator": "last",
        "data_source": "metrics",
        "name": "query",
        "query": ERRORS,
    }
    empty = measure(
        datadog_metric("isNil(result)", apiVersion="v2", query="avg:shop.nothing{*}"),
        credentials(datadog),
    )
    assert (empty.phase, empty.value) == ("Successful", None)


@pytest.mark.parametrize("api_version", ["v1", "v2"])
def test_a_query_datadog_refuses_is_an_error(datadog: DatadogEmulator, api_version: str) -> None:
    measured = measure(
        datadog_metric(apiVersion=api_version, query="shop.errors"), credentials(datadog)
    )
    assert measured.phase == "Error"
    assert measured.message == (
        f"Datadog at {datadog.url}: received non 2xx response code: 400 BAD REQUEST: "
        "Error parsing query: shop.errors"
    )


@pytest.mark.parametrize("api_version", ["v1", "v2"])
def test_a_429_is_an_error_saying_when_to_retry(datadog: DatadogEmulator, api_version: str) -> None:
    datadog.fail_next(429, {"errors": ["Rate limit exceeded"]}, {"Retry-After": "7"})
    measured = measure(datadog_metric(apiVersion=api_version, query=ERRORS), credentials(datadog))
    assert (measured.phase, measured.message) == (
        "Error",
        f"Datadog at {datadog.url}: received non 2xx response code: 429 TOO MANY REQUESTS "
        "(Retry-After: 7): Rate limit exceeded",
    )


def test_wrong_keys_are_an_authentication_error(datadog: DatadogEmulator) -> None:
    wrong = {**credentials(datadog), secret_variable("datadog", "app-key"): "not-the-key"}
    measured = measure(datadog_metric(query=ERRORS), wrong)
    assert (measured.phase, measured.message) == (
        "Error",
        f"Datadog at {datadog.url}: received authentication error response code: 403 FORBIDDEN",
    )


def test_an_unreachable_datadog_is_an_error() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    environ = {
        secret_variable("datadog", "address"): closed,
        secret_variable("datadog", "api-key"): API_KEY,
        secret_variable("datadog", "app-key"): APP_KEY,
    }
    measured = measure(datadog_metric(query=ERRORS), environ)
    assert (measured.phase, measured.message) == (
        "Error",
        f"could not reach Datadog at {closed}: Connection refused",
    )


def test_keys_come_from_the_named_secret_and_never_come_back(datadog: DatadogEmulator) -> None:
    metric = datadog_metric(query=ERRORS, secretRef={"name": "dd-eu"})
    with pytest.raises(CredentialError, match="FREIGHTLINE_METRIC_DD_EU_API_KEY"):
        measure(metric, credentials(datadog))
    with capture_logs() as logs:
        measured = measure(metric, credentials(datadog, "dd-eu"))
        datadog.fail_next(403, {"errors": [f"key {API_KEY} refused"]})
        refused = measure(metric, credentials(datadog, "dd-eu"))
    assert measured.phase == "Successful"
    assert refused.phase == "Error"
    shown = json.dumps([measured.model_dump(mode="json"), refused.model_dump(mode="json"), logs])
    assert API_KEY not in shown and APP_KEY not in shown


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "give either query or queries"),
        ({"query": "a", "queries": {"a": "b"}, "apiVersion": "v2"}, "not both"),
        ({"queries": {"a": "b"}}, "apiVersion v1 takes query only"),
        ({"apiVersion": "v2", "query": "a", "formula": "a"}, "formula needs queries"),
        ({"apiVersion": "v2", "queries": {"a": "x", "b": "y"}}, "several queries need a formula"),
        ({"query": "a", "aggregator": "sum"}, "aggregator needs apiVersion v2"),
        ({"query": "a", "requestTimeout": "0s"}, "requestTimeout must be a positive"),
        ({"apiVersion": "v3", "query": "a"}, "apiVersion"),
    ],
)
def test_argo_rollouts_checks_of_a_datadog_metric_at_apply(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        datadog_metric(**spec)
