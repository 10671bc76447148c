"""The ``prometheus`` provider's ``authentication.oauth2``, ``authentication.sigv4`` and
``rangeQuery`` against Debian's real Prometheus, behind a small proxy that checks an OAuth2
Bearer token (issued by its own client-credentials endpoint) or each request's SigV4
signature (``tests/auth_proxy.py``), as a managed Prometheus does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from activities.metrics import measure
from freightline.kargo.resources import Metric
from sandbox.prometheus import PrometheusServer
from tests.auth_proxy import AuthProxy
from tests.registry_fixture import free_port

CLIENT_SECRET = "client-secret-5f1e-never-in-a-message"
TOKEN = "access-token-77c2-never-in-a-message"
AWS_KEY, AWS_SECRET = "AKIAFREIGHTLINETEST1", "aws-secret-9b0d-never-in-a-message"
SECRET_VARIABLE = "FREIGHTLINE_METRIC_PROM_OAUTH_SECRET"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus; the queries need no scraped series (``vector(0.25)``)."""
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), []) as server:
        yield server


@pytest.fixture
def oauth2_proxy(prometheus: PrometheusServer) -> Iterator[AuthProxy]:
    proxy = AuthProxy(
        prometheus.url,
        scheme="oauth2",
        client_id="freightline",
        client_secret=CLIENT_SECRET,
        token=TOKEN,
    )
    yield proxy
    proxy.stop()


def metric(address: str, query: str = "vector(0.25)", **prometheus: Any) -> Metric:
    return Metric.model_validate(
        {
            "name": "m",
            "successCondition": "result[0] < 0.5",
            "provider": {"prometheus": {"address": address, "query": query, **prometheus}},
        }
    )


def oauth2(proxy: AuthProxy, secret: str = f"{{{{env.{SECRET_VARIABLE}}}}}") -> dict[str, Any]:
    return {
        "oauth2": {
            "tokenUrl": f"{proxy.url}/token",
            "clientId": "freightline",
            "clientSecret": secret,
            "scopes": ["metrics:read", "tenant:a"],
        }
    }


# --- oauth2 ------------------------------------------------------------------------------------


def test_oauth2_gets_a_token_by_client_credentials_and_queries_with_it(
    oauth2_proxy: AuthProxy,
) -> None:
    measured = measure(
        metric(oauth2_proxy.url, authentication=oauth2(oauth2_proxy)),
        {SECRET_VARIABLE: CLIENT_SECRET},
    )
    assert (measured.phase, measured.value) == ("Successful", [0.25])
    assert TOKEN not in measured.model_dump_json()
    (form,) = oauth2_proxy.token_forms
    assert form == {"grant_type": "client_credentials", "scope": "metrics:read tenant:a"}


def test_without_the_token_or_with_a_wrong_secret_it_is_an_error(
    oauth2_proxy: AuthProxy,
) -> None:
    unauthenticated = measure(metric(oauth2_proxy.url), {})
    assert unauthenticated.phase == "Error"
    assert "answered 401 Unauthorized" in (unauthenticated.message or "")

    wrong = measure(
        metric(oauth2_proxy.url, authentication=oauth2(oauth2_proxy)),
        {SECRET_VARIABLE: "not-the-secret"},
    )
    assert wrong.phase == "Error"
    assert wrong.message == (
        f"OAuth2 token endpoint {oauth2_proxy.url}/token answered 401 Unauthorized: invalid_client"
    )


