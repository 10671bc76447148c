"""The measurement activity against a real Prometheus and a real HTTP server.

Prometheus (Debian's binary, see ``prometheus_fixture``) scrapes the Argo CD
emulator's ``/metrics``, where one app is deployed at a good image tag and one
at a bad tag (error ratio 0.5). Web metrics go to a small stdlib HTTP server.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.metrics import MetricActivities, measure, parse_json_path
from freightline.errors import ConfigError, CredentialError
from freightline.kargo.analysis import MeasureRequest
from freightline.kargo.resources import Metric
from freightline.settings import load_settings
from sandbox.argocd import ArgoCDEmulator, Timing
from sandbox.gitops import create_bare_repo
from sandbox.prometheus import PrometheusServer
from tests.registry_fixture import free_port

pytestmark = pytest.mark.integration

TOKEN = "emulator-token"
GOOD, BAD = "shop-good", "shop-bad"
ERROR_RATIO = (
    'sum(rate(emulator_http_requests_total{{app="{app}",code="500"}}[30s])) '
    '/ sum(rate(emulator_http_requests_total{{app="{app}"}}[30s]))'
)
TRAFFIC = 'sum(rate(emulator_http_requests_total{{app="{app}"}}[30s]))'


def deployment(tag: str) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  replicas: 1
  selector:
    matchLabels: {{app: shop}}
  template:
    metadata:
      labels: {{app: shop}}
    spec:
      containers:
      - name: shop
        image: registry.example/shop:{tag}
"""


def application(name: str, repo_url: str, path: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": repo_url, "targetRevision": "main", "path": path},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
        },
    }


