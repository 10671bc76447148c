"""``http`` and ``http-download``, as Kargo's: every example on their Kargo reference pages
(``tests/reference/kargo-steps/http.md``, ``http-download.md``) runs through the worktree
runner against a real loopback server, then the edge cases.

What differs from the pages, and why: URLs point at the local server instead of
catfacts.net, slack.com and example.com; ``${{ secret(...) }}`` reads a generic Secret of
the worker's credentials file (Freightline keeps no Secret in the project: credentials
stay on the worker), here a real credentials file; the chart example's ``untar`` step is
another step's test (``untar``), so it stops after the download. Polling waits are
shortened by lowering the 10 s floor on ``pollInterval``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from activities import http_steps
from activities.http_steps import HTTPDownloadConfig, http_download
from activities.step_context import SecretLookup
from freightline.app.client import apply_project, start_promotion
from freightline.contracts.promotion import PromotionPhase
from freightline.errors import ConfigError, StepError
from freightline.kargo.credentials import CredentialStore
from freightline.kargo.resources import Freight
from freightline.settings import load_settings
from tests.pipelines import freight_for, single_stage_project, with_freight
from tests.step_runs import context, outcome_of, refused, run
from tests.step_server import StepServer, step_server
from worker import build_worker

CAT_FACTS = {
    "facts": [
        {
            "fact_number": 1,
            "fact": "Kittens have baby teeth, which are replaced by permanent teeth around "
            "the age of 7 months.",
        },
        {
            "fact_number": 2,
            "fact": "Each day in the US, animal shelters are forced to destroy 30,000 dogs "
            "and cats.",
        },
    ]
}
JSON = {"Content-Type": "application/json"}


SECRETS = """\
apiVersion: v1
kind: Secret
metadata:
  name: slack
  labels:
    kargo.akuity.io/cred-type: generic
stringData:
  token: xoxb-token
---
apiVersion: v1
kind: Secret
metadata:
  name: artifacts
  namespace: p
  labels:
    kargo.akuity.io/cred-type: generic
data:
  token: YXJ0aWZhY3QtdG9rZW4=
---
apiVersion: v1
kind: Secret
metadata:
  name: artifacts
  namespace: another-project
  labels:
    kargo.akuity.io/cred-type: generic
stringData:
  token: not-this-one
---
apiVersion: v1
kind: Secret
metadata:
  name: shared
  namespace: kargo-shared-resources
  labels:
    kargo.akuity.io/cred-type: generic
stringData:
  token: shared-token
"""


def worker_secrets(tmp_path: Path) -> SecretLookup:
    """The worker's generic Secrets, from a real credentials file (base64 ``data`` too)."""
    path = tmp_path / "credentials.yaml"
    path.write_text(SECRETS)
    return CredentialStore(path).step_secret


@pytest.fixture
def server() -> Iterator[StepServer]:
    with step_server() as running:
        yield running


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_steps, "MIN_POLL_INTERVAL", timedelta(0))
    monkeypatch.setattr(http_steps, "POLL_INTERVAL", timedelta(milliseconds=20))


def answer(body: Any, headers: dict[str, str] = JSON, status: int = 200) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (status, headers, data)


# --- http: the reference examples --------------------------------------------------------------


def test_basic_usage(tmp_path: Path, server: StepServer) -> None:
    server.routes["/api/"] = answer(CAT_FACTS)
    step = {
        "uses": "http",
        "as": "cat-facts",
        "config": {
            "method": "GET",
            "url": f"{server.url}/api/",
            "outputs": [
                {"name": "status", "fromExpression": "response.status"},
                {"name": "fact1", "fromExpression": "response.body.facts[0]"},
                {"name": "fact2", "fromExpression": "response.body.facts[1]"},
            ],
        },
    }
    (outcome,) = run(tmp_path, [step])
    # The page's table shows the facts' text; its expressions select the whole objects.
    assert outcome.outputs == {
        "status": 200,
        "fact1": CAT_FACTS["facts"][0],
        "fact2": CAT_FACTS["facts"][1],
    }


