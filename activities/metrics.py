"""The measurement activity: one measurement of one AnalysisTemplate metric.

``measure_metric`` takes a :class:`~freightline.kargo.analysis.MeasureRequest` (a
metric whose ``{{args.*}}`` are already substituted, see
:func:`freightline.kargo.analysis.resolve_metrics`) and returns a
:class:`~freightline.kargo.analysis.Measurement`, its phase decided by the metric's
conditions (:func:`freightline.kargo.analysis.evaluate_measurement`). It is a sync
activity: ``prometheus-api-client`` is built on ``requests``; the worker runs
sync activities in its thread pool.

Providers, as in Argo Rollouts:

- ``prometheus``: ``address``, ``query``, ``timeout`` (seconds, default 30).
  A vector result is a list of floats (``result[0] < 0.05``), a scalar a float;
  an empty vector is an Error measurement ("empty result"); a matrix or string
  result is an Error ("unsupported result type").
- ``web``: ``url``, ``method`` (GET), ``headers``, ``body`` (POST/PUT only),
  ``jsonPath`` (default ``{$}``, the whole body), ``timeoutSeconds`` (10),
  ``insecure``. Any 2xx is read as JSON; the value at ``jsonPath`` is the
  result, a number (or a string holding one) as a float, anything else as it
  is. The ``jsonPath`` subset: ``{$.a.b}``, ``{.a.b}``, ``{$.items[0].v}``,
  ``{$.items[-1]}``, ``{$['key.with.dots']}``; no wildcards, filters or slices.

Failures that happen while measuring (connection refused, timeout, 5xx, a
query Prometheus rejects, a body that is not JSON, a path not in the body)
are **Error measurements** with a message, not exceptions: Argo Rollouts counts
them against ``consecutiveErrorLimit`` and retries on the next interval.
Misconfiguration (an address that is not an http(s) URL, an unsupported
``jsonPath``, an ``{{args.x}}`` left unsubstituted, a header credential the
worker lacks) raises a ``ConfigError`` / ``CredentialError``, which the activity
boundary turns into a non-retryable ``ApplicationError`` of that type: no retry
can fix it.

Credentials in headers: a header value may contain ``{{env.NAME}}``, replaced
here, on the worker, by the worker's environment variable ``NAME``, which must
start with ``FREIGHTLINE_METRIC_`` (so a configuration cannot make the worker
send its other secrets, such as its git password, to an arbitrary URL). The
worker reads those variables once, at start (``freightline.settings.MetricSettings``),
and hands them to :class:`MetricActivities`. The
workflow, its history and the measurement only ever hold the reference::

    headers:
    - key: Authorization
      value: "Bearer {{env.FREIGHTLINE_METRIC_TOKEN}}"

Header values are never logged or returned; error messages are scrubbed of
them, of credentials in URLs, and of URL query strings.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from activities import boundary
from freightline.errors import ConfigError, CredentialError, FreightlineError
from freightline.kargo.analysis import (
    DEFAULT_PROMETHEUS_TIMEOUT_SECONDS,
    DEFAULT_WEB_TIMEOUT_SECONDS,
    Measurement,
    MeasurementPhase,
    MeasureRequest,
    evaluate_measurement,
)
from freightline.kargo.resources import Metric, PrometheusMetric, WebMetric
from freightline.logging import get_logger
from freightline.settings import METRIC_HEADER_ENV_PREFIX as HEADER_ENV_PREFIX

__all__ = [
    "HEADER_ENV_PREFIX",
    "MeasureRequest",
    "MetricActivities",
    "measure",
    "parse_json_path",
    "take_measurement",
]

_ENV_TAG = re.compile(r"\{\{\s*env\.([^{}\s]*)\s*\}\}")
_ARG_TAG = re.compile(r"\{\{\s*args\.[^{}]*\}\}")
# Header names whose values are credentials even when written literally in the template.
_SENSITIVE_HEADER = re.compile(r"auth|token|key|secret|password|cookie|session", re.IGNORECASE)
_REDACTED: Final = "*****"


class _Failed(Exception):
    """A measurement that could not be taken: becomes an Error-phase Measurement."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --- the activity ------------------------------------------------------------------------------


class MetricActivities:
    """The measurement activity, with the values its web headers may name."""

    def __init__(self, header_values: Mapping[str, str] | None = None) -> None:
        self.header_values = dict(header_values or {})

    @boundary.defn(name="measure_metric")
    def measure_metric(self, request: MeasureRequest) -> Measurement:
        """Take one measurement of one metric (see the module docstring)."""
        return take_measurement(request, self.header_values)


def take_measurement(request: MeasureRequest, environ: Mapping[str, str]) -> Measurement:
    """One measurement for the activity; ``environ`` holds the ``FREIGHTLINE_METRIC_*`` values.

    Misconfiguration raises a ``ConfigError`` / ``CredentialError`` (converted
    at the activity boundary); every other failure is an Error measurement.
    """
    log = get_logger(__name__)
    try:
        measurement = measure(request.metric, environ)
    except FreightlineError as err:
        log.warning("measurement misconfigured", metric=request.metric.name, run=request.run)
        err.locate(metric=request.metric.name)
        raise
    log.info(
        "measurement taken",
        metric=request.metric.name,
        run=request.run,
        phase=measurement.phase,
        value=measurement.value,
        message=measurement.message,
    )
    return measurement


