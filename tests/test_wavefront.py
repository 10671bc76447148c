"""The ``wavefront`` provider against ``sandbox/wavefront.py``, a chart API emulator checked
against Wavefront's published Swagger description (``tests/reference/wavefront-chart-api.json``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from activities.metrics import measure
from activities.providers.measuring import secret_variable
from freightline.errors import CredentialError
from freightline.kargo.resources import Metric
from sandbox.registry import free_port
from sandbox.wavefront import WavefrontEmulator

pytestmark = pytest.mark.integration

TOKEN = "wf-token-2c71e9-never-in-history"
ERRORS = "ts(shop.errors, env=uat)"
BY_HOST = "ts(shop.errors, env=uat) by host"


@pytest.fixture
def wavefront() -> Iterator[WavefrontEmulator]:
    with WavefrontEmulator(TOKEN) as emulator:
        now = time.time()
        emulator.set_series(ERRORS, [[now - 120, 0.5], [now - 1, 0.02]])
        emulator.set_series(BY_HOST, [[now - 1, 0.01]], [[now - 1, 0.2]])
        yield emulator
        assert emulator.violations == []


def credentials(address: str) -> dict[str, str]:
    return {secret_variable("wavefront-api-tokens", address): TOKEN}


def wavefront_metric(address: str, query: str, condition: str = "result < 0.05") -> Metric:
    return Metric.model_validate(
        {
            "name": "errors",
            "successCondition": condition,
            "provider": {"wavefront": {"address": address, "query": query}},
        }
    )


def test_the_point_nearest_now_of_one_series(wavefront: WavefrontEmulator) -> None:
    measured = measure(wavefront_metric(wavefront.url, ERRORS), credentials(wavefront.url))
    assert (measured.phase, measured.value) == ("Successful", 0.02)
    request = wavefront.requests[-1]
    assert request.args["s"] == request.args["e"]
    assert (request.args["g"], request.args["p"], request.args["i"]) == ("s", "1", "true")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_several_series_are_a_list(wavefront: WavefrontEmulator) -> None:
    measured = measure(
        wavefront_metric(wavefront.url, BY_HOST, "max(result) < 0.05"), credentials(wavefront.url)
    )
    assert (measured.phase, measured.value) == ("Failed", [0.01, 0.2])


def test_no_series_a_refused_query_and_a_429_are_errors(wavefront: WavefrontEmulator) -> None:
    empty = measure(wavefront_metric(wavefront.url, "ts(nothing)"), credentials(wavefront.url))
    assert (empty.phase, empty.message) == (
        "Error",
        "No TimeSeries found in response from Wavefront",
    )
    refused = measure(wavefront_metric(wavefront.url, "ts(shop.errors"), credentials(wavefront.url))
    assert (refused.phase, refused.message) == (
        "Error",
        f"Wavefront at {wavefront.url}: received non 2xx response code: 400 BAD REQUEST: "
        "Syntax error in query: ts(shop.errors",
    )
    wavefront.fail_next(
        429, {"status": {"result": "ERROR", "message": "rate limited"}}, {"Retry-After": "60"}
    )
    throttled = measure(wavefront_metric(wavefront.url, ERRORS), credentials(wavefront.url))
    assert (throttled.phase, throttled.message) == (
        "Error",
        f"Wavefront at {wavefront.url}: received non 2xx response code: 429 TOO MANY REQUESTS "
        "(Retry-After: 60): rate limited",
    )


def test_an_unreachable_wavefront_is_an_error() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    refused = measure(wavefront_metric(closed, ERRORS), credentials(closed))
    assert (refused.phase, refused.message) == (
        "Error",
        f"could not reach Wavefront at {closed}: Connection refused",
    )


def test_the_token_is_keyed_by_address_and_never_comes_back(wavefront: WavefrontEmulator) -> None:
    with pytest.raises(
        CredentialError, match="FREIGHTLINE_METRIC_WAVEFRONT_API_TOKENS_EXAMPLE_WAVEFRONT_COM"
    ):
        measure(wavefront_metric("example.wavefront.com", ERRORS), {})
    with capture_logs() as logs:
        wavefront.fail_next(401, {"status": {"result": "ERROR", "message": f"bad token {TOKEN}"}})
        refused = measure(wavefront_metric(wavefront.url, ERRORS), credentials(wavefront.url))
    assert refused.phase == "Error"
    assert TOKEN not in json.dumps([refused.model_dump(mode="json"), logs])
