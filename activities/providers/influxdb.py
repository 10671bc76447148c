"""The ``influxdb`` provider: a Flux query through InfluxData's ``influxdb-client``.

As in Argo Rollouts: the query runs in the worker secret's organisation with a
30-second limit; the value is the list of every record's ``_value``, across
tables (``result[0] < 0.05``). No record is an Error ("no results returned from
flux query"), as are a query InfluxDB refuses (compilation, a wrong token or
organisation), a non-2xx answer (a 429 with its ``Retry-After``) and an
unreachable server.

Credentials: Argo Rollouts reads Secret ``influxdb`` (or ``profile``), keys
``address``, ``authToken`` and ``org``; the worker reads
``FREIGHTLINE_METRIC_INFLUXDB_ADDRESS``, ``..._AUTHTOKEN``, ``..._ORG``.
"""

from __future__ import annotations

import json
from typing import Any, Final

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.rest import ApiException

from activities.providers.measuring import (
    MeasurementFailed,
    WorkerSecrets,
    check_url,
    connection_reason,
    display_url,
    http_failure,
)
from freightline.errors import CredentialError
from freightline.kargo.analysis import provider_timeout_seconds
from freightline.kargo.resources import InfluxdbMetric

__all__ = ["DEFAULT_SECRET", "query"]

DEFAULT_SECRET: Final = "influxdb"  # noqa: S105 - a Secret's name


def query(spec: InfluxdbMetric, secrets: WorkerSecrets) -> list[Any]:
    """Every record's ``_value``; raises MeasurementFailed."""
    secret = spec.profile or DEFAULT_SECRET
    address = secrets.setting(secret, "address")
    org = secrets.setting(secret, "org")
    if address is None or org is None:
        raise CredentialError(
            f'influxdb: secret "{secret}" needs "address" and "org" on the worker '
            "(FREIGHTLINE_METRIC_<SECRET>_ADDRESS, ..._ORG)"
        )
    check_url(address, f'influxdb address (secret "{secret}")')
    token = secrets.require(secret, "authToken", "influxdb")
    timeout = provider_timeout_seconds(spec)
    where = f"InfluxDB at {display_url(address)}"
    # One try per measurement (no client retries): the next measurement is the retry.
    client = InfluxDBClient(
        url=address, token=token, org=org, timeout=int(timeout * 1000), retries=False
    )
    try:
        tables = client.query_api().query(spec.query, org=org)
        values = [record.get_value() for table in tables for record in table.records]
    except ApiException as err:
        headers: dict[str, str] = dict(err.headers or {})
        raise MeasurementFailed(
            http_failure(where, err.status or 0, err.reason or "", headers.get("Retry-After"))
            + _message(err.body)
        ) from None
    except urllib3.exceptions.HTTPError as err:
        reason = err.reason if isinstance(err, urllib3.exceptions.MaxRetryError) else err
        if isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
            reason, urllib3.exceptions.NewConnectionError
        ):
            raise MeasurementFailed(f"{where} did not answer within {timeout:g}s") from None
        raise MeasurementFailed(
            f"could not reach {where}: {connection_reason(reason or err)}"
        ) from None
    finally:
        client.close()
    if not values:
        raise MeasurementFailed("no results returned from flux query")
    return values


def _message(body: Any) -> str:
    try:
        parsed = json.loads(body) if isinstance(body, str | bytes) else body
    except ValueError:
        return ""
    if isinstance(parsed, dict) and parsed.get("message"):
        return f": {str(parsed['message'])[:200]}"
    return ""