def measure(metric: Metric, environ: Mapping[str, str]) -> Measurement:
    """One measurement of ``metric``; ``environ`` resolves ``{{env.NAME}}`` in web headers.

    Raises :class:`ConfigError` or :class:`CredentialError` for misconfiguration
    only; a failed measurement is returned with phase Error.
    """
    _check_no_unresolved_args(metric)
    started = _now()
    provider = metric.provider
    secrets: list[str] = []
    try:
        if provider.prometheus is not None:
            value = _query_prometheus(provider.prometheus)
        else:
            assert provider.web is not None  # a provider has exactly one kind
            headers, secrets = _web_headers(provider.web, environ)
            value = _call_web(provider.web, headers)
    except _Failed as failure:
        return Measurement(
            phase="Error",
            message=_scrub(str(failure), secrets),
            started_at=started,
            finished_at=_now(),
        )
    phase: MeasurementPhase
    phase, message = evaluate_measurement(metric, value)
    return Measurement(
        phase=phase,
        value=value,
        message=_scrub(message, secrets) if message else None,
        started_at=started,
        finished_at=_now(),
    )


def _check_no_unresolved_args(metric: Metric) -> None:
    text = metric.model_dump_json(by_alias=True, exclude_none=True)
    match = _ARG_TAG.search(text)
    if match:
        raise ConfigError(
            f'metric "{metric.name}": {match.group(0)} was not substituted '
            "(the AnalysisTemplate's args are resolved before measuring)"
        )


# --- scrubbing ---------------------------------------------------------------------------------


def _display_url(url: str) -> str:
    """``url`` without credentials or query: safe for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


def _check_url(url: str, field: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = _display_url(url) if parts.hostname else url
        raise ConfigError(f'{field} "{shown}" is not an http(s) URL')


def _connection_reason(err: BaseException) -> str:
    """The OS-level reason of a connection failure ("Connection refused"), else the error."""
    text = str(err)
    match = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", text)
    if match:
        return match.group(1).strip()
    return type(err).__name__


# --- prometheus --------------------------------------------------------------------------------


def _as_float(text: Any) -> float:
    return float(text)  # Prometheus sends sample values as strings: "0.5", "NaN", "+Inf"


def _query_prometheus(spec: PrometheusMetric) -> Any:
    """The query's result as Argo Rollouts hands it to conditions; raises _Failed."""
    address = spec.address.rstrip("/")
    _check_url(address, "prometheus.address")
    where = _display_url(address)
    timeout = spec.timeout or DEFAULT_PROMETHEUS_TIMEOUT_SECONDS
    responses: list[Any] = []
    session = requests.Session()
    # The client returns only data.result; the hook keeps the whole answer for the
    # result type and Prometheus' own error message.
    session.hooks["response"].append(lambda response, *args, **kwargs: responses.append(response))
    client = PrometheusConnect(url=address, session=session, retry=Retry(total=0), timeout=timeout)
    try:
        result = client.custom_query(spec.query, params={"timeout": f"{timeout}s"})
    except PrometheusApiClientException:
        raise _Failed(_prometheus_refusal(where, responses)) from None
    except requests.exceptions.Timeout:
        raise _Failed(f"Prometheus at {where} did not answer within {timeout}s") from None
    except requests.exceptions.ConnectionError as err:
        raise _Failed(f"could not reach Prometheus at {where}: {_connection_reason(err)}") from None
    except (requests.exceptions.RequestException, ValueError, KeyError, TypeError) as err:
        raise _Failed(f"Prometheus at {where}: bad answer: {type(err).__name__}") from None
    finally:
        client.close()
    body = responses[-1].json() if responses else {}
    result_type = (body.get("data") or {}).get("resultType") if isinstance(body, dict) else None
    warnings = body.get("warnings") if isinstance(body, dict) else None
    if warnings:
        get_logger(__name__).warning("prometheus warnings", warnings=warnings)
    return _prometheus_value(result_type, result)


def _prometheus_refusal(where: str, responses: list[Any]) -> str:
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
    return f"Prometheus at {where} answered {response.status_code} {response.reason}{detail}"


def _prometheus_value(result_type: str | None, result: Any) -> Any:
    if result_type == "vector" or (result_type is None and isinstance(result, list)):
        if not result:
            raise _Failed("empty result: the query matched no series")
        try:
            return [_as_float(sample["value"][1]) for sample in result]
        except (KeyError, IndexError, TypeError, ValueError):
            raise _Failed("unsupported result: a vector without sample values") from None
    if result_type == "scalar":
        try:
            return _as_float(result[1])
        except (IndexError, TypeError, ValueError):
            raise _Failed("unsupported result: a scalar without a value") from None
    raise _Failed(
        f"unsupported result type {result_type}: the query must give a vector or a scalar"
    )


