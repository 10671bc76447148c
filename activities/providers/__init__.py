"""The metric providers, one module each, and the one registry of them.

``QUERIES`` maps each provider's name in an AnalysisTemplate's ``provider``
(``prometheus``, ``graphite``, ``newRelic``, ...; the names in
:data:`freightline.kargo.resources.PROVIDER_KINDS`) to its ``query(spec,
secrets)`` function (see :mod:`activities.providers.measuring` for the
contract). ``activities.metrics`` takes the measurement through it.

A provider's module is imported by its first measurement, not with the worker: the
clients some bring (boto3 for CloudWatch and Prometheus's SigV4, influxdb-client,
datadog-api-client, requests) cost a worker ~25 MiB of resident memory that a worker
whose AnalysisTemplates never name them need not pay (bench/README.md, "1,000 idle
workflows").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Final

from activities.providers.measuring import WorkerSecrets

__all__ = ["QUERIES", "Query"]

Query = Callable[[Any, WorkerSecrets], Any]
"""A provider's ``query(spec, secrets) -> value``."""


def _imported_on_use(module: str) -> Query:
    """``activities.providers.<module>.query``, the module imported on the first call."""

    def query(spec: Any, secrets: WorkerSecrets) -> Any:
        return importlib.import_module(f"{__name__}.{module}").query(spec, secrets)

    return query


QUERIES: Final[Mapping[str, Query]] = {
    "prometheus": _imported_on_use("prometheus"),
    "web": _imported_on_use("web"),
    "graphite": _imported_on_use("graphite"),
    "datadog": _imported_on_use("datadog"),
    "newRelic": _imported_on_use("newrelic"),
    "cloudWatch": _imported_on_use("cloudwatch"),
    "influxdb": _imported_on_use("influxdb"),
    "wavefront": _imported_on_use("wavefront"),
}