def test_polling_until_success(tmp_path: Path, server: StepServer, fast_polls: None) -> None:
    answers = iter([answer({}, status=503), answer({}, status=202), answer(CAT_FACTS)])
    server.routes["/api/"] = lambda _seen: next(answers)
    step = {
        "uses": "http",
        "as": "cat-facts",
        "retry": {"timeout": "10m"},
        "config": {
            "method": "GET",
            "url": f"{server.url}/api/",
            "successExpression": "response.status == 200",
            "failureExpression": "response.status == 404",
            "outputs": [
                {"name": "status", "fromExpression": "response.status"},
                {"name": "fact1", "fromExpression": "response.body.facts[0]"},
                {"name": "fact2", "fromExpression": "response.body.facts[1]"},
            ],
        },
    }
    (outcome,) = run(tmp_path, [step])
    assert outcome.outputs["status"] == 200
    assert len(server.seen) == 3  # asked again while neither criterion held

    server.seen.clear()
    server.routes["/api/"] = answer({}, status=404)
    err = refused(tmp_path, [step])
    assert outcome_of(err) == "Failed"  # the failure criterion is terminal: asked once
    assert "HTTP (404) response met failure criteria" in str(err)
    assert len(server.seen) == 1


def test_posting_to_slack(tmp_path: Path, server: StepServer) -> None:
    server.routes["/api/chat.postMessage"] = answer({"ok": True})
    step = {
        "uses": "http",
        "config": {
            "method": "POST",
            "url": f"{server.url}/api/chat.postMessage",
            "headers": [
                {"name": "Authorization", "value": "Bearer ${{ secret('slack').token }}"},
                {"name": "Content-Type", "value": "application/json"},
            ],
            "body": '${{ quote({\n  "channel": vars.slackChannel,\n  "blocks": [\n    {\n'
            '      "type": "section",\n      "text": {\n        "type": "mrkdwn",\n'
            '        "text": "Hi I am a bot that can post *_fancy_* messages to any public '
            'channel."\n      }\n    }\n  ]\n}) }}\n',
        },
    }
    variables = [{"name": "slackChannel", "value": "C123456"}]
    (outcome,) = run(tmp_path, [step], variables=variables, secrets=worker_secrets(tmp_path))
    assert outcome.outputs == {}
    (seen,) = server.seen
    assert (seen.method, seen.headers["Authorization"]) == ("POST", "Bearer xoxb-token")
    sent = json.loads(seen.body)
    assert sent["channel"] == "C123456"
    assert sent["blocks"][0]["text"]["type"] == "mrkdwn"


def test_yaml_responses(tmp_path: Path, server: StepServer) -> None:
    text = (
        b'version: "2.0"\nfeatures:\n  - name: feature-a\n    enabled: true\n'
        b"  - name: feature-b\n    enabled: false\n"
    )
    server.routes["/config.yaml"] = answer(text, {"Content-Type": "application/yaml"})
    step = {
        "uses": "http",
        "as": "config-fetch",
        "config": {
            "method": "GET",
            "url": f"{server.url}/config.yaml",
            "successExpression": "response.status == 200",
            "outputs": [
                {"name": "version", "fromExpression": "response.body.version"},
                {"name": "features", "fromExpression": "response.body.features"},
            ],
        },
    }
    (outcome,) = run(tmp_path, [step])
    assert outcome.outputs == {
        "version": "2.0",
        "features": [
            {"name": "feature-a", "enabled": True},
            {"name": "feature-b", "enabled": False},
        ],
    }


