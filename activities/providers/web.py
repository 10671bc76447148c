"""The ``web`` provider: an HTTP request whose JSON answer is read with ``jsonPath``.

``url``, ``method`` (GET), ``headers``, ``body`` (POST/PUT only), ``jsonPath``
(default ``{$}``, the whole body), ``timeoutSeconds`` (10), ``insecure``. Any
2xx is read as JSON; the value at ``jsonPath`` is the result, a number (or a
string holding one) as a float, anything else as it is. The ``jsonPath``
subset: ``{$.a.b}``, ``{.a.b}``, ``{$.items[0].v}``, ``{$.items[-1]}``,
``{$['key.with.dots']}``; no wildcards, filters or slices.

Credentials in headers: a header value may contain ``{{env.NAME}}``, replaced
here, on the worker, by the worker's environment variable ``NAME``, which must
start with ``FREIGHTLINE_METRIC_`` (so a configuration cannot make the worker
send its other secrets, such as its git password, to an arbitrary URL)::

    headers:
    - key: Authorization
      value: "Bearer {{env.FREIGHTLINE_METRIC_TOKEN}}"
"""

from __future__ import annotations

import math
import re
from typing import Any

import httpx

from activities.providers.measuring import (
    ENV_TAG,
    MeasurementFailed,
    WorkerSecrets,
    check_url,
    connection_reason,
    display_url,
    http_failure,
)
from freightline.errors import ConfigError
from freightline.kargo.analysis import DEFAULT_WEB_TIMEOUT_SECONDS
from freightline.kargo.keypaths import parse_json_path
from freightline.kargo.resources import WebMetric
from freightline.settings import METRIC_HEADER_ENV_PREFIX as HEADER_ENV_PREFIX

__all__ = ["HEADER_ENV_PREFIX", "query"]


def query(spec: WebMetric, secrets: WorkerSecrets) -> Any:
    """The value at the metric's ``jsonPath``; raises MeasurementFailed."""
    headers = secrets.headers(spec.headers or [], "web header")
    check_url(spec.url, "web.url")
    for field, text in (("web.url", spec.url), ("web.body", spec.body or "")):
        if ENV_TAG.search(text):
            raise ConfigError(f"{field}: {{{{env.NAME}}}} is only allowed in header values")
    method = spec.method or "GET"
    if spec.body is not None and method == "GET":
        raise ConfigError("web.body needs method POST or PUT")
    path = parse_json_path(spec.json_path or "{$}")
    if spec.body is not None and not any(k.lower() == "content-type" for k in headers):
        headers = {**headers, "Content-Type": "application/json"}
    timeout = spec.timeout_seconds or DEFAULT_WEB_TIMEOUT_SECONDS
    where = display_url(spec.url)
    try:
        with httpx.Client(
            timeout=timeout, verify=not spec.insecure, follow_redirects=True
        ) as client:
            response = client.request(method, spec.url, headers=headers, content=spec.body)
    except httpx.TimeoutException:
        raise MeasurementFailed(f"{method} {where} did not answer within {timeout}s") from None
    except httpx.ConnectError as err:
        raise MeasurementFailed(f"could not connect to {where}: {connection_reason(err)}") from None
    except httpx.HTTPError as err:
        raise MeasurementFailed(f"{method} {where} failed: {type(err).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise MeasurementFailed(
            http_failure(
                f"{method} {where}",
                response.status_code,
                response.reason_phrase,
                response.headers.get("Retry-After"),
            )
        )
    try:
        body = response.json()
    except ValueError:
        raise MeasurementFailed(f"{method} {where}: the response body is not JSON") from None
    return _value(_follow(body, path, spec.json_path or "{$}"))


def _value(value: Any) -> Any:
    # Argo Rollouts reads a number the path prints as a float, even from a JSON string.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value)
        return number if math.isfinite(number) else value
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _follow(body: Any, path: tuple[str | int, ...], text: str) -> Any:
    node = body
    walked = "$"
    for segment in path:
        if isinstance(segment, int):
            if not isinstance(node, list) or not -len(node) <= segment < len(node):
                size = f"a list of {len(node)}" if isinstance(node, list) else _kind(node)
                raise MeasurementFailed(f"jsonPath {text}: no index {segment} at {walked} ({size})")
            node = node[segment]
            walked += f"[{segment}]"
        else:
            if not isinstance(node, dict) or segment not in node:
                raise MeasurementFailed(
                    f'jsonPath {text}: no key "{segment}" at {walked} ({_kind(node)})'
                )
            node = node[segment]
            walked += f".{segment}"
    return node


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}" if value is not None else "null"
