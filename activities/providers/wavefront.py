"""The ``wavefront`` provider: Wavefront's chart API (``GET /api/v2/chart/api``).

As in Argo Rollouts: the query at the moment of measuring (start and end
both now, one point, second granularity, series outside the window
included); from each series the point nearest that moment. One series gives
a float, several a list of floats; no series is an Error ("No TimeSeries
found in response from Wavefront"), as are a non-2xx answer (a refused query,
a 429 with its ``Retry-After``) and an unreachable API.

``address`` is the Wavefront host (``example.wavefront.com``, https); an
``http://`` or ``https://`` URL is taken as it is. There is no well-kept
Python client (``wavefront-api-client``'s last release is from 2023); the
query is one GET (httpx).

Credentials: Argo Rollouts reads Secret ``wavefront-api-tokens``, the token
under the key named by the address as written; the worker reads
``FREIGHTLINE_METRIC_WAVEFRONT_API_TOKENS_<ADDRESS>`` (``example.wavefront.com``:
``..._EXAMPLE_WAVEFRONT_COM``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

import httpx

from activities.providers.measuring import (
    MeasurementFailed,
    WorkerSecrets,
    check_url,
    display_url,
    json_answer,
)
from freightline.kargo.analysis import provider_timeout_seconds
from freightline.kargo.resources import WavefrontMetric

__all__ = ["SECRET", "query"]

SECRET: Final = "wavefront-api-tokens"  # noqa: S105 - a Secret's name


def query(spec: WavefrontMetric, secrets: WorkerSecrets) -> float | list[float]:
    """The value nearest now of each series; raises MeasurementFailed."""
    base = spec.address if "://" in spec.address else f"https://{spec.address}"
    check_url(base, "wavefront.address")
    # Argo Rollouts keys the token by the address exactly as the template writes it.
    token = secrets.require(SECRET, spec.address, "wavefront")
    now = time.time()
    millis = str(int(now) * 1000)
    where = f"Wavefront at {display_url(base)}"
    timeout = provider_timeout_seconds(spec)
    body = json_answer(
        lambda: httpx.get(
            f"{base.rstrip('/')}/api/v2/chart/api",
            params={"q": spec.query, "s": millis, "e": millis, "g": "s", "p": "1", "i": "true"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        ),
        where,
        timeout,
        _message,
    )
    series = body.get("timeseries") if isinstance(body, dict) else None
    if not series:
        raise MeasurementFailed("No TimeSeries found in response from Wavefront")
    values = [_nearest(one.get("data") or [], int(now)) for one in series]
    return values[0] if len(values) == 1 else values


def _nearest(points: list[Any], now: int) -> float:
    # Argo Rollouts' findDataPointValue: the point closest to the measurement time, else 0.
    value, delta = 0.0, math.inf
    for point in points:
        if abs(point[0] - now) < abs(delta):
            value, delta = float(point[1]), point[0] - now
    return value


def _message(response: httpx.Response) -> str:
    try:
        status = response.json().get("status") or {}
    except (ValueError, AttributeError):
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return f": {str(message)[:200]}" if message else ""