def poll(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def argocd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArgoCDEmulator]:
    """The emulator with GOOD deployed at tag 1.0.0 and BAD at 6.6.6 (error ratio 0.5)."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    tmp = tmp_path_factory.mktemp("gitops")
    seed = tmp / "seed"
    for path, tag in (("good", "1.0.0"), ("bad", "6.6.6")):
        (seed / path).mkdir(parents=True)
        (seed / path / "deployment.yaml").write_text(deployment(tag))
    repo = create_bare_repo(tmp / "gitops.git", seed=seed)
    apps = [
        {
            "apiVersion": "emulator.freightline.dev/v1alpha1",
            "kind": "EmulatorConfig",
            "spec": {"errorRatioByTag": {"6.6.6": 0.5}, "requestsPerSecond": 200},
        },
        application(GOOD, repo.as_uri(), "good"),
        application(BAD, repo.as_uri(), "bad"),
    ]
    timing = Timing(sync_duration=0.1, progressing_duration=0.1, reconcile_interval=0, tick=0.02)
    with (
        ArgoCDEmulator(apps, TOKEN, timing=timing) as emulator,
        httpx.Client(
            base_url=emulator.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as api,
    ):
        for app in (GOOD, BAD):
            response = api.post(f"/api/v1/applications/{app}/sync", json={"name": app})
            assert response.status_code == 200, response.text

        def deployed(app: str) -> bool:
            status = api.get(f"/api/v1/applications/{app}").json()["status"]
            return bool(
                status.get("operationState", {}).get("phase") == "Succeeded"
                and status["health"]["status"] == "Healthy"
            )

        for app in (GOOD, BAD):
            poll(functools.partial(deployed, app), f"{app} deployed")
        yield emulator


@pytest.fixture(scope="module")
def prometheus(
    argocd: ArgoCDEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """Prometheus scraping the emulator every second, with traffic of both apps in it."""
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), [f"{argocd.base_url}/metrics"])
    with server:
        for app in (GOOD, BAD):
            server.wait_for_value(TRAFFIC.format(app=app), lambda rate: rate > 0)
        server.wait_for_value(f'emulator_error_ratio{{app="{BAD}"}}', lambda v: v == 0.5)
        yield server


def prometheus_metric(address: str, query: str, **fields: Any) -> Metric:
    return Metric.model_validate(
        {"name": "error-ratio", "provider": {"prometheus": {"address": address, "query": query}}}
        | fields
    )


# --- prometheus --------------------------------------------------------------------------------


def test_good_tag_is_successful_and_bad_tag_failed_by_error_ratio(
    prometheus: PrometheusServer,
) -> None:
    good = measure(
        prometheus_metric(
            prometheus.url, ERROR_RATIO.format(app=GOOD), successCondition="result[0] < 0.05"
        ),
        {},
    )
    assert good.phase == "Successful", good
    assert isinstance(good.value, list) and good.value == [0.0]
    assert good.started_at is not None and good.finished_at is not None
    assert good.started_at <= good.finished_at

    bad = measure(
        prometheus_metric(
            prometheus.url, ERROR_RATIO.format(app=BAD), successCondition="result[0] < 0.05"
        ),
        {},
    )
    assert bad.phase == "Failed", bad
    assert bad.value[0] == pytest.approx(0.5, abs=0.1)
    assert bad.message == 'successCondition "result[0] < 0.05" is false'


def test_error_ratio_gauge_and_scalar_results(prometheus: PrometheusServer) -> None:
    gauge = 'emulator_error_ratio{{app="{app}"}}'
    check = {"successCondition": "result[0] < 0.05", "failureCondition": "result[0] >= 0.2"}
    good = measure(prometheus_metric(prometheus.url, gauge.format(app=GOOD), **check), {})
    bad = measure(prometheus_metric(prometheus.url, gauge.format(app=BAD), **check), {})
    assert (good.phase, good.value) == ("Successful", [0.0])
    assert (bad.phase, bad.value) == ("Failed", [0.5])

    scalar = measure(
        prometheus_metric(
            prometheus.url, f"scalar({gauge.format(app=BAD)})", successCondition="result < 0.05"
        ),
        {},
    )
    assert (scalar.phase, scalar.value) == ("Failed", 0.5)


def test_empty_results_and_refused_queries_are_errors(prometheus: PrometheusServer) -> None:
    empty = measure(prometheus_metric(prometheus.url, 'emulator_error_ratio{app="nope"}'), {})
    assert empty.phase == "Error"
    assert empty.message is not None and empty.message.startswith("empty result")

    # A matrix is every point of every series, as Argo Rollouts 1.8 gives it.
    matrix = measure(prometheus_metric(prometheus.url, "emulator_error_ratio[1m]"), {})
    assert matrix.phase == "Successful" and isinstance(matrix.value, list) and matrix.value
    nothing = measure(prometheus_metric(prometheus.url, 'emulator_error_ratio{app="no"}[1m]'), {})
    assert nothing.phase == "Error" and (nothing.message or "").startswith("empty result")

    refused = measure(prometheus_metric(prometheus.url, "sum(emulator_error_ratio"), {})
    assert refused.phase == "Error"
    assert refused.message is not None
    assert refused.message.startswith(f"Prometheus at {prometheus.url} answered 400 Bad Request")
    assert "bad_data" in refused.message and "parse error" in refused.message


def test_a_nan_ratio_fails_a_plain_condition_and_is_kept_as_text(
    prometheus: PrometheusServer,
) -> None:
    nan = measure(
        prometheus_metric(
            prometheus.url, "vector(0) / vector(0)", successCondition="result[0] < 1"
        ),
        {},
    )
    assert (nan.phase, nan.value) == ("Failed", ["NaN"])
    guarded = measure(
        prometheus_metric(
            prometheus.url, "vector(0) / vector(0)", successCondition="isNaN(result[0])"
        ),
        {},
    )
    assert guarded.phase == "Successful"


def test_prometheus_stopped_gives_error_measurements_then_recovers(
    prometheus: PrometheusServer,
) -> None:
    check = prometheus_metric(
        prometheus.url, ERROR_RATIO.format(app=GOOD), successCondition="result[0] < 0.05"
    )
    prometheus.stop()
    try:
        down = measure(check, {})
        assert down.phase == "Error"
        assert down.message == f"could not reach Prometheus at {prometheus.url}: Connection refused"
        assert down.value is None
    finally:
        prometheus.start()
    prometheus.wait_for_value(TRAFFIC.format(app=GOOD), lambda rate: rate > 0)
    assert measure(check, {}).phase == "Successful"


def test_the_activity_returns_measurements_and_refuses_misconfiguration(
    prometheus: PrometheusServer,
) -> None:
    env = ActivityEnvironment()
    metric = prometheus_metric(prometheus.url, f'emulator_error_ratio{{app="{GOOD}"}}')
    measure_metric = MetricActivities().measure_metric
    measurement = env.run(measure_metric, MeasureRequest(metric=metric, run="p/test/f"))
    assert measurement.phase == "Successful"

    for bad, message in (
        (
            prometheus_metric("prometheus:9090", "up"),
            'prometheus.address "prometheus:9090" is not an http(s) URL',
        ),
        (prometheus_metric(prometheus.url, "up{app='{{args.app}}'}"), "{{args.app}} was not"),
    ):
        with pytest.raises(ApplicationError) as caught:
            env.run(measure_metric, MeasureRequest(metric=bad))
        assert caught.value.type == "ConfigError" and caught.value.non_retryable
        assert message in str(caught.value)


# --- web ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _WebServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.seen.append((self.command, self.path, dict(self.headers), b""))
        if self.path == "/status":
            body = {"data": {"ok": True, "ratio": 0.01, "items": [{"v": "0.5"}, {"v": 2}]}}
            self._send(200, json.dumps(body).encode())
        elif self.path == "/unavailable":
            self._send(503, b'{"error": "down"}')
        elif self.path == "/text":
            self._send(200, b"<html>ok</html>", "text/html")
        elif self.path == "/slow":
            self.server.release.wait(10)
            self._send(200, b"{}")
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        self._send(200, json.dumps({"received": json.loads(body)}).encode())


class _WebServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def web() -> Iterator[_WebServer]:
    server = _WebServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def web_metric(url: str, **web: Any) -> Metric:
    conditions = {k: web.pop(k) for k in ("successCondition", "failureCondition") if k in web}
    return Metric.model_validate(
        {"name": "health", "provider": {"web": {"url": url, **web}}, **conditions}
    )


def test_web_json_path_extracts_the_result(web: _WebServer) -> None:
    url = f"{web.url}/status"
    ok = measure(web_metric(url, jsonPath="{$.data.ok}", successCondition="result == true"), {})
    assert (ok.phase, ok.value) == ("Successful", True)
    ratio = measure(
        web_metric(url, jsonPath="{$.data.ratio}", successCondition="result < 0.05"), {}
    )
    assert (ratio.phase, ratio.value) == ("Successful", 0.01)
    # a number in a JSON string is read as a float, as Argo Rollouts does
    item = measure(
        web_metric(url, jsonPath="{$.data.items[0].v}", successCondition="result < 1"), {}
    )
    assert (item.phase, item.value) == ("Successful", 0.5)
    last = measure(web_metric(url, jsonPath="{.data.items[-1].v}"), {})
    assert last.value == 2.0
    whole = measure(web_metric(url), {})
    assert isinstance(whole.value, dict) and whole.value["data"]["ok"] is True

    missing = measure(web_metric(url, jsonPath="{$.data.nope}"), {})
    assert missing.phase == "Error"
    assert missing.message == 'jsonPath {$.data.nope}: no key "nope" at $.data (an object)'
    out_of_range = measure(web_metric(url, jsonPath="{$.data.items[5]}"), {})
    assert (
        out_of_range.message
        == "jsonPath {$.data.items[5]}: no index 5 at $.data.items (a list of 2)"
    )


def test_web_failures_are_error_measurements(web: _WebServer) -> None:
    unavailable = measure(web_metric(f"{web.url}/unavailable"), {})
    assert unavailable.phase == "Error"
    assert unavailable.message == (
        f"GET {web.url}/unavailable: received non 2xx response code: 503 Service Unavailable"
    )
    text = measure(web_metric(f"{web.url}/text"), {})
    assert (text.phase, text.message) == (
        "Error",
        f"GET {web.url}/text: the response body is not JSON",
    )
    closed = f"http://127.0.0.1:{free_port()}"
    refused = measure(web_metric(f"{closed}/x?token=abc"), {})
    assert refused.phase == "Error"
    assert refused.message == f"could not connect to {closed}/x: Connection refused"
    slow = measure(web_metric(f"{web.url}/slow", timeoutSeconds=1), {})
    assert (slow.phase, slow.message) == ("Error", f"GET {web.url}/slow did not answer within 1s")


def test_web_post_sends_the_body(web: _WebServer) -> None:
    metric = web_metric(
        f"{web.url}/query",
        method="POST",
        body='{"service": "shop"}',
        jsonPath="{$.received.service}",
        successCondition='result == "shop"',
    )
    assert measure(metric, {}).phase == "Successful"
    method, _, headers, body = web.seen[-1]
    assert method == "POST" and body == b'{"service": "shop"}'
    assert headers["Content-Type"] == "application/json"


def test_header_credentials_come_from_the_worker_and_never_come_back(
    web: _WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-token-value"
    monkeypatch.setenv("FREIGHTLINE_METRIC_TOKEN", secret)
    headers = [{"key": "Authorization", "value": "Bearer {{env.FREIGHTLINE_METRIC_TOKEN}}"}]
    environ = {"FREIGHTLINE_METRIC_TOKEN": secret}
    ok = measure(web_metric(f"{web.url}/status", headers=headers, jsonPath="{$.data.ok}"), environ)
    assert ok.phase == "Successful"
    assert web.seen[-1][2]["Authorization"] == f"Bearer {secret}"
    assert secret not in ok.model_dump_json()

    failing = measure(web_metric(f"{web.url}/unavailable", headers=headers), environ)
    assert failing.phase == "Error" and secret not in failing.model_dump_json()

    # the activity, given the worker's settings, logs neither the header nor its value
    with capture_logs() as logs:
        ActivityEnvironment().run(
            MetricActivities(load_settings().metrics.plain()).measure_metric,
            MeasureRequest(metric=web_metric(f"{web.url}/status", headers=headers)),
        )
    assert logs and secret not in repr(logs) and "Authorization" not in repr(logs)


def test_header_credential_misconfiguration(
    web: _WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FREIGHTLINE_METRIC_TOKEN", raising=False)
    monkeypatch.setenv("FREIGHTLINE_GIT_PASSWORD", "git-secret")
    unset = [{"key": "Authorization", "value": "Bearer {{env.FREIGHTLINE_METRIC_TOKEN}}"}]
    with pytest.raises(CredentialError, match="FREIGHTLINE_METRIC_TOKEN on the worker"):
        measure(web_metric(f"{web.url}/status", headers=unset), {})
    other = [{"key": "X-Token", "value": "{{env.FREIGHTLINE_GIT_PASSWORD}}"}]
    with pytest.raises(ConfigError, match=r"only worker environment variables named"):
        measure(web_metric(f"{web.url}/status", headers=other), {"FREIGHTLINE_GIT_PASSWORD": "x"})
    with pytest.raises(ConfigError, match=r"only allowed in header values"):
        measure(web_metric(f"{web.url}/?t={{{{env.FREIGHTLINE_METRIC_T}}}}"), {})
    with pytest.raises(ApplicationError) as caught:
        ActivityEnvironment().run(
            MetricActivities({}).measure_metric,
            MeasureRequest(metric=web_metric(f"{web.url}/status", headers=unset)),
        )
    assert caught.value.type == "CredentialError" and caught.value.non_retryable
    assert not web.seen  # nothing was sent


def test_web_misconfiguration_is_a_config_error(web: _WebServer) -> None:
    with pytest.raises(ConfigError, match=r'jsonPath "\{\$.items\[\*\]\}": unsupported at'):
        measure(web_metric(f"{web.url}/status", jsonPath="{$.items[*]}"), {})
    with pytest.raises(ConfigError, match=r"web\.body needs method POST or PUT"):
        measure(web_metric(f"{web.url}/status", body="{}"), {})
    with pytest.raises(ConfigError, match=r'web\.url "ftp://x/" is not an http\(s\) URL'):
        measure(web_metric("ftp://x/"), {})


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("{$}", ()),
        ("$", ()),
        ("{$.data.ok}", ("data", "ok")),
        ("{.data.ok}", ("data", "ok")),
        ("{$.items[0].value}", ("items", 0, "value")),
        ("{$.items[-1]}", ("items", -1)),
        ("{$['key.with.dots'][\"x\"]}", ("key.with.dots", "x")),
    ],
)
def test_json_path_subset(path: str, segments: tuple[str | int, ...]) -> None:
    assert parse_json_path(path) == segments


@pytest.mark.parametrize("path", ["{$..a}", "{$.a[*]}", "{$.a[0:2]}", "{$.a[?(@.x)]}", "x {$.a}"])
def test_json_path_outside_the_subset_is_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="unsupported"):
        parse_json_path(path)
