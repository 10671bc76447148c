"""The ``datadog`` provider: Datadog's metric queries through ``datadog-api-client``.

As in Argo Rollouts:

- ``apiVersion: v1`` (the default): ``GET /api/v1/query`` over the last
  ``interval`` (default 5m); the value is the last point of the first series,
  a float. No series, or no points, gives the conditions ``result`` = nil
  (``default(result, 0) < 0.05``, ``isNil(result)``).
- ``apiVersion: v2``: ``POST /api/v2/query/scalar`` with ``queries`` (or
  ``query`` as the query ``query``) reduced by ``aggregator`` (default
  ``last``) and ``formula``; the value is the first number column: a float
  for an ungrouped query, a list of floats for a grouped one (``by {tag}``),
  nulls skipped; an empty column gives nil.
- A 401 or 403 is an Error ("received authentication error response code"),
  as is any other non-2xx (a 429 with its ``Retry-After``), a query error
  Datadog reports, an unreachable API, and an answer past ``requestTimeout``
  (default 10s).

Credentials: Argo Rollouts reads Secret ``datadog`` (or ``secretRef.name``),
keys ``address`` (default ``https://api.datadoghq.com``), ``api-key`` and
``app-key``; the worker reads ``FREIGHTLINE_METRIC_DATADOG_ADDRESS``,
``..._API_KEY``, ``..._APP_KEY`` (for ``secretRef.name: dd-eu``,
``FREIGHTLINE_METRIC_DD_EU_API_KEY`` and so on). ``secretRef.namespaced``
has no meaning here (the worker's credentials are its own) and is ignored.
"""

from __future__ import annotations

import time
from typing import Any, Final

import urllib3
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException, OpenApiException
from datadog_api_client.v1.api.metrics_api import MetricsApi as MetricsApiV1
from datadog_api_client.v2.api.metrics_api import MetricsApi as MetricsApiV2
from datadog_api_client.v2.model.metrics_aggregator import MetricsAggregator
from datadog_api_client.v2.model.metrics_data_source import MetricsDataSource
from datadog_api_client.v2.model.metrics_scalar_query import MetricsScalarQuery
from datadog_api_client.v2.model.query_formula import QueryFormula
from datadog_api_client.v2.model.scalar_formula_query_request import ScalarFormulaQueryRequest
from datadog_api_client.v2.model.scalar_formula_request import ScalarFormulaRequest
from datadog_api_client.v2.model.scalar_formula_request_attributes import (
    ScalarFormulaRequestAttributes,
)
from datadog_api_client.v2.model.scalar_formula_request_queries import (
    ScalarFormulaRequestQueries,
)
from datadog_api_client.v2.model.scalar_formula_request_type import ScalarFormulaRequestType

from activities.providers.measuring import (
    MeasurementFailed,
    WorkerSecrets,
    check_url,
    connection_reason,
    display_url,
    http_failure,
)
from freightline.kargo.analysis import provider_timeout_seconds
from freightline.kargo.resources import DatadogMetric, parse_duration

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_SECRET", "query"]

DEFAULT_ADDRESS: Final = "https://api.datadoghq.com"
DEFAULT_SECRET: Final = "datadog"  # noqa: S105 - a Secret's name


def query(spec: DatadogMetric, secrets: WorkerSecrets) -> Any:
    """The value Argo Rollouts gives the conditions; raises MeasurementFailed."""
    secret = (spec.secret_ref.name if spec.secret_ref else None) or DEFAULT_SECRET
    address = (secrets.setting(secret, "address") or DEFAULT_ADDRESS).rstrip("/")
    check_url(address, f'datadog address (secret "{secret}")')
    configuration = Configuration(
        host=address,
        api_key={
            "apiKeyAuth": secrets.require(secret, "api-key", "datadog"),
            "appKeyAuth": secrets.require(secret, "app-key", "datadog"),
        },
        request_timeout=provider_timeout_seconds(spec),
    )
    # One try per measurement: the next one is the retry, `interval` later, as in Argo Rollouts.
    configuration.retry_policy = urllib3.Retry(total=0, raise_on_status=False)
    now = int(time.time())
    since = now - int(parse_duration(spec.interval).total_seconds())
    where = f"Datadog at {display_url(address)}"
    try:
        with ApiClient(configuration) as client:
            if spec.api_version == "v1":
                assert spec.query is not None  # the model requires it for v1
                answer = MetricsApiV1(client).query_metrics(_from=since, to=now, query=spec.query)
                return _v1_value(answer.to_dict())
            scalar = MetricsApiV2(client).query_scalar_data(_scalar_request(spec, since, now))
            return _v2_value(scalar.to_dict(), where)
    except ApiException as err:
        if err.status in (401, 403):
            raise MeasurementFailed(
                f"{where}: received authentication error response code: {err.status} {err.reason}"
            ) from None
        retry_after = (err.headers or {}).get("Retry-After")
        raise MeasurementFailed(
            http_failure(where, err.status or 0, err.reason or "", retry_after) + _errors(err.body)
        ) from None
    except urllib3.exceptions.HTTPError as err:
        reason = err.reason if isinstance(err, urllib3.exceptions.MaxRetryError) else err
        # (NewConnectionError is a ConnectTimeoutError for urllib3: ask it first)
        if isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
            reason, urllib3.exceptions.NewConnectionError
        ):
            raise MeasurementFailed(
                f"{where} did not answer within {provider_timeout_seconds(spec):g}s"
            ) from None
        raise MeasurementFailed(
            f"could not reach {where}: {connection_reason(reason or err)}"
        ) from None
    except (OpenApiException, ValueError, KeyError, TypeError) as err:
        raise MeasurementFailed(f"{where}: unexpected answer: {type(err).__name__}") from None


def _errors(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return ": " + "; ".join(str(error)[:200] for error in body["errors"][:3])
    return ""


def _scalar_request(spec: DatadogMetric, since: int, now: int) -> ScalarFormulaQueryRequest:
    queries = spec.queries or {"query": spec.query or ""}
    attributes = ScalarFormulaRequestAttributes(
        _from=since * 1000,
        to=now * 1000,
        queries=ScalarFormulaRequestQueries(
            [
                MetricsScalarQuery(
                    aggregator=MetricsAggregator(spec.aggregator or "last"),
                    data_source=MetricsDataSource.METRICS,
                    query=text,
                    name=name,
                )
                for name, text in queries.items()
            ]
        ),
    )
    if spec.formula:
        attributes.formulas = [QueryFormula(formula=spec.formula)]
    return ScalarFormulaQueryRequest(
        data=ScalarFormulaRequest(
            attributes=attributes, type=ScalarFormulaRequestType.SCALAR_REQUEST
        )
    )


def _v1_value(body: dict[str, Any]) -> float | None:
    series = body.get("series") or []
    if not series or not series[0].get("pointlist"):
        return None
    point = series[0]["pointlist"][-1]
    if len(point) != 2:
        raise MeasurementFailed("Datapoint does not have 2 values")
    return float(point[1])


def _v2_value(body: dict[str, Any], where: str) -> float | list[float] | None:
    if body.get("errors"):
        raise MeasurementFailed(f"{where}: there were errors in your query: {body['errors']}")
    columns = ((body.get("data") or {}).get("attributes") or {}).get("columns") or []
    numbers = next((c for c in columns if c.get("type", "number") == "number"), None)
    grouped = any(c.get("type") == "group" for c in columns)
    if numbers is None:
        return None
    values = [float(v) for v in numbers.get("values") or [] if v is not None]
    if not values:
        return None
    return values if grouped else values[0]
