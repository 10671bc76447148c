"""The ``graphite`` provider: Graphite's render API (``/render?...&format=json``).

As in Argo Rollouts, ``query`` is the render API's query string with its
whitespace removed (``target=sumSeries(app.*.errors)&from=-5min``);
``format=json`` is added. The value handed to the conditions is the list of
the first series' non-null values, as floats (``result[0] < 0.05``,
``all(result, {# < 5})``). No series, or a series without points, is an
Error measurement ("no values found"); a series whose points are all null
gives ``[]``. A non-2xx answer (Graphite's 400 for a bad target, a 429, a
5xx) is an Error. Argo Rollouts' 10-second client timeout applies.

There is no well-kept Python client for the render API; it is one GET.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import parse_qsl

import httpx

from activities.providers.measuring import (
    MeasurementFailed,
    WorkerSecrets,
    check_url,
    display_url,
    json_answer,
)
from freightline.kargo.resources import GraphiteMetric

__all__ = ["TIMEOUT_SECONDS", "query"]

TIMEOUT_SECONDS: Final = 10
_SPACE = re.compile(r"\s+")


def query(spec: GraphiteMetric, secrets: WorkerSecrets) -> list[float]:
    """The first series' non-null values; raises MeasurementFailed."""
    check_url(spec.address, "graphite.address")
    base = spec.address.rstrip("/")
    params: list[tuple[str, str | int | float | bool | None]] = [
        (key, value)
        for key, value in parse_qsl(_SPACE.sub("", spec.query), keep_blank_values=True)
        if key != "format"
    ]
    params.append(("format", "json"))
    url = f"{base}/render"
    where = f"Graphite at {display_url(base)}"
    body = json_answer(
        lambda: httpx.get(url, params=params, timeout=TIMEOUT_SECONDS),
        where,
        TIMEOUT_SECONDS,
        lambda response: _detail(response.text),
    )
    return _values(body, where)


def _detail(text: str) -> str:
    # Graphite explains a bad target in the body's first line; a page of HTML helps nobody.
    line = text.strip().splitlines()[0] if text.strip() else ""
    if not line or line.startswith("<"):
        return ""
    return f": {line[:200]}"


def _values(body: Any, where: str) -> list[float]:
    if not isinstance(body, list):
        raise MeasurementFailed(f"{where}: the answer is not a list of series")
    if not body:
        raise MeasurementFailed("no values found: the query matched no series")
    series = body[0]
    points = series.get("datapoints") if isinstance(series, dict) else None
    if not isinstance(points, list):
        raise MeasurementFailed(f"{where}: a series without datapoints")
    if not points:
        raise MeasurementFailed("no values found: the series has no points")
    values: list[float] = []
    for point in points:
        if not isinstance(point, list) or len(point) != 2:
            raise MeasurementFailed(f"{where}: a data point is not [value, timestamp]")
        value = point[0]
        if value is None:
            continue
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            raise MeasurementFailed(f"{where}: a data point value is not a number") from None
    return values