# --- sigv4 -------------------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The worker's AWS default chain: keys in the environment, a profile in a shared file."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    shared = tmp_path / "credentials"
    shared.write_text(
        "[team]\naws_access_key_id = AKIATEAMPROFILE00001\naws_secret_access_key = team-secret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    return shared


def sigv4_proxy(prometheus: PrometheusServer, secrets: dict[str, str]) -> AuthProxy:
    return AuthProxy(prometheus.url, scheme="sigv4", aws_secret=secrets.get)


def test_sigv4_signs_with_the_default_chain_and_with_a_profile(
    prometheus: PrometheusServer, aws: Path
) -> None:
    proxy = sigv4_proxy(prometheus, {AWS_KEY: AWS_SECRET, "AKIATEAMPROFILE00001": "team-secret"})
    try:
        chain = measure(metric(proxy.url, authentication={"sigv4": {"region": "eu-west-1"}}), {})
        profile = measure(
            metric(proxy.url, authentication={"sigv4": {"region": "eu-west-1", "profile": "team"}}),
            {},
        )
        unsigned = measure(metric(proxy.url), {})
    finally:
        proxy.stop()
    assert (chain.phase, profile.phase) == ("Successful", "Successful")
    assert proxy.signers == [AWS_KEY, "AKIATEAMPROFILE00001"]
    assert unsigned.phase == "Error" and "answered 403" in (unsigned.message or "")


def test_sigv4_with_a_wrong_key_no_region_or_an_unknown_profile_is_an_error(
    prometheus: PrometheusServer, aws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = sigv4_proxy(prometheus, {AWS_KEY: "another-secret"})
    try:
        wrong = measure(metric(proxy.url, authentication={"sigv4": {"region": "eu-west-1"}}), {})
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            monkeypatch.delenv(name, raising=False)
        regionless = measure(metric(proxy.url, authentication={"sigv4": {}}), {})
        unknown = measure(
            metric(proxy.url, authentication={"sigv4": {"region": "x", "profile": "nope"}}), {}
        )
    finally:
        proxy.stop()
    assert wrong.phase == "Error" and "answered 403" in (wrong.message or "")
    assert AWS_SECRET not in wrong.model_dump_json()
    assert regionless.phase == "Error" and "sigv4: no region" in (regionless.message or "")
    assert unknown.phase == "Error" and "nope" in (unknown.message or "")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server._port}"
    server.stop()


def assumed_secret(key: str) -> str | None:
    """The secret key moto (in this process) issued with an assumed role's access key ID."""
    backend = sts_backends[DEFAULT_ACCOUNT_ID]["global"]
    role = backend.get_assumed_role_from_access_key(key)
    return role.secret_access_key if role else None


def test_sigv4_assumes_role_arn_through_sts_and_signs_with_its_session(
    prometheus: PrometheusServer, aws: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_url)
    role = boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1").create_role(
        RoleName="prometheus-reader", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    proxy = AuthProxy(prometheus.url, scheme="sigv4", aws_secret=assumed_secret)
    try:
        measured = measure(
            metric(proxy.url, authentication={"sigv4": {"region": "us-east-1", "roleArn": role}}),
            {},
        )
    finally:
        proxy.stop()
    assert measured.phase == "Successful", measured.message
    (signer,) = proxy.signers
    assert signer != AWS_KEY and assumed_secret(signer) is not None


# --- rangeQuery --------------------------------------------------------------------------------


def test_a_range_query_gives_every_point_of_every_series(prometheus: PrometheusServer) -> None:
    span = {"start": 'now() - duration("1m")', "end": "now()", "step": "15s"}
    measured = measure(
        metric(
            prometheus.url,
            query='vector(0.25) or label_replace(vector(0.5), "b", "1", "", "")',
            rangeQuery=span,
        ).model_copy(update={"success_condition": "all(result, # < 1) && len(result) == 10"}),
        {},
    )
    assert measured.phase == "Successful", measured.message
    assert measured.value == [0.25] * 5 + [0.5] * 5


def test_a_range_query_bound_that_is_no_time_is_an_error(prometheus: PrometheusServer) -> None:
    bad = {"start": '"yesterday"', "end": "now()", "step": "15s"}
    measured = measure(metric(prometheus.url, rangeQuery=bad), {})
    assert measured.phase == "Error"
    assert measured.message == (
        'failed to parse rangeQuery.start as time: ""yesterday"" gives str, not a time'
    )
    empty = {"start": 'now() - duration("1m")', "end": "now()", "step": "15s"}
    nothing = measure(metric(prometheus.url, query="absent_metric_xyz", rangeQuery=empty), {})
    assert nothing.phase == "Error" and (nothing.message or "").startswith("empty result")


def test_one_authentication_scheme_and_a_valid_step_at_apply() -> None:
    with pytest.raises(
        ValueError, match="give one authentication scheme, not basic_auth and sigv4"
    ):
        metric(
            "http://p",
            authentication={"basicAuth": {"username": "u", "password": "p"}, "sigv4": {}},
        )
    with pytest.raises(ValueError, match="step"):
        metric("http://p", rangeQuery={"start": "now()", "end": "now()", "step": "soon"})
