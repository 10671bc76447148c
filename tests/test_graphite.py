"""The ``graphite`` provider against a real Graphite: Debian's carbon-cache and graphite-web.

Points go in over carbon's plaintext protocol, as an application's statsd or
collectd sends them; measurements read them back through graphite-web's
render API. The answers a real Graphite cannot be made to give (a 429 with
``Retry-After``, a 500) come from a local server answering that status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.metrics import measure
from freightline.contracts.verification import VerificationRequest
from freightline.errors import ConfigError
from freightline.kargo.analysis import AnalysisRunStatus
from freightline.kargo.resources import Metric
from freightline.settings import load_settings
from sandbox.graphite import GraphiteServer
from sandbox.registry import free_port
from tests.metric_server import StatusServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def graphite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphiteServer]:
    with GraphiteServer(tmp_path_factory.mktemp("graphite")) as server:
        server.feed("shop.good.errors", [0.01, 0.02, 0.03])
        server.feed("shop.bad.errors", [0.2, 0.4, 0.5])
        server.wait_for_points("shop.good.errors", 3)
        server.wait_for_points("shop.bad.errors", 3)
        yield server


def graphite_metric(address: str, query: str, **conditions: str) -> Metric:
    return Metric.model_validate(
        {"name": "errors", "provider": {"graphite": {"address": address, "query": query}}}
        | conditions
    )


def test_points_fed_to_carbon_are_the_result(graphite: GraphiteServer) -> None:
    good = measure(
        graphite_metric(
            graphite.url,
            "target=shop.good.errors&from=-5min",
            successCondition="max(result) < 0.05",
        ),
        {},
    )
    assert (good.phase, good.value, good.message) == ("Successful", [0.01, 0.02, 0.03], None)
    bad = measure(
        graphite_metric(
            graphite.url, "target=shop.bad.errors&from=-5min", successCondition="max(result) < 0.05"
        ),
        {},
    )
    assert (bad.phase, bad.value) == ("Failed", [0.2, 0.4, 0.5])
    assert bad.message == 'successCondition "max(result) < 0.05" is false'


def test_render_functions_and_whitespace_as_argo_rollouts_sends_them(
    graphite: GraphiteServer,
) -> None:
    # Argo Rollouts strips whitespace from the query, so templates may wrap long targets.
    query = "target = summarize( sumSeries( shop.*.errors ), '1h', 'max' )\n  &from=-5min"
    measured = measure(graphite_metric(graphite.url, query, successCondition="result[0] > 0"), {})
    assert measured.phase == "Successful"
    assert measured.value == [pytest.approx(0.5 + 0.03)]


def test_no_series_is_an_error(graphite: GraphiteServer) -> None:
    empty = measure(graphite_metric(graphite.url, "target=shop.nothing.errors"), {})
    assert (empty.phase, empty.message) == (
        "Error",
        "no values found: the query matched no series",
    )


def test_a_query_graphite_refuses_is_an_error_with_its_reason(graphite: GraphiteServer) -> None:
    refused = measure(graphite_metric(graphite.url, "target=nosuch(shop.good.errors)"), {})
    assert refused.phase == "Error"
    assert refused.message is not None
    assert refused.message.startswith(
        f"Graphite at {graphite.url}: received non 2xx response code: 400 Bad Request: "
    )
    assert "unknown function: nosuch" in refused.message


def test_an_unreachable_graphite_is_an_error() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    refused = measure(graphite_metric(closed, "target=a.b"), {})
    assert (refused.phase, refused.message) == (
        "Error",
        f"could not reach Graphite at {closed}: Connection refused",
    )


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {"Retry-After": "30"}, "429 Too Many Requests (Retry-After: 30)"),
        (500, {}, "500 Internal Server Error"),
    ],
)
def test_throttled_or_failing_graphite_is_an_error(
    status: int, headers: dict[str, str], expected: str
) -> None:
    server = StatusServer(status, {"error": "no"}, headers)
    try:
        measured = measure(graphite_metric(server.url, "target=a.b", successCondition="true"), {})
    finally:
        server.stop()
    assert measured.phase == "Error"
    assert measured.message == (
        f'Graphite at {server.url}: received non 2xx response code: {expected}: {{"error": "no"}}'
    )
    (_, path, _, _) = server.requests[0]
    assert path == "/render?target=a.b&format=json"


def test_a_bad_address_is_misconfiguration() -> None:
    with pytest.raises(ConfigError, match=r'graphite\.address "graphite:8080" is not an http'):
        measure(graphite_metric("graphite:8080", "target=a.b"), {})


async def test_a_verification_run_reads_graphite(
    client: Client, task_queue: str, graphite: GraphiteServer, tmp_path: Path
) -> None:
    from worker import build_worker

    metric = graphite_metric(
        graphite.url,
        "target=shop.good.errors&from=-5min",
        successCondition="max(result) < 0.05",
    ).model_copy(update={"count": 2, "interval": "1s"})
    request = VerificationRequest(
        project="p", stage="uat", freight="f" * 40, freight_alias="calm-otter", metrics=(metric,)
    )
    async with build_worker(client, load_settings(), queue=task_queue):
        result = await client.execute_workflow(
            "Verification",
            request,
            id=f"verification-graphite-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=AnalysisRunStatus,
        )
    assert result.phase == "Successful"
    (metric_result,) = result.metric_results
    assert [m.value for m in metric_result.measurements] == [[0.01, 0.02, 0.03]] * 2
