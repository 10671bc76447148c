"""The metric providers, one module each, and the one registry of them.

``QUERIES`` maps each provider's name in an AnalysisTemplate's ``provider``
(``prometheus``, ``graphite``, ``newRelic``, ...; the names in
:data:`freightline.kargo.resources.PROVIDER_KINDS`) to its ``query(spec,
secrets)`` function (see :mod:`activities.providers.measuring` for the
contract). ``activities.metrics`` takes the measurement through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from activities.providers import (
    cloudwatch,
    datadog,
    graphite,
    influxdb,
    newrelic,
    prometheus,
    wavefront,
    web,
)
from activities.providers.measuring import WorkerSecrets

__all__ = ["QUERIES", "Query"]

Query = Callable[[Any, WorkerSecrets], Any]
"""A provider's ``query(spec, secrets) -> value``."""

QUERIES: Final[Mapping[str, Query]] = {
    "prometheus": prometheus.query,
    "web": web.query,
    "graphite": graphite.query,
    "datadog": datadog.query,
    "newRelic": newrelic.query,
    "cloudWatch": cloudwatch.query,
    "influxdb": influxdb.query,
    "wavefront": wavefront.query,
}
