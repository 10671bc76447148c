"""The ``newRelic`` provider against ``sandbox/newrelic.py``, a NerdGraph emulator that runs
every GraphQL request against an excerpt of NerdGraph's published schema
(``tests/reference/newrelic-nerdgraph-nrql.graphql``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from activities.metrics import measure
from activities.providers.measuring import secret_variable
from freightline.errors import ConfigError, CredentialError
from freightline.kargo.resources import Metric
from sandbox.newrelic import NerdGraphEmulator
from sandbox.registry import free_port

pytestmark = pytest.mark.integration

API_KEY = "NRAK-5c2f8e1a-never-in-history"
ACCOUNT = 1234567
DURATION = "SELECT average(duration) FROM Transaction WHERE appName = 'shop'"
BY_HOST = "SELECT average(duration) FROM Transaction FACET host"


@pytest.fixture
def nerdgraph() -> Iterator[NerdGraphEmulator]:
    with NerdGraphEmulator(API_KEY, ACCOUNT) as emulator:
        emulator.set_results(DURATION, [{"average.duration": 0.12}])
        emulator.set_results(
            BY_HOST,
            [{"host": "a", "average.duration": 0.1}, {"host": "b", "average.duration": 0.9}],
        )
        emulator.set_results("SELECT count(*) FROM Nothing", [{}])
        yield emulator
        assert emulator.violations == []


def credentials(emulator: NerdGraphEmulator, secret: str = "newrelic") -> dict[str, str]:  # noqa: S107
    return {
        secret_variable(secret, "personal-api-key"): API_KEY,
        secret_variable(secret, "account-id"): str(ACCOUNT),
        secret_variable(secret, "base-url-nerdgraph"): emulator.graphql_url,
    }


def newrelic_metric(nrql: str, condition: str | None = None, **spec: Any) -> Metric:
    document: dict[str, Any] = {
        "name": "latency",
        "provider": {"newRelic": {"query": nrql, **spec}},
    }
    if condition:
        document["successCondition"] = condition
    return Metric.model_validate(document)


def test_one_row_is_a_map_for_the_conditions(nerdgraph: NerdGraphEmulator) -> None:
    metric = newrelic_metric(DURATION, "result['average.duration'] < 0.5")
    measured = measure(metric, credentials(nerdgraph))
    assert (measured.phase, measured.value) == ("Successful", {"average.duration": 0.12})
    sent = json.loads(nerdgraph.requests[-1].get_data())
    assert sent["variables"] == {"query": DURATION, "accountId": ACCOUNT, "timeout": 5}
    assert nerdgraph.requests[-1].headers["API-Key"] == API_KEY


def test_several_rows_are_a_list(nerdgraph: NerdGraphEmulator) -> None:
    metric = newrelic_metric(BY_HOST, "result[1]['average.duration'] < 0.5", timeout=30)
    measured = measure(metric, credentials(nerdgraph))
    assert measured.phase == "Failed"
    assert isinstance(measured.value, list) and len(measured.value) == 2
    assert json.loads(nerdgraph.requests[-1].get_data())["variables"]["timeout"] == 30


@pytest.mark.parametrize("nrql", ["SELECT count(*) FROM Nothing", "SELECT count(*) FROM Empty"])
def test_no_rows_is_failed_as_argo_rollouts_decides(
    nerdgraph: NerdGraphEmulator, nrql: str
) -> None:
    measured = measure(newrelic_metric(nrql, "true"), credentials(nerdgraph))
    assert (measured.phase, measured.message) == ("Failed", "no results returned from NRQL query")


def test_an_nrql_error_is_an_error(nerdgraph: NerdGraphEmulator) -> None:
    measured = measure(newrelic_metric("SELEKT nothing", "true"), credentials(nerdgraph))
    assert measured.phase == "Error"
    assert measured.message == (
        f"NerdGraph at {nerdgraph.graphql_url}: NRQL Syntax Error: Error at line 1 position 1, "
        "unexpected 'SELEKT nothing'"
    )


def test_an_account_the_key_cannot_read_is_an_error(nerdgraph: NerdGraphEmulator) -> None:
    other = {**credentials(nerdgraph), secret_variable("newrelic", "account-id"): "42"}
    measured = measure(newrelic_metric(DURATION, "true"), other)
    assert (measured.phase, measured.message) == (
        "Error",
        f"NerdGraph at {nerdgraph.graphql_url}: Account 42 not found or not accessible",
    )


def test_a_wrong_key_a_429_and_an_unreachable_api_are_errors(nerdgraph: NerdGraphEmulator) -> None:
    wrong = {**credentials(nerdgraph), secret_variable("newrelic", "personal-api-key"): "NRAK-x"}
    unauthorized = measure(newrelic_metric(DURATION, "true"), wrong)
    assert (unauthorized.phase, unauthorized.message) == (
        "Error",
        f"NerdGraph at {nerdgraph.graphql_url}: received non 2xx response code: 401 UNAUTHORIZED",
    )
    nerdgraph.fail_next(429, {"errors": [{"message": "Too many requests"}]}, {"Retry-After": "12"})
    throttled = measure(newrelic_metric(DURATION, "true"), credentials(nerdgraph))
    assert (throttled.phase, throttled.message) == (
        "Error",
        f"NerdGraph at {nerdgraph.graphql_url}: received non 2xx response code: "
        "429 TOO MANY REQUESTS (Retry-After: 12)",
    )
    closed = f"http://127.0.0.1:{free_port()}/graphql"
    unreachable = {
        **credentials(nerdgraph),
        secret_variable("newrelic", "base-url-nerdgraph"): closed,
    }
    refused = measure(newrelic_metric(DURATION, "true"), unreachable)
    assert (refused.phase, refused.message) == (
        "Error",
        f"could not reach NerdGraph at {closed}: Connection refused",
    )


def test_the_profile_names_the_secret_and_the_key_never_comes_back(
    nerdgraph: NerdGraphEmulator,
) -> None:
    metric = newrelic_metric(DURATION, "true", profile="nr-prod")
    with pytest.raises(CredentialError, match="FREIGHTLINE_METRIC_NR_PROD_PERSONAL_API_KEY"):
        measure(metric, credentials(nerdgraph))
    with capture_logs() as logs:
        measured = measure(metric, credentials(nerdgraph, "nr-prod"))
        nerdgraph.fail_next(500, {"errors": [{"message": f"bad key {API_KEY}"}]})
        failed = measure(metric, credentials(nerdgraph, "nr-prod"))
    assert measured.phase == "Successful" and failed.phase == "Error"
    shown = json.dumps([measured.model_dump(mode="json"), failed.model_dump(mode="json"), logs])
    assert API_KEY not in shown


def test_account_and_region_misconfiguration(nerdgraph: NerdGraphEmulator) -> None:
    no_account = credentials(nerdgraph)
    del no_account[secret_variable("newrelic", "account-id")]
    with pytest.raises(ConfigError, match='needs a numeric "account-id"'):
        measure(newrelic_metric(DURATION), no_account)
    region = {
        secret_variable("newrelic", "personal-api-key"): API_KEY,
        secret_variable("newrelic", "account-id"): "1",
        secret_variable("newrelic", "region"): "mars",
    }
    with pytest.raises(ConfigError, match='region "mars" is neither us nor eu'):
        measure(newrelic_metric(DURATION), region)
