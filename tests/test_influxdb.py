"""The ``influxdb`` provider through ``influxdb-client`` against ``sandbox/influxdb.py``, a Flux
query emulator checked against InfluxData's published OpenAPI
(``tests/reference/influxdb-v2-query.yaml``). No real server: Debian's InfluxDB is 1.6,
without Flux, and InfluxDB 2 is not packaged."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from activities.metrics import measure
from activities.providers.measuring import secret_variable
from freightline.errors import CredentialError
from freightline.kargo.resources import Metric
from sandbox.influxdb import InfluxDBEmulator
from sandbox.registry import free_port

pytestmark = pytest.mark.integration

TOKEN = "influx-token-61d0c3-never-in-history"
ORG = "acme"
FLUX = 'from(bucket: "shop") |> range(start: -5m) |> filter(fn: (r) => r._field == "errors")'


@pytest.fixture
def influxdb() -> Iterator[InfluxDBEmulator]:
    with InfluxDBEmulator(TOKEN, ORG) as emulator:
        emulator.set_values(FLUX, [0.01, 0.03])
        yield emulator
        assert emulator.violations == []


def credentials(address: str, secret: str = "influxdb", org: str = ORG) -> dict[str, str]:  # noqa: S107
    return {
        secret_variable(secret, "address"): address,
        secret_variable(secret, "authToken"): TOKEN,
        secret_variable(secret, "org"): org,
    }


def influx_metric(flux: str, condition: str = "max(result) < 0.05", **spec: str) -> Metric:
    return Metric.model_validate(
        {
            "name": "errors",
            "successCondition": condition,
            "provider": {"influxdb": {"query": flux, **spec}},
        }
    )


def test_every_records_value_is_the_result(influxdb: InfluxDBEmulator) -> None:
    measured = measure(influx_metric(FLUX), credentials(influxdb.url))
    assert (measured.phase, measured.value) == ("Successful", [0.01, 0.03])
    failed = measure(influx_metric(FLUX, "result[1] < 0.02"), credentials(influxdb.url))
    assert failed.phase == "Failed"
    request = influxdb.requests[-1]
    assert request.args["org"] == ORG
    assert request.headers["Authorization"] == f"Token {TOKEN}"


def test_no_records_is_an_error(influxdb: InfluxDBEmulator) -> None:
    measured = measure(influx_metric('from(bucket: "empty")'), credentials(influxdb.url))
    assert (measured.phase, measured.message) == ("Error", "no results returned from flux query")


def test_a_query_influxdb_refuses_is_an_error(influxdb: InfluxDBEmulator) -> None:
    measured = measure(influx_metric("fromm(bucket)"), credentials(influxdb.url))
    assert (measured.phase, measured.message) == (
        "Error",
        f"InfluxDB at {influxdb.url}: received non 2xx response code: 400 BAD REQUEST: "
        "compilation failed: error at @1:1-1:14: invalid statement",
    )


def test_a_wrong_org_a_429_and_an_unreachable_server_are_errors(influxdb: InfluxDBEmulator) -> None:
    wrong = measure(influx_metric(FLUX), credentials(influxdb.url, org="other"))
    assert (wrong.phase, wrong.message) == (
        "Error",
        f"InfluxDB at {influxdb.url}: received non 2xx response code: 404 NOT FOUND: "
        'organization name "other" not found',
    )
    influxdb.fail_next(
        429, {"code": "too many requests", "message": "query quota exceeded"}, {"Retry-After": "30"}
    )
    throttled = measure(influx_metric(FLUX), credentials(influxdb.url))
    assert (throttled.phase, throttled.message) == (
        "Error",
        f"InfluxDB at {influxdb.url}: received non 2xx response code: 429 TOO MANY REQUESTS "
        "(Retry-After: 30): query quota exceeded",
    )
    assert len(influxdb.requests) == 2  # one request each: no retries
    closed = f"http://127.0.0.1:{free_port()}"
    refused = measure(influx_metric(FLUX), credentials(closed))
    assert (refused.phase, refused.message) == (
        "Error",
        f"could not reach InfluxDB at {closed}: Connection refused",
    )


def test_the_profile_names_the_secret_and_the_token_never_comes_back(
    influxdb: InfluxDBEmulator,
) -> None:
    metric = influx_metric(FLUX, profile="influx-eu")
    with pytest.raises(CredentialError, match="influx-eu"):
        measure(metric, credentials(influxdb.url))
    with capture_logs() as logs:
        measured = measure(metric, credentials(influxdb.url, "influx-eu"))
        influxdb.fail_next(401, {"code": "unauthorized", "message": f"token {TOKEN} refused"})
        refused = measure(metric, credentials(influxdb.url, "influx-eu"))
    assert measured.phase == "Successful" and refused.phase == "Error"
    shown = json.dumps([measured.model_dump(mode="json"), refused.model_dump(mode="json"), logs])
    assert TOKEN not in shown and "token ***** refused" in shown
