"""The ``prometheus`` provider: an instant query through ``prometheus-api-client``.

``address``, ``query``, ``timeout`` (seconds, default 30), ``headers`` and
``authentication.basicAuth`` (values and the password may be
``{{env.FREIGHTLINE_METRIC_*}}``, the worker's variables, by reference),
``insecure``. A vector result is a
list of floats (``result[0] < 0.05``), a scalar a float; an empty vector is an
Error measurement ("empty result"); a matrix or string result is an Error
("unsupported result type"). The client is built on ``requests``, so this is
sync code, run in the worker's activity thread pool.
"""

from __future__ import annotations

from typing import Any

import requests
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
from freightline.kargo.analysis import DEFAULT_PROMETHEUS_TIMEOUT_SECONDS
from freightline.kargo.resources import PrometheusMetric
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
    basic = spec.authentication.basic_auth if spec.authentication else None
    auth = None
    if basic is not None:
        password = secrets.resolve_env(basic.password, "prometheus basicAuth password")
        secrets.remember(password)
        auth = (basic.username, password)
    client = PrometheusConnect(
        url=address,
        session=session,
        retry=Retry(total=0),
        timeout=timeout,
        headers=headers or None,
        auth=auth,
        disable_ssl=bool(spec.insecure),
    )
    try:
        result = client.custom_query(spec.query, params={"timeout": f"{timeout}s"})
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
        f"unsupported result type {result_type}: the query must give a vector or a scalar"
    )