def test_overriding_content_type_detection(tmp_path: Path, server: StepServer) -> None:
    server.routes["/data"] = answer(b"key: value\n", {"Content-Type": "text/plain"})
    step = {
        "uses": "http",
        "config": {
            "url": f"{server.url}/data",
            "responseContentType": "application/yaml",
            "outputs": [{"name": "value", "fromExpression": "response.body.key"}],
        },
    }
    (outcome,) = run(tmp_path, [step])
    assert outcome.outputs == {"value": "value"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"message": "resource not found"}, "resource not found"),
        ({"error": "resource is disabled"}, "resource is disabled"),
    ],
)
def test_error_expression(tmp_path: Path, server: StepServer, body: Any, message: str) -> None:
    server.routes["/data"] = answer(body, status=404)
    step = {
        "uses": "http",
        "config": {
            "url": f"{server.url}/data",
            "successExpression": "response.status == 200",
            "failureExpression": "response.status >= 400 && response.status < 500",
            "errorExpression": "response.body?.message ?? response.body?.error",
        },
    }
    err = refused(tmp_path, [step])
    assert outcome_of(err) == "Failed"
    assert str(err).endswith(f'HTTP (404) response met failure criteria: "{message}"')


def test_inner_expressions_are_rendered_first(tmp_path: Path, server: StepServer) -> None:
    # The page's "Expressions" example: ${{ }} inside successExpression is pre-evaluated.
    server.routes["/status"] = answer({"status": "completed"})
    step = {
        "uses": "http",
        "config": {
            "url": f"{server.url}/status",
            "successExpression": "response.body.status == '${{ vars.expectedStatus }}'",
            "failureExpression": "response.body.status == 'failed'",
            "outputs": [{"name": "type", "fromExpression": "response.header('content-type')"}],
        },
    }
    variables = [{"name": "expectedStatus", "value": "completed"}]
    (outcome,) = run(tmp_path, [step], variables=variables)
    assert outcome.outputs == {"type": "application/json"}


# --- http: edge cases --------------------------------------------------------------------------


def test_non_2xx_without_expressions_is_asked_again_until_the_retry_timeout(
    tmp_path: Path, server: StepServer, fast_polls: None
) -> None:
    server.routes["/flaky"] = answer({}, status=500)
    step = {"uses": "http", "retry": {"timeout": "1s"}, "config": {"url": f"{server.url}/flaky"}}
    err = refused(tmp_path, [step])
    assert outcome_of(err) == "Errored"
    assert "timed out after 1s" in str(err) and "(HTTP 500)" in str(err)
    assert len(server.seen) > 1


def test_headers_query_and_header_function(tmp_path: Path, server: StepServer) -> None:
    server.routes["/q"] = (200, {"X-Answer": "42", "Content-Type": "application/json"}, b"[1,2]")
    step = {
        "uses": "http",
        "config": {
            "method": "PUT",
            "url": f"{server.url}/q?a=1",
            "queryParams": [{"name": "b", "value": "two words&more"}],
            "headers": [{"name": "X-Token", "value": "t"}],
            "body": "payload",
            "outputs": [
                {"name": "answer", "fromExpression": "response.header('x-answer')"},
                {"name": "all", "fromExpression": "response.headers['X-Answer']"},
                {"name": "body", "fromExpression": "response.body"},
            ],
        },
    }
    (outcome,) = run(tmp_path, [step])
    assert outcome.outputs == {"answer": "42", "all": ["42"], "body": [1, 2]}
    (seen,) = server.seen
    assert seen.query == {"a": ["1"], "b": ["two words&more"]}
    assert (seen.method, seen.headers["X-Token"], seen.body) == ("PUT", "t", b"payload")


def test_a_response_over_the_limit_is_refused(tmp_path: Path, server: StepServer) -> None:
    server.routes["/big"] = answer(b"x" * (http_steps.MAX_RESPONSE_BYTES + 1), {})
    err = refused(tmp_path, [{"uses": "http", "config": {"url": f"{server.url}/big"}}])
    assert outcome_of(err) == "Errored" and "exceeds limit" in str(err)


def test_unreachable_is_retryable_and_link_local_is_refused(tmp_path: Path) -> None:
    err = refused(tmp_path, [{"uses": "http", "config": {"url": "http://127.0.0.1:1/"}}])
    assert err.type == "EndpointUnavailableError" and not err.non_retryable
    err = refused(tmp_path, [{"uses": "http", "config": {"url": "http://169.254.169.254/"}}])
    assert err.type == "ConfigError" and "link-local" in str(err)


