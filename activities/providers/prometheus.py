"""The ``prometheus`` provider: an instant or range query through ``prometheus-api-client``.

``address``, ``query``, ``timeout`` (seconds, default 30), ``headers``, ``insecure`` and
``authentication``: ``basicAuth`` (values and the password may be
``{{env.FREIGHTLINE_METRIC_*}}``, the worker's variables, by reference), ``oauth2`` (a
client-credentials grant at ``tokenUrl``; the access token goes as ``Authorization:
Bearer``) or ``sigv4`` (each request signed by botocore's SigV4 for service ``aps`` with the
worker's AWS credentials: the default chain, ``profile``, then ``roleArn`` assumed through
STS). ``rangeQuery`` (Argo Rollouts 1.8): ``start`` and ``end`` are expressions giving a time
(``now() - duration("5m")``; ``now()`` is the measurement's clock), ``step`` a duration.

A vector result is a list of floats (``result[0] < 0.05``), a matrix (a range query) the
list of every point of every series, in order (``all(result, # < 1000)``), a scalar a
float, as Argo Rollouts 1.8 gives them; an empty vector or matrix is an Error measurement
("empty result"); a string result is an Error ("unsupported result type"). The client is
built on ``requests``, so this is sync code, run in the worker's activity thread pool.
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import quote

import boto3
import botocore.exceptions
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from activities.providers.measuring import (
    MeasurementFailed,
    WorkerSecrets,
    check_url,
    connection_reason,
    display_url,
)
from freightline.errors import ExpressionError
from freightline.kargo.analysis import DEFAULT_PROMETHEUS_TIMEOUT_SECONDS
from freightline.kargo.expressions import NOW, Time, evaluate
from freightline.kargo.resources import (
    PrometheusMetric,
    PrometheusOAuth2,
    PrometheusSigv4,
    parse_duration,
)
from freightline.logging import get_logger

__all__ = ["query"]


def _as_float(text: Any) -> float:
    return float(text)  # Prometheus sends sample values as strings: "0.5", "NaN", "+Inf"


def query(spec: PrometheusMetric, secrets: WorkerSecrets) -> Any:
    """The query's result as Argo Rollouts hands it to conditions; raises MeasurementFailed."""
    address = spec.address.rstrip("/")
    check_url(address, "prometheus.address")
    where = display_url(address)
    timeout = spec.timeout or DEFAULT_PROMETHEUS_TIMEOUT_SECONDS
    responses: list[Any] = []
    session = requests.Session()
    # The client returns only data.result; the hook keeps the whole answer for the
    # result type and Prometheus' own error message.
    session.hooks["response"].append(lambda response, *args, **kwargs: responses.append(response))
    headers = secrets.headers(spec.headers or [], "prometheus header")
    authentication = spec.authentication
    auth: Any = None
    if authentication is not None and authentication.basic_auth is not None:
        basic = authentication.basic_auth
        password = secrets.resolve_env(basic.password, "prometheus basicAuth password")
        secrets.remember(password)
        auth = (basic.username, password)
    elif authentication is not None and authentication.oauth2 is not None:
        token = _oauth2_token(authentication.oauth2, secrets, timeout, not spec.insecure)
        headers["Authorization"] = f"Bearer {token}"
    elif authentication is not None and authentication.sigv4 is not None:
        auth = _SigV4(_aws_credentials(authentication.sigv4, secrets))
    client = PrometheusConnect(
        url=address,
        session=session,
        retry=Retry(total=0),
        timeout=timeout,
        headers=headers or None,
        auth=auth,
        disable_ssl=bool(spec.insecure),
    )
    params = {"timeout": f"{timeout}s"}
    try:
        if spec.range_query is None:
            result = client.custom_query(spec.query, params=params)
        else:
            span = spec.range_query
            result = client.custom_query_range(
                spec.query,
                start_time=_time(span.start, "rangeQuery.start"),
                end_time=_time(span.end, "rangeQuery.end"),
                step=f"{parse_duration(span.step).total_seconds():g}",
                params=params,
            )
    except PrometheusApiClientException:
        raise MeasurementFailed(_refusal(where, responses)) from None
    except requests.exceptions.Timeout:
        raise MeasurementFailed(f"Prometheus at {where} did not answer within {timeout}s") from None
    except requests.exceptions.ConnectionError as err:
        raise MeasurementFailed(
            f"could not reach Prometheus at {where}: {connection_reason(err)}"
        ) from None
    except (requests.exceptions.RequestException, ValueError, KeyError, TypeError) as err:
        raise MeasurementFailed(
            f"Prometheus at {where}: bad answer: {type(err).__name__}"
        ) from None
    finally:
        client.close()
    body = responses[-1].json() if responses else {}
    result_type = (body.get("data") or {}).get("resultType") if isinstance(body, dict) else None
    warnings = body.get("warnings") if isinstance(body, dict) else None
    if warnings:
        get_logger(__name__).warning("prometheus warnings", warnings=warnings)
    return _value(result_type, result)


def _time(expression: str, field: str) -> datetime.datetime:
    """A ``rangeQuery`` bound: an expression giving a time, ``now()`` being this moment."""
    try:
        value = evaluate(expression, {NOW: datetime.datetime.now(datetime.UTC)})
    except ExpressionError as err:
        raise MeasurementFailed(f"failed to parse {field} as time: {err}") from None
    if not isinstance(value, Time):
        raise MeasurementFailed(
            f'failed to parse {field} as time: "{expression}" gives {type(value).__name__}, '
            "not a time"
        )
    return value.at