# --- web ---------------------------------------------------------------------------------------


def _web_headers(spec: WebMetric, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The request headers with ``{{env.NAME}}`` resolved, and the values to scrub."""
    headers: dict[str, str] = {}
    secrets: list[str] = []
    for header in spec.headers or []:

        def resolve(match: re.Match[str], key: str = header.key) -> str:
            name = match.group(1)
            if not name.startswith(HEADER_ENV_PREFIX) or len(name) == len(HEADER_ENV_PREFIX):
                raise ConfigError(
                    f'web header "{key}": {{{{env.{name}}}}}: only worker environment variables '
                    f"named {HEADER_ENV_PREFIX}* may be sent in headers"
                )
            value = environ.get(name)
            if value is None:
                raise CredentialError(
                    f'web header "{key}" needs the environment variable {name} on the worker, '
                    "which is not set"
                )
            secrets.append(value)
            return value

        value = _ENV_TAG.sub(resolve, header.value)
        if _SENSITIVE_HEADER.search(header.key):
            secrets.append(value)
        headers[header.key] = value
    return headers, secrets


def _call_web(spec: WebMetric, headers: dict[str, str]) -> Any:
    _check_url(spec.url, "web.url")
    for field, text in (("web.url", spec.url), ("web.body", spec.body or "")):
        if _ENV_TAG.search(text):
            raise ConfigError(f"{field}: {{{{env.NAME}}}} is only allowed in header values")
    method = spec.method or "GET"
    if spec.body is not None and method == "GET":
        raise ConfigError("web.body needs method POST or PUT")
    path = parse_json_path(spec.json_path or "{$}")
    if spec.body is not None and not any(k.lower() == "content-type" for k in headers):
        headers = {**headers, "Content-Type": "application/json"}
    timeout = spec.timeout_seconds or DEFAULT_WEB_TIMEOUT_SECONDS
    where = _display_url(spec.url)
    try:
        with httpx.Client(
            timeout=timeout, verify=not spec.insecure, follow_redirects=True
        ) as client:
            response = client.request(method, spec.url, headers=headers, content=spec.body)
    except httpx.TimeoutException:
        raise _Failed(f"{method} {where} did not answer within {timeout}s") from None
    except httpx.ConnectError as err:
        raise _Failed(f"could not connect to {where}: {_connection_reason(err)}") from None
    except httpx.HTTPError as err:
        raise _Failed(f"{method} {where} failed: {type(err).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise _Failed(
            f"{method} {where}: received non 2xx response code: "
            f"{response.status_code} {response.reason_phrase}"
        )
    try:
        body = response.json()
    except ValueError:
        raise _Failed(f"{method} {where}: the response body is not JSON") from None
    return _web_value(_follow(body, path, spec.json_path or "{$}"))


def _web_value(value: Any) -> Any:
    # Argo Rollouts reads a number the path prints as a float, even from a JSON string.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value)
        return number if math.isfinite(number) else value
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

# --- the JSONPath subset -----------------------------------------------------------------------

_SEGMENT = re.compile(
    r"""\.(?P<name>[^.\[\]\s*?@()'"]+)"""
    r"""|\[\s*(?P<index>-?\d+)\s*\]"""
    r"""|\[\s*(?P<quote>['"])(?P<key>(?:(?!(?P=quote)).)*)(?P=quote)\s*\]"""
)


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """The keys and indexes of a JSONPath in Argo Rollouts' ``{$.a.b[0]}`` form.

    Raises :class:`ConfigError` for anything outside the subset (wildcards,
    recursive descent, filters, slices, text around the braces).
    """
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    segments: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _SEGMENT.match(text, pos)
        if match is None:
            raise ConfigError(
                f'jsonPath "{path}": unsupported at "{text[pos:]}": use dots and indexes, '
                "such as {$.data.ok} or {$.items[0].value}"
            )
        if match.group("name") is not None:
            segments.append(match.group("name"))
        elif match.group("index") is not None:
            segments.append(int(match.group("index")))
        else:
            segments.append(match.group("key"))
        pos = match.end()
    return tuple(segments)


def _follow(body: Any, path: tuple[str | int, ...], text: str) -> Any:
    node = body
    walked = "$"
    for segment in path:
        if isinstance(segment, int):
            if not isinstance(node, list) or not -len(node) <= segment < len(node):
                size = f"a list of {len(node)}" if isinstance(node, list) else _kind(node)
                raise _Failed(f"jsonPath {text}: no index {segment} at {walked} ({size})")
            node = node[segment]
            walked += f"[{segment}]"
        else:
            if not isinstance(node, dict) or segment not in node:
                raise _Failed(f'jsonPath {text}: no key "{segment}" at {walked} ({_kind(node)})')
            node = node[segment]
            walked += f".{segment}"
    return node


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}" if value is not None else "null"