def test_a_redirect_to_link_local_is_refused(tmp_path: Path, server: StepServer) -> None:
    server.routes["/go"] = (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    server.routes["/here"] = (302, {"Location": "/there"}, b"")
    server.routes["/there"] = answer({"arrived": True})
    step = {"uses": "http", "config": {"url": f"{server.url}/go"}}
    err = refused(tmp_path, [step])
    assert err.type == "ConfigError" and "169.254.169.254" in str(err)
    followed = {
        "uses": "http",
        "config": {
            "url": f"{server.url}/here",
            "outputs": [{"name": "arrived", "fromExpression": "response.body.arrived"}],
        },
    }
    assert run(tmp_path, [followed])[0].outputs == {"arrived": True}


def test_a_non_boolean_criterion_and_a_long_retry_timeout_are_errors(
    tmp_path: Path, server: StepServer
) -> None:
    server.routes["/x"] = answer({})
    step = {"uses": "http", "config": {"url": f"{server.url}/x", "successExpression": "1"}}
    err = refused(tmp_path, [step])
    assert err.type == "ExpressionError" and "did not evaluate to a boolean" in str(err)
    step = {"uses": "http", "retry": {"timeout": "1h"}, "config": {"url": f"{server.url}/x"}}
    assert "longer than the 20m" in str(refused(tmp_path, [step]))


# --- http-download: the reference examples -----------------------------------------------------


def download_then_parse(path: str, key: str) -> dict[str, Any]:
    """yaml-parse reads the downloaded file back: its top-level ``key`` as output ``doc``."""
    return {
        "uses": "yaml-parse",
        "as": "read",
        "config": {"path": path, "outputs": [{"name": "doc", "fromExpression": key}]},
    }


def test_download_basic(tmp_path: Path, server: StepServer) -> None:
    server.routes["/config/app.yaml"] = answer(b"replicas: 3\n", {"Content-Type": "text/yaml"})
    step = {
        "uses": "http-download",
        "as": "fetch-config",
        "config": {"url": f"{server.url}/config/app.yaml", "outPath": "config/app.yaml"},
    }
    fetched, parsed = run(tmp_path, [step, download_then_parse("config/app.yaml", "replicas")])
    assert fetched.outputs == {}
    assert parsed.outputs == {"doc": 3}


def test_download_with_authentication(tmp_path: Path, server: StepServer) -> None:
    server.routes["/releases/v1.2.3/app.tar.gz"] = answer(b"a: 1\n", {})
    step = {
        "uses": "http-download",
        "as": "fetch-artifact",
        "config": {
            "url": f"{server.url}/releases/v1.2.3/app.tar.gz",
            "outPath": "artifacts/app.tar.gz",
            "headers": [
                {"name": "Authorization", "value": "Bearer ${{ secret('artifacts').token }}"}
            ],
            "allowOverwrite": True,
            "timeout": "10m",
        },
    }
    again = {**step, "as": "again"}
    steps = [step, again, download_then_parse("artifacts/app.tar.gz", "a")]
    run(tmp_path, steps, secrets=worker_secrets(tmp_path))  # the second overwrites
    assert [s.headers["Authorization"] for s in server.seen] == ["Bearer artifact-token"] * 2


def test_download_with_query_parameters(tmp_path: Path, server: StepServer) -> None:
    server.routes["/releases/source.zip"] = answer(b"b: 2\n", {})
    step = {
        "uses": "http-download",
        "as": "fetch-release",
        "config": {
            "url": f"{server.url}/releases/source.zip",
            "outPath": "releases/source.zip",
            "queryParams": [{"name": "version", "value": "${{ vars.version }}"}],
            "headers": [
                {"name": "Authorization", "value": "token ${{ secret('artifacts').token }}"}
            ],
            "allowOverwrite": False,
            "timeout": "5m",
        },
    }
    (_, parsed) = run(
        tmp_path,
        [step, download_then_parse("releases/source.zip", "b")],
        variables=[{"name": "version", "value": "1.2.3"}],
        secrets=worker_secrets(tmp_path),
    )
    assert parsed.outputs == {"doc": 2}
    assert server.seen[0].query == {"version": ["1.2.3"]}
    assert server.seen[0].headers["Authorization"] == "token artifact-token"
    again = {**step, "as": "again"}
    err = refused(
        tmp_path,
        [step, again],
        variables=[{"name": "version", "value": "1.2.4"}],
        secrets=worker_secrets(tmp_path),
    )
    assert outcome_of(err) == "Errored" and "overwrite is not allowed" in str(err)


def test_download_a_chart_of_the_freight(tmp_path: Path, server: StepServer) -> None:
    server.routes["/my-helm-chart-1.4.0.tgz"] = answer(b"chart bytes", {})
    body: dict[str, Any] = freight_for("1.0.0").model_dump(by_alias=True, exclude_none=True)
    body["charts"] = [{"repoURL": server.url, "name": "my-helm-chart", "version": "1.4.0"}]
    freight = Freight.model_validate(body)
    step = {
        "uses": "http-download",
        "as": "fetch-chart",
        "config": {
            "url": f"{server.url}/${{{{ vars.chartName }}}}-"
            "${{ chartFrom(vars.chartRepo, vars.chartName).Version }}.tgz",
            "outPath": "charts/${{ vars.chartName }}.tgz",
            "headers": [{"name": "Accept", "value": "application/gzip"}],
            "allowOverwrite": True,
        },
    }
    variables = [
        {"name": "chartRepo", "value": server.url},
        {"name": "chartName", "value": "my-helm-chart"},
    ]
    (outcome,) = run(tmp_path, [step], variables=variables, freight=freight)
    assert outcome.outputs == {}
    (seen,) = server.seen
    assert (seen.path, seen.headers["Accept"]) == ("/my-helm-chart-1.4.0.tgz", "application/gzip")


# --- http-download: edge cases (the step itself, to look at the files) ---------------------


def test_download_refuses_escapes_and_replaces_links(tmp_path: Path, server: StepServer) -> None:
    server.routes["/f"] = answer(b"new", {})
    ctx = context(tmp_path)
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (ctx.workspace.root / "link").symlink_to(outside)
    (ctx.workspace.root / "dir").symlink_to(tmp_path)
    for path in ("../escape", "/etc/x", "link", "dir/outside"):
        config = HTTPDownloadConfig(url=f"{server.url}/f", out_path=path, allow_overwrite=True)
        with pytest.raises(ConfigError):
            http_download(ctx, config)
    assert outside.read_text() == "keep"
    inner = ctx.workspace.root / "inner"
    inner.write_text("old")
    (ctx.workspace.root / "to-inner").symlink_to(inner)
    config = HTTPDownloadConfig(url=f"{server.url}/f", out_path="to-inner", allow_overwrite=True)
    http_download(ctx, config)
    assert (ctx.workspace.root / "inner").read_text() == "new"  # the link led inside: followed


def test_download_failures(
    tmp_path: Path, server: StepServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = context(tmp_path)
    server.routes["/missing"] = answer(b"", {}, status=404)
    server.routes["/busy"] = answer(b"", {}, status=503)
    server.routes["/big"] = answer(b"x" * 100, {})
    with pytest.raises(StepError, match="failed with status 404"):
        http_download(ctx, HTTPDownloadConfig(url=f"{server.url}/missing", out_path="a"))
    with pytest.raises(Exception, match="failed with status 503") as busy:
        http_download(ctx, HTTPDownloadConfig(url=f"{server.url}/busy", out_path="a"))
    assert type(busy.value).__name__ == "EndpointUnavailableError"
    monkeypatch.setattr(http_steps, "MAX_DOWNLOAD_BYTES", 10)
    with pytest.raises(StepError, match="exceeds limit of 10 bytes"):
        http_download(ctx, HTTPDownloadConfig(url=f"{server.url}/big", out_path="a"))
    assert not (ctx.workspace.root / "a").exists()
    assert list(ctx.workspace.root.iterdir()) == []  # no temporary file left behind


def test_secret_is_the_workers_and_stays_out_of_the_results(
    tmp_path: Path, server: StepServer
) -> None:
    server.routes["/x"] = answer({"ok": True})

    def step(secret: str) -> dict[str, Any]:
        return {
            "uses": "http",
            "as": "call",
            "config": {
                "url": f"{server.url}/x",
                "headers": [{"name": "X-Token", "value": f"${{{{ secret('{secret}').token }}}}"}],
                "outputs": [{"name": "ok", "fromExpression": "response.body.ok"}],
            },
        }

    (outcome,) = run(tmp_path, [step("artifacts")], secrets=worker_secrets(tmp_path))
    # The project's own Secret (namespace p), not another project's.
    assert server.seen[-1].headers["X-Token"] == "artifact-token"
    assert "artifact-token" not in outcome.model_dump_json()
    # An unknown Secret is an empty map, as in Kargo: the empty header value is refused.
    err = refused(tmp_path, [step("nope")], secrets=worker_secrets(tmp_path))
    assert err.type == "ConfigError" and "headers.0.value" in str(err)

    # sharedSecret() reads the shared resources namespace (kargo-shared-resources), never a
    # project's own Secret.
    shared = step("x")
    shared["config"]["headers"][0]["value"] = "${{ sharedSecret('shared').token }}"
    run(tmp_path, [shared], secrets=worker_secrets(tmp_path))
    assert server.seen[-1].headers["X-Token"] == "shared-token"
    shared["config"]["headers"][0]["value"] = "${{ sharedSecret('artifacts').token }}"
    err = refused(tmp_path, [shared], secrets=worker_secrets(tmp_path))
    assert err.type == "ConfigError" and "headers.0.value" in str(err)


# --- through Temporal: a promotion with the worker's secret --------------------------------


def decoded(history: str) -> str:
    """The history with every payload's base64 ``data`` decoded next to it."""
    payloads = re.findall(r'"data": "([A-Za-z0-9+/=]+)"', history)
    return history + "".join(base64.b64decode(p).decode(errors="replace") for p in payloads)


async def test_a_promotion_calls_with_the_workers_secret_and_keeps_it_out_of_history(
    tmp_path: Path,
    server: StepServer,
    client: Client,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials = tmp_path / "credentials.yaml"
    credentials.write_text(SECRETS)
    monkeypatch.setenv("FREIGHTLINE_CREDENTIALS_FILE", str(credentials))
    server.routes["/hook"] = answer({"id": 7})
    server.routes["/config.yaml"] = answer(b"replicas: 3\n", {"Content-Type": "text/yaml"})
    steps = [
        {
            "uses": "http",
            "as": "notify",
            "config": {
                "method": "POST",
                "url": f"{server.url}/hook",
                "headers": [
                    {"name": "Authorization", "value": "Bearer ${{ secret('slack').token }}"},
                    {"name": "X-Shared", "value": "${{ sharedSecret('shared').token }}"},
                ],
                "body": "${{ quote({'stage': ctx.stage}) }}",
                "outputs": [{"name": "id", "fromExpression": "response.body.id"}],
            },
        },
        {
            "uses": "http-download",
            "config": {"url": f"{server.url}/config.yaml", "outPath": "config.yaml"},
        },
        download_then_parse("config.yaml", "replicas"),
    ]
    freight = freight_for("1.0.0")
    async with build_worker(client, load_settings(), queue=task_queue):
        resources = with_freight(single_stage_project(tmp_path, steps), freight)
        await apply_project(client, resources)
        handle = await start_promotion(client, "p", "test", freight.metadata.name)
        result = await handle.result()
        history = decoded(json.dumps((await handle.fetch_history()).to_json_dict()))
    assert result.phase is PromotionPhase.SUCCEEDED
    assert result.outputs["notify"] == {"id": 7} and result.outputs["read"] == {"doc": 3}
    assert server.seen[0].headers["Authorization"] == "Bearer xoxb-token"
    assert server.seen[0].headers["X-Shared"] == "shared-token"
    assert json.loads(server.seen[0].body) == {"stage": "test"}
    # The workflow holds the reference (the step's config), never the value.
    assert "secret('slack')" in history and "xoxb-token" not in history
    assert "sharedSecret('shared')" in history and "shared-token" not in history