def _oauth2_token(
    oauth: PrometheusOAuth2, secrets: WorkerSecrets, timeout: float, verify: bool
) -> str:
    """An access token from ``tokenUrl`` by the client-credentials grant (RFC 6749 4.4), the
    client authenticated with HTTP Basic as RFC 6749 2.3.1 spells it (form-encoded parts)."""
    check_url(oauth.token_url, "prometheus oauth2 tokenUrl")
    where = display_url(oauth.token_url)
    secret = secrets.resolve_env(oauth.client_secret, "prometheus oauth2 clientSecret")
    secrets.remember(secret)
    form = {"grant_type": "client_credentials"}
    if oauth.scopes:
        form["scope"] = " ".join(oauth.scopes)
    try:
        response = requests.post(
            oauth.token_url,
            data=form,
            auth=(quote(oauth.client_id, safe=""), quote(secret, safe="")),
            headers={"Accept": "application/json"},
            timeout=timeout,
            verify=verify,
        )
    except requests.exceptions.RequestException as err:
        raise MeasurementFailed(
            f"could not get an OAuth2 token from {where}: {connection_reason(err)}"
        ) from None
    if not response.ok:
        raise MeasurementFailed(
            f"OAuth2 token endpoint {where} answered {response.status_code} {response.reason}"
            + _oauth2_error(response)
        )
    try:
        token = response.json()["access_token"]
    except (ValueError, KeyError, TypeError):
        raise MeasurementFailed(f"OAuth2 token endpoint {where}: no access_token") from None
    if not isinstance(token, str) or not token:
        raise MeasurementFailed(f"OAuth2 token endpoint {where}: no access_token")
    secrets.remember(token)
    return token


def _oauth2_error(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return (
        f": {body['error']}"
        if isinstance(body, dict) and isinstance(body.get("error"), str)
        else ""
    )


def _aws_credentials(
    sigv4: PrometheusSigv4, secrets: WorkerSecrets
) -> tuple[ReadOnlyCredentials, str]:
    """The worker's AWS credentials for signing, and the region: the SDK's default chain
    (environment, shared files, web identity) or ``profile``, then ``roleArn`` assumed."""
    try:
        session = boto3.Session(
            profile_name=sigv4.profile or None, region_name=sigv4.region or None
        )
        region = sigv4.region or session.region_name
        if not region:
            raise MeasurementFailed(
                "sigv4: no region: set authentication.sigv4.region or the worker's AWS_REGION"
            )
        found = session.get_credentials()
        if sigv4.role_arn:
            answer = session.client("sts", region_name=region).assume_role(
                RoleArn=sigv4.role_arn, RoleSessionName="freightline-analysis"
            )["Credentials"]
            found = Credentials(
                answer["AccessKeyId"], answer["SecretAccessKey"], answer["SessionToken"]
            )
    except botocore.exceptions.ProfileNotFound as err:
        raise MeasurementFailed(f"sigv4: {err}") from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise MeasurementFailed(f"sigv4: could not get AWS credentials: {err}") from None
    if found is None:
        raise MeasurementFailed("sigv4: the worker has no AWS credentials (none in its chain)")
    frozen = found.get_frozen_credentials()
    secrets.remember(frozen.secret_key or "")
    if frozen.token:
        secrets.remember(frozen.token)
    return frozen, region


class _SigV4(requests.auth.AuthBase):
    """Signs each request as Amazon Managed Prometheus expects (service ``aps``)."""

    def __init__(self, found: tuple[ReadOnlyCredentials, str]) -> None:
        self.credentials, self.region = found

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        signed = AWSRequest(method=request.method, url=request.url, data=request.body)
        frozen = self.credentials
        credentials = Credentials(frozen.access_key or "", frozen.secret_key or "", frozen.token)
        SigV4Auth(credentials, "aps", self.region).add_auth(signed)
        request.headers.update(dict(signed.headers.items()))
        return request


def _refusal(where: str, responses: list[Any]) -> str:
    if not responses:
        return f"Prometheus at {where} refused the query"
    response = responses[-1]
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            detail = f": {body.get('errorType') or 'error'}: {body['error']}"
    except ValueError:
        pass
    retry_after = response.headers.get("Retry-After")
    if response.status_code == 429 and retry_after:
        detail += f" (Retry-After: {retry_after.strip()[:40]})"
    return f"Prometheus at {where} answered {response.status_code} {response.reason}{detail}"


def _value(result_type: str | None, result: Any) -> Any:
    if result_type == "matrix":
        if not any(series.get("values") for series in result):
            raise MeasurementFailed("empty result: the query matched no points")
        try:
            return [_as_float(point[1]) for series in result for point in series["values"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise MeasurementFailed("unsupported result: a matrix without sample values") from None
    if result_type == "vector" or (result_type is None and isinstance(result, list)):
        if not result:
            raise MeasurementFailed("empty result: the query matched no series")
        try:
            return [_as_float(sample["value"][1]) for sample in result]
        except (KeyError, IndexError, TypeError, ValueError):
            raise MeasurementFailed("unsupported result: a vector without sample values") from None
    if result_type == "scalar":
        try:
            return _as_float(result[1])
        except (IndexError, TypeError, ValueError):
            raise MeasurementFailed("unsupported result: a scalar without a value") from None
    raise MeasurementFailed(
        f"unsupported result type {result_type}: the query must give a vector, a matrix or a scalar"
    )
